"""AsyncCollection: PyMongo's async collection API.

Each method validates and encodes on the loop thread (clear errors before anything is sent), submits
one job to the core and shapes the core's result into PyMongo's result types.
"""

from __future__ import annotations

from asyncio import CancelledError
from collections.abc import Mapping as AbcMapping
from typing import TYPE_CHECKING, Any, Iterable

from bson.codec_options import CodecOptions
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import common, helpers_shared
from pymongo.collation import validate_collation_or_none
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    InvalidDocument,
    InvalidName,
    InvalidOperation,
)
from pymongo.read_concern import ReadConcern
from pymongo.results import InsertManyResult, InsertOneResult
from pymongo.write_concern import WriteConcern

from asyncmongo import _core, _csot
from asyncmongo._collection_admin import _AdminMixin
from asyncmongo._collection_reads import _ReadsMixin
from asyncmongo._bulk import bulk_api_result
from asyncmongo._collection_writes import _WritesMixin
from asyncmongo._common import MAX_BSON_SIZE, check_options, read_prefs, too_large
from asyncmongo._common import encode as _encode
from asyncmongo.client_session import check_session, run_in_session

if TYPE_CHECKING:
    from asyncmongo.database import AsyncDatabase

_OP_INSERT = _core.OP_INSERT
_OP_READ = _core.OP_READ
_RES_WRITE = _core.RES_WRITE
_RES_BULK = _core.RES_BULK
_RES_FIRST = _core.RES_FIRST


def _check_name(name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be an instance of str, not {type(name)}")
    if not name or ".." in name:
        raise InvalidName("collection names cannot be empty")
    if "$" in name and not (name.startswith(("oplog.$main", "$cmd"))):
        raise InvalidName(f"collection names must not contain '$': {name!r}")
    if name[0] == "." or name[-1] == ".":
        raise InvalidName(f"collection names must not start or end with '.': {name!r}")
    if "\x00" in name:
        raise InvalidName("collection names must not contain the null character")



class AsyncCollection(_ReadsMixin, _WritesMixin, _AdminMixin):
    def __init__(
        self,
        database: "AsyncDatabase",
        name: str,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        timeout: float | None = None,
    ) -> None:
        _check_name(name)
        self._timeout = _csot.inherit(timeout, database._timeout)
        self._database = database
        self._name = name
        self._db_name = database.name
        self._full_name = f"{database.name}.{name}"
        client = database.client
        self._client = client
        self._codec_options = codec_options or database.codec_options
        self._read_preference = read_preference or database.read_preference
        self._write_concern = write_concern or database.write_concern
        self._read_concern = read_concern or database.read_concern
        check_options(self._codec_options, self._read_preference, self._write_concern,
                      self._read_concern)
        # Concerns equal to the client's are applied by libmongoc itself; others travel as options.
        wc = self._write_concern
        self._write_opts = (
            None if wc == client.write_concern else _encode({"writeConcern": wc.document})
        )
        self._acknowledged = wc.acknowledged
        rc = self._read_concern
        self._read_concern_doc = None if rc == client.read_concern else rc.document
        # A read preference other than the client's travels with each read job.
        rp = self._read_preference
        self._read_prefs = None if rp == client.read_preference else read_prefs(rp)

    # ---- identity and options --------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def full_name(self) -> str:
        return self._full_name

    @property
    def database(self) -> "AsyncDatabase":
        return self._database

    @property
    def codec_options(self) -> CodecOptions:
        return self._codec_options

    @property
    def read_preference(self):
        return self._read_preference

    @property
    def write_concern(self) -> WriteConcern:
        return self._write_concern

    @property
    def read_concern(self) -> ReadConcern:
        return self._read_concern

    def with_options(
        self,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        timeout: float | None = None,
    ) -> "AsyncCollection":
        """A copy with other options; ``timeout`` (seconds, 0 for no limit; asyncmongo's, PyMongo
        4.20 has none) overrides this collection's timeout."""
        return AsyncCollection(
            self._database,
            self._name,
            codec_options or self._codec_options,
            read_preference or self._read_preference,
            write_concern or self._write_concern,
            read_concern or self._read_concern,
            _csot.inherit(timeout, self._timeout),
        )

    def __getattr__(self, name: str) -> "AsyncCollection":
        if name.startswith("_"):
            raise AttributeError(
                f"AsyncCollection has no attribute {name!r}. To access the {self._name}.{name} "
                f"collection, use database['{self._name}.{name}']."
            )
        return self[name]

    def __getitem__(self, name: str) -> "AsyncCollection":
        return AsyncCollection(
            self._database,
            f"{self._name}.{name}",
            self._codec_options,
            self._read_preference,
            self._write_concern,
            self._read_concern,
            self._timeout,
        )

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, AsyncCollection):
            return self._database == other._database and self._name == other._name
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._database, self._name))

    def __repr__(self) -> str:
        return f"AsyncCollection({self._database!r}, {self._name!r})"

    # Not iterable (PyMongo's PYTHON-3084): iter() would otherwise make sub-collections 0, 1...
    __iter__ = None

    def __next__(self):
        raise TypeError("'AsyncCollection' object is not iterable")

    next = __next__

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            f"'AsyncCollection' object is not callable. If you meant to call the '{self._name}' "
            "method on an AsyncDatabase object it is failing because no such method exists."
        )

    def __bool__(self) -> bool:
        raise NotImplementedError(
            "AsyncCollection objects do not implement truth value testing or bool(). "
            "Please compare with None instead: collection is not None"
        )

    # ---- encoding --------------------------------------------------------------------------

    def _encode_document(self, document: Any) -> bytes:
        """Validate, add an _id as PyMongo does, encode, and check the size: before any I/O."""
        common.validate_is_document_type("document", document)
        if isinstance(document, RawBSONDocument):
            raw = document.raw
        else:
            if "_id" not in document:
                document["_id"] = ObjectId()
            raw = _encode(document, False, self._codec_options)
        if len(raw) > MAX_BSON_SIZE:
            raise too_large(len(raw))
        return raw

    def _insert_opts(self, comment: Any) -> bytes | None:
        if comment is None:
            return self._write_opts
        opts: dict[str, Any] = {"comment": comment}
        if self._write_opts is not None:
            opts["writeConcern"] = self._write_concern.document
        return _encode(opts)

    def _write_session(self, session: Any) -> Any:
        """``session=`` of a write: an explicit session needs an acknowledged write (PyMongo)."""
        session = check_session(self._client, session)
        if session is not None and not self._acknowledged:
            raise ConfigurationError(
                f"Explicit sessions are incompatible with unacknowledged write concern: "
                f"{self._write_concern!r}"
            )
        return session

    # ---- writes ----------------------------------------------------------------------------

    @_csot.apply
    async def insert_one(
        self,
        document: Any,
        bypass_document_validation: bool | None = None,
        session: Any = None,
        comment: Any = None,
    ) -> InsertOneResult:
        session = self._write_session(session)
        # Under a timeout, a write command: libmongoc's bulk API takes no maxTimeMS.
        if bypass_document_validation is False or _csot.enabled():
            await self._insert_by_commands([document], True, comment, session, single=True,
                                           bypass=bypass_document_validation)
            return InsertOneResult(document.get("_id"), self._acknowledged)
        # The core checks the document, adds its _id and encodes it into the job (client.c).
        flags = _core.FLAG_BYPASS if bypass_document_validation else 0
        await run_in_session(
            self._client._core, session, _OP_INSERT, _RES_WRITE, self._db_name, self._name,
            [document], self._insert_opts(comment), self._codec_options, flags,
        )
        return InsertOneResult(document.get("_id"), self._acknowledged)

    @_csot.apply
    async def insert_many(
        self,
        documents: Iterable[Any],
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        session: Any = None,
        comment: Any = None,
    ) -> InsertManyResult:
        session = self._write_session(session)
        if isinstance(documents, AbcMapping) or not isinstance(documents, Iterable) or not documents:
            raise TypeError("documents must be a non-empty list")
        docs = list(documents)
        if not isinstance(ordered, bool):
            # PyMongo never checks ordered (it sends it for the server to judge); libmongoc's bulk
            # API takes a boolean only. Refused before anything is sent, once the documents passed
            # PyMongo's checks, in PyMongo's order: every one's type, then each one's encoding.
            for document in docs:
                common.validate_is_document_type("document", document)
            for document in docs:
                self._encode_document(document)
            common.validate_boolean("ordered", ordered)
        if not docs:  # an iterator that turned out empty, as PyMongo's bulk says
            raise InvalidOperation("No operations to execute")
        if bypass_document_validation is False or _csot.enabled():  # see insert_one
            await self._insert_by_commands(docs, ordered, comment, session,
                                           bypass=bypass_document_validation)
            return InsertManyResult([d.get("_id") for d in docs], self._acknowledged)
        opts: dict[str, Any] = {"ordered": ordered}
        if self._write_opts is not None:
            opts["writeConcern"] = self._write_concern.document
        if comment is not None:
            opts["comment"] = comment
        flags = _core.FLAG_BYPASS if bypass_document_validation else 0
        # The core checks each document, adds its _id and encodes them into the job (client.c).
        try:
            await run_in_session(
                self._client._core, session, _OP_INSERT, _RES_BULK, self._db_name, self._name, docs,
                _encode(opts), self._codec_options, flags,
            )
        except BulkWriteError as exc:
            # libmongoc's bulk reply, in the shape PyMongo gives BulkWriteError.details.
            raise BulkWriteError(bulk_api_result(exc.details, docs)) from None
        except InvalidDocument:
            # The core encodes document by document; PyMongo checks every one's type first.
            for document in docs:
                common.validate_is_document_type("document", document)
            raise
        return InsertManyResult([d.get("_id") for d in docs], self._acknowledged)

    # ---- reads -----------------------------------------------------------------------------

    async def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        """The first document matching ``filter`` (a mapping, or an ``_id`` value), or None."""
        if self._timeout is not None or _csot.TIMEOUT.get() is not None:
            return await self._find_one_timed(filter, *args, **kwargs)
        cmd, session = self._find_one_command(filter, *args, **kwargs)
        core = self._client._core
        if session is not None:
            return await run_in_session(core, session, _OP_READ, _RES_FIRST, self._db_name, None, cmd,
                                        self._find_opts(), self._codec_options, 0, 0,
                                        self._read_prefs)
        # The common case inline: one submit, one await (execute()'s cancellation rule).
        future = core.submit(_OP_READ, _RES_FIRST, self._db_name, None, cmd, self._find_opts(),
                             self._codec_options, 0, 0, None, self._read_prefs)
        try:
            return await future
        except CancelledError:
            core.cancel(future)
            raise

    @_csot.apply
    async def _find_one_timed(self, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        """find_one under a timeout: one job with the deadline, as a retryable read."""
        cmd, session = self._find_one_command(filter, *args, **kwargs)
        return await run_in_session(self._client._core, session, _OP_READ, _RES_FIRST,
                                    self._db_name, None, cmd, self._find_opts(),
                                    self._codec_options, 0, 0, self._read_prefs)

    def _find_one_command(
        self,
        filter: Any = None,
        projection: Any = None,
        skip: int = 0,
        sort: Any = None,
        max_time_ms: int | None = None,
        hint: Any = None,
        collation: Any = None,
        comment: Any = None,
        let: Any = None,
        session: Any = None,
        allow_disk_use: bool | None = None,
    ) -> tuple[dict[str, Any], Any]:
        session = check_session(self._client, session)
        if filter is None:
            filter = {}
        elif not isinstance(filter, AbcMapping):
            filter = {"_id": filter}
        cmd: dict[str, Any] = {"find": self._name, "filter": filter, "limit": 1, "singleBatch": True}
        # The same checks, with the same exception types, as PyMongo's cursor.
        if projection is not None:
            cmd["projection"] = helpers_shared._fields_list_to_dict(projection, "projection")
        if not isinstance(skip, int) or isinstance(skip, bool):
            raise TypeError(f"skip must be an instance of int, not {type(skip)}")
        if skip < 0:
            raise ValueError("skip must be >= 0")
        if skip:
            cmd["skip"] = skip
        if sort:
            cmd["sort"] = helpers_shared._index_document(sort)
        if max_time_ms is not None:
            if not isinstance(max_time_ms, int) or isinstance(max_time_ms, bool):
                raise TypeError("max_time_ms must be an integer or None")
            if not _csot.enabled():  # deprecated: a timeout replaces it
                cmd["maxTimeMS"] = max_time_ms
        if hint is not None:
            cmd["hint"] = hint if isinstance(hint, str) else helpers_shared._index_document(
                helpers_shared._index_list(hint))
        collation = validate_collation_or_none(collation)
        if collation is not None:
            cmd["collation"] = collation
        if comment is not None:
            cmd["comment"] = comment
        if let is not None:
            common.validate_is_document_type("let", let)
            cmd["let"] = let
        if allow_disk_use is not None:
            cmd["allowDiskUse"] = common.validate_boolean("allow_disk_use", allow_disk_use)
        # The collection's read concern travels in the job's options (_find_opts), where libmongoc
        # puts it, once, into the command; its read preference beside them (_read_prefs).
        return cmd, session  # encoded by the core into the job, size checked (client.c)

    # ---- collection-level ------------------------------------------------------------------

    @_csot.apply
    async def drop(self, session: Any = None, comment: Any = None, encrypted_fields: Any = None) -> None:
        """Drop the collection (with its write concern); a missing collection is not an error."""
        db = self._client.get_database(
            self._db_name, self._codec_options, self._read_preference, self._write_concern,
            self._read_concern, self._timeout,
        )
        await db.drop_collection(
            self._name, session=session, comment=comment, encrypted_fields=encrypted_fields
        )


__all__ = ["AsyncCollection"]

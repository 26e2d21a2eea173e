"""AsyncDatabase: PyMongo's async database API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from bson.dbref import DBRef
from bson.son import SON
from pymongo import common
from pymongo.collation import validate_collation_or_none
from pymongo.errors import (
    CollectionInvalid,
    ConfigurationError,
    InvalidName,
    InvalidOperation,
    OperationFailure,
    ProtocolError,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.write_concern import WriteConcern

from asyncmongo import _core, _csot
from asyncmongo._common import check_command_size, check_options, primary_read, read_prefs
from asyncmongo._common import encode as _encode
from asyncmongo.change_stream import AsyncDatabaseChangeStream, open_change_stream
from asyncmongo.client_session import check_session, run_in_session
from asyncmongo.collection import AsyncCollection
from asyncmongo.command_cursor import AsyncCommandCursor, run_cursor_command

if TYPE_CHECKING:
    from asyncmongo.client import AsyncMongoClient


def _check_name(name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be an instance of str, not {type(name)}")
    if not name:
        raise InvalidName("database name cannot be the empty string")
    for invalid in (" ", ".", "$", "/", "\\", "\x00", '"'):
        if invalid in name:
            raise InvalidName(f"database names cannot contain the character {invalid!r}")


class AsyncDatabase:
    def __init__(
        self,
        client: "AsyncMongoClient",
        name: str,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        timeout: float | None = None,
    ) -> None:
        self._timeout = _csot.inherit(timeout, client._timeout)
        self._codec_options = codec_options or client.codec_options
        self._read_preference = read_preference or client.read_preference
        self._write_concern = write_concern or client.write_concern
        self._read_concern = read_concern or client.read_concern
        check_options(self._codec_options, self._read_preference, self._write_concern,
                       self._read_concern)
        if not isinstance(name, str):
            raise TypeError(f"name must be an instance of str, not {type(name)}")
        if name != "$external":
            _check_name(name)
        self._client = client
        self._name = name
        # As on collections: what equals the client's is applied by libmongoc, the rest travels.
        wc = self._write_concern
        self._write_opts = (
            None if wc == client.write_concern else _encode({"writeConcern": wc.document})
        )
        rc = self._read_concern
        self._read_concern_doc = None if rc == client.read_concern else rc.document
        rp = self._read_preference
        self._read_prefs = None if rp == client.read_preference else read_prefs(rp)

    @property
    def client(self) -> "AsyncMongoClient":
        return self._client

    @property
    def name(self) -> str:
        return self._name

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

    def __getattr__(self, name: str) -> AsyncCollection:
        if name.startswith("_"):
            raise AttributeError(
                f"AsyncDatabase has no attribute {name!r}. To access the {name} collection, use "
                f"database[{name!r}]."
            )
        return self.get_collection(name)

    def __getitem__(self, name: str) -> AsyncCollection:
        return self.get_collection(name)

    def get_collection(
        self,
        name: str,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        timeout: float | None = None,
    ) -> AsyncCollection:
        """The collection ``name``. ``timeout`` (seconds, 0 for no limit; asyncmongo's, PyMongo
        4.20 has none) overrides this database's timeout for its operations."""
        return AsyncCollection(self, name, codec_options, read_preference, write_concern, read_concern,
                               timeout)

    @_csot.apply
    async def command(
        self,
        command: str | Mapping[str, Any],
        value: Any = 1,
        check: bool = True,
        allowable_errors: Any = None,
        read_preference: Any = None,
        codec_options: CodecOptions | None = None,
        session: Any = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Run a database command, as PyMongo's ``AsyncDatabase.command``.

        Sent as it is: no read concern or write concern is added, and it goes to the primary
        unless ``read_preference`` says otherwise (the database's read preference does not apply,
        as with PyMongo)."""
        session = check_session(self._client, session)
        if isinstance(command, str):
            command = SON([(command, value)])
        elif not isinstance(command, Mapping):
            raise TypeError(f"command must be an instance of str or a mapping, not {type(command)}")
        if kwargs or comment is not None:
            command = SON(command)
            command.update(kwargs)
            if comment is not None:
                command["comment"] = comment
        prefs = None
        if read_preference is not None:
            if not isinstance(read_preference, _ServerMode):
                raise TypeError(
                    f"{read_preference!r} is not valid for read_preference. See "
                    "pymongo.read_preferences for valid options."
                )
            if read_preference.mode != 0:  # the core selects the server by it
                prefs = read_prefs(read_preference)
        if codec_options is None:
            codec_options = DEFAULT_CODEC_OPTIONS
        if not isinstance(codec_options, CodecOptions):
            raise TypeError("codec_options must be an instance of CodecOptions")
        cmd = check_command_size(_encode(command, False, self._codec_options))
        core = self._client._core
        try:
            return await run_in_session(
                core, session, _core.OP_COMMAND, _core.RES_DOC, self._name, None, cmd, None,
                codec_options, 0, 0, prefs,
            )
        except OperationFailure as exc:
            details = exc.details or {}
            allowed = allowable_errors or ()
            if not check or exc.code in allowed or details.get("errmsg") in allowed:
                return details
            raise

    async def _write_command(
        self,
        command: dict[str, Any],
        write_opts: bytes | None,
        codec_options: CodecOptions,
        allowable_errors: Any = None,
        db_name: str | None = None,
        session: Any = None,
    ) -> dict[str, Any]:
        """Run a command that writes (create, drop, createIndexes, renameCollection...) as a libmongoc
        write command: ``write_opts`` (the caller's write concern when it is not the client's)
        or, if the caller put ``writeConcern`` in the command itself, that one."""
        if "writeConcern" in command:
            # libmongoc adds the client's write concern unless the options carry one.
            wc = command.pop("writeConcern")
            if _csot.enabled() and isinstance(wc, Mapping):
                wc = {k: v for k, v in wc.items() if k != "wtimeout"}
            write_opts = _encode({"writeConcern": wc})
        elif _csot.enabled():
            # Under a timeout no wtimeout: the options' write concern, or the client's libmongoc
            # would add, without it.
            wc = _core.bson_decode(write_opts).get("writeConcern") if write_opts else None
            if wc is None:
                write_opts = _csot.write_opts(self._client.write_concern, None)
            elif "wtimeout" in wc:
                wc.pop("wtimeout")
                write_opts = _encode({"writeConcern": wc})
        cmd = check_command_size(_encode(command, False, codec_options))
        core = self._client._core
        try:
            return await run_in_session(
                core, session, _core.OP_WRITE, _core.RES_WRITE, db_name or self._name, None, cmd,
                write_opts, DEFAULT_CODEC_OPTIONS,
            )
        except OperationFailure as exc:
            details = exc.details or {}
            if allowable_errors and (exc.code in allowable_errors
                                     or details.get("errmsg") in allowable_errors):
                return details
            raise

    # ---- collections -----------------------------------------------------------------------

    @_csot.apply
    async def list_collections(
        self, session: Any = None, filter: Mapping[str, Any] | None = None, comment: Any = None,
        timeout_mode: str | None = None, **kwargs: Any,
    ) -> AsyncCommandCursor:
        """A command cursor over the collections' descriptions (``listCollections``).
        ``timeout_mode``: asyncmongo's, see AsyncCursor."""
        session = check_session(self._client, session)
        timeout = _csot.CursorTimeout(self._timeout, timeout_mode)
        cmd: dict[str, Any] = {"listCollections": 1, "cursor": {}}
        if filter is not None:
            kwargs["filter"] = filter
        if comment is not None:
            kwargs["comment"] = comment
        cmd.update(kwargs)
        op, prefs = primary_read(self._client)
        # PyMongo decodes this listing with the default codec options (plain dicts).
        return await run_cursor_command(
            self._client, self._name, cmd, DEFAULT_CODEC_OPTIONS, op=op, read_prefs=prefs,
            comment=comment, session=session, timeout=timeout,
        )

    @_csot.apply
    async def list_collection_names(
        self, session: Any = None, filter: Mapping[str, Any] | None = None, comment: Any = None,
        **kwargs: Any,
    ) -> list[str]:
        """The names of the collections (``nameOnly`` unless the filter looks beyond the name)."""
        if filter is None:
            kwargs["nameOnly"] = True
        else:
            common.validate_is_mapping("filter", filter)
            # The enumerate-collections spec: nameOnly only when the filter looks at names alone.
            if not filter or (len(filter) == 1 and "name" in filter):
                kwargs["nameOnly"] = True
        cursor = await self.list_collections(session, filter, comment, **kwargs)
        return [doc["name"] async for doc in cursor]

    @_csot.apply
    async def create_collection(
        self,
        name: str,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        session: Any = None,
        check_exists: bool | None = True,
        **kwargs: Any,
    ) -> AsyncCollection:
        """Create a collection with options (capped, size, max, validator, validationLevel,
        validationAction, collation, timeseries, clusteredIndex, viewOn/pipeline...). Raises
        CollectionInvalid if it exists and ``check_exists`` is true."""
        session = check_session(self._client, session)
        if kwargs.get("encryptedFields"):
            raise InvalidOperation("asyncmongo does not support queryable encryption")
        kwargs.pop("encryptedFields", None)
        clustered_index = kwargs.get("clusteredIndex")
        if clustered_index:
            common.validate_is_mapping("clusteredIndex", clustered_index)
        # Checked before anything is sent (PyMongo would list the collections first).
        coll = AsyncCollection(self, name, codec_options, read_preference, write_concern, read_concern)
        collation = validate_collation_or_none(kwargs.pop("collation", None))
        cmd: dict[str, Any] = {"create": name}
        if "size" in kwargs:
            kwargs["size"] = float(kwargs["size"])
        cmd.update(kwargs)
        if collation is not None:
            cmd["collation"] = collation
        if check_exists and name in await self.list_collection_names(
            filter={"name": name}, session=session
        ):
            raise CollectionInvalid(f"collection {name} already exists")
        await self._write_command(cmd, coll._write_opts, self._codec_options, session=session)
        return coll

    @_csot.apply
    async def drop_collection(
        self,
        name_or_collection: Any,
        session: Any = None,
        comment: Any = None,
        encrypted_fields: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Drop a collection (by name or object) with this database's write concern; a missing
        collection is not an error. Returns the server's reply."""
        session = check_session(self._client, session)
        name = name_or_collection
        if isinstance(name, AsyncCollection):
            name = name.name
        if not isinstance(name, str):
            raise TypeError(f"name_or_collection must be an instance of str, not {type(name)}")
        if encrypted_fields is not None:
            raise InvalidOperation("asyncmongo does not support queryable encryption")
        cmd: dict[str, Any] = {"drop": name}
        if comment is not None:
            cmd["comment"] = comment
        return await self._write_command(
            cmd, self._write_opts, self._codec_options, allowable_errors=("ns not found", 26),
            session=session,
        )

    @_csot.apply
    async def aggregate(self, pipeline: Any, session: Any = None, timeout_mode: str | None = None,
                        **kwargs: Any) -> AsyncCommandCursor:
        """A database-level aggregation (``{"aggregate": 1}``: $documents, $currentOp...), with
        this database's read preference and read concern, or its write concern for $out/$merge.
        ``timeout_mode``: asyncmongo's, see AsyncCursor."""
        session = check_session(self._client, session)
        if "explain" in kwargs:
            raise ConfigurationError(
                "The explain option is not supported. Use AsyncDatabase.command instead."
            )
        for key in ("aggregate", "pipeline"):
            if key in kwargs:
                raise ConfigurationError(f"The {key} option cannot be specified as a keyword argument.")
        pipeline = common.validate_list("pipeline", pipeline)
        performs_write = bool(pipeline) and ("$out" in pipeline[-1] or "$merge" in pipeline[-1])
        options = dict(kwargs)
        batch_size = common.validate_non_negative_integer_or_none(
            "batchSize", options.pop("batchSize", None)
        )
        cursor_opts = dict(options.pop("cursor", None) or {})
        if batch_size is not None and not performs_write:
            cursor_opts["batchSize"] = batch_size
        collation = validate_collation_or_none(options.pop("collation", None))
        max_await_time_ms = options.pop("maxAwaitTimeMS", None)
        timeout = _csot.CursorTimeout(self._timeout, timeout_mode, writes=performs_write)
        _csot.check_max_await(max_await_time_ms, timeout.timeout)
        if timeout.timeout is not None:
            options.pop("maxTimeMS", None)  # deprecated: the timeout replaces it
        cmd: dict[str, Any] = {"aggregate": 1, "pipeline": pipeline}
        cmd.update(options)
        cmd["cursor"] = cursor_opts
        if collation is not None:
            cmd["collation"] = collation
        if "readConcern" not in cmd and self._read_concern_doc and not (
            session is not None and session.in_transaction
        ):
            cmd["readConcern"] = self._read_concern_doc
        if performs_write:
            # With a write concern; on the primary unless every server is 5.0+ (the core decides).
            op = _core.OP_READ_WRITE
            opts_doc: dict[str, Any] = {}
            if "writeConcern" in cmd:
                opts_doc["writeConcern"] = cmd.pop("writeConcern")
            elif self._write_opts is not None or (
                    _csot.enabled() and "wtimeout" in self._write_concern.document):
                opts_doc["writeConcern"] = _csot.write_concern_doc(self._write_concern)
            opts = _encode(opts_doc) if opts_doc else None
        else:
            opts = None
            op = _core.OP_READ
        # Explicit even when it is the client's: the cursor's server is selected by the core
        # (FLAG_PIN), which takes no read preference as primary.
        rp = self._read_preference
        prefs = None if rp.mode == 0 else read_prefs(rp)
        return await run_cursor_command(
            self._client, self._name, cmd, self._codec_options, opts, op, prefs,
            batch_size=batch_size, max_await_time_ms=max_await_time_ms,
            comment=options.get("comment"), session=session, timeout=timeout,
        )

    @_csot.apply
    async def cursor_command(
        self,
        command: str | Mapping[str, Any],
        value: Any = 1,
        read_preference: Any = None,
        codec_options: CodecOptions | None = None,
        session: Any = None,
        comment: Any = None,
        max_await_time_ms: int | None = None,
        timeout_mode: str | None = None,
        **kwargs: Any,
    ) -> AsyncCommandCursor:
        """Run a command that answers with a cursor (PyMongo's ``cursor_command``) and iterate
        that cursor: its getMores go to the same server. InvalidOperation if the reply has no
        cursor. Sent as it is, as ``command`` is (no concerns added; the primary unless
        ``read_preference`` says otherwise). ``timeout_mode``: asyncmongo's, see AsyncCursor (a
        command with ``tailable`` gets ITERATION)."""
        session = check_session(self._client, session)
        if isinstance(command, str):
            command = SON([(command, value)])
        elif not isinstance(command, Mapping):
            raise TypeError(f"command must be an instance of str or a mapping, not {type(command)}")
        command = SON(command)
        command.update(kwargs)
        if comment is not None:
            command["comment"] = comment
        tailable = bool(command.get("tailable"))
        await_data = bool(command.get("awaitData"))
        timeout = _csot.CursorTimeout(self._timeout, timeout_mode, tailable, await_data)
        if await_data:
            _csot.check_max_await(max_await_time_ms, timeout.timeout)
        prefs = None
        if read_preference is not None:
            if not isinstance(read_preference, _ServerMode):
                raise TypeError(
                    f"{read_preference!r} is not valid for read_preference. See "
                    "pymongo.read_preferences for valid options."
                )
            if read_preference.mode != 0:
                prefs = read_prefs(read_preference)
        codec_options = codec_options or DEFAULT_CODEC_OPTIONS
        if not isinstance(codec_options, CodecOptions):
            raise TypeError("codec_options must be an instance of CodecOptions")
        # A plain command, as PyMongo's (it retries it as a read; libmongoc's command path does
        # not, the core does under a timeout).
        op = _core.OP_READ if prefs is not None else _core.OP_COMMAND
        # Does the reply hold a cursor? Asked of the reply itself: the core's cursor job refuses
        # one without (as a protocol error), which is PyMongo's InvalidOperation here.
        try:
            return await run_cursor_command(
                self._client, self._name, command, codec_options, None, op, prefs,
                max_await_time_ms=max_await_time_ms, comment=comment, session=session,
                timeout=timeout,
            )
        except ProtocolError as exc:
            if "no cursor" not in str(exc):
                raise
            raise InvalidOperation("Command does not return a cursor.") from None

    @_csot.apply
    async def watch(
        self,
        pipeline: list[Mapping[str, Any]] | None = None,
        full_document: str | None = None,
        resume_after: Mapping[str, Any] | None = None,
        max_await_time_ms: int | None = None,
        batch_size: int | None = None,
        collation: Any = None,
        start_at_operation_time: Any = None,
        session: Any = None,
        start_after: Mapping[str, Any] | None = None,
        comment: Any = None,
        full_document_before_change: str | None = None,
        show_expanded_events: bool | None = None,
    ) -> Any:
        """A change stream on every collection of this database (``AsyncDatabaseChangeStream``),
        already open: ``async with await db.watch() as stream: async for change in stream: ...``.
        Arguments as PyMongo's ``watch``."""
        return await open_change_stream(
            AsyncDatabaseChangeStream, self, pipeline, full_document, resume_after,
            max_await_time_ms, batch_size, collation, start_at_operation_time, session, start_after,
            comment, full_document_before_change, show_expanded_events,
        )

    def with_options(
        self,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        timeout: float | None = None,
    ) -> "AsyncDatabase":
        return AsyncDatabase(
            self._client,
            self._name,
            codec_options or self._codec_options,
            read_preference or self._read_preference,
            write_concern or self._write_concern,
            read_concern or self._read_concern,
            _csot.inherit(timeout, self._timeout),
        )

    async def dereference(self, dbref: Any, session: Any = None, comment: Any = None,
                          **kwargs: Any) -> Any:
        """The document a DBRef points to, or None; ValueError if it names another database."""
        if not isinstance(dbref, DBRef):
            raise TypeError(f"cannot dereference a {type(dbref)}")
        if dbref.database is not None and dbref.database != self._name:
            raise ValueError(
                f"trying to dereference a DBRef that points to another database "
                f"({dbref.database!r} not {self._name!r})"
            )
        return await self[dbref.collection].find_one(
            {"_id": dbref.id}, session=session, comment=comment, **kwargs
        )

    async def validate_collection(
        self,
        name_or_collection: Any,
        scandata: bool = False,
        full: bool = False,
        session: Any = None,
        background: bool | None = None,
        comment: Any = None,
    ) -> dict[str, Any]:
        """Run ``validate`` on a collection; CollectionInvalid if the server finds it invalid.
        Returns the server's reply."""
        name = name_or_collection
        if isinstance(name, AsyncCollection):
            name = name.name
        if not isinstance(name, str):
            raise TypeError(
                f"name_or_collection must be an instance of str or AsyncCollection, not {type(name)}"
            )
        cmd: dict[str, Any] = {"validate": name, "scandata": scandata, "full": full}
        if comment is not None:
            cmd["comment"] = comment
        if background is not None:
            cmd["background"] = background
        result = await self.command(cmd, session=session)
        # The verdict, in each of the shapes servers give it (PyMongo reads the same fields).
        texts: list[str] = []
        valid = True
        if "result" in result:
            texts.append(result["result"])
        elif "raw" in result:
            for shard in result["raw"].values():
                if "result" in shard:
                    texts.append(shard["result"])
                elif not shard.get("valid", False):
                    valid = False
        elif not result.get("valid", False):
            valid = False
        for info in texts:
            if "exception" in info or "corrupt" in info:
                raise CollectionInvalid(f"{name} invalid: {info}")
        if not valid:
            raise CollectionInvalid(f"{name} invalid: {result!r}")
        return result

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, AsyncDatabase):
            return self._client == other._client and self._name == other._name
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._client, self._name))

    def __repr__(self) -> str:
        return f"AsyncDatabase({self._client!r}, {self._name!r})"

    # Not iterable (PyMongo's PYTHON-3084): iter() would otherwise make collections named 0, 1...
    __iter__ = None

    def __next__(self):
        raise TypeError("'AsyncDatabase' object is not iterable")

    next = __next__

    def __bool__(self) -> bool:
        raise NotImplementedError(
            "AsyncDatabase objects do not implement truth value testing or bool(). "
            "Please compare with None instead: database is not None"
        )

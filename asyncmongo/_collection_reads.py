"""Reads of AsyncCollection: find (cursors), aggregate, distinct, counts.

Arguments are checked as PyMongo checks them (same exception types) before anything is sent. The
collection's read preference and a read concern other than the client's travel in the job's options,
where libmongoc takes them instead of adding the client's own (no duplicate fields in a command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from bson.codec_options import CodecOptions
from pymongo import common, helpers_shared
from pymongo.collation import validate_collation_or_none
from pymongo.errors import ConfigurationError, OperationFailure
from pymongo.write_concern import WriteConcern

from asyncmongo import _core, _csot
from asyncmongo._common import check_command_size as _check_size
from asyncmongo._common import encode as _encode
from asyncmongo._common import read_prefs
from asyncmongo.change_stream import AsyncCollectionChangeStream, open_change_stream
from asyncmongo.client_session import check_session, run_in_session
from asyncmongo.command_cursor import AsyncCommandCursor
from asyncmongo.cursor import AsyncCursor
from asyncmongo.raw_batches import AsyncRawBatchCommandCursor, AsyncRawBatchCursor, raw_codec_options

if TYPE_CHECKING:
    from asyncmongo.client import AsyncMongoClient

_OP_READ = _core.OP_READ
_RES_DOC = _core.RES_DOC
_NAMESPACE_NOT_FOUND = 26


class _ReadsMixin:
    __slots__ = ()

    # Set by AsyncCollection.__init__.
    _name: str
    _db_name: str
    _full_name: str
    _client: "AsyncMongoClient"
    _codec_options: CodecOptions
    _read_prefs: bytes | None
    _write_opts: bytes | None
    _read_concern_doc: Mapping[str, Any] | None
    _read_preference: Any
    _write_concern: WriteConcern

    # ---- options of a read job --------------------------------------------------------------

    def _find_opts(self, extra: Mapping[str, Any] | None = None) -> bytes | None:
        """Job options for a read: the read concern (if not the client's) and ``extra``
        (readConcern/writeConcern a caller gave)."""
        rc = self._read_concern_doc
        if not rc and not extra:
            return None
        opts: dict[str, Any] = {}
        if rc:
            opts["readConcern"] = rc
        if extra:
            opts.update(extra)
        return _encode(opts)

    def _reply_codec_options(self) -> CodecOptions:
        # Counts are read by us, not handed over: a dict whatever the user's document class.
        return self._codec_options._replace(
            unicode_decode_error_handler="replace", document_class=dict
        )

    # ---- find ------------------------------------------------------------------------------

    def find(self, *args: Any, **kwargs: Any) -> AsyncCursor:
        """Query the collection: an ``AsyncCursor`` (nothing is sent until it is iterated).

        Arguments as PyMongo's ``AsyncCollection.find``: ``filter=None, projection=None, skip=0,
        limit=0, no_cursor_timeout=False, cursor_type=CursorType.NON_TAILABLE, sort=None,
        allow_partial_results=False, oplog_replay=False, batch_size=0, collation=None, hint=None,
        max_scan=None, max_time_ms=None, max=None, min=None, return_key=None, show_record_id=None,
        snapshot=None, comment=None, session=None, allow_disk_use=None, let=None``.
        """
        return AsyncCursor(self, *args, **kwargs)  # type: ignore[arg-type]

    def find_raw_batches(self, *args: Any, **kwargs: Any) -> AsyncRawBatchCursor:
        """As ``find``, iterating over whole server batches: each item is the ``bytes`` of one
        batch's BSON documents (``bson.decode_all`` reads them)."""
        return AsyncRawBatchCursor(self, *args, **kwargs)

    # ---- aggregate -------------------------------------------------------------------------

    @_csot.apply
    async def aggregate(
        self,
        pipeline: list[Mapping[str, Any]],
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        timeout_mode: str | None = None,
        **kwargs: Any,
    ) -> AsyncCommandCursor:
        """Run an aggregation pipeline: an ``AsyncCommandCursor`` over its results.

        Keyword arguments are aggregate command fields (``allowDiskUse``, ``maxTimeMS``,
        ``batchSize``, ``collation``, ``hint``, ``bypassDocumentValidation``, ``maxAwaitTimeMS``,
        ``readConcern``, ``writeConcern``...).
        A pipeline ending in ``$out`` or ``$merge`` runs on the primary with the collection's write
        concern. ``timeout_mode`` (asyncmongo's): the cursor's timeout mode, see AsyncCursor.
        """
        return await self._aggregate(pipeline, session, let, comment, kwargs, AsyncCommandCursor,
                                     self._codec_options, timeout_mode)

    async def aggregate_raw_batches(
        self, pipeline: list[Mapping[str, Any]], session: Any = None, comment: Any = None,
        **kwargs: Any,
    ) -> AsyncRawBatchCommandCursor:
        """As ``aggregate``, iterating over whole batches: each item is the ``bytes`` of one
        batch's BSON documents."""
        return await self._aggregate(pipeline, session, None, comment, kwargs,
                                     AsyncRawBatchCommandCursor,
                                     raw_codec_options(self._codec_options))

    async def _aggregate(self, pipeline: Any, session: Any, let: Any, comment: Any,
                         kwargs: dict[str, Any], cursor_class: type, codec: CodecOptions,
                         timeout_mode: str | None = None) -> Any:
        session = check_session(self._client, session)
        if "explain" in kwargs:
            raise ConfigurationError(
                "The explain option is not supported. Use AsyncDatabase.command instead."
            )
        for name in ("aggregate", "pipeline"):
            if name in kwargs:
                raise ConfigurationError(
                    f"The {name} option cannot be specified as a keyword argument."
                )
        pipeline = common.validate_list("pipeline", pipeline)
        performs_write = bool(pipeline) and ("$out" in pipeline[-1] or "$merge" in pipeline[-1])
        if let is not None:
            common.validate_is_mapping("let", let)
            kwargs["let"] = let
        if comment is not None:
            kwargs["comment"] = comment
        batch_size = common.validate_non_negative_integer_or_none(
            "batchSize", kwargs.pop("batchSize", None)
        )
        cursor_opts = dict(kwargs.pop("cursor", None) or {})
        # A pipeline that writes returns no documents: no initial batchSize (as PyMongo).
        if batch_size is not None and not performs_write:
            cursor_opts["batchSize"] = batch_size
        collation = validate_collation_or_none(kwargs.pop("collation", None))
        max_await_time_ms = kwargs.pop("maxAwaitTimeMS", None)
        timeout = _csot.CursorTimeout(self._timeout, timeout_mode, writes=performs_write)
        _csot.check_max_await(max_await_time_ms, timeout.timeout)
        if timeout.timeout is not None:
            kwargs.pop("maxTimeMS", None)  # deprecated: the timeout replaces it

        # Concerns go to libmongoc as options, so that it adds none of the client's beside them; the
        # caller's (keyword arguments) replace the collection's.
        opts_doc: dict[str, Any] = {}
        rc = kwargs.pop("readConcern", self._read_concern_doc)
        if rc:
            opts_doc["readConcern"] = rc
        if performs_write:  # with a write concern; on the primary unless every server is 5.0+
            op = _core.OP_READ_WRITE
            # The core decides where it goes (commands.c): it needs the preference even when it
            # is the client's.
            prefs = read_prefs(self._read_preference) if self._read_preference.mode != 0 else None
            wc = kwargs.pop("writeConcern", None)
            if wc is None:
                if collation is not None and not self._write_concern.acknowledged:
                    raise ConfigurationError("Collation is unsupported for unacknowledged writes.")
                if self._write_opts is not None or (
                        _csot.enabled() and "wtimeout" in self._write_concern.document):
                    wc = _csot.write_concern_doc(self._write_concern)
            if wc is not None:
                opts_doc["writeConcern"] = wc
        else:
            op = _OP_READ
            prefs = self._read_prefs
        cmd: dict[str, Any] = {"aggregate": self._name, "pipeline": pipeline, "cursor": cursor_opts}
        cmd.update(kwargs)
        if collation is not None:
            cmd["collation"] = collation
        opts = _encode(opts_doc) if opts_doc else None
        raw = _check_size(_encode(cmd, False, self._codec_options))
        first = await run_in_session(
            self._client._core, session, op, _core.RES_CURSOR, self._db_name, None, raw, opts,
            codec, _core.FLAG_PIN, 0, prefs, timeout.first_flags(),
        )
        if not first.namespace:  # a server that names no namespace: the collection's
            first = _core.CursorBatch((first.cursor_id, self._full_name) + tuple(first)[2:])
        return cursor_class(
            self._client, self._db_name, first, codec, batch_size or 0,
            max_await_time_ms, kwargs.get("comment"), session, timeout,
        )

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
        """A change stream on this collection (``AsyncCollectionChangeStream``), already open:
        ``async with await coll.watch() as stream: async for change in stream: ...``.
        Arguments as PyMongo's ``watch``."""
        return await open_change_stream(
            AsyncCollectionChangeStream, self, pipeline, full_document, resume_after,
            max_await_time_ms, batch_size, collation, start_at_operation_time, session, start_after,
            comment, full_document_before_change, show_expanded_events,
        )

    # ---- counts ----------------------------------------------------------------------------

    @_csot.apply
    async def count_documents(
        self, filter: Mapping[str, Any], session: Any = None, comment: Any = None, **kwargs: Any
    ) -> int:
        """The number of documents matching ``filter`` (an aggregation: ``$match``, ``$skip``,
        ``$limit``, ``$group``). Options: ``skip``, ``limit``, ``maxTimeMS``, ``collation``,
        ``hint``."""
        session = check_session(self._client, session)
        pipeline: list[dict[str, Any]] = [{"$match": filter}]
        if "skip" in kwargs:
            pipeline.append({"$skip": kwargs.pop("skip")})
        if "limit" in kwargs:
            pipeline.append({"$limit": kwargs.pop("limit")})
        if comment is not None:
            kwargs["comment"] = comment
        pipeline.append({"$group": {"_id": 1, "n": {"$sum": 1}}})
        if "hint" in kwargs and not isinstance(kwargs["hint"], str):
            kwargs["hint"] = helpers_shared._index_document(kwargs["hint"])
        collation = validate_collation_or_none(kwargs.pop("collation", None))
        cmd: dict[str, Any] = {"aggregate": self._name, "pipeline": pipeline, "cursor": {}}
        cmd.update(kwargs)
        if collation is not None:
            cmd["collation"] = collation
        raw = _check_size(_encode(cmd, False, self._codec_options))
        try:
            result = await run_in_session(
                self._client._core, session, _OP_READ, _core.RES_FIRST, self._db_name, None, raw,
                self._find_opts(), self._reply_codec_options(), 0, 0, self._read_prefs,
            )
        except OperationFailure as exc:
            if exc.code == _NAMESPACE_NOT_FOUND:  # as PyMongo: no collection, no documents
                return 0
            raise
        if not result:
            return 0
        return result["n"]

    @_csot.apply
    async def estimated_document_count(self, comment: Any = None, **kwargs: Any) -> int:
        """The collection's document count from its metadata (the ``count`` command)."""
        if "session" in kwargs:
            raise ConfigurationError("estimated_document_count does not support sessions")
        if comment is not None:
            kwargs["comment"] = comment
        cmd: dict[str, Any] = {"count": self._name}
        cmd.update(kwargs)
        raw = _check_size(_encode(cmd, False, self._codec_options))
        reply = await run_in_session(
            self._client._core, None, _OP_READ, _RES_DOC, self._db_name, None, raw,
            self._find_opts(), self._reply_codec_options(), 0, 0, self._read_prefs,
        )
        return int(reply["n"])

    # ---- distinct --------------------------------------------------------------------------

    @_csot.apply
    async def distinct(
        self,
        key: str,
        filter: Mapping[str, Any] | None = None,
        session: Any = None,
        comment: Any = None,
        hint: Any = None,
        **kwargs: Any,
    ) -> list[Any]:
        """The distinct values of ``key`` among the documents matching ``filter``. Options:
        ``maxTimeMS``, ``collation``."""
        if not isinstance(key, str):
            raise TypeError(f"key must be an instance of str, not {type(key)}")
        session = check_session(self._client, session)
        if filter is not None:
            if "query" in kwargs:
                raise ConfigurationError("can't pass both filter and query")
            kwargs["query"] = filter
        collation = validate_collation_or_none(kwargs.pop("collation", None))
        if hint is not None and not isinstance(hint, str):
            hint = helpers_shared._index_document(hint)
        cmd: dict[str, Any] = {"distinct": self._name, "key": key}
        cmd.update(kwargs)
        if comment is not None:
            cmd["comment"] = comment
        if hint is not None:
            cmd["hint"] = hint
        if collation is not None:
            cmd["collation"] = collation
        raw = _check_size(_encode(cmd, False, self._codec_options))
        reply = await run_in_session(
            self._client._core, session, _OP_READ, _RES_DOC, self._db_name, None, raw,
            self._find_opts(), self._codec_options, 0, 0, self._read_prefs,
        )
        return reply["values"]

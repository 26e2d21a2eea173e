"""Change streams, with PyMongo's API (``pymongo.asynchronous.change_stream``) and the change
streams specification's resume rules: after a resumable error a stream reopens itself once, from the
last resume token it cached (or the operation time it started at), and kills the old server cursor.

A stream's server cursor is plain data like any cursor here (cursor.py): the aggregate and each
getMore are one core job (``RES_STREAM``, which also returns the batch's postBatchResumeToken and
the reply's operationTime). A getMore waits on the server up to ``max_await_time_ms``, holding one
worker thread all that time.

Timeouts (the specification's change streams rules): the stream keeps the timeout in force when
watch() is called (a ``pymongo.timeout()`` block, else its target's timeoutMS). The aggregate has it,
then each next() call has it afresh for all it sends (getMores and a resume), each try_next() for
its getMore; a getMore's maxTimeMS is min(max_await_time_ms, time left - RTT). A next call that
times out leaves the stream open: the next one resumes it.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Mapping

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import common
from pymongo.collation import validate_collation_or_none
from pymongo.errors import (
    ConnectionFailure,
    CursorNotFound,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
)

from asyncmongo import _core, _csot
from asyncmongo._common import encode as _encode
from asyncmongo._execute import run_job
from asyncmongo.client_session import check_session, run_in_session
from asyncmongo.command_cursor import AsyncCommandCursor, kill_cursor

if TYPE_CHECKING:
    from asyncmongo.client import AsyncMongoClient


# The specification's resumable server codes for servers before 4.4 (wire version 9), which do not
# label their errors; later servers say it with the ResumableChangeStreamError label alone.
_RESUMABLE_CODES = frozenset(
    {6, 7, 63, 89, 91, 133, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436}
)
_LABELS_WIRE_VERSION = 9


def _resumable(exc: PyMongoError, max_wire_version: int | None = None) -> bool:
    """Whether a getMore error allows one resume (the change streams specification): network
    errors, CursorNotFound, a ResumableChangeStreamError label, or (servers before wire version 9
    only) one of the listed codes."""
    if isinstance(exc, (ConnectionFailure, CursorNotFound)):
        return True
    if isinstance(exc, OperationFailure):
        if exc.has_error_label("ResumableChangeStreamError"):
            return True
        return (max_wire_version is not None and max_wire_version < _LABELS_WIRE_VERSION
                and exc.code in _RESUMABLE_CODES)
    return False


class _StreamCursor(AsyncCommandCursor):
    """The server cursor under a stream: a command cursor whose batches also bring the server's
    postBatchResumeToken. Never resurrected: once killed, a stream opens a new one."""

    _result_kind = _core.RES_STREAM
    _fetch_ahead_ok = False  # a change stream's getMore waits on the server for changes

    def __init__(self, stream: "AsyncChangeStream", first: Any) -> None:
        super().__init__(stream._client, stream._db_name, first, stream._job_codec_options,
                         stream._batch_size, stream._max_await_time_ms, stream._comment,
                         stream._session, stream._csot)
        self.post_batch_resume_token = first.post_batch_resume_token

    def _on_batch(self, batch: Any) -> None:
        if batch.post_batch_resume_token is not None:
            self.post_batch_resume_token = batch.post_batch_resume_token
        super()._on_batch(batch)

    async def next_change(self, get_more_allowed: bool) -> Any:
        """The next buffered change, after one getMore if none is buffered and it is allowed."""
        if not self._data and not self._killed and get_more_allowed:
            await self._get_more()
        return self._data.popleft() if self._data else None

    def kill(self) -> Any:
        """Drop what is buffered and send killCursors without waiting (see _kill_request)."""
        self._data.clear()
        return self._kill_request()


class AsyncChangeStream:
    """A change stream: ``async for change in stream``, ``try_next()``, ``resume_token``,
    ``alive``, ``close()``, ``async with``. Made by ``watch()`` on a collection, a database or the
    client (as PyMongo's, never directly).

    A stream resumes by itself once per resumable error. Any other error closes it, except a
    timeout (``ExecutionTimeout``, ``NetworkTimeout``); so does cancelling the task awaiting it
    (as PyMongo's: the batch being fetched is lost, so the stream cannot go on where it was)."""

    _aggregate_target: Any = 1

    def __init__(
        self,
        target: Any,
        pipeline: list[Mapping[str, Any]] | None,
        full_document: str | None,
        resume_after: Mapping[str, Any] | None,
        max_await_time_ms: int | None,
        batch_size: int | None,
        collation: Any,
        start_at_operation_time: Any,
        session: Any,
        start_after: Mapping[str, Any] | None,
        comment: Any = None,
        full_document_before_change: str | None = None,
        show_expanded_events: bool | None = None,
    ) -> None:
        if pipeline is None:
            pipeline = []
        pipeline = common.validate_list("pipeline", pipeline)
        common.validate_string_or_none("full_document", full_document)
        common.validate_string_or_none("full_document_before_change", full_document_before_change)
        self._collation = validate_collation_or_none(collation)
        common.validate_non_negative_integer_or_none("batchSize", batch_size)
        if max_await_time_ms is not None and (
            not isinstance(max_await_time_ms, int) or isinstance(max_await_time_ms, bool)
        ):
            raise TypeError("max_await_time_ms must be an integer or None")
        self._target = target
        self._csot = _csot.CursorTimeout(target._timeout, None, tailable=True, await_data=True)
        _csot.check_max_await(max_await_time_ms, self._csot.timeout)
        client = self._client
        self._core = client._core
        self._session = check_session(client, session)
        self._codec_options: CodecOptions = target.codec_options
        # With custom decoders a change is decoded raw first, so that its resume token keeps the
        # server's exact bytes (as PyMongo does); the user's types are applied to the copy returned.
        self._decode_custom = bool(self._codec_options.type_registry._decoder_map)
        self._job_codec_options = (
            self._codec_options.with_options(document_class=RawBSONDocument)
            if self._decode_custom else self._codec_options
        )
        self._pipeline = copy.deepcopy(pipeline)
        self._full_document = full_document
        self._full_document_before_change = full_document_before_change
        self._uses_start_after = start_after is not None
        self._uses_resume_after = resume_after is not None
        self._resume_token = copy.deepcopy(start_after or resume_after)
        self._max_await_time_ms = max_await_time_ms
        self._batch_size = batch_size
        self._start_at_operation_time = start_at_operation_time
        self._comment = comment
        self._show_expanded_events = show_expanded_events
        self._closed = False
        self._cursor: _StreamCursor | None = None
        self._max_wire_version: int | None = None

    # ---- what the subclasses say -------------------------------------------------------------

    @property
    def _client(self) -> "AsyncMongoClient":
        return self._target._client

    @property
    def _db_name(self) -> str:
        return self._target._name

    def _job_opts(self) -> bytes | None:
        """The target's read concern when it is not the client's (libmongoc applies the client's)."""
        rc = self._target._read_concern_doc
        return _encode({"readConcern": rc}) if rc else None

    def _job_read_prefs(self) -> bytes | None:
        """The target's read preference when it is not the client's."""
        return self._target._read_prefs

    # ---- the aggregate -----------------------------------------------------------------------

    def _change_stream_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self._full_document is not None:
            options["fullDocument"] = self._full_document
        if self._full_document_before_change is not None:
            options["fullDocumentBeforeChange"] = self._full_document_before_change
        if self._resume_token is not None:
            options["startAfter" if self._uses_start_after else "resumeAfter"] = self._resume_token
        elif self._start_at_operation_time is not None:
            options["startAtOperationTime"] = self._start_at_operation_time
        if self._show_expanded_events:
            options["showExpandedEvents"] = self._show_expanded_events
        return options

    def _aggregate_command(self) -> dict[str, Any]:
        pipeline: list[Any] = [{"$changeStream": self._change_stream_options()}]
        pipeline.extend(self._pipeline)
        cursor: dict[str, Any] = {}
        if self._batch_size is not None:
            cursor["batchSize"] = self._batch_size
        cmd: dict[str, Any] = {"aggregate": self._aggregate_target, "pipeline": pipeline,
                               "cursor": cursor}
        if self._collation is not None:
            cmd["collation"] = self._collation
        if self._comment is not None:
            cmd["comment"] = self._comment
        return cmd

    async def _create_cursor(self) -> _StreamCursor:
        raw = _encode(self._aggregate_command(), False, self._codec_options)
        first = await run_in_session(
            self._core, self._session, _core.OP_READ, _core.RES_STREAM, self._db_name, None, raw,
            self._job_opts(), self._job_codec_options, _core.FLAG_PIN, 0, self._job_read_prefs(),
            self._csot.first_flags(),
        )
        cursor = _StreamCursor(self, first)
        # An empty first batch: cache where the stream starts, for a resume before any change.
        if not cursor._data:
            if cursor.post_batch_resume_token is not None:
                self._resume_token = cursor.post_batch_resume_token
            elif (self._start_at_operation_time is None and not self._uses_resume_after
                  and not self._uses_start_after):
                self._start_at_operation_time = first.operation_time
                if self._start_at_operation_time is None:
                    cursor.kill()
                    raise OperationFailure(
                        "Expected field 'operationTime' missing from command response"
                    )
        return cursor

    async def _initialize_cursor(self) -> None:
        self._cursor = await self._create_cursor()

    async def _resume(self) -> None:
        """Reopen the stream where it was; the old cursor is killed without waiting for it (its
        server may be unreachable, which is often why we are here)."""
        assert self._cursor is not None
        self._cursor.kill()
        cursor = await self._create_cursor()
        if self._closed:  # closed while reopening
            cursor.kill()
        self._cursor = cursor

    async def _server_wire_version(self) -> int | None:
        """The cursor server's maxWireVersion (asked once, only for an unlabelled server error
        whose code older servers call resumable)."""
        if self._max_wire_version is None and self._cursor is not None:
            core = self._core
            try:
                reply = await run_job(core, _core.OP_COMMAND, _core.RES_DOC, "admin", None,
                                      _encode({"hello": 1}), None, None, 0, self._cursor._server_id)
            except PyMongoError:
                return None
            self._max_wire_version = int(reply.get("maxWireVersion", 0))
        return self._max_wire_version

    async def _is_resumable(self, exc: PyMongoError) -> bool:
        if _resumable(exc):
            return True
        if (isinstance(exc, OperationFailure) and exc.code in _RESUMABLE_CODES
                and not (exc.details or {}).get("errorLabels")):
            return _resumable(exc, await self._server_wire_version())
        return False

    # ---- iterating ---------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False once the stream is closed (by close(), an invalidate event or a fatal error).
        While True, next() may still end and try_next() may return None."""
        return not self._closed

    @property
    def resume_token(self) -> Mapping[str, Any] | None:
        """The token to resume after the most recent change (or, with no change yet, the
        server's latest postBatchResumeToken): pass it as ``resume_after`` to a new stream."""
        return copy.deepcopy(self._resume_token)

    def __aiter__(self) -> "AsyncChangeStream":
        return self

    async def next(self) -> Any:
        """The next change, waiting for one (a getMore every max_await_time_ms until one comes).
        Raises StopAsyncIteration once the stream is closed. Under a timeout, one for the whole
        call."""
        deadline = self._csot.next_deadline()
        while self.alive:
            doc = await self._try_next(deadline)
            if doc is not None:
                return doc
        raise StopAsyncIteration

    __anext__ = next

    async def try_next(self) -> Any:
        """The next change, or None if none is buffered and one getMore (waiting at most
        max_await_time_ms on the server) brings none. The resume token may advance either way."""
        return await self._try_next(self._csot.next_deadline())

    async def _try_next(self, deadline: float | None) -> Any:
        """try_next() under one block: ``deadline`` for the getMore and a resume it may take."""
        with self._csot.fetch(deadline):
            return await self._try_next_in_block()

    async def _try_next_in_block(self) -> Any:
        cursor = self._cursor
        assert cursor is not None
        if not self._closed and not cursor.alive:
            await self._resume()
        try:
            try:
                change = await self._cursor.next_change(True)
            except PyMongoError as exc:
                if self._closed or not await self._is_resumable(exc):
                    raise
                await self._resume()
                change = await self._cursor.next_change(False)
        except PyMongoError as exc:
            if not await self._is_resumable(exc) and not exc.timeout:
                await self.close()
            raise
        except BaseException:
            # Cancelled (or interrupted): the batch in flight is lost, so the stream ends here; the
            # cursor is killed without waiting, as a cancelled task cannot await.
            self._closed = True
            self._cursor.kill()
            raise

        cursor = self._cursor
        if not cursor.alive:
            self._closed = True
        if change is None:
            # Nothing new: the server's postBatchResumeToken says how far the stream has looked.
            if cursor.post_batch_resume_token is not None:
                self._resume_token = cursor.post_batch_resume_token
                self._start_at_operation_time = None
            return None
        try:
            resume_token = change["_id"]
        except KeyError:
            await self.close()
            raise InvalidOperation(
                "Cannot provide resume functionality when the resume token is missing."
            ) from None
        # The last change of a batch: the postBatchResumeToken is at least as far along.
        if not cursor._data and cursor.post_batch_resume_token:
            resume_token = cursor.post_batch_resume_token
        # From the first change on, a resume continues after it (startAfter served its turn).
        self._uses_start_after = False
        self._uses_resume_after = True
        self._resume_token = resume_token
        self._start_at_operation_time = None
        if self._decode_custom:
            return bson.decode(change.raw, self._codec_options)
        return change

    # ---- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the stream and kill its server cursor."""
        self._closed = True
        if self._cursor is None:
            return
        self._cursor._data.clear()
        await kill_cursor(self._cursor, self._csot)

    async def __aenter__(self) -> "AsyncChangeStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncCollectionChangeStream(AsyncChangeStream):
    """A change stream on one collection (``AsyncCollection.watch``)."""

    @property
    def _db_name(self) -> str:
        return self._target._db_name

    @property
    def _aggregate_target(self) -> str:  # type: ignore[override]
        return self._target._name


class AsyncDatabaseChangeStream(AsyncChangeStream):
    """A change stream on every collection of a database (``AsyncDatabase.watch``)."""


class AsyncClusterChangeStream(AsyncDatabaseChangeStream):
    """A change stream on every database of the deployment (``AsyncMongoClient.watch``): an
    ``allChangesForCluster`` stream opened in ``admin``."""

    @property
    def _client(self) -> "AsyncMongoClient":
        return self._target

    @property
    def _db_name(self) -> str:
        return "admin"

    def _job_opts(self) -> bytes | None:
        return None  # the client's own read concern: libmongoc applies it

    def _job_read_prefs(self) -> bytes | None:
        return None  # the client's own read preference

    def _change_stream_options(self) -> dict[str, Any]:
        options = super()._change_stream_options()
        options["allChangesForCluster"] = True
        return options


async def open_change_stream(cls: type[AsyncChangeStream], target: Any, *args: Any) -> Any:
    """Make a stream of ``cls`` on ``target`` (watch()'s arguments in order) and open it."""
    stream = cls(target, *args)
    await stream._initialize_cursor()
    return stream


__all__ = [
    "AsyncChangeStream",
    "AsyncClusterChangeStream",
    "AsyncCollectionChangeStream",
    "AsyncDatabaseChangeStream",
]

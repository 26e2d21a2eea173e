"""Async command cursors: plain data (cursor id, namespace, server id), one core job per batch.

libmongoc's own cursors may only be used from the thread that made them, so a cursor here keeps no
libmongoc object: the first batch comes from a command (aggregate, listIndexes...) run on any worker
with its server pinned, and each further batch is one getMore job sent to that same server. A batch
is decoded in one call. An unfinished cursor sends killCursors when closed or collected.

Timeouts (_csot.CursorTimeout): a cursor keeps the timeout it was made under and its mode. In
CURSOR_LIFETIME mode every getMore shares the deadline of the command that opened it, with no
maxTimeMS; in ITERATION mode each next call (all the getMores it takes, for a tailable cursor) and
each batch of to_list() gets the timeout afresh; an awaitData getMore sends maxTimeMS =
min(maxAwaitTimeMS, time left - RTT). close() kills the server cursor under the timeout afresh. A
fetch made inside another ``pymongo.timeout()`` block follows that block.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Mapping

from bson.codec_options import CodecOptions
from bson.int64 import Int64
from pymongo.errors import ConnectionFailure, InvalidOperation, PyMongoError

from asyncmongo import _core, _csot
from asyncmongo._common import encode as _encode
from asyncmongo._common import kill_cursor_request, kill_cursors_command
from asyncmongo._execute import execute, run_job
from asyncmongo.client_session import run_in_session

if TYPE_CHECKING:
    from asyncmongo.client import AsyncMongoClient

CursorBatch = _core.CursorBatch


def ready_batch(documents: list[Any], namespace: str) -> Any:
    """A batch that needs no server cursor (a command that answers in one reply)."""
    return CursorBatch((0, namespace, documents, 0, None, None, None))


class AsyncCommandCursor:
    """A cursor over the results of a command that returns one (aggregate, listIndexes, ...), with
    PyMongo's ``AsyncCommandCursor`` API: ``async for``, ``next()``, ``try_next()``, ``to_list()``,
    ``close()``, ``async with``, ``alive``, ``cursor_id``, ``address``."""

    # What the getMore jobs return (a change stream's cursor asks for its resume tokens too).
    _result_kind = _core.RES_CURSOR
    # Whether the next batch is fetched while the application consumes this one (not for cursors
    # whose getMore waits on the server: tailable awaitData cursors and change streams).
    _fetch_ahead_ok = True

    def __init__(
        self,
        client: "AsyncMongoClient",
        db_name: str,
        first: Any,
        codec_options: CodecOptions,
        batch_size: int | None = None,
        max_await_time_ms: int | None = None,
        comment: Any = None,
        session: Any = None,
        timeout: "_csot.CursorTimeout | None" = None,
        *,
        fetch_ahead: bool = True,
    ) -> None:
        # `first`: the _core.CursorBatch of the command that opened the cursor.
        self._client = client
        self._core = client._core
        self._db_name = db_name
        self._id = first.cursor_id
        self._ns = first.namespace or ""
        self._coll_name = self._ns.split(".", 1)[1] if "." in self._ns else ""
        self._server_id = first.server_id
        # The session the server cursor lives in (a core capsule), for the getMores; None when
        # the first batch was the last or the core fell back to implicit sessions. In an explicit
        # session (the user's AsyncClientSession) the getMores run in that one.
        self._session = first.session
        self._user_session = session
        self._codec_options = codec_options
        self._batch_size = batch_size
        self._max_await_time_ms = max_await_time_ms
        self._comment = comment
        self._data: deque[Any] = deque(first.documents)
        self._killed = first.cursor_id == 0
        self._timeout = timeout if timeout is not None else _csot.CursorTimeout(None)
        # The getMore fetching the next batch ahead (a core future), or None; at most one.
        self._ahead: Any = None
        # Who starts fetching ahead: this cursor after each batch, or (False) the cursor wrapping
        # it (AsyncCursor, which knows how many documents its limit leaves).
        self._auto_ahead = fetch_ahead
        if fetch_ahead:
            self._fetch_ahead(batch_size)

    # ---- properties ------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while documents may still come: buffered ones, or a live cursor on the server."""
        return bool(self._data) or not self._killed

    @property
    def cursor_id(self) -> int | None:
        return self._id

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) of the server the cursor lives on."""
        return self._client._server_address(self._server_id)

    @property
    def session(self) -> Any:
        """The explicit session the cursor runs in, or None."""
        return self._user_session

    def batch_size(self, batch_size: int) -> "AsyncCommandCursor":
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise TypeError("batch_size must be an integer")
        if batch_size < 0:
            raise ValueError("batch_size must be >= 0")
        self._batch_size = batch_size
        return self

    # ---- fetching --------------------------------------------------------------------------

    async def _get_more(self, deadline: float | None = None) -> None:
        """The next batch from the cursor's server, decoded in one call: the one fetched ahead,
        else one getMore job now, under the cursor's timeout rule (``deadline``: that of the next
        call in progress). A failed or cancelled fetch changes nothing here, the cursor stays
        closable, but for a connection failure: the connection is gone, and so is the cursor (or
        the server times it out), so no killCursors follows (PyMongo sends none either); a
        timeoutMS timeout leaves it to close(), as the CSOT specification says."""
        try:
            batch = await self._fetch(deadline)
        except ConnectionFailure as exc:
            if not (exc.timeout and (self._timeout.timeout is not None
                                     or _csot.TIMEOUT.get() is not None)):
                self._killed = True
                self._session = None
            raise
        self._on_batch(batch)
        if self._auto_ahead:
            self._fetch_ahead(self._batch_size)

    async def _fetch(self, deadline: float | None) -> Any:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            return await execute(self._core, ahead, self._session)
        timeout = self._timeout
        # maxTimeMS on a getMore is the awaitData cursor's await, and only there.
        max_await = self._max_await_time_ms if timeout.await_data or not timeout.tailable else None
        cmd = getmore_command(self._id, self._coll_name, self._batch_size, max_await,
                              self._comment)
        with timeout.fetch(deadline):
            return await run_getmore(
                self._core, self._user_session, self._session, self._result_kind, self._db_name,
                cmd, self._codec_options, self._server_id,
                timeout.get_more_flags(max_await is not None),
            )

    def _fetch_ahead(self, batch_size: int | None) -> None:
        """Start the next getMore now (``batch_size`` documents, None or 0 for the server's
        default), so that the server's and the network's time overlap the application's: one batch
        ahead at most. Not in an explicit session of the user's (its operations run one at a time,
        and the user's next one would find it busy), nor under a timeout (each getMore has the
        deadline of its cursor's mode, or of the caller's block)."""
        if (self._ahead is not None or self._killed or not self._id or not self._fetch_ahead_ok
                or self._user_session is not None or self._core is None or self._core.closed
                or self._timeout.timeout is not None or _csot.TIMEOUT.get() is not None):
            return
        cmd = getmore_command(self._id, self._coll_name, batch_size, self._max_await_time_ms,
                              self._comment)
        try:
            self._ahead = self._core.submit(_core.OP_READ, self._result_kind, self._db_name, None,
                                            cmd, None, self._codec_options, 0, self._server_id,
                                            self._session)
        except (InvalidOperation, RuntimeError):
            self._ahead = None  # the client closed, or no loop runs: fetched when needed

    def _drop_ahead(self) -> None:
        """Forget the batch fetched ahead: unqueued if it has not started, else its result is
        dropped when it arrives (retrieved, so that no error of it is reported as lost)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return
        self._core.cancel(ahead, self._session)
        ahead.add_done_callback(_retrieve)

    def _on_batch(self, batch: Any) -> None:
        if not self._killed:  # a close() that ran meanwhile stays closed
            self._id = batch.cursor_id
            if batch.cursor_id == 0:  # exhausted (or, for a change stream, invalidated)
                self._killed = True
                self._session = None
        self._data.extend(batch.documents)

    async def _refresh(self) -> int:
        if not self._data and not self._killed:
            await self._get_more()
        return len(self._data)

    async def next(self) -> Any:
        """The next document, from as many getMores as it takes (one timeout for them all in
        ITERATION mode)."""
        deadline = None if self._data else self._timeout.next_deadline()
        while not self._data:
            if self._killed:
                raise StopAsyncIteration
            await self._get_more(deadline)
        return self._data.popleft()

    __anext__ = next

    def __aiter__(self) -> "AsyncCommandCursor":
        return self

    async def try_next(self) -> Any:
        """The next document, or None if none is buffered and one getMore brings none."""
        if not self._data and not self._killed:
            await self._get_more(self._timeout.next_deadline())
        return self._data.popleft() if self._data else None

    async def to_list(self, length: int | None = None) -> list[Any]:
        if length is not None:
            if not isinstance(length, int) or isinstance(length, bool):
                raise TypeError("length must be an int or None")
            if length < 1:
                raise ValueError("to_list() length must be greater than 0")
        out: list[Any] = []
        while length is None or len(out) < length:
            if not self._data:
                if self._killed:
                    break
                await self._get_more()
                continue
            take = len(self._data) if length is None else min(len(self._data), length - len(out))
            out.extend(self._data.popleft() for _ in range(take))
        return out

    # ---- closing ---------------------------------------------------------------------------

    def _kill_job(self) -> tuple[int, Any] | None:
        """The server cursor to kill and the session capsule its killCursors goes in (the
        cursor's, so it runs after a getMore still in flight there, one fetched ahead included, or
        the user's), or None when nothing needs to be sent; the cursor is closed from here on."""
        self._drop_ahead()
        if self._killed or not self._id:
            self._killed = True
            return None
        self._killed = True
        session, self._session = self._session, None
        user = self._user_session
        if user is not None:
            # In the user's session: it waits there for any running operation. Once that session
            # has ended, in none: as PyMongo kills a cursor collected after its session ended
            # ("later in a different session"), rather than leave it open.
            session = None if user.has_ended or user._capsule is None else user._capsule
        return self._id, session

    def _kill_request(self) -> Any:
        """Send killCursors without waiting (fire and forget: the job never raises), if needed.
        Returns the job's future, or None when nothing needs to be (or can be) sent."""
        job = self._kill_job()
        if job is None:
            return None
        return kill_cursor_request(self._core, self._db_name, self._coll_name, job[0],
                                   self._server_id, job[1])

    async def close(self) -> None:
        """Close the cursor: killCursors if the server still has it, under the cursor's timeout
        afresh (or the caller's block); its errors are not raised, as PyMongo's are not."""
        self._data.clear()
        await kill_cursor(self, self._timeout)

    async def __aenter__(self) -> "AsyncCommandCursor":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __del__(self, _exiting: Any = _core.exiting) -> None:
        # Collected unfinished: kill it on the server, if a loop is running to carry the request
        # (not at interpreter exit: the server times the cursor out).
        if getattr(self, "_killed", True) or _exiting():
            return
        try:
            self._kill_request()
        except Exception:
            pass  # no running loop or a closed client: the server times the cursor out


async def kill_cursor(cursor: AsyncCommandCursor, timeout: "_csot.CursorTimeout") -> None:
    """close()'s killCursors, awaited: under the timeout, afresh (maxTimeMS, and a deadline for
    the wait), else fire and forget."""
    with timeout.close():
        if _csot.deadline() is None:
            future = cursor._kill_request()
            if future is not None:
                await future
            return
        core = cursor._core
        job = cursor._kill_job()
        if job is None or core is None or core.closed:
            return
        try:
            await run_job(core, _core.OP_COMMAND, _core.RES_NONE, cursor._db_name, None,
                          kill_cursors_command(cursor._coll_name, job[0]), None, None,
                          _core.FLAG_QUIET, cursor._server_id, job[1], None, _csot.COMMAND)
        except (PyMongoError, InvalidOperation):
            pass  # a close that timed out: the server drops the cursor in time


def _retrieve(future: Any) -> None:
    if not future.cancelled():
        future.exception()


def getmore_command(cursor_id: int, coll_name: str, batch_size: int | None,
                    max_time_ms: int | None, comment: Any) -> dict[str, Any]:
    """A getMore, with PyMongo's optional fields."""
    cmd: dict[str, Any] = {"getMore": Int64(cursor_id), "collection": coll_name}
    if batch_size:
        cmd["batchSize"] = batch_size
    if max_time_ms is not None:
        cmd["maxTimeMS"] = max_time_ms
    if comment is not None:
        cmd["comment"] = comment
    return cmd  # encoded by the core into the job (client.c)


async def run_getmore(core: Any, user_session: Any, capsule: Any, result_kind: int, db_name: str,
                      cmd: Any, codec_options: CodecOptions, server_id: int,
                      timed: int = _csot.UNBOUNDED) -> Any:
    """One getMore job on the cursor's server: in the user's explicit session if the cursor was
    opened in one, else in the cursor's own session (``capsule``). Never retried (the retryable
    reads specification); ``timed``: what it asks under a deadline."""
    if user_session is not None:
        return await run_in_session(core, user_session, _core.OP_READ, result_kind, db_name, None,
                                    cmd, None, codec_options, 0, server_id, None, timed)
    return await run_job(core, _core.OP_READ, result_kind, db_name, None, cmd, None, codec_options,
                         0, server_id, capsule, None, timed)


async def run_cursor_command(
    client: "AsyncMongoClient",
    db_name: str,
    command: Mapping[str, Any],
    codec_options: CodecOptions,
    opts: bytes | None = None,
    op: int = _core.OP_READ,
    read_prefs: bytes | None = None,
    batch_size: int | None = None,
    max_await_time_ms: int | None = None,
    comment: Any = None,
    cursor_class: type = AsyncCommandCursor,
    session: Any = None,
    timeout: "_csot.CursorTimeout | None" = None,
) -> Any:
    """Run a command that opens a cursor (its server pinned for the getMores) and wrap it;
    ``timeout``: the cursor's timeout rule (made in the operation's block, which this runs in)."""
    if timeout is None:
        timeout = _csot.CursorTimeout(None)
    first = await run_in_session(
        client._core, session, op, _core.RES_CURSOR, db_name, None,
        _encode(command, False, codec_options), opts, codec_options, _core.FLAG_PIN, 0, read_prefs,
        timeout.first_flags(),
    )
    return cursor_class(client, db_name, first, codec_options, batch_size, max_await_time_ms, comment,
                        session, timeout)


__all__ = ["AsyncCommandCursor", "CursorBatch"]

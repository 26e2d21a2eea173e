"""AsyncCursor: the cursor of ``AsyncCollection.find``, with PyMongo's async cursor API.

Building it does no I/O: options are checked and stored (chainable until the first fetch). The first
fetch is one ``find`` job with its server pinned; the getMores go through an ``AsyncCommandCursor``
(asyncmongo.command_cursor) that carries the server-side cursor, one job per batch, and kills it when closed
or collected. Never leave a server cursor open behind an error or a cancellation (PyMongo closes
it).

Timeouts: the cursor takes the timeout in force when find() is called (a ``pymongo.timeout()``
block, else the collection's timeoutMS) and ``timeout_mode`` (asyncmongo's: PyMongo 4.20 has none):
CURSOR_LIFETIME, the default, bounds the find and every getMore by one deadline, counted from the
first fetch; ITERATION bounds the find and then each next call; a tailable cursor's next call that
finds an empty batch (StopAsyncIteration while still alive) leaves its deadline to the next one, so
that the getMores it takes to produce a document share one timeout, as the specification's next
does. A timed-out getMore ends the iteration; close() still kills the server cursor, under the
timeout afresh.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bson.code import Code
from bson.codec_options import CodecOptions
from pymongo import helpers_shared
from pymongo.collation import validate_collation_or_none
from pymongo.common import validate_boolean, validate_is_document_type, validate_is_mapping
from pymongo.cursor_shared import _CURSOR_CLOSED_ERRORS, _QUERY_OPTIONS, CursorType
from pymongo.errors import ConnectionFailure, InvalidOperation, OperationFailure, PyMongoError

from asyncmongo import _core, _csot
from asyncmongo._common import check_command_size as _check_size
from asyncmongo._common import encode as _encode
from asyncmongo._execute import run_job
from asyncmongo.client_session import check_session, run_in_session
from asyncmongo.command_cursor import AsyncCommandCursor, kill_cursor

if TYPE_CHECKING:
    from asyncmongo.collection import AsyncCollection


# Legacy "$query" modifiers a filter may carry, and the find command fields they become (PyMongo's).
_MODIFIERS = {
    "$query": "filter",
    "$orderby": "sort",
    "$hint": "hint",
    "$comment": "comment",
    "$maxScan": "maxScan",
    "$maxTimeMS": "maxTimeMS",
    "$max": "max",
    "$min": "min",
    "$returnKey": "returnKey",
    "$showRecordId": "showRecordId",
    "$showDiskLoc": "showRecordId",
    "$snapshot": "snapshot",
}
# Query flags and the find command fields that carry them (exhaust has none: batches are fetched
# one getMore at a time, which returns the same documents).
_FLAG_FIELDS = (
    ("tailable", 2),
    ("oplogReplay", 8),
    ("noCursorTimeout", 16),
    ("awaitData", 32),
    ("allowPartialResults", 128),
)
_CURSOR_TYPES = (
    CursorType.NON_TAILABLE,
    CursorType.TAILABLE,
    CursorType.TAILABLE_AWAIT,
    CursorType.EXHAUST,
)
# Options copied by clone(): the query, not the state of its iteration.
_CLONED = (
    "_spec", "_projection", "_skip", "_limit", "_max_time_ms", "_max_await_time_ms", "_comment",
    "_max", "_min", "_ordering", "_explain", "_hint", "_batch_size", "_max_scan", "_query_flags",
    "_collation", "_empty", "_show_record_id", "_return_key", "_allow_disk_use", "_snapshot",
    "_exhaust", "_has_filter", "_cursor_type", "_let", "_timeout_mode",
)


class AsyncCursor:
    """A cursor over the results of ``find``: ``async for``, ``next()``, ``to_list()``,
    ``close()``, ``async with``, and PyMongo's chainable query modifiers (before iteration)."""

    def __init__(
        self,
        collection: "AsyncCollection",
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | Iterable[str] | None = None,
        skip: int = 0,
        limit: int = 0,
        no_cursor_timeout: bool = False,
        cursor_type: int = CursorType.NON_TAILABLE,
        sort: Any = None,
        allow_partial_results: bool = False,
        oplog_replay: bool = False,
        batch_size: int = 0,
        collation: Any = None,
        hint: Any = None,
        max_scan: int | None = None,
        max_time_ms: int | None = None,
        max: Any = None,
        min: Any = None,
        return_key: bool | None = None,
        show_record_id: bool | None = None,
        snapshot: bool | None = None,
        comment: Any = None,
        session: Any = None,
        allow_disk_use: bool | None = None,
        let: Mapping[str, Any] | None = None,
        timeout_mode: str | None = None,
    ) -> None:
        # The state close() and the properties read comes first, so a refused argument leaves a
        # cursor object that is still safe to collect.
        self._collection = collection
        self._inner: AsyncCommandCursor | None = None  # the server cursor, once the find ran
        self._id: int | None = None
        self._killed = False
        self._data: deque[Any] = deque()
        self._address: tuple[str, int] | None = None
        self._retrieved = 0
        self._exhaust = False
        self._session = check_session(collection.database.client, session)

        # PyMongo's checks, in its order and with its exception types.
        spec: Mapping[str, Any] = filter or {}
        validate_is_mapping("filter", spec)
        if not isinstance(skip, int):
            raise TypeError(f"skip must be an instance of int, not {type(skip)}")
        if not isinstance(limit, int):
            raise TypeError(f"limit must be an instance of int, not {type(limit)}")
        validate_boolean("no_cursor_timeout", no_cursor_timeout)
        if cursor_type not in _CURSOR_TYPES:
            raise ValueError("not a valid value for cursor_type")
        validate_boolean("allow_partial_results", allow_partial_results)
        validate_boolean("oplog_replay", oplog_replay)
        if not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an integer, not {type(batch_size)}")
        if batch_size < 0:
            raise ValueError("batch_size must be >= 0")
        if allow_disk_use is not None:
            allow_disk_use = validate_boolean("allow_disk_use", allow_disk_use)
        if projection is not None:
            projection = helpers_shared._fields_list_to_dict(projection, "projection")
        if let is not None:
            validate_is_document_type("let", let)

        self._let = let
        self._spec = spec
        self._has_filter = filter is not None
        self._projection = projection
        self._skip = skip
        self._limit = limit
        self._batch_size = batch_size
        self._ordering = (sort and helpers_shared._index_document(sort)) or None
        self._max_scan = max_scan
        self._explain = False
        self._comment = comment
        self._max_time_ms = max_time_ms
        self._max_await_time_ms: int | None = None
        self._max = max
        self._min = min
        self._collation = validate_collation_or_none(collation)
        self._return_key = return_key
        self._show_record_id = show_record_id
        self._allow_disk_use = allow_disk_use
        self._snapshot = snapshot
        self._set_hint(hint)
        # find()[5:5] in PyMongo's sync API; kept for clone() parity.
        self._empty = False
        self._codec_options: CodecOptions = collection.codec_options
        self._query_flags = cursor_type
        self._cursor_type = cursor_type
        if no_cursor_timeout:
            self._query_flags |= _QUERY_OPTIONS["no_timeout"]
        if allow_partial_results:
            self._query_flags |= _QUERY_OPTIONS["partial"]
        if oplog_replay:
            self._query_flags |= _QUERY_OPTIONS["oplog_replay"]
        self._dbname = collection.database.name
        self._collname = collection.name
        if cursor_type == CursorType.EXHAUST:
            if limit:
                raise InvalidOperation("Can't use limit and exhaust together.")
            self._exhaust = True
        tailable = bool(cursor_type & _QUERY_OPTIONS["tailable_cursor"])
        self._csot = _csot.CursorTimeout(
            collection._timeout, timeout_mode, tailable,
            bool(cursor_type & _QUERY_OPTIONS["await_data"]),
        )
        self._timeout_mode = timeout_mode
        # A tailable next call's deadline, left to the next call by an empty batch (ITERATION).
        self._next_deadline: float | None = None

    # ---- properties ------------------------------------------------------------------------

    @property
    def collection(self) -> "AsyncCollection":
        """The collection this cursor iterates."""
        return self._collection

    @property
    def session(self) -> Any:
        """The explicit session this cursor runs in, or None."""
        return self._session

    @property
    def retrieved(self) -> int:
        """The number of documents retrieved so far."""
        return self._retrieved

    @property
    def alive(self) -> bool:
        """True while documents may still come: buffered ones, or a cursor not yet run or still open
        on the server (a tailable cursor stays alive after an empty batch)."""
        return bool(self._data) or not self._killed

    @property
    def cursor_id(self) -> int | None:
        """The server's cursor id: None before the first fetch, 0 once the server closed it."""
        return self._id

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) of the server the query ran on, None before it ran (or for a client of
        several hosts)."""
        return self._address

    # ---- chainable modifiers (PyMongo's checks) -------------------------------------------

    def _check_okay_to_chain(self) -> None:
        if self._retrieved or self._id is not None:
            raise InvalidOperation("cannot set options after executing query")

    def _set_hint(self, index: Any) -> None:
        if index is None:
            self._hint = None
        elif isinstance(index, str):
            self._hint = index
        else:
            self._hint = helpers_shared._index_document(index)

    async def add_option(self, mask: int) -> "AsyncCursor":
        """Set query flags by bit mask (``cursor_type`` values, 16 no timeout, 128 partial)."""
        if not isinstance(mask, int):
            raise TypeError(f"mask must be an int, not {type(mask)}")
        self._check_okay_to_chain()
        if mask & _QUERY_OPTIONS["exhaust"]:
            if self._limit:
                raise InvalidOperation("Can't use limit and exhaust together.")
            self._exhaust = True
        self._query_flags |= mask
        return self

    def remove_option(self, mask: int) -> "AsyncCursor":
        if not isinstance(mask, int):
            raise TypeError(f"mask must be an int, not {type(mask)}")
        self._check_okay_to_chain()
        if mask & _QUERY_OPTIONS["exhaust"]:
            self._exhaust = False
        self._query_flags &= ~mask
        return self

    def allow_disk_use(self, allow_disk_use: bool) -> "AsyncCursor":
        if not isinstance(allow_disk_use, bool):
            raise TypeError(f"allow_disk_use must be a bool, not {type(allow_disk_use)}")
        self._check_okay_to_chain()
        self._allow_disk_use = allow_disk_use
        return self

    def limit(self, limit: int) -> "AsyncCursor":
        """At most ``limit`` documents (0: no limit; negative: at most that many, in one batch)."""
        if not isinstance(limit, int):
            raise TypeError(f"limit must be an integer, not {type(limit)}")
        if self._exhaust:
            raise InvalidOperation("Can't use limit and exhaust together.")
        self._check_okay_to_chain()
        self._empty = False
        self._limit = limit
        return self

    def batch_size(self, batch_size: int) -> "AsyncCursor":
        if not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an integer, not {type(batch_size)}")
        if batch_size < 0:
            raise ValueError("batch_size must be >= 0")
        self._check_okay_to_chain()
        self._batch_size = batch_size
        return self

    def skip(self, skip: int) -> "AsyncCursor":
        if not isinstance(skip, int):
            raise TypeError(f"skip must be an integer, not {type(skip)}")
        if skip < 0:
            raise ValueError("skip must be >= 0")
        self._check_okay_to_chain()
        self._skip = skip
        return self

    def max_time_ms(self, max_time_ms: int | None) -> "AsyncCursor":
        if not isinstance(max_time_ms, int) and max_time_ms is not None:
            raise TypeError(f"max_time_ms must be an integer or None, not {type(max_time_ms)}")
        self._check_okay_to_chain()
        self._max_time_ms = max_time_ms
        return self

    def max_await_time_ms(self, max_await_time_ms: int | None) -> "AsyncCursor":
        """The time a getMore of a TAILABLE_AWAIT cursor may wait; ignored by other cursors."""
        if not isinstance(max_await_time_ms, int) and max_await_time_ms is not None:
            raise TypeError(
                f"max_await_time_ms must be an integer or None, not {type(max_await_time_ms)}"
            )
        self._check_okay_to_chain()
        if self._query_flags & CursorType.TAILABLE_AWAIT:
            self._max_await_time_ms = max_await_time_ms
        return self

    def max_scan(self, max_scan: int | None) -> "AsyncCursor":
        self._check_okay_to_chain()
        self._max_scan = max_scan
        return self

    def max(self, spec: Any) -> "AsyncCursor":
        if not isinstance(spec, (list, tuple)):
            raise TypeError(f"spec must be an instance of list or tuple, not {type(spec)}")
        self._check_okay_to_chain()
        self._max = dict(spec)
        return self

    def min(self, spec: Any) -> "AsyncCursor":
        if not isinstance(spec, (list, tuple)):
            raise TypeError(f"spec must be an instance of list or tuple, not {type(spec)}")
        self._check_okay_to_chain()
        self._min = dict(spec)
        return self

    def sort(self, key_or_list: Any, direction: int | str | None = None) -> "AsyncCursor":
        self._check_okay_to_chain()
        keys = helpers_shared._index_list(key_or_list, direction)
        self._ordering = helpers_shared._index_document(keys)
        return self

    def hint(self, index: Any) -> "AsyncCursor":
        self._check_okay_to_chain()
        self._set_hint(index)
        return self

    def comment(self, comment: Any) -> "AsyncCursor":
        self._check_okay_to_chain()
        self._comment = comment
        return self

    def where(self, code: str | Code) -> "AsyncCursor":
        """Add a ``$where`` clause (a JavaScript expression) to the filter."""
        self._check_okay_to_chain()
        if not isinstance(code, Code):
            code = Code(code)
        # Never change a filter mapping the caller gave us.
        spec: Any = dict(self._spec) if self._has_filter else self._spec
        spec["$where"] = code
        self._spec = spec
        return self

    def collation(self, collation: Any) -> "AsyncCursor":
        self._check_okay_to_chain()
        self._collation = validate_collation_or_none(collation)
        return self

    def __getitem__(self, index: Any) -> Any:
        raise IndexError("AsyncCursor does not support indexing")

    # ---- copies ----------------------------------------------------------------------------

    def clone(self) -> "AsyncCursor":
        """A new, unevaluated cursor with this one's query and options."""
        return self._clone(True)

    def _clone(self, deepcopy: bool) -> "AsyncCursor":
        other = self.__class__(self._collection)
        other._session = self._session
        for name in _CLONED:
            value = getattr(self, name)
            other.__dict__[name] = copy.deepcopy(value) if deepcopy else value
        # Its own timeout: the one in force now, as a new find() would have.
        flags = other._query_flags
        other._csot = _csot.CursorTimeout(
            self._collection._timeout, other._timeout_mode,
            bool(flags & _QUERY_OPTIONS["tailable_cursor"]), bool(flags & _QUERY_OPTIONS["await_data"]),
        )
        return other

    def __copy__(self) -> "AsyncCursor":
        return self._clone(False)

    def __deepcopy__(self, memo: Any) -> "AsyncCursor":
        return self._clone(True)

    # ---- the find command ------------------------------------------------------------------

    def _find_command(self, read_concern: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The find command, as PyMongo builds it from the same options."""
        spec = self._spec
        cmd: dict[str, Any] = {"find": self._collname}
        if "$query" in spec:
            for key, value in spec.items():
                if key not in ("$explain", "$readPreference"):
                    cmd[_MODIFIERS.get(key, key)] = value
        else:
            cmd["filter"] = spec
        if self._ordering:
            cmd["sort"] = self._ordering
        if self._hint:
            cmd["hint"] = self._hint
        if self._let:
            cmd["let"] = self._let
        if self._comment:
            cmd["comment"] = self._comment
        if self._max_scan:
            cmd["maxScan"] = self._max_scan
        if self._max_time_ms is not None and self._csot.timeout is None:
            cmd["maxTimeMS"] = self._max_time_ms  # deprecated: a timeout replaces it
        if self._max:
            cmd["max"] = self._max
        if self._min:
            cmd["min"] = self._min
        if self._return_key is not None:
            cmd["returnKey"] = self._return_key
        if self._show_record_id is not None:
            cmd["showRecordId"] = self._show_record_id
        if self._snapshot is not None:
            cmd["snapshot"] = self._snapshot
        if self._projection:
            cmd["projection"] = self._projection
        if self._skip:
            cmd["skip"] = self._skip
        limit, batch_size = self._limit, self._batch_size
        if limit:
            cmd["limit"] = abs(limit)
            if limit < 0:
                cmd["singleBatch"] = True
        if batch_size:
            # Equal limit and batchSize: one more in the batch spares a getMore that finds nothing.
            cmd["batchSize"] = batch_size + 1 if limit == batch_size else batch_size
        if read_concern:
            cmd["readConcern"] = read_concern
        if self._collation:
            cmd["collation"] = self._collation
        if self._allow_disk_use is not None:
            cmd["allowDiskUse"] = self._allow_disk_use
        flags = self._query_flags
        if flags:
            for field, bit in _FLAG_FIELDS:
                if flags & bit:
                    cmd[field] = True
        return cmd

    def _check_min_max(self) -> None:
        if (self._min or self._max) and not self._hint:
            raise InvalidOperation(
                "Passing a 'hint' is required when using the min/max query option to ensure the "
                "query utilizes the correct index"
            )

    # ---- fetching --------------------------------------------------------------------------

    async def _send_find(self) -> None:
        """The first batch: one find job, its server pinned for the getMores."""
        self._check_min_max()
        coll = self._collection
        client = coll.database.client
        timeout = self._csot
        if timeout.await_data:
            _csot.check_max_await(self._max_await_time_ms, timeout.timeout)
        cmd = self._find_command()  # encoded by the core into the job, size checked (client.c)
        try:
            with timeout.fetch(self._next_deadline):
                first = await run_in_session(
                    client._core, self._session, _core.OP_READ, _core.RES_CURSOR, self._dbname,
                    None, cmd, coll._find_opts(), self._codec_options, _core.FLAG_PIN, 0,
                    coll._read_prefs, timeout.first_flags(),
                )
        except BaseException:
            # Nothing opened on the server that we know of; the cursor is done (as PyMongo's).
            self._killed = True
            raise
        ns = first.namespace
        if ns and "." in ns:  # getMores go to the namespace the server names
            self._dbname, self._collname = ns.split(".", 1)
        else:
            first = _core.CursorBatch((first.cursor_id, f"{self._dbname}.{self._collname}")
                                      + tuple(first)[2:])
        inner = AsyncCommandCursor(client, self._dbname, first, self._codec_options, None,
                                   self._max_await_time_ms, self._comment, self._session, timeout,
                                   fetch_ahead=False)
        self._inner = inner
        self._data = inner._data
        self._address = client._server_address(first.server_id)
        self._after_batch(len(inner._data))
        if self._limit and self._id and self._limit <= self._retrieved:
            await self._die()
        else:
            self._fetch_ahead()

    def _get_more_size(self) -> int:
        """How many documents the next getMore asks for: no more than the limit leaves."""
        if self._limit:
            n = abs(self._limit) - self._retrieved
            return min(n, self._batch_size) if self._batch_size else n
        return self._batch_size

    def _fetch_ahead(self) -> None:
        """Start the next getMore while the application reads this batch (not for tailable
        cursors: their getMore waits on the server for new documents)."""
        if self._inner is not None and self._id and not (
                self._query_flags & _QUERY_OPTIONS["tailable_cursor"]):
            self._inner._fetch_ahead(self._get_more_size())

    async def _send_get_more(self) -> None:
        """One getMore job (or the one fetched ahead), asking no more than the limit leaves."""
        inner = self._inner
        assert inner is not None
        inner._batch_size = self._get_more_size()
        inner._max_await_time_ms = self._max_await_time_ms
        try:
            await inner._get_more(self._next_deadline)
        except PyMongoError as exc:
            if exc.timeout and (self._csot.timeout is not None or _csot.TIMEOUT.get() is not None):
                # Timed out under timeoutMS: the iteration ends here (the batch may be lost); the
                # server cursor stays for close() to kill under the timeout afresh (the CSOT
                # specification). A socketTimeoutMS timeout is a connection failure like any.
                self._killed = True
                raise
            await self._get_more_failed(exc)
            return
        except BaseException:
            # Cancelled (or interrupted): the batch may have been taken on the server and dropped
            # here, so continuing would skip documents. Close, as PyMongo does, without waiting
            # for the server: the canceller must not wait for a round trip.
            self._killed = True
            self._kill_soon()
            raise
        self._after_batch(len(inner._data))
        if self._limit and self._id and self._limit <= self._retrieved:
            await self._die()
        else:
            self._fetch_ahead()

    async def _get_more_failed(self, exc: PyMongoError) -> None:
        """A getMore failed (not a timeout): close the cursor as PyMongo does and raise, but for a
        tailable cursor whose capped collection rolled over, which just ends."""
        inner = self._inner
        assert inner is not None
        if isinstance(exc, OperationFailure):
            if exc.code in _CURSOR_CLOSED_ERRORS:
                inner._killed = True  # the server has no cursor left to kill
            await self._die()
            tailable = self._query_flags & _QUERY_OPTIONS["tailable_cursor"]
            if exc.code in _CURSOR_CLOSED_ERRORS and tailable:
                return
        elif isinstance(exc, ConnectionFailure):
            inner._killed = True  # the connection is gone: so is the cursor, or it times out
            self._killed = True
        else:
            self._killed = True
            self._kill_soon()
        raise exc

    def _after_batch(self, count: int) -> None:
        inner = self._inner
        self._retrieved += count
        self._id = inner._id  # type: ignore[union-attr]
        if self._id == 0:
            self._killed = True

    async def _refresh(self) -> int:
        if self._data or self._killed:
            return len(self._data)
        if self._inner is None:
            await self._send_find()
        elif self._id:
            await self._send_get_more()
        return len(self._data)

    async def next(self) -> Any:
        """The next document; ``StopAsyncIteration`` at the end."""
        if self._empty:
            raise StopAsyncIteration
        if self._data:
            return self._data.popleft()
        tail = self._csot.tailable
        if tail and self._next_deadline is None:
            self._next_deadline = self._csot.next_deadline()
        try:
            found = await self._refresh()
        except BaseException:
            self._next_deadline = None
            raise
        if found:
            self._next_deadline = None
            return self._data.popleft()
        if not tail or not self.alive:
            self._next_deadline = None
        raise StopAsyncIteration

    async def __anext__(self) -> Any:
        return await self.next()

    def __aiter__(self) -> "AsyncCursor":
        return self

    async def try_next(self) -> Any:
        """The next document, or None if none is buffered and one fetch brings none (a tailable
        cursor at its end; an exhausted one)."""
        if self._empty:
            return None
        if self._data or await self._refresh():
            return self._data.popleft()
        return None

    async def to_list(self, length: int | None = None) -> list[Any]:
        """The remaining documents (at most ``length``), fetched a batch per job."""
        if length is not None:
            if not isinstance(length, int):
                raise TypeError(f"length must be an int or None, not {type(length)}")
            if length < 1:
                raise ValueError("to_list() length must be greater than 0")
        out: list[Any] = []
        if self._empty:
            return out
        while self.alive:
            if not (self._data or await self._refresh()):
                break
            data = self._data
            if length is None:
                out.extend(data)
                data.clear()
            else:
                for _ in range(min(len(data), length - len(out))):
                    out.append(data.popleft())
                if len(out) >= length:
                    break
        return out

    # ---- closing ---------------------------------------------------------------------------

    def _kill_soon(self) -> None:
        """Ask the server to drop the cursor without waiting (never raises)."""
        inner = self._inner
        if inner is None:
            return
        try:
            inner._kill_request()
        except Exception:
            pass  # no running loop: the server times the cursor out

    async def _die(self) -> None:
        """Close the server cursor, keeping the documents already buffered."""
        self._killed = True
        inner = self._inner
        if inner is None:
            return
        future = inner._kill_request()
        if future is not None:
            await future

    async def close(self) -> None:
        """Close the cursor: killCursors on the server if it is still open there, under the
        cursor's timeout afresh (or the caller's ``pymongo.timeout()``)."""
        self._data.clear()
        self._killed = True
        inner = self._inner
        if inner is not None:
            await kill_cursor(inner, self._csot)

    async def rewind(self) -> "AsyncCursor":
        """Close, and reset to the unevaluated state: iterating again runs the query again."""
        await self.close()
        self._reset()
        return self

    def _reset(self) -> None:
        # The unevaluated state (the server cursor, if any, is closed or being killed).
        self._inner = None
        self._data = deque()
        self._id = None
        self._address = None
        self._retrieved = 0
        self._killed = False

    async def __aenter__(self) -> "AsyncCursor":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # An unfinished cursor collected: its AsyncCommandCursor sends killCursors from its __del__.

    # ---- other queries on the same filter --------------------------------------------------

    async def explain(self) -> Any:
        """The server's explain output for this query (its default verbosity)."""
        c = self.clone()
        c._explain = True
        if c._limit:  # explain a single batch, as PyMongo does
            c._limit = -abs(c._limit)
        c._check_min_max()
        coll = self._collection
        # Explain takes no readConcern of its own: the collection's goes in the find (as PyMongo).
        rc = coll.read_concern
        cmd = {"explain": c._find_command(rc.document if rc.level else None)}
        core = coll.database.client._core
        raw = _check_size(_encode(cmd, False, self._codec_options))
        # The specification's explain: the timeout in force (or the collection's) gives it maxTimeMS.
        with _csot.TimeoutContext(coll._timeout) if (
                coll._timeout is not None and _csot.TIMEOUT.get() is None) else _csot.Block(None):
            return await run_job(core, _core.OP_COMMAND, _core.RES_DOC, self._dbname, None, raw,
                                 None, self._codec_options, 0, 0, None, coll._read_prefs)

    async def distinct(self, key: str) -> list[Any]:
        """The distinct values of ``key`` among the documents this query matches."""
        options: dict[str, Any] = {}
        if self._spec:
            options["query"] = self._spec
        if self._max_time_ms is not None:
            options["maxTimeMS"] = self._max_time_ms
        if self._comment:
            options["comment"] = self._comment
        if self._collation is not None:
            options["collation"] = self._collation
        return await self._collection.distinct(key, session=self._session, **options)


__all__ = ["AsyncCursor"]

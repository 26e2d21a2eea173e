"""Explicit sessions and transactions, with PyMongo's ``AsyncClientSession`` API.

A session is a libmongoc session on a libmongoc client of its own (design.md): the core starts it on
a worker the first time it is used, runs its operations one at a time, and gives the client back when
the session ends. The transaction state is kept here, as PyMongo keeps it, so that misuse raises
PyMongo's ``InvalidOperation`` before anything is sent; libmongoc adds the transaction fields
(``txnNumber``, ``autocommit``, ``startTransaction``) and retries commits as the specification says.
"""

from __future__ import annotations

import asyncio
import random
import time
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, TypeVar

from pymongo.client_session import SessionOptions, TransactionOptions
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    InvalidOperation,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.write_concern import WriteConcern

from asyncmongo import _core, _csot
from asyncmongo._common import encode as _encode
from asyncmongo._common import kill_cursor_request
from asyncmongo._execute import run_job

if TYPE_CHECKING:
    from asyncmongo.client import AsyncMongoClient

_T = TypeVar("_T")

# The session bound by ``async with session.bind():``: operations given no session= use it.
_BOUND: "ContextVar[AsyncClientSession | None]" = ContextVar("asyncmongo_bound_session",
                                                             default=None)


class _BoundSession:
    """What ``AsyncClientSession.bind()`` returns: binds the session for the block (this task and
    the tasks it starts), then ends it if asked."""

    def __init__(self, session: "AsyncClientSession", end_session: bool) -> None:
        self._session = session
        self._end_session = end_session
        self._token: "Token[AsyncClientSession | None] | None" = None

    async def __aenter__(self) -> "AsyncClientSession":
        self._token = _BOUND.set(self._session)
        return self._session

    async def __aexit__(self, *exc: Any) -> None:
        if self._token is not None:
            _BOUND.reset(self._token)
            self._token = None
        if self._end_session:
            await self._session.end_session()


def _absent(name: str, why: str) -> NotImplementedError:
    return NotImplementedError(f"AsyncClientSession.{name} is not supported by asyncmongo: {why}")


# libmongoc keeps the session's id and clock inside its session object, which only the worker
# running the session's operation may touch: none is readable from the loop thread.
_IN_LIBMONGOC = "libmongoc keeps the session's id and cluster/operation times to itself"

# The convenient API's retry budget, as the transactions specification sets it.
_WITH_TRANSACTION_TIMEOUT = 120.0
_BACKOFF_INITIAL = 0.005
_BACKOFF_MAX = 0.5
_EMPTY = _encode({})
# Server codes after which a commit's outcome is unknown (the transactions specification).
_UNKNOWN_COMMIT_CODES = frozenset({64, 50, 91, 189, 262, 6, 7, 89, 9001, 10107, 11600, 11602, 13435, 13436})


class _TxnState:
    NONE = 1
    STARTING = 2
    IN_PROGRESS = 3
    COMMITTED = 4
    COMMITTED_EMPTY = 5
    ABORTED = 6


class _TransactionContext:
    """``async with await session.start_transaction():`` commits on a clean exit, aborts on an
    exception (unless the block already ended the transaction)."""

    def __init__(self, session: "AsyncClientSession") -> None:
        self._session = session

    async def __aenter__(self) -> "_TransactionContext":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._session.in_transaction:
            if exc_type is None:
                await self._session.commit_transaction()
            else:
                await self._session.abort_transaction()


def _encode_txn_opts(opts: TransactionOptions) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if opts.read_concern is not None and opts.read_concern.level is not None:
        doc["readConcern"] = opts.read_concern.document
    if opts.write_concern is not None and opts.write_concern.document:
        doc["writeConcern"] = opts.write_concern.document
    if opts.read_preference is not None:
        doc["readPreference"] = opts.read_preference.document
    if opts.max_commit_time_ms is not None:
        doc["maxCommitTimeMS"] = opts.max_commit_time_ms
    return doc


def _within_time_limit(start: float, backoff: float = 0.0) -> bool:
    """Whether with_transaction may try again: time left under the timeout in force, and within
    the specification's 120 seconds."""
    left = _csot.remaining()
    if left is not None and left <= 0:
        return False
    return time.monotonic() + backoff - start < _WITH_TRANSACTION_TIMEOUT


def _timeout_error(error: BaseException) -> PyMongoError:
    """The error with_transaction raises when its time is up: PyMongo's ExecutionTimeout under a
    timeout (NetworkTimeout after the 120 seconds without one), saying the last error and keeping
    its labels."""
    if _csot.remaining() is not None:
        exc: PyMongoError = ExecutionTimeout(str(error), 50,
                                             {"ok": 0, "errmsg": str(error), "code": 50})
    else:
        exc = NetworkTimeout(str(error))
    if isinstance(error, PyMongoError):
        exc._error_labels = set(error._error_labels)
    return exc


class AsyncClientSession:
    """A causally consistent (by default) session: ``async with client.start_session() as s:``,
    then ``session=s`` on operations. One operation at a time: a session used by two tasks at once
    raises ``InvalidOperation``.

    Its timeout (``start_session(default_timeout=...)``, else the client's timeoutMS) applies to
    commit_transaction, abort_transaction, with_transaction and end_session; the operations run
    inside a with_transaction callback share the deadline of the whole call."""

    def __init__(self, client: "AsyncMongoClient", options: SessionOptions,
                 default_timeout: float | None = None) -> None:
        self._client = client
        self._options = options
        self._timeout = _csot.inherit(default_timeout, client._timeout)
        # The timeout block of a with_transaction call in progress (its operations may not
        # override it, as the specification says), or None.
        self._txn_block: tuple[Any, Any] | None = None
        self._capsule: Any = None
        self._starting: asyncio.Future[Any] | None = None
        self._ended = False
        self._busy = False
        self._state = _TxnState.NONE
        self._txn_opts: TransactionOptions | None = None
        # Futures of cancelled operations still running that opened a server cursor: the cursor is
        # killed in this session when they complete, so the session's end waits for them.
        self._orphans: set[asyncio.Future[Any]] = set()

    # ---- PyMongo's properties --------------------------------------------------------------

    @property
    def client(self) -> "AsyncMongoClient":
        return self._client

    @property
    def options(self) -> SessionOptions:
        return self._options

    @property
    def has_ended(self) -> bool:
        return self._ended

    @property
    def in_transaction(self) -> bool:
        return self._state in (_TxnState.STARTING, _TxnState.IN_PROGRESS)

    def bind(self, end_session: bool = True) -> _BoundSession:
        """``async with session.bind():`` passes this session to every operation of the block
        that names none (PyMongo's ``bind``); the session ends at the block's end unless
        ``end_session=False``."""
        return _BoundSession(self, end_session)

    def __copy__(self) -> "AsyncClientSession":
        raise TypeError(f"A {self.__class__.__name__} cannot be copied")

    # Deliberately absent (tests/test_api_parity.py): each raises, naming itself.
    @property
    def session_id(self) -> Any:
        raise _absent("session_id", _IN_LIBMONGOC)

    @property
    def cluster_time(self) -> Any:
        raise _absent("cluster_time", _IN_LIBMONGOC)

    @property
    def operation_time(self) -> Any:
        raise _absent("operation_time", _IN_LIBMONGOC)

    def advance_cluster_time(self, cluster_time: Any) -> None:
        raise _absent("advance_cluster_time", _IN_LIBMONGOC)

    def advance_operation_time(self, operation_time: Any) -> None:
        raise _absent("advance_operation_time", _IN_LIBMONGOC)

    # ---- life ------------------------------------------------------------------------------

    async def __aenter__(self) -> "AsyncClientSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.end_session()

    @_csot.apply
    async def end_session(self) -> None:
        """End the session: an open transaction is aborted, the server session is given back."""
        if self._ended:
            return
        self._ended = True
        self._state = _TxnState.NONE
        capsule, self._capsule = self._capsule, None
        if self._orphans:
            # Their cursors' kills go in this session, before its end (they run now, in turn).
            await asyncio.wait(list(self._orphans))
        core = self._client._core
        if capsule is not None and core is not None and not core.closed:
            await self._session_job(core, capsule, _core.OP_SESSION_END)

    def _check_ended(self) -> None:
        if self._ended:
            raise InvalidOperation("Cannot use ended session")

    @staticmethod
    async def _session_job(core: Any, capsule: Any, op: int, opts: Mapping[str, Any] | None = None) -> Any:
        """One job of the session's life (``_core.OP_SESSION_*``, ``_core.OP_TXN_*``), under the
        timeout in force."""
        kind = _core.RES_DOC if op == _core.OP_TXN_COMMIT else _core.RES_SESSION
        return await run_job(core, op, kind, "admin", None, _encode(opts or {}), None, None, 0,
                             0, capsule)

    async def _ensure_started(self) -> Any:
        """The core's session (a capsule), started on a worker the first time it is needed."""
        if self._capsule is None:
            core = self._client._core
            opts = {"causalConsistency": bool(self._options.causal_consistency),
                    "snapshot": bool(self._options.snapshot)}
            capsule = await self._session_job(core, None, _core.OP_SESSION_START, opts)
            if self._ended:  # ended while it was starting: give it back
                await self._session_job(core, capsule, _core.OP_SESSION_END)
                self._check_ended()
            self._capsule = capsule
        return self._capsule

    # ---- running operations ----------------------------------------------------------------

    def _check_owner(self, client: "AsyncMongoClient") -> None:
        if client is not self._client:
            raise InvalidOperation("Can only use session with the AsyncMongoClient that started it")
        self._check_ended()

    async def _run(self, core: Any, op: int, kind: int, db: str, coll: str | None, cmd: bytes,
                   opts: bytes | None, codec: Any, flags: int = 0, server_id: int = 0,
                   read_prefs: bytes | None = None, timed: int | None = None,
                   on_orphan: Callable[[Any, Any], None] | None = None) -> Any:
        """One operation in this session: refused while another runs. The core runs a session's
        jobs one at a time, in submission order: cancelled while queued, the operation is never
        sent; while running, it finishes before the session's next job starts. Cancelled inside a
        transaction, it aborts the transaction (it may have run on the server): the abort is
        queued behind it, so the operation never runs outside the transaction."""
        self._check_ended()
        block = self._txn_block
        if block is not None and (_csot.TIMEOUT.get(), _csot.DEADLINE.get()) != block:
            raise InvalidOperation(
                "Cannot override the timeout of an operation run in a with_transaction callback: "
                "the whole with_transaction call has the session's timeout"
            )
        if self._busy:
            raise InvalidOperation(
                "this session is in use by another operation: a session runs one operation at a "
                "time (use one session per task)"
            )
        self._busy = True
        try:
            capsule = await self._ensure_started()
            if self._state == _TxnState.STARTING:
                self._state = _TxnState.IN_PROGRESS
            elif self._state in (_TxnState.COMMITTED, _TxnState.COMMITTED_EMPTY, _TxnState.ABORTED):
                self._state = _TxnState.NONE  # the next operation runs outside the transaction
            in_txn = self.in_transaction
            try:
                closer = None if on_orphan is None else lambda batch: on_orphan(batch, capsule)
                return await run_job(core, op, kind, db, coll, cmd, opts, codec, flags, server_id,
                                     capsule, read_prefs, timed, closer, self._orphans)
            except asyncio.CancelledError:
                if in_txn:
                    self._abort_after_cancel(core, capsule)
                raise
            except ConnectionFailure as exc:
                # The transactions specification: a network or server selection error of an
                # operation inside a transaction (a timeout at the loop's deadline included) is
                # transient, as PyMongo labels it (libmongoc labels the reply, which a network
                # error has not); a commit's is labelled by commit_transaction.
                if in_txn and op != _core.OP_TXN_COMMIT:
                    exc._add_error_label("TransientTransactionError")
                raise
        finally:
            self._busy = False

    def _abort_after_cancel(self, core: Any, capsule: Any) -> None:
        """Abort the transaction a cancelled operation was in, without waiting: the abort takes
        its turn after that operation, and the session's next job after the abort."""
        self._state = _TxnState.ABORTED
        try:
            core.submit(_core.OP_TXN_ABORT, _core.RES_NONE, "admin", None, _EMPTY, None, None,
                        _core.FLAG_QUIET, 0, capsule)
        except InvalidOperation:  # the client closed meanwhile: its close ends the session
            pass

    # ---- transactions ----------------------------------------------------------------------

    def _inherit(self, name: str, value: Any) -> Any:
        if value is not None:
            return value
        defaults = self._options.default_transaction_options
        if defaults is not None and getattr(defaults, name) is not None:
            return getattr(defaults, name)
        return getattr(self._client, name)

    async def start_transaction(
        self,
        read_concern: ReadConcern | None = None,
        write_concern: WriteConcern | None = None,
        read_preference: _ServerMode | None = None,
        max_commit_time_ms: int | None = None,
    ) -> _TransactionContext:
        """Start a transaction; ``async with await session.start_transaction():`` commits it at the
        end of the block (aborts it on an exception)."""
        self._check_ended()
        if self._options.snapshot:
            raise InvalidOperation("Transactions are not supported in snapshot sessions")
        if self.in_transaction:
            raise InvalidOperation("Transaction already in progress")
        if max_commit_time_ms is None and self._options.default_transaction_options is not None:
            max_commit_time_ms = self._options.default_transaction_options.max_commit_time_ms
        opts = TransactionOptions(
            self._inherit("read_concern", read_concern),
            self._inherit("write_concern", write_concern),
            self._inherit("read_preference", read_preference),
            max_commit_time_ms,
        )
        sent = _encode_txn_opts(opts)
        self._timed_commit(sent)
        if self._busy:
            raise InvalidOperation("this session is in use by another operation")
        self._busy = True
        try:
            capsule = await self._ensure_started()
            await self._session_job(self._client._core, capsule, _core.OP_TXN_START, sent)
        finally:
            self._busy = False
        self._txn_opts = opts
        self._state = _TxnState.STARTING
        return _TransactionContext(self)

    def _timed_commit(self, sent: dict[str, Any]) -> None:
        """Under a timeout, the deprecated maxCommitTimeMS and wtimeout give way to it. libmongoc
        1.23 builds the commitTransaction command itself, with the maxTimeMS fixed when the
        transaction starts: the commit's maxTimeMS is the time left then under the block in force
        (with_transaction's), else the session's timeout, which a commit gets afresh. A timeout
        given to the commit alone bounds it client-side, without maxTimeMS."""
        if _csot.enabled():
            left = _csot.remaining()
            limit = None if left is None or left == float("inf") else max(1, int(left * 1000))
        elif self._timeout is not None:
            limit = int(self._timeout * 1000) or None
        else:
            return
        sent.pop("maxCommitTimeMS", None)
        if limit is not None:
            sent["maxCommitTimeMS"] = limit
        wc = sent.get("writeConcern")
        if wc and "wtimeout" in wc:
            # Without it; an empty one still travels, so that libmongoc does not fall back to the
            # client's (and its wtimeout).
            sent["writeConcern"] = {k: v for k, v in wc.items() if k != "wtimeout"}

    @_csot.apply
    async def commit_transaction(self) -> None:
        """Commit; PyMongo's rules: committing an empty transaction sends nothing, a commit may be
        retried, a commit after an abort is refused. An unknown outcome carries the
        ``UnknownTransactionCommitResult`` label."""
        self._check_ended()
        state = self._state
        if state == _TxnState.NONE:
            raise InvalidOperation("No transaction started")
        if state in (_TxnState.STARTING, _TxnState.COMMITTED_EMPTY):
            self._state = _TxnState.COMMITTED_EMPTY
            await self._finish(_core.OP_TXN_COMMIT)  # nothing reached the server: none is sent
            return
        if state == _TxnState.ABORTED:
            raise InvalidOperation("Cannot call commitTransaction after calling abortTransaction")
        self._state = _TxnState.IN_PROGRESS
        try:
            await self._finish(_core.OP_TXN_COMMIT)
        except ConnectionFailure as exc:
            exc._remove_error_label("TransientTransactionError")
            exc._add_error_label("UnknownTransactionCommitResult")
            raise
        except WTimeoutError as exc:
            exc._add_error_label("UnknownTransactionCommitResult")
            raise
        except OperationFailure as exc:
            if exc.code in _UNKNOWN_COMMIT_CODES:
                exc._add_error_label("UnknownTransactionCommitResult")
            raise
        finally:
            self._state = _TxnState.COMMITTED

    @_csot.apply
    async def abort_transaction(self) -> None:
        """Abort; errors of the abort itself are ignored, as the specification says."""
        self._check_ended()
        state = self._state
        if state == _TxnState.NONE:
            raise InvalidOperation("No transaction started")
        if state == _TxnState.ABORTED:
            raise InvalidOperation("Cannot call abortTransaction twice")
        if state in (_TxnState.COMMITTED, _TxnState.COMMITTED_EMPTY):
            raise InvalidOperation("Cannot call abortTransaction after calling commitTransaction")
        try:
            await self._finish(_core.OP_TXN_ABORT)
        except (OperationFailure, ConnectionFailure):
            pass
        finally:
            self._state = _TxnState.ABORTED

    async def _finish(self, op: int) -> Any:
        if self._busy:
            raise InvalidOperation("this session is in use by another operation")
        self._busy = True
        try:
            return await self._session_job(self._client._core, self._capsule, op)
        finally:
            self._busy = False

    @_csot.apply
    async def with_transaction(
        self,
        callback: Callable[["AsyncClientSession"], Awaitable[_T]],
        read_concern: ReadConcern | None = None,
        write_concern: WriteConcern | None = None,
        read_preference: _ServerMode | None = None,
        max_commit_time_ms: int | None = None,
    ) -> _T:
        """Run ``callback(session)`` in a transaction and commit it, retrying the whole transaction
        on ``TransientTransactionError`` and the commit on ``UnknownTransactionCommitResult``, for
        up to 120 seconds (the convenient transaction API of the specification).

        Under a timeout (a ``pymongo.timeout()`` block, else the session's) the whole call has one
        deadline: the callback's operations in this session share it and may not override it
        (InvalidOperation); when it is up, the last error is raised as an ExecutionTimeout. The
        abort after a failed callback gets the timeout afresh, as the specification says."""
        start = time.monotonic()
        retry = 0
        last_error: BaseException | None = None
        timeout = _csot.TIMEOUT.get()
        while True:
            if retry:
                backoff = random.random() * min(_BACKOFF_INITIAL * 1.5**retry, _BACKOFF_MAX)
                if not _within_time_limit(start, backoff):
                    assert last_error is not None
                    raise _timeout_error(last_error) from last_error
                await asyncio.sleep(backoff)
            retry += 1
            await self.start_transaction(read_concern, write_concern, read_preference,
                                         max_commit_time_ms)
            self._txn_block = (timeout, _csot.DEADLINE.get()) if timeout is not None else None
            try:
                result = await callback(self)
            except BaseException as exc:
                last_error = exc
                self._txn_block = None
                if self.in_transaction:
                    with _csot.Refreshed(timeout):
                        await self.abort_transaction()
                if (isinstance(exc, PyMongoError)
                        and exc.has_error_label("TransientTransactionError")):
                    if _within_time_limit(start):
                        continue
                    raise _timeout_error(exc) from exc
                raise
            self._txn_block = None
            if not self.in_transaction:
                return result  # the callback committed or aborted itself
            while True:
                try:
                    await self.commit_transaction()
                except PyMongoError as exc:
                    last_error = exc
                    if (exc.has_error_label("UnknownTransactionCommitResult")
                            and not (isinstance(exc, OperationFailure) and exc.code == 50)):
                        if not _within_time_limit(start):
                            raise _timeout_error(exc) from exc
                        continue
                    if exc.has_error_label("TransientTransactionError"):
                        if not _within_time_limit(start):
                            raise _timeout_error(exc) from exc
                        break
                    raise
                return result


async def run_in_session(core: Any, session: AsyncClientSession | None, op: int, kind: int, db: str,
                         coll: str | None, cmd: bytes, opts: bytes | None, codec: Any,
                         flags: int = 0, server_id: int = 0, read_prefs: bytes | None = None,
                         timed: int | None = None) -> Any:
    """Submit one job (``core.submit``'s arguments), in ``session`` if given, and await it with the
    design's cancellation and timeout rules (``timed``: what it asks under a deadline, see
    ``_execute.run_job``). A job that opens a server cursor (``FLAG_PIN``) and is cancelled while
    it runs has that cursor killed once it completes."""
    opens_cursor = flags & _core.FLAG_PIN
    if session is None:
        closer = (lambda batch: _close_orphan(core, db, batch, batch.session)) if opens_cursor else None
        return await run_job(core, op, kind, db, coll, cmd, opts, codec, flags, server_id, None,
                             read_prefs, timed, closer)
    return await session._run(core, op, kind, db, coll, cmd, opts, codec, flags, server_id,
                              read_prefs, timed,
                              (lambda batch, capsule: _close_orphan(core, db, batch, capsule))
                              if opens_cursor else None)


def _close_orphan(core: Any, db: str, batch: Any, capsule: Any) -> None:
    """Kill the server cursor of a batch nobody will read (its task was cancelled while the
    command ran), in ``capsule``: the cursor's own session, or the user's, behind its operations."""
    if batch.cursor_id and batch.namespace:
        kill_cursor_request(core, db, batch.namespace.split(".", 1)[1], batch.cursor_id,
                            batch.server_id, capsule)


def check_session(client: "AsyncMongoClient", session: Any) -> AsyncClientSession | None:
    """``session=`` of an operation: None, or a live session of this client; with none given, the
    session bound by ``session.bind()``, if any."""
    if session is None:
        bound = _BOUND.get()
        if bound is None:
            return None
        if bound._client is not client:
            raise InvalidOperation(
                "Only the client that created the bound session can perform operations within "
                "its context block."
            )
        return bound
    if not isinstance(session, AsyncClientSession):
        raise TypeError(
            f"session must be an instance of asyncmongo.client_session.AsyncClientSession, "
            f"not {type(session)}"
        )
    session._check_owner(client)
    return session


__all__ = ["AsyncClientSession", "SessionOptions", "TransactionOptions"]

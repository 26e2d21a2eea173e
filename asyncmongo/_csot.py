"""Client Side Operations Timeout on the Python side: the deadline of an operation.

PyMongo's own context is read: ``with pymongo.timeout(s):`` sets the context variables of
``pymongo._csot`` (the timeout of the block and its deadline, capped by any enclosing block), so
asyncmongo's operations nest under ``pymongo.timeout()`` exactly as PyMongo's do. An operation
without a block around it applies the timeout of the object it runs on (client, database,
collection, bucket, session...) the way PyMongo's ``_csot.apply`` does: it opens a block of that
timeout for its whole length, so every job it submits (batches, retries, getMores, the commands of a
GridFS upload) shares one deadline.

A deadline is a ``time.monotonic()`` time, the core's clock (libmongoc's monotonic clock). None:
no timeout applies (legacy behaviour); ``math.inf``: timeoutMS=0, no limit but the deprecated
timeout options are ignored all the same. A leaf module: it imports nothing of asyncmongo but the
core.
"""

from __future__ import annotations

import functools
import math
import time
import weakref
from typing import Any, Callable, TypeVar

import bson
from pymongo import _csot
from pymongo.errors import ConfigurationError, ExecutionTimeout

from asyncmongo import _core

_F = TypeVar("_F", bound=Callable[..., Any])

TIMEOUT = _csot.TIMEOUT
DEADLINE = _csot.DEADLINE
TimeoutContext = _csot._TimeoutContext
_monotonic = time.monotonic

# What a job under a finite deadline asks of the core, by kind of operation (core.submit flags).
COMMAND = _core.FLAG_MAX_TIME                      # maxTimeMS; never retried (runCommand...)
READ = _core.FLAG_MAX_TIME | _core.FLAG_RETRY      # a retryable read
WRITE = _core.FLAG_MAX_TIME | _core.FLAG_RETRY | _core.FLAG_TXN_NUMBER  # a retryable write
UNBOUNDED = 0                                      # bounded client-side only: no maxTimeMS


# The far deadline a job gets under timeoutMS=0: no limit, yet the deprecated socketTimeoutMS no
# longer bounds its socket waits (the core's waits run to the deadline).
UNLIMITED_SECONDS = 1e8


class CoreSettings:
    """What a client's options say about timeouts, for the jobs of its core."""

    __slots__ = ("retry_reads", "retry_writes", "wait_queue_timeout", "__weakref__")

    def __init__(self, retry_reads: bool, retry_writes: bool, wait_queue_timeout: float | None):
        self.retry_reads = retry_reads
        self.retry_writes = retry_writes
        self.wait_queue_timeout = wait_queue_timeout

    def flags(self, op: int, timed: int) -> int:
        """The core flags of a job of kind ``op`` under a finite deadline, asking ``timed``; the
        client's retryReads/retryWrites=false take the retries out."""
        if op == _core.OP_READ:
            if not self.retry_reads:
                timed &= ~_core.FLAG_RETRY
        elif not self.retry_writes:
            timed &= ~(_core.FLAG_RETRY | _core.FLAG_TXN_NUMBER)
        return timed


_SETTINGS: "weakref.WeakKeyDictionary[Any, CoreSettings]" = weakref.WeakKeyDictionary()


def register(core: Any, settings: CoreSettings) -> None:
    _SETTINGS[core] = settings


_DEFAULT_SETTINGS = CoreSettings(True, True, None)


def settings(core: Any) -> CoreSettings:
    return _SETTINGS.get(core, _DEFAULT_SETTINGS)


def apply(func: _F) -> _F:
    """Run the coroutine method in a timeout block of ``self._timeout`` unless a block is open
    already (PyMongo's ``_csot.apply``: an enclosing ``pymongo.timeout()`` wins)."""

    @functools.wraps(func)
    async def csot_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if TIMEOUT.get() is None:
            timeout = self._timeout
            if timeout is not None:
                with TimeoutContext(timeout):
                    return await func(self, *args, **kwargs)
        return await func(self, *args, **kwargs)

    return csot_wrapper  # type: ignore[return-value]


class Refreshed:
    """A block of ``timeout`` seconds from now, whatever block encloses it: the specification's
    refresh (the abort after a with_transaction callback failed, a cursor's close). ``None``
    leaves the context as it is."""

    __slots__ = ("_timeout", "_tokens")

    def __init__(self, timeout: float | None) -> None:
        self._timeout = timeout
        self._tokens: Any = None

    def __enter__(self) -> None:
        t = self._timeout
        if t is not None:
            self._tokens = (TIMEOUT.set(t), DEADLINE.set(_monotonic() + t if t else math.inf))

    def __exit__(self, *exc: Any) -> None:
        if self._tokens is not None:
            TIMEOUT.reset(self._tokens[0])
            DEADLINE.reset(self._tokens[1])


class Block:
    """A block with exactly this timeout and deadline (None: leave the context as it is): how a
    cursor or a stream runs one fetch under its own rule."""

    __slots__ = ("_timeout", "_deadline", "_tokens")

    def __init__(self, timeout: float | None, deadline: float = math.inf) -> None:
        self._timeout = timeout
        self._deadline = deadline
        self._tokens: Any = None

    def __enter__(self) -> None:
        if self._timeout is not None:
            self._tokens = (TIMEOUT.set(self._timeout), DEADLINE.set(self._deadline))

    def __exit__(self, *exc: Any) -> None:
        if self._tokens is not None:
            TIMEOUT.reset(self._tokens[0])
            DEADLINE.reset(self._tokens[1])


class TimeoutMode:
    """A cursor's ``timeout_mode`` (the specification's timeoutMode; asyncmongo's, PyMongo 4.20 has
    none): CURSOR_LIFETIME bounds the cursor's whole life by one timeout (the default of
    non-tailable cursors); ITERATION gives the first command and each next call a timeout of their
    own (tailable cursors and change streams have only this one)."""

    CURSOR_LIFETIME = "cursor_lifetime"
    ITERATION = "iteration"


_MODES = (TimeoutMode.CURSOR_LIFETIME, TimeoutMode.ITERATION)


class CursorTimeout:
    """The timeout rule of one cursor, fixed when it is made: the block in force then (an
    operation's, or a ``pymongo.timeout()``), else ``own`` (its collection's or database's
    timeout), and its mode. A fetch made under another block than the one it was made in (the
    caller's ``pymongo.timeout()``) follows that block; else the cursor's rule."""

    __slots__ = ("timeout", "mode", "created", "lifetime", "tailable", "await_data")

    def __init__(self, own: float | None, mode: Any = None, tailable: bool = False,
                 await_data: bool = False, writes: bool = False) -> None:
        block = TIMEOUT.get()
        self.created = (block, DEADLINE.get()) if block is not None else None
        self.timeout = block if block is not None else own
        if mode is not None:
            if mode not in _MODES:
                raise ValueError(f"timeout_mode must be one of {_MODES}, not {mode!r}")
            if self.timeout is None:
                raise ConfigurationError("timeout_mode requires a timeout (timeoutMS)")
            if tailable and mode == TimeoutMode.CURSOR_LIFETIME:
                raise ConfigurationError("tailable cursors only support timeout_mode ITERATION")
            if writes and mode == TimeoutMode.ITERATION:
                raise ConfigurationError(
                    "timeout_mode ITERATION is not supported by an aggregation with $out or $merge"
                )
        self.mode = mode or (TimeoutMode.ITERATION if tailable else TimeoutMode.CURSOR_LIFETIME)
        self.lifetime: float | None = self.created[1] if self.created is not None else None
        self.tailable = tailable
        self.await_data = await_data

    def start(self) -> "CursorTimeout":
        """A stream's life (GridFS) starts when it is made, not at its first fetch."""
        if self.lifetime is None and self.timeout is not None:
            self.lifetime = _monotonic() + self.timeout if self.timeout else math.inf
        return self

    def first_flags(self) -> int:
        """What the command that opens the cursor asks: maxTimeMS unless the mode is ITERATION
        (a server-side limit would cap the cursor's life), but for awaitData cursors."""
        if self.mode == TimeoutMode.ITERATION and not self.await_data:
            return _core.FLAG_RETRY
        return READ

    def get_more_flags(self, max_await: bool) -> int:
        """A getMore's: no maxTimeMS, but the server's await bounded by the time left."""
        if self.await_data and max_await:
            return _core.FLAG_MAX_TIME | _core.FLAG_MAX_AWAIT
        return UNBOUNDED

    def fetch(self, deadline: float | None = None) -> Any:
        """The block one fetch runs in (``deadline``: that of a next call in progress)."""
        block = TIMEOUT.get()
        if block is not None and (block, DEADLINE.get()) != self.created:
            return Block(None)  # the caller's block rules
        t = self.timeout
        if t is None:
            return Block(None)
        if deadline is not None:
            return Block(t, deadline)
        if self.mode == TimeoutMode.CURSOR_LIFETIME:
            if self.lifetime is None:  # made outside any block: its life starts with its first fetch
                self.lifetime = _monotonic() + t if t else math.inf
            return Block(t, self.lifetime)
        return Block(t, _monotonic() + t if t else math.inf)

    def next_deadline(self) -> float | None:
        """The deadline a next call starting now gets (ITERATION), or None."""
        t = self.timeout
        if t is None or self.mode != TimeoutMode.ITERATION:
            return None
        block = TIMEOUT.get()
        if block is not None and (block, DEADLINE.get()) != self.created:
            return None
        return _monotonic() + t if t else math.inf

    def close(self) -> Any:
        """The block a close() runs its killCursors in: the caller's, else the cursor's timeout
        afresh (the specification's refresh, even after the cursor's life ran out)."""
        block = TIMEOUT.get()
        if block is not None and (block, DEADLINE.get()) != self.created:
            return Block(None)
        return Refreshed(self.timeout)


def within_life(func: _F) -> _F:
    """Run the coroutine method under ``self._csot``'s rule: a GridFS stream's methods all share
    the deadline of its life (the specification), unless the caller's block says otherwise."""

    @functools.wraps(func)
    async def life_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._csot.fetch():
            return await func(self, *args, **kwargs)

    return life_wrapper  # type: ignore[return-value]


def enabled() -> bool:
    """Whether a timeout (timeoutMS, even 0) governs the operation running now: then the
    deprecated options (wTimeoutMS, maxTimeMS, maxCommitTimeMS, socketTimeoutMS) are ignored."""
    return TIMEOUT.get() is not None


def deadline() -> float | None:
    """The deadline of a job submitted now: None (no timeout), a monotonic time, or inf."""
    if TIMEOUT.get() is None:
        return None
    return DEADLINE.get()


def remaining() -> float | None:
    """Seconds left before the deadline (negative once passed), None without a timeout, inf
    with timeoutMS=0."""
    if TIMEOUT.get() is None:
        return None
    return DEADLINE.get() - _monotonic()


def timeout_ms() -> float | None:
    """The timeout of the open block, in milliseconds (for messages), or None."""
    timeout = TIMEOUT.get()
    return None if timeout is None else timeout * 1000


def expired_error() -> ExecutionTimeout:
    """PyMongo's error for an operation whose deadline passed before it could be sent."""
    left = remaining() or 0.0
    msg = f"operation would exceed time limit, remaining timeout:{left:.5f} <= 0 (timeoutMS: " \
          f"{timeout_ms()}ms)"
    return ExecutionTimeout(msg, 50, {"ok": 0, "errmsg": msg, "code": 50})


def write_opts(write_concern: Any, opts: bytes | None) -> bytes | None:
    """A write job's options under a timeout: the deprecated wtimeout is left out of the write
    concern (as PyMongo leaves it out), which then travels explicitly, else ``opts`` as given."""
    if TIMEOUT.get() is None or write_concern is None or "wtimeout" not in write_concern.document:
        return opts
    doc = {k: v for k, v in write_concern.document.items() if k != "wtimeout"}
    return bson.encode({"writeConcern": doc})


def write_concern_doc(write_concern: Any) -> dict[str, Any]:
    """A write concern's document as a command sends it under the timeout in force (no
    wtimeout under one)."""
    doc = write_concern.document
    if TIMEOUT.get() is not None:
        doc.pop("wtimeout", None)
    return doc


def validate_timeout(value: Any) -> float | None:
    """``timeout=`` of asyncmongo's objects: None (inherit), or seconds >= 0 (0: no limit), as
    ``pymongo.timeout()`` takes them."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be None, an int, or a float, not {type(value)}")
    if value < 0 or math.isnan(value):
        raise ValueError("timeout cannot be negative")
    return float(value)


def inherit(value: Any, parent: float | None) -> float | None:
    """A timeout given at a level, else the parent's (the specification's inheritance: a timeout
    once set cannot be unset below; 0 is how to lift it)."""
    value = validate_timeout(value)
    return parent if value is None else value


def check_max_await(max_await_time_ms: Any, timeout: float | None) -> None:
    """The specification's rule for tailable awaitData cursors and change streams: a
    maxAwaitTimeMS that is not below a non-zero timeoutMS can never return an empty batch in
    time."""
    if max_await_time_ms is not None and timeout and max_await_time_ms >= timeout * 1000:
        raise ConfigurationError(
            f"maxAwaitTimeMS ({max_await_time_ms}) must be less than timeoutMS "
            f"({timeout * 1000:g})"
        )


__all__ = [
    "COMMAND", "READ", "WRITE", "UNBOUNDED", "TIMEOUT", "DEADLINE", "Block", "CursorTimeout",
    "Refreshed", "TimeoutContext", "TimeoutMode", "apply", "within_life",
    "check_max_await", "deadline", "enabled", "expired_error", "inherit", "remaining",
    "timeout_ms", "validate_timeout",
]

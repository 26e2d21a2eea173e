"""Awaiting a core future, with the cancellation and timeout rules of the design.

A task cancelled while its operation is still queued takes the job out of the queue, so it is never
sent; once a worker runs it, it finishes there and its result is dropped when it completes.

Under a deadline (Client Side Operations Timeout) the awaiting coroutine gets PyMongo's timeout
error at the deadline, from a timer on the loop, whatever the worker is doing: a job still queued
is taken out, never sent, and fails with WaitQueueTimeoutError (as PyMongo's wait for a pooled
connection); a running one fails with NetworkTimeout, its worker's late result is dropped as a
cancelled job's is (the core's socket waits end at the same deadline, so the worker is free by then
too, and the server was given maxTimeMS). ``waitQueueTimeoutMS`` without a timeout is the same rule
for the queue alone.
A job that opens a server cursor is the exception to the dropping: its result is handed to
``on_orphan``, which closes the cursor the command opened on the server with nobody left to read
or close it.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Callable

from pymongo.errors import NetworkTimeout, WaitQueueTimeoutError

from asyncmongo import _core, _csot

_monotonic = time.monotonic
_TIMEOUT = _csot.TIMEOUT
_DEADLINE = _csot.DEADLINE
_COMMAND_OPS = (_core.OP_COMMAND, _core.OP_READ, _core.OP_WRITE, _core.OP_READ_WRITE)


async def run_job(core: Any, op: int, kind: int, db: str, coll: str | None, cmd: bytes,
                  opts: bytes | None, codec: Any, flags: int = 0, server_id: int = 0,
                  capsule: Any = None, read_prefs: bytes | None = None,
                  timed: int | None = None, on_orphan: Callable[[Any], None] | None = None,
                  orphans: set[asyncio.Future[Any]] | None = None) -> Any:
    """Submit one job (core.submit's arguments) and await it, under the timeout in force (the
    ``pymongo.timeout()`` block, or the one an operation opened for its object's timeout).
    ``timed``: the core flags the job asks under a finite deadline (_csot.COMMAND, READ, WRITE or
    UNBOUNDED); by default a read is a retryable read and any other command has maxTimeMS.
    ``on_orphan``, ``orphans``: see execute()."""
    timeout = _TIMEOUT.get()
    if timeout is None:
        wait = _csot.settings(core).wait_queue_timeout
        future = core.submit(op, kind, db, coll, cmd, opts, codec, flags, server_id, capsule,
                             read_prefs)
        if wait:  # the deprecated waitQueueTimeoutMS: a bound on the wait for a worker alone
            return await execute(core, future, capsule, _monotonic() + wait, None, True,
                                  on_orphan, orphans)
        return await execute(core, future, capsule, on_orphan=on_orphan, orphans=orphans)
    deadline = _DEADLINE.get()
    if op in _COMMAND_OPS:
        if timed is None:
            timed = _csot.READ if op == _core.OP_READ else _csot.COMMAND
        timed = _csot.settings(core).flags(op, timed)
    else:
        timed = 0
    if deadline == math.inf:
        # timeoutMS=0: no limit (no maxTimeMS), retries until one succeeds or an error is not
        # retryable, and socketTimeoutMS ignored all the same (a deadline that never comes).
        future = core.submit(op, kind, db, coll, cmd, opts, codec,
                             flags | (timed & ~(_core.FLAG_MAX_TIME | _core.FLAG_MAX_AWAIT)),
                             server_id, capsule, read_prefs, _monotonic() + _csot.UNLIMITED_SECONDS)
        return await execute(core, future, capsule, on_orphan=on_orphan, orphans=orphans)
    if deadline <= _monotonic():
        raise _csot.expired_error()
    flags |= timed
    future = core.submit(op, kind, db, coll, cmd, opts, codec, flags, server_id, capsule,
                         read_prefs, deadline)
    return await execute(core, future, capsule, deadline, timeout, False, on_orphan, orphans)


async def execute(core: Any, future: "asyncio.Future[Any]", session: Any = None,
                  deadline: float | None = None, timeout: float | None = None,
                  queue_only: bool = False,
                  on_orphan: Callable[[Any], None] | None = None,
                  orphans: set[asyncio.Future[Any]] | None = None) -> Any:
    """The result of a job's future; cancelled, the job is unqueued if no worker took it yet (from
    the run queue, or from the queue of ``session``, the core session capsule it was submitted
    in). ``deadline`` (monotonic, finite): fail at it with PyMongo's timeout error (``timeout``,
    the seconds it was derived from, goes in the message); ``queue_only``: only a job still queued
    then fails (waitQueueTimeoutMS). With ``on_orphan``, a job cancelled while it runs is left to
    complete, and its result (if it did not fail) goes to ``on_orphan``; the future is in
    ``orphans`` until then (a session's end waits for them)."""
    if (deadline is None or deadline == math.inf) and on_orphan is None:
        try:
            return await future
        except asyncio.CancelledError:
            core.cancel(future, session)
            raise
    handle = None
    if deadline is not None and deadline != math.inf:
        handle = future.get_loop().call_later(
            max(0.0, deadline - _monotonic()), _expire, core, future, session, timeout, queue_only
        )
    try:
        if on_orphan is None:
            return await future
        # Shielded: cancelling the task must not cancel the future, whose result is needed.
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if on_orphan is None:
            core.cancel(future, session)
        elif core.cancel(future, session):
            future.cancel()  # never sent: nothing was opened
        else:
            future.add_done_callback(lambda f: _orphaned(f, on_orphan))
            if orphans is not None and not future.done():
                orphans.add(future)
                future.add_done_callback(orphans.discard)
        raise
    finally:
        if handle is not None:
            handle.cancel()


def _expire(core: Any, future: "asyncio.Future[Any]", session: Any, timeout: float | None,
            queue_only: bool) -> None:
    """The deadline passed: fail the future now (the worker's result, if any, is dropped)."""
    if future.done():
        return
    configured = f"timeoutMS: {timeout * 1000:.1f}ms" if timeout is not None else "waitQueueTimeoutMS"
    if core.cancel(future, session):
        future.set_exception(WaitQueueTimeoutError(
            "Timed out while waiting for a worker to run the operation (it was never sent) "
            f"(configured timeouts: {configured})"
        ))
    elif not queue_only:
        future.set_exception(NetworkTimeout(
            f"timed out: the operation did not finish in time (configured timeouts: "
            f"{configured})"
        ))


def _orphaned(future: "asyncio.Future[Any]", on_orphan: Callable[[Any], None]) -> None:
    if not future.cancelled() and future.exception() is None:
        on_orphan(future.result())


"""Awaiting a core future, with the cancellation rule of the design.

A task cancelled while its operation is still queued takes the job out of the queue, so it is never
sent; once a worker runs it, it finishes there and its result is dropped when it completes. A job
that opens a server cursor is the exception: its result is not dropped but handed to ``on_orphan``,
which closes the cursor the command opened on the server with nobody left to read or close it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable


async def execute(core: Any, future: "asyncio.Future[Any]", session: Any = None,
                  on_orphan: Callable[[Any], None] | None = None) -> Any:
    """The result of a job's future; cancelled, the job is unqueued if no worker took it yet (from
    the run queue, or from the queue of ``session``, the core session capsule it was submitted
    in). With ``on_orphan``, a job cancelled while it runs is left to complete, and its result (if
    it did not fail) goes to ``on_orphan``."""
    if on_orphan is None:
        try:
            return await future
        except asyncio.CancelledError:
            core.cancel(future, session)
            raise
    try:
        # Shielded: cancelling the task must not cancel the future, whose result is needed.
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if core.cancel(future, session):
            future.cancel()  # never sent: nothing was opened
        else:
            future.add_done_callback(lambda f: _orphaned(f, on_orphan))
        raise


def _orphaned(future: "asyncio.Future[Any]", on_orphan: Callable[[Any], None]) -> None:
    if not future.cancelled() and future.exception() is None:
        on_orphan(future.result())


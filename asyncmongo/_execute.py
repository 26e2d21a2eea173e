"""Awaiting a core future, with the cancellation rule of the design.

A task cancelled while its operation is still queued takes the job out of the queue, so it is never
sent; once a worker runs it, it finishes there and its result is dropped when it completes.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def execute(core: Any, future: "asyncio.Future[Any]", session: Any = None) -> Any:
    """The result of a job's future; cancelled, the job is unqueued if no worker took it yet (from
    the run queue, or from the queue of ``session``, the core session capsule it was submitted
    in)."""
    try:
        return await future
    except asyncio.CancelledError:
        core.cancel(future, session)
        raise


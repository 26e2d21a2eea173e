"""The Tornado adapter: ``TornadoMongoClient`` and the database, collection, cursor and session objects
it hands out, with the asyncio API's methods, each returning a future Tornado code can await, yield in
a ``gen.coroutine``, pass to ``IOLoop.add_future`` or combine with ``gen.multi``/``WaitIterator``.

Thin wrappers over the asyncio classes (the machinery is asyncmongo._adapter, shared with the
Motor-named modules): every operation is the asyncio method run as a task of the caller's loop.
Nothing here talks to the core directly, and nothing here may block the loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tornado.ioloop import IOLoop

from asyncmongo import _adapter
from asyncmongo.client import AsyncMongoClient

__all__ = [
    "TornadoMongoClient",
    "TornadoDatabase",
    "TornadoCollection",
    "TornadoCursor",
    "TornadoCommandCursor",
    "TornadoClientSession",
    "TornadoChangeStream",
    "CursorFuture",
    "GridFSHandler",
]

TORNADO = _adapter.Family("Tornado", "TornadoMongoClient")
CursorFuture = _adapter.CursorFuture
_unwrap = _adapter.unwrap


class TornadoCursor(_adapter.Cursor, family=TORNADO):
    """The cursor of ``TornadoCollection.find``: AsyncCursor's API (chainable modifiers return this
    cursor; ``next``, ``to_list``, ``close``... return futures), ``async for`` and Motor's
    ``fetch_next``/``next_object``."""


class TornadoCommandCursor(_adapter.CommandCursor, family=TORNADO):
    """A cursor over a command's results (aggregate, list_indexes, list_collections...): the
    AsyncCommandCursor API with futures, ``async for`` and ``fetch_next``/``next_object``."""


class TornadoChangeStream(_adapter.ChangeStream, family=TORNADO):
    """A change stream (``watch()`` on a collection, a database or the client): ``async for``,
    ``async with``, and AsyncChangeStream's ``next``, ``try_next``, ``close`` returning futures."""


class TornadoClientSession(_adapter.ClientSession, family=TORNADO):
    """An explicit session (``client.start_session()``): pass it as ``session=``; ``async with``
    ends it. ``await client.start_session()`` (Motor's spelling) gives the same session."""


class TornadoCollection(_adapter.Collection, family=TORNADO):
    """A collection: AsyncCollection's API, each operation returning a future on the caller's
    loop. ``find()`` returns a TornadoCursor at once; ``coll.sub``/``coll["sub"]`` a
    sub-collection."""


class TornadoDatabase(_adapter.Database, family=TORNADO):
    """A database: AsyncDatabase's API, each operation returning a future on the caller's loop;
    ``db.coll``/``db["coll"]`` a TornadoCollection."""


class TornadoLoops:
    """The loop rules of a client whose ``io_loop`` is a Tornado IOLoop (the Tornado families)."""

    def _check_io_loop(self, io_loop: Any) -> None:
        if not isinstance(io_loop, IOLoop):
            raise TypeError(f"io_loop must be a tornado.ioloop.IOLoop, not {type(io_loop)}")

    def _default_io_loop(self) -> IOLoop:
        return IOLoop.current()

    def _asyncio_loop(self, io_loop: IOLoop) -> asyncio.AbstractEventLoop:
        return io_loop.asyncio_loop  # type: ignore[attr-defined]


class TornadoMongoClient(TornadoLoops, _adapter.Client, family=TORNADO):
    """A MongoDB client for Tornado: ``TornadoMongoClient(host=None, port=None, ..., io_loop=None,
    **kwargs)`` takes what AsyncMongoClient takes (a URI or host names, PyMongo's options) and has
    its API; each operation returns a future (an asyncio future, which is Tornado's): ``await`` it
    in a native coroutine, ``yield`` it in a ``gen.coroutine``, pass it to ``IOLoop.add_future``,
    ``gen.multi`` or ``gen.WaitIterator``.

    Which loop an operation's future belongs to:

    - started from a running loop (a coroutine, a callback, a request handler): that loop, always.
      One client can serve several IOLoops, in several threads, at once;
    - started while no loop is running in the thread (set-up code before ``run_sync`` or
      ``start()``): the client's IOLoop, ``io_loop=`` if given, else the thread's current IOLoop
      when the client is first used. The operation runs once that loop runs. If that IOLoop is
      running in another thread, or closed, the call raises RuntimeError: from another thread, start
      operations from a coroutine of that thread's IOLoop (``io_loop.add_callback``). ``close()``
      after the IOLoop has closed closes the client at once and returns a done future.
    """

    HOST = AsyncMongoClient.HOST
    PORT = AsyncMongoClient.PORT

    def __init__(self, *args: Any, io_loop: IOLoop | None = None, **kwargs: Any) -> None:
        super().__init__(*args, io_loop=io_loop, **kwargs)


# ---- GridFS over HTTP --------------------------------------------------------------------------


def __getattr__(name: str) -> Any:
    # GridFSHandler is imported on first use: serving files is optional, the client is not.
    if name == "GridFSHandler":
        from asyncmongo._tornado_gridfs import GridFSHandler as _Handler

        class GridFSHandler(_Handler):
            __doc__ = _Handler.__doc__

            def initialize(self, database: Any, root_collection: str = "fs") -> None:
                """``database``: a TornadoDatabase (or an AsyncDatabase); ``root_collection``: the
                bucket name."""
                super().initialize(_unwrap(database), root_collection)

        GridFSHandler.__module__ = __name__
        GridFSHandler.__qualname__ = "GridFSHandler"
        globals()["GridFSHandler"] = GridFSHandler
        return GridFSHandler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

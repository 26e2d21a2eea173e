"""Motor's asyncio names over asyncmongo: ``AsyncIOMotorClient`` and the objects it hands out, with
Motor 3.7's API and shapes (see asyncmongo._motor), so that Motor code moves by changing the import::

    from asyncmongo.motor_asyncio import AsyncIOMotorClient

``io_loop=`` takes an asyncio loop; ``get_io_loop()`` is the client's loop. An operation started
from a running loop belongs to that loop; one started before any loop runs goes to the client's loop
(``io_loop=``, else the thread's event loop) and runs once it runs. Nothing here needs Tornado.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asyncmongo import _adapter, _motor

__all__ = [
    "AsyncIOMotorClient",
    "AsyncIOMotorDatabase",
    "AsyncIOMotorCollection",
    "AsyncIOMotorCursor",
    "AsyncIOMotorCommandCursor",
    "AsyncIOMotorLatentCommandCursor",
    "AsyncIOMotorChangeStream",
    "AsyncIOMotorClientSession",
    "AsyncIOMotorGridFSBucket",
    "AsyncIOMotorGridIn",
    "AsyncIOMotorGridOut",
    "AsyncIOMotorGridOutCursor",
    "AsyncIOMotorClientEncryption",
]

ASYNCIO = _adapter.Family("AsyncIOMotor", "AsyncIOMotorClient")


class AsyncIOMotorCursor(_motor.Cursor, family=ASYNCIO):
    """The cursor of ``find()``."""


class AsyncIOMotorCommandCursor(_motor.CommandCursor, family=ASYNCIO):
    """A cursor over a command's results (``await db.list_collections()``...)."""


class AsyncIOMotorLatentCommandCursor(_motor.LatentCommandCursor):
    """The cursor ``aggregate()``, ``list_indexes()`` and ``watch()`` give at once."""


ASYNCIO.cursor_future = AsyncIOMotorLatentCommandCursor


class AsyncIOMotorChangeStream(_motor.ChangeStream, family=ASYNCIO):
    """A change stream: ``async with coll.watch() as stream: async for change in stream``."""


class AsyncIOMotorClientSession(_motor.ClientSession, family=ASYNCIO):
    """A session: ``async with await client.start_session() as s``."""


class AsyncIOMotorCollection(_motor.Collection, family=ASYNCIO):
    """A collection: every operation returns a future; ``find()`` and ``aggregate()`` cursors."""


class AsyncIOMotorDatabase(_motor.Database, family=ASYNCIO):
    """A database: ``db.coll``/``db["coll"]`` are AsyncIOMotorCollections."""


class AsyncIOMotorGridIn(_motor.GridIn, family=ASYNCIO):
    """A GridFS file being uploaded."""


class AsyncIOMotorGridOut(_motor.GridOut, family=ASYNCIO):
    """A GridFS file being downloaded."""


class AsyncIOMotorGridOutCursor(_motor.GridOutCursor, family=ASYNCIO):
    """The cursor of ``AsyncIOMotorGridFSBucket.find()``."""


class AsyncIOMotorGridFSBucket(_motor.GridFSBucket, family=ASYNCIO):
    """A GridFS bucket: ``AsyncIOMotorGridFSBucket(db, bucket_name="fs")``."""


class AsyncioLoops:
    """The loop rules of a client whose ``io_loop`` is an asyncio loop."""

    def _check_io_loop(self, io_loop: Any) -> None:
        if not isinstance(io_loop, asyncio.AbstractEventLoop):
            raise TypeError(
                f"io_loop must be instance of asyncio-compatible event loop, not {io_loop!r}"
            )

    def _default_io_loop(self) -> asyncio.AbstractEventLoop:
        running = _adapter.running_loop()
        return running if running is not None else asyncio.get_event_loop_policy().get_event_loop()

    def _asyncio_loop(self, io_loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
        return io_loop


class AsyncIOMotorClient(AsyncioLoops, _motor.Client, family=ASYNCIO):
    """A MongoDB client with Motor's asyncio API: ``AsyncIOMotorClient(host=None, port=None, ...,
    io_loop=None, **kwargs)`` takes what AsyncMongoClient takes."""


class AsyncIOMotorClientEncryption:
    """Not supported (deliberately absent): asyncmongo has no client-side field level encryption
    (libmongoc's needs libmongocrypt, which the C core is not built with)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "AsyncIOMotorClientEncryption is not supported by asyncmongo: no client-side field "
            "level encryption"
        )

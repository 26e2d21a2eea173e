"""Motor's Tornado names over asyncmongo: ``MotorClient`` and the objects it hands out, with Motor
3.7's API and shapes (see asyncmongo._motor), so that Motor code moves by changing the import::

    from asyncmongo.motor_tornado import MotorClient

``io_loop=`` takes a Tornado IOLoop; ``get_io_loop()`` is the client's IOLoop. The loop rules are
asyncmongo.tornado's (an operation belongs to the loop it was started from). Needs Tornado.
"""

from __future__ import annotations

from typing import Any

from asyncmongo import _adapter, _motor
from asyncmongo.tornado import TornadoLoops

__all__ = [
    "MotorClient",
    "MotorDatabase",
    "MotorCollection",
    "MotorCursor",
    "MotorCommandCursor",
    "MotorLatentCommandCursor",
    "MotorChangeStream",
    "MotorClientSession",
    "MotorGridFSBucket",
    "MotorGridIn",
    "MotorGridOut",
    "MotorGridOutCursor",
    "MotorClientEncryption",
]

MOTOR = _adapter.Family("Motor", "MotorClient")


class MotorCursor(_motor.Cursor, family=MOTOR):
    """The cursor of ``find()``."""


class MotorCommandCursor(_motor.CommandCursor, family=MOTOR):
    """A cursor over a command's results."""


class MotorLatentCommandCursor(_motor.LatentCommandCursor):
    """The cursor ``aggregate()``, ``list_indexes()`` and ``watch()`` give at once."""


MOTOR.cursor_future = MotorLatentCommandCursor


class MotorChangeStream(_motor.ChangeStream, family=MOTOR):
    """A change stream."""


class MotorClientSession(_motor.ClientSession, family=MOTOR):
    """A session: ``async with await client.start_session() as s``."""


class MotorCollection(_motor.Collection, family=MOTOR):
    """A collection."""


class MotorDatabase(_motor.Database, family=MOTOR):
    """A database."""


class MotorGridIn(_motor.GridIn, family=MOTOR):
    """A GridFS file being uploaded."""


class MotorGridOut(_motor.GridOut, family=MOTOR):
    """A GridFS file being downloaded."""


class MotorGridOutCursor(_motor.GridOutCursor, family=MOTOR):
    """The cursor of ``MotorGridFSBucket.find()``."""


class MotorGridFSBucket(_motor.GridFSBucket, family=MOTOR):
    """A GridFS bucket: ``MotorGridFSBucket(db, bucket_name="fs")``."""


class MotorClient(TornadoLoops, _motor.Client, family=MOTOR):
    """A MongoDB client with Motor's Tornado API: ``MotorClient(host=None, port=None, ...,
    io_loop=None, **kwargs)`` takes what AsyncMongoClient takes."""


class MotorClientEncryption:
    """Not supported (deliberately absent): asyncmongo has no client-side field level encryption."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "MotorClientEncryption is not supported by asyncmongo: no client-side field level "
            "encryption"
        )

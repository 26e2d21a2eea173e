"""Helpers shared by the API modules, checks and encodings made before anything is sent.

A leaf module: it imports nothing of asyncmongo but the core, so that any module can use it without
an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions
from bson.int64 import Int64
from pymongo.errors import DocumentTooLarge, InvalidOperation
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.write_concern import WriteConcern

from asyncmongo import _core

if TYPE_CHECKING:
    from asyncmongo.client import AsyncMongoClient

# The server's limits. The core does not expose the hello reply libmongoc keeps: these are
# MongoDB's values, which PyMongo also assumes.
MAX_BSON_SIZE = 16 * 1024 * 1024
MAX_WRITE_BATCH_SIZE = 100_000
# Room PyMongo allows a command beyond the largest document it carries.
COMMAND_OVERHEAD = 16382
MAX_COMMAND_SIZE = MAX_BSON_SIZE + COMMAND_OVERHEAD
# A write command built here (not by libmongoc's bulk API) goes as one command document: its
# statements must leave room for the fields libmongoc adds ($db, lsid, $clusterTime, txnNumber,
# writeConcern, apiVersion).
MAX_STATEMENTS_SIZE = MAX_COMMAND_SIZE - 1024

# The core's encoder (codec.h): bson.encode's result and errors, natively.
encode = _core.bson_encode
_encode = encode


def too_large(size: int) -> DocumentTooLarge:
    return DocumentTooLarge(
        f"BSON document too large ({size} bytes) - the connected server supports BSON document "
        f"sizes up to {MAX_BSON_SIZE} bytes."
    )


def check_command_size(cmd: bytes) -> bytes:
    """Refuse a command the server could not take, before sending it (PyMongo's allowance)."""
    if len(cmd) > MAX_COMMAND_SIZE:
        raise too_large(len(cmd))
    return cmd


def check_options(codec_options: Any, read_preference: Any, write_concern: Any, read_concern: Any) -> None:
    """The type checks (and messages) of PyMongo's BaseObject."""
    if not isinstance(codec_options, CodecOptions):
        raise TypeError("codec_options must be an instance of bson.codec_options.CodecOptions")
    if not isinstance(read_preference, _ServerMode):
        raise TypeError(
            f"{read_preference!r} is not valid for read_preference. See "
            "pymongo.read_preferences for valid options."
        )
    if not isinstance(write_concern, WriteConcern):
        raise TypeError(
            "write_concern must be an instance of pymongo.write_concern.WriteConcern, "
            f"not {type(write_concern)}"
        )
    if not isinstance(read_concern, ReadConcern):
        raise TypeError(
            "read_concern must be an instance of pymongo.read_concern.ReadConcern, "
            f"not {type(read_concern)}"
        )


def read_prefs(read_preference: _ServerMode) -> bytes:
    """A read preference as the core takes it (the ``read_preference`` argument of a job)."""
    return _encode(read_preference.document)


PRIMARY = _encode({"mode": "primary"})


def primary_read(client: "AsyncMongoClient") -> tuple[int, bytes | None]:
    """(op, read_prefs) for a read PyMongo always sends to the primary with no read concern
    (listCollections, listIndexes, listDatabases): a retryable read, unless the client's read
    concern (which libmongoc would add to a read) is set, then a plain command."""
    if client.read_concern.level is not None:
        return _core.OP_COMMAND, None  # a plain command goes to the primary, with no read concern
    return _core.OP_READ, (None if client.read_preference.mode == 0 else PRIMARY)


def namespace_parts(ns: str | None, default: str = "") -> tuple[str, str]:
    """("db", "coll.name") of a namespace "db.coll.name"."""
    ns = ns or default
    db, _, coll = ns.partition(".")
    return db, coll


def kill_cursors_command(coll_name: str, cursor_id: int) -> bytes:
    return _encode({"killCursors": coll_name, "cursors": [Int64(cursor_id)]})


def kill_cursor_request(core: Any, db_name: str, coll_name: str, cursor_id: int, server_id: int,
                        session: Any) -> Any:
    """Send killCursors for a server cursor without waiting (fire and forget: the job never
    raises), on the cursor's server and in ``session`` (a core session capsule: the cursor's, or
    the user's session's, where the kill waits for the operation in flight). Returns the job's
    future, or None when it cannot be sent (the client closed: the server dropped the cursor)."""
    if core is None or core.closed:
        return None
    cmd = kill_cursors_command(coll_name, cursor_id)
    try:
        return core.submit(_core.OP_COMMAND, _core.RES_NONE, db_name, None, cmd, None, None,
                           _core.FLAG_QUIET, server_id, session)
    except InvalidOperation:
        return None

"""What the GridFS modules share: the layout constants of the GridFS spec, the checks every entry
point makes, and the collections a bucket reads and writes. No I/O here."""

from __future__ import annotations

from typing import Any

from gridfs.errors import CorruptGridFile, FileExists, GridFSError, NoFile
from gridfs.grid_file_shared import DEFAULT_CHUNK_SIZE
from pymongo.errors import ConfigurationError, InvalidOperation

from asyncmongo.collection import AsyncCollection

# The exception classes are PyMongo's own, so ``except gridfs.NoFile`` catches ours.
__all__ = [
    "CorruptGridFile",
    "FileExists",
    "GridFSError",
    "NoFile",
    "DEFAULT_CHUNK_SIZE",
]

# Index keys the spec asks drivers to ensure, in key order (the order is part of an index).
FILES_INDEX = (("filename", 1), ("uploadDate", 1))
CHUNKS_INDEX = (("files_id", 1), ("n", 1))

# Chunk documents buffered by an upload before one insert_many sends them: a 50 MB file goes in
# four round trips, and an upload holds at most this much (plus its encoding) in memory.
UPLOAD_BATCH_BYTES = 16 * 1024 * 1024
# BSON overhead of a chunk document beyond its data ({_id, files_id, n, data}).
CHUNK_OVERHEAD = 62

# A download fetches chunks a window at a time: the first window is small (the first bytes come
# quickly, a short read costs little), then each one doubles up to what one server reply carries.
FIRST_WINDOW_BYTES = 1024 * 1024
MAX_WINDOW_BYTES = 16 * 1024 * 1024 - 64 * 1024


def check_session(session: Any) -> None:
    """GridFS spans documents it cannot write atomically: never inside a transaction (PyMongo)."""
    if session is not None and getattr(session, "in_transaction", False):
        raise InvalidOperation("GridFS does not support multi-document transactions")


def check_root(root_collection: Any) -> None:
    if not isinstance(root_collection, AsyncCollection):
        raise TypeError(
            "root_collection must be an instance of AsyncCollection, "
            f"not {type(root_collection)}"
        )


def without_type_registry(collection: AsyncCollection, **options: Any) -> AsyncCollection:
    """The collection with no custom type codecs: GridFS's own fields must decode as BSON types
    (PyMongo does the same)."""
    codec_options = collection.codec_options.with_options(type_registry=None)
    return collection.with_options(codec_options=codec_options, **options)


def chunks_reader(root: AsyncCollection) -> AsyncCollection:
    """The chunks collection for reading: plain dicts whatever the user's document class, since
    chunk documents never leave this package."""
    codec_options = root.codec_options.with_options(type_registry=None, document_class=dict)
    return root.chunks.with_options(codec_options=codec_options)


def check_acknowledged(write_concern: Any, what: str) -> None:
    if not write_concern.acknowledged:
        raise ConfigurationError(f"{what} must use acknowledged write_concern")


def check_chunk_size(chunk_size: Any) -> int:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool):
        raise TypeError(f"chunk size must be an int, not {type(chunk_size)}")
    if chunk_size <= 0:
        raise ValueError("chunk size must be a positive number of bytes")
    return chunk_size

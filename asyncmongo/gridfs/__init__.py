"""GridFS for asyncmongo: PyMongo's ``gridfs.asynchronous`` API (AsyncGridFSBucket, AsyncGridFS,
AsyncGridIn, AsyncGridOut, AsyncGridOutCursor) over asyncmongo's collections, raising PyMongo's own
``gridfs.errors`` classes."""

from asyncmongo.gridfs._bucket import AsyncGridFS, AsyncGridFSBucket
from asyncmongo.gridfs._common import (
    DEFAULT_CHUNK_SIZE,
    CorruptGridFile,
    FileExists,
    GridFSError,
    NoFile,
)
from asyncmongo.gridfs._download import AsyncGridOut, AsyncGridOutCursor
from asyncmongo.gridfs._upload import AsyncGridIn

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "AsyncGridFS",
    "AsyncGridFSBucket",
    "AsyncGridIn",
    "AsyncGridOut",
    "AsyncGridOutCursor",
    "CorruptGridFile",
    "FileExists",
    "GridFSError",
    "NoFile",
]

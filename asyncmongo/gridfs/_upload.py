"""AsyncGridIn: writing a file into GridFS, as PyMongo's ``gridfs.asynchronous.AsyncGridIn``.
Chunks go in batches (one ``insert_many`` per UPLOAD_BATCH_BYTES) and the files document last, on
``close()``; a failed upload removes what it sent, and never what belongs to another file."""

from __future__ import annotations

import datetime
import inspect
import io
import warnings
from typing import Any, Iterable, Mapping

from bson.int64 import Int64
from bson.objectid import ObjectId
from pymongo.errors import BulkWriteError, DuplicateKeyError, InvalidOperation, OperationFailure
from pymongo.helpers_shared import _check_write_command_response
from pymongo.read_preferences import ReadPreference

from asyncmongo import _csot
from asyncmongo.collection import AsyncCollection
from asyncmongo.gridfs._common import (
    CHUNK_OVERHEAD,
    CHUNKS_INDEX,
    DEFAULT_CHUNK_SIZE,
    FILES_INDEX,
    UPLOAD_BATCH_BYTES,
    FileExists,
    check_acknowledged,
    check_chunk_size,
    check_root,
    check_session,
    without_type_registry,
)

_DUPLICATE_KEY_CODES = (11000, 11001, 12582)


def _same_key(spec_key: Mapping[str, Any], wanted: tuple[tuple[str, int], ...]) -> bool:
    """Whether an index's key is ``wanted``: same fields in the same order, directions compared as
    numbers (a server may report 1 as 1.0)."""
    try:
        found = tuple((k, float(v)) for k, v in spec_key.items())
    except (TypeError, ValueError):
        return False  # a text or hashed index on these fields is not the one GridFS needs
    return found == tuple((k, float(v)) for k, v in wanted)


async def _ensure_index(
    collection: AsyncCollection, key: tuple[tuple[str, int], ...], unique: bool, session: Any
) -> None:
    """The GridFS spec's rule: only look at indexes while the collection is empty (a cheap
    find_one), so a bucket in use never pays for it, and create the index only if no index has
    the same key (whatever its name or options)."""
    if await collection.find_one({}, {"_id": 1}, session=session) is not None:
        return
    try:
        cursor = await collection.list_indexes(session=session)
        specs = await cursor.to_list()
    except OperationFailure:  # older servers fail for a collection that does not exist yet
        specs = []
    if any(_same_key(spec.get("key", {}), key) for spec in specs):
        return
    await collection.create_index(list(key), unique=unique, session=session)


def _grid_in_field(name: str, doc: str, read_only: bool = False, closed_only: bool = False,
                   deprecated: bool = False) -> property:
    """A property backed by the files document (PyMongo's GridIn attributes)."""

    def getter(self: "AsyncGridIn") -> Any:
        if deprecated:
            warnings.warn(
                f"GridIn property {name!r} is deprecated and will be removed in PyMongo 5.0",
                DeprecationWarning,
                stacklevel=2,
            )
        if closed_only and not self._closed:
            raise AttributeError(f"can only get {name!r} on a closed file")
        if name == "length":
            return self._file.get(name, 0)
        return self._file.get(name)

    def setter(self: "AsyncGridIn", value: Any) -> None:
        if self._closed:
            raise InvalidOperation(
                "AsyncGridIn does not support __setattr__ after being closed(). Set the "
                "attribute before closing the file or use AsyncGridIn.set() instead"
            )
        self._file[name] = value

    if read_only or closed_only:
        return property(getter, doc=doc)
    return property(getter, setter, doc=doc)


class AsyncGridIn:
    """A file being written to GridFS. Create it with ``AsyncGridFSBucket.open_upload_stream``
    (or ``AsyncGridFS.new_file``); ``await write(data)`` as often as needed, then ``await
    close()``, or use ``async with``."""

    # Attributes of the object itself; any other attribute set is a field of the files document.
    _OWN = frozenset({
        "_session", "_coll", "_files", "_chunks", "_file", "_buffer", "_position",
        "_chunk_number", "_closed", "_ensured_index", "_pending", "_pending_bytes",
        "_sent_chunks", "_conflict", "_csot",
    })

    def __init__(self, root_collection: AsyncCollection, session: Any = None, **kwargs: Any) -> None:
        """``root_collection`` is the bucket's collection (``db.fs``); keyword arguments are
        fields of the files document: ``_id`` (default a new ObjectId), ``filename``,
        ``chunkSize``/``chunk_size`` (default 255 KiB), ``metadata``, ``contentType``/
        ``content_type`` (deprecated by the spec: prefer ``metadata``), ``encoding`` (to write
        ``str``) and any other field."""
        check_root(root_collection)
        check_acknowledged(root_collection.write_concern, "root_collection")
        check_session(session)
        if "content_type" in kwargs:
            kwargs["contentType"] = kwargs.pop("content_type")
        if "chunk_size" in kwargs:
            kwargs["chunkSize"] = kwargs.pop("chunk_size")
        kwargs.setdefault("_id", ObjectId())
        kwargs["chunkSize"] = check_chunk_size(kwargs.get("chunkSize", DEFAULT_CHUNK_SIZE))
        # The emptiness check before creating indexes must see the primary's data.
        coll = without_type_registry(root_collection, read_preference=ReadPreference.PRIMARY)
        own = object.__setattr__
        own(self, "_session", session)
        own(self, "_coll", coll)
        own(self, "_files", coll.files)
        own(self, "_chunks", coll.chunks)
        own(self, "_file", kwargs)
        own(self, "_buffer", bytearray())  # the start of the next chunk, less than a chunk
        own(self, "_position", 0)
        own(self, "_chunk_number", 0)
        own(self, "_closed", False)
        own(self, "_ensured_index", False)
        own(self, "_pending", [])  # chunk documents not sent yet
        own(self, "_pending_bytes", 0)
        own(self, "_sent_chunks", False)
        # Set when the _id turned out to be another file's: from then on nothing under that _id
        # is ours to delete.
        own(self, "_conflict", False)
        # Under a timeout it bounds the stream's whole life, from now (the specification).
        own(self, "_csot", _csot.CursorTimeout(root_collection._timeout).start())

    # ---- the files document as attributes --------------------------------------------------

    _id: Any = _grid_in_field("_id", "The ``_id`` of this file.", read_only=True)
    filename: str | None = _grid_in_field("filename", "Name of this file.")
    name: str | None = _grid_in_field("filename", "Alias for ``filename``.")
    content_type: str | None = _grid_in_field(
        "contentType", "DEPRECATED: mime-type of this file (prefer metadata).", deprecated=True
    )
    length: int = _grid_in_field("length", "Length of this file in bytes (after close).",
                                 closed_only=True)
    chunk_size: int = _grid_in_field("chunkSize", "Chunk size of this file.", read_only=True)
    upload_date: datetime.datetime = _grid_in_field(
        "uploadDate", "When this file was uploaded (after close).", closed_only=True
    )
    md5: str | None = _grid_in_field("md5", "DEPRECATED: always None (no md5 is computed).",
                                     closed_only=True, deprecated=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def __getattr__(self, name: str) -> Any:
        file = self.__dict__.get("_file")
        if file is not None and name in file:
            return file[name]
        raise AttributeError(f"GridIn object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN or name in type(self).__dict__:
            object.__setattr__(self, name, value)
            return
        if self._closed:
            raise AttributeError(
                "AsyncGridIn does not support __setattr__ after being closed(). Set the "
                "attribute before closing the file or use AsyncGridIn.set() instead"
            )
        self._file[name] = value

    @_csot.within_life
    async def set(self, name: str, value: Any) -> None:
        """Set a field of the files document; after close, on the server too."""
        self._file[name] = value
        if self._closed:
            await self._files.update_one(
                {"_id": {"$eq": self._file["_id"]}}, {"$set": {name: value}},
                session=self._session,
            )

    # ---- writing ---------------------------------------------------------------------------

    @_csot.within_life
    async def write(self, data: Any) -> None:
        """Write ``bytes`` (or another bytes-like object), a ``str`` if the file has an
        ``encoding``, or everything a file-like object's ``read()`` returns (``read`` may be a
        coroutine function, e.g. an ``asyncio.StreamReader``). Data is sent a batch of chunks at
        a time; the file exists only after ``close()``."""
        if self._closed:
            raise ValueError("cannot write to a closed file")
        read = getattr(data, "read", None)
        if read is None:
            if isinstance(data, str):
                encoding = self._file.get("encoding")
                if encoding is None:
                    raise TypeError("must specify an encoding for file in order to write str")
                data = data.encode(encoding)
            elif not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError("can only write strings or file-like objects")
            await self._write_bytes(memoryview(data).cast("B"))
            return
        await self._write_from(read)

    async def _write_bytes(self, view: memoryview) -> None:
        size = self._file["chunkSize"]
        buffer = self._buffer
        start = 0
        if buffer:  # complete the chunk begun by an earlier write
            start = min(size - len(buffer), len(view))
            buffer += view[:start]
            if len(buffer) < size:
                return
            await self._add_chunk(bytes(buffer))
            buffer.clear()
        end = len(view)
        while end - start >= size:
            await self._add_chunk(bytes(view[start:start + size]))
            start += size
        buffer += view[start:]

    async def _write_from(self, read: Any) -> None:
        """Copy a file-like source until its ``read`` returns nothing; a source that fails
        aborts the upload (PyMongo does the same)."""
        is_async = inspect.iscoroutinefunction(read)
        size = self._file["chunkSize"]
        while True:
            try:
                piece = read(size - len(self._buffer) if self._buffer else size)
                if is_async or inspect.isawaitable(piece):
                    piece = await piece
            except BaseException:
                await self._abort_quietly()
                raise
            if not piece:
                return
            if isinstance(piece, str):
                encoding = self._file.get("encoding")
                if encoding is None:
                    await self._abort_quietly()
                    raise TypeError("must specify an encoding for file in order to write str")
                piece = piece.encode(encoding)
            await self._write_bytes(memoryview(piece).cast("B"))

    @_csot.within_life
    async def writelines(self, sequence: Iterable[Any]) -> None:
        """Write each item of ``sequence`` (no separators added)."""
        for line in sequence:
            await self.write(line)

    async def _add_chunk(self, data: bytes) -> None:
        self._pending.append({"files_id": self._file["_id"], "n": self._chunk_number, "data": data})
        self._chunk_number += 1
        self._position += len(data)
        self._pending_bytes += len(data) + CHUNK_OVERHEAD
        if self._pending_bytes >= UPLOAD_BATCH_BYTES:
            await self._send_pending()

    async def _ensure_indexes(self) -> None:
        if not self._ensured_index:
            check_session(self._session)
            await _ensure_index(self._files, FILES_INDEX, False, self._session)
            await _ensure_index(self._chunks, CHUNKS_INDEX, True, self._session)
            self._ensured_index = True

    async def _send_pending(self) -> None:
        await self._ensure_indexes()
        docs = self._pending
        if not docs:
            return
        # Cleared first: on failure the batch is not sent twice, and abort() removes what arrived.
        self._pending = []
        self._pending_bytes = 0
        self._sent_chunks = True
        try:
            await self._chunks.insert_many(docs, session=self._session)
        except BulkWriteError as exc:
            # As PyMongo: a duplicate chunk means the _id is taken; otherwise the error a single
            # insert would raise.
            details = exc.details or {}
            write_errors = details.get("writeErrors") or []
            if any(err.get("code") in _DUPLICATE_KEY_CODES for err in write_errors):
                # Ordered inserts stop at the first duplicate, chunk 0 of the other file's: none
                # of this upload's chunks went in.
                self._conflict = True
                self._closed = True
                raise FileExists(f"file with _id {self._file['_id']!r} already exists") from None
            result: dict[str, Any] = {"writeErrors": write_errors}
            wces = details.get("writeConcernErrors")
            if wces:
                result["writeConcernError"] = wces[-1]
            _check_write_command_response(result)
            raise

    # ---- finishing -------------------------------------------------------------------------

    @_csot.within_life
    async def close(self) -> None:
        """Send what is buffered, then the files document: the file exists from now on. Closing
        again does nothing. Raises FileExists if the ``_id`` is taken."""
        if self._closed:
            return
        if self._buffer:
            await self._add_chunk(bytes(self._buffer))
            self._buffer.clear()
        await self._send_pending()  # also ensures the indexes of an empty file's bucket
        file = self._file
        file["length"] = Int64(self._position)  # the spec: length SHOULD be an Int64
        # BSON keeps milliseconds: upload_date then equals what readers will see.
        now = datetime.datetime.now(tz=datetime.timezone.utc)
        file["uploadDate"] = now.replace(microsecond=now.microsecond // 1000 * 1000)
        try:
            await self._files.insert_one(file, session=self._session)
        except DuplicateKeyError:
            self._conflict = True
            self._closed = True
            await self._remove_chunks_beside(file["_id"])
            raise FileExists(f"file with _id {file['_id']!r} already exists") from None
        self._closed = True

    async def _remove_chunks_beside(self, file_id: Any) -> None:
        """After the files document was refused: chunks this upload sent under an _id taken by
        an empty file (which has no chunks of its own) are removed; with any other file, chunk 0
        collided and none of ours went in."""
        if not self._sent_chunks:
            return
        try:
            other = await self._files.find_one({"_id": {"$eq": file_id}}, {"length": 1},
                                               session=self._session)
            if other is not None and not other.get("length"):
                await self._chunks.delete_many({"files_id": {"$eq": file_id}},
                                               session=self._session)
        except Exception:
            pass  # FileExists is the error to report; orphan chunks are all that can remain

    @_csot.within_life
    async def abort(self) -> None:
        """Remove the chunks already sent, and close. After FileExists, the _id belongs to
        another file and nothing is deleted."""
        self._pending = []
        self._pending_bytes = 0
        self._buffer.clear()
        if not self._conflict:
            await self._chunks.delete_many({"files_id": {"$eq": self._file["_id"]}},
                                           session=self._session)
            await self._files.delete_one({"_id": {"$eq": self._file["_id"]}},
                                         session=self._session)
        self._closed = True

    async def _abort_quietly(self) -> None:
        """Abort after a failure, keeping the caller's exception the one that propagates."""
        if not self._sent_chunks:
            self._closed = True
            self._pending = []
            return
        try:
            await self.abort()
        except Exception:
            self._closed = True

    async def __aenter__(self) -> "AsyncGridIn":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        """Close on success. On an exception, remove the chunks sent so far (PyMongo leaves them
        behind); a cancellation only marks the file closed, since waiting on the server would
        delay the cancellation."""
        if exc_type is None:
            await self.close()
        elif issubclass(exc_type, Exception) and not self._closed:
            await self._abort_quietly()
        else:
            self._closed = True
        return False

    # ---- the rest of the file interface ----------------------------------------------------

    def read(self, size: int = -1) -> Any:
        raise io.UnsupportedOperation("read")

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def writeable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

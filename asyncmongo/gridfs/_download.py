"""AsyncGridOut (reading a GridFS file) and AsyncGridOutCursor (a files query yielding them), as
PyMongo's ``gridfs.asynchronous``. Chunks come a window at a time, each window one ``find`` on a
range of ``n`` read to its end: no server cursor is ever left open between reads."""

from __future__ import annotations

import copy
import io
import os
from collections import deque
from typing import Any, Mapping

from pymongo.errors import InvalidOperation

from asyncmongo import _csot
from asyncmongo.cursor import _CLONED, AsyncCursor
from asyncmongo.collection import AsyncCollection
from asyncmongo.gridfs._common import (
    FIRST_WINDOW_BYTES,
    MAX_WINDOW_BYTES,
    CorruptGridFile,
    NoFile,
    check_root,
    check_session,
    chunks_reader,
    without_type_registry,
)

_SEEK_SET, _SEEK_CUR, _SEEK_END = os.SEEK_SET, os.SEEK_CUR, os.SEEK_END
_EMPTY = b""


class _ChunkWindows:
    """The chunks of one file from chunk ``start`` on, fetched a window at a time and checked one
    by one as they are taken, so a damaged file fails at the first byte that cannot be trusted,
    not before. Windows start small (a short read stays cheap) and double up to about one server
    reply (a long read takes few round trips)."""

    def __init__(self, chunks: AsyncCollection, file_id: Any, chunk_size: int, length: int,
                 start: int, session: Any) -> None:
        self._chunks = chunks
        self._file_id = file_id
        self._chunk_size = chunk_size
        self._length = length
        self._count = -(-length // chunk_size)  # chunks the file has
        self._session = session
        self.next_n = start  # the chunk the next take() returns
        self._window_end = start  # chunks below this were asked for
        self._docs: deque[Mapping[str, Any]] = deque()
        self._first_window = max(1, FIRST_WINDOW_BYTES // chunk_size)
        self._max_window = max(1, MAX_WINDOW_BYTES // chunk_size)
        self._window = 0

    def expected_size(self, n: int) -> int:
        if n < self._count - 1:
            return self._chunk_size
        return self._length - self._chunk_size * (self._count - 1)

    def move_to(self, n: int) -> None:
        """Make chunk ``n`` the next one: kept from the window if it is ahead in it (a short
        forward seek costs nothing), else fetched by the next take()."""
        docs = self._docs
        if self.next_n <= n < self._window_end:
            while docs and docs[0].get("n", -1) < n:
                docs.popleft()
        else:
            docs.clear()
            self._window_end = n
        self.next_n = n

    async def _fetch(self, wanted: int) -> None:
        """Ask for the next window: at least ``wanted`` chunks if that fits in one reply."""
        self._window = self._first_window if not self._window else min(
            self._window * 2, self._max_window)
        size = min(max(self._window, wanted), self._max_window)
        start = self.next_n
        end = start + size
        filter: dict[str, Any] = {"files_id": {"$eq": self._file_id}, "n": {"$gte": start}}
        if end < self._count:
            filter["n"]["$lt"] = end
        else:
            # The last window is open ended, so chunks past the end are seen (and refused).
            end = self._count
        check_session(self._session)
        cursor = self._chunks.find(filter, sort=[("n", 1)], session=self._session)
        docs = await cursor.to_list()
        self._docs.extend(docs)
        self._window_end = end

    async def take(self, wanted: int = 1) -> bytes:
        """The data of chunk ``next_n``, checked; ``wanted`` chunks are about to be read."""
        n = self.next_n
        if n >= self._count:
            raise CorruptGridFile(f"no chunk #{n}: the file has {self._count} chunks")
        if not self._docs:
            if n < self._window_end:
                raise CorruptGridFile(f"no chunk #{n}")
            await self._fetch(wanted)
            if not self._docs:
                raise CorruptGridFile(f"no chunk #{n}")
        # Taken off the window only once checked: after an error, a seek elsewhere still finds
        # every chunk that is there.
        doc = self._docs[0]
        if doc.get("n") != n:
            raise CorruptGridFile(
                f"Missing chunk: expected chunk #{n} but found chunk with n={doc.get('n')}"
            )
        data = doc.get("data")
        if not isinstance(data, bytes):
            raise CorruptGridFile(f"chunk #{n} has no binary data")
        expected = self.expected_size(n)
        if len(data) != expected:
            raise CorruptGridFile(
                f"truncated chunk #{n}: expected chunk length to be {expected} but found chunk "
                f"with length {len(data)}"
            )
        self._docs.popleft()
        self.next_n = n + 1
        return data

    def check_end(self) -> None:
        """After the last chunk: the spec tolerates empty extra chunks, not extra data."""
        if self._window_end < self._count:
            return  # the open-ended last window was not fetched: nothing seen past the end
        for doc in self._docs:
            if doc.get("n", -1) >= self._count and doc.get("data"):
                raise CorruptGridFile(
                    f"Extra chunk found: expected {self._count} chunks but found chunk with "
                    f"n={doc['n']}"
                )


def _grid_out_field(name: str, doc: str) -> property:
    def getter(self: "AsyncGridOut") -> Any:
        if not self._file:
            raise InvalidOperation(
                f"You must call AsyncGridOut.open() before accessing the {name} property"
            )
        if name == "length":
            return self._file.get(name, 0)
        return self._file.get(name)

    return property(getter, doc=doc + "\n\nThis attribute is read-only.")


class AsyncGridOut:
    """A GridFS file open for reading: ``read``, ``readchunk``, ``readline``, ``seek``,
    ``tell``, ``async for line in ...``. Returned ready by the bucket's ``open_download_stream*``;
    built directly it needs ``await open()`` before its attributes can be read."""

    def __init__(self, root_collection: AsyncCollection, file_id: Any = None,
                 file_document: Any = None, session: Any = None) -> None:
        check_root(root_collection)
        check_session(session)
        root = without_type_registry(root_collection)
        self._files = root.files
        self._chunks = chunks_reader(root)
        self._file_id = file_id
        self._file = file_document
        self._session = session
        self._position = 0
        self._windows: _ChunkWindows | None = None
        # The chunk the position is in, once read: its number and data.
        self._chunk_n = -1
        self._chunk: bytes = _EMPTY
        self.closed = False
        # Under a timeout it bounds the stream's whole life, from now (the specification).
        self._csot = _csot.CursorTimeout(root_collection._timeout).start()

    _id: Any = _grid_out_field("_id", "The ``_id`` of this file.")
    filename: str | None = _grid_out_field("filename", "Name of this file.")
    name: str | None = _grid_out_field("filename", "Alias for ``filename``.")
    content_type: str | None = _grid_out_field(
        "contentType", "DEPRECATED: mime-type of this file (the spec puts it in metadata).")
    length: int = _grid_out_field("length", "Length of this file in bytes.")
    chunk_size: int = _grid_out_field("chunkSize", "Chunk size of this file.")
    upload_date: Any = _grid_out_field("uploadDate", "When this file was uploaded.")
    aliases: list[str] | None = _grid_out_field("aliases", "DEPRECATED: aliases of this file.")
    metadata: Mapping[str, Any] | None = _grid_out_field("metadata",
                                                         "Metadata attached to this file.")
    md5: str | None = _grid_out_field("md5", "DEPRECATED: the md5 an old driver stored, if any.")

    @_csot.within_life
    async def open(self) -> None:
        """Fetch the files document if it was not given; NoFile if there is none."""
        if not self._file:
            check_session(self._session)
            self._file = await self._files.find_one({"_id": {"$eq": self._file_id}},
                                                    session=self._session)
            if not self._file:
                raise NoFile(
                    f"no file in gridfs collection {self._files!r} with _id {self._file_id!r}"
                )

    def __getattr__(self, name: str) -> Any:
        file = self.__dict__.get("_file")
        if not file:
            raise InvalidOperation(
                f"You must call AsyncGridOut.open() before accessing the {name} property"
            )
        if name in file:
            return file[name]
        raise AttributeError(f"GridOut object has no attribute {name!r}")

    # ---- reading ---------------------------------------------------------------------------

    def _sizes(self) -> tuple[int, int]:
        file = self._file
        return int(file.get("length", 0)), int(file["chunkSize"])

    async def _load_chunk(self, n: int, wanted: int) -> None:
        """Make chunk ``n`` the current chunk."""
        windows = self._windows
        if windows is None:
            length, chunk_size = self._sizes()
            windows = self._windows = _ChunkWindows(self._chunks, self._file["_id"], chunk_size,
                                                    length, n, self._session)
        elif windows.next_n != n:
            windows.move_to(n)
        self._chunk = await windows.take(wanted)
        self._chunk_n = n

    @_csot.within_life
    async def readchunk(self) -> bytes:
        """The rest of the chunk the position is in (a whole chunk when reading from the start
        of one); ``b""`` at the end of the file."""
        await self.open()
        length, chunk_size = self._sizes()
        if self._position >= length:
            return _EMPTY
        n, offset = divmod(self._position, chunk_size)
        if n != self._chunk_n:
            await self._load_chunk(n, 1)
        data = self._chunk[offset:] if offset else self._chunk
        if not data:
            raise CorruptGridFile("truncated chunk")
        self._position += len(data)
        self._after_read(length)
        return data

    @_csot.within_life
    async def _read(self, size: int, line: bool) -> bytes:
        await self.open()
        length, chunk_size = self._sizes()
        remainder = length - self._position
        if remainder <= 0:
            return _EMPTY
        if size < 0 or size > remainder:
            size = remainder
        parts: list[Any] = []
        got = 0
        while got < size:
            n, offset = divmod(self._position, chunk_size)
            if n != self._chunk_n:
                await self._load_chunk(n, -(-(size - got) // chunk_size))
            chunk = self._chunk
            take = min(len(chunk) - offset, size - got)
            if take <= 0:
                raise CorruptGridFile("truncated chunk")
            if line:
                newline = chunk.find(b"\n", offset, offset + take)
                if newline >= 0:
                    take = newline + 1 - offset
                    size = got + take
            parts.append(chunk if take == len(chunk) else memoryview(chunk)[offset:offset + take])
            got += take
            self._position += take
        self._after_read(length)
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return _EMPTY.join(parts)

    def _after_read(self, length: int) -> None:
        if self._position >= length and self._windows is not None:
            self._windows.check_end()

    async def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all the rest if negative or omitted)."""
        return await self._read(size, False)

    async def readline(self, size: int = -1) -> bytes:
        """One line (ending with ``b"\\n"``), or up to ``size`` bytes of it."""
        return await self._read(size, True)

    @_csot.within_life
    async def readlines(self, size: int = -1) -> list[bytes]:
        """The remaining lines; stop after ``size`` bytes if positive."""
        await self.open()
        lines: list[bytes] = []
        total = 0
        while True:
            line = await self._read(-1, True)
            if not line:
                break
            lines.append(line)
            total += len(line)
            if 0 < size < total:
                break
        return lines

    def tell(self) -> int:
        return self._position

    @_csot.within_life
    async def seek(self, pos: int, whence: int = _SEEK_SET) -> int:
        """Move to ``pos`` (from the start, the position or the end per ``whence``); returns the
        new position. A seek costs no I/O: the next read fetches what it needs."""
        if whence == _SEEK_SET:
            new_pos = pos
        elif whence == _SEEK_CUR:
            new_pos = self._position + pos
        elif whence == _SEEK_END:
            await self.open()
            new_pos = int(self._file.get("length", 0)) + pos
        else:
            raise OSError(22, "Invalid value for `whence`")
        if new_pos < 0:
            raise OSError(22, "Invalid value for `pos` - must be positive")
        self._position = new_pos
        return new_pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def __aiter__(self) -> "AsyncGridOut":
        """Iterate over lines (as ``io.IOBase``); use ``readchunk`` for chunks."""
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if line:
            return line
        raise StopAsyncIteration

    async def to_list(self) -> list[bytes]:
        return [line async for line in self]

    async def close(self) -> None:
        """Drop the buffered chunks (no server cursor is ever left open)."""
        self._windows = None
        self._chunk = _EMPTY
        self._chunk_n = -1
        self.closed = True

    async def __aenter__(self) -> "AsyncGridOut":
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        await self.close()
        return False

    def write(self, value: Any) -> Any:
        raise io.UnsupportedOperation("write")

    def writelines(self, lines: Any) -> Any:
        raise io.UnsupportedOperation("writelines")

    def fileno(self) -> Any:
        raise io.UnsupportedOperation("fileno")

    def truncate(self, size: int | None = None) -> Any:
        raise io.UnsupportedOperation("truncate")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class AsyncGridOutCursor(AsyncCursor):
    """A query on the files collection whose results are AsyncGridOut objects (PyMongo's)."""

    def __init__(self, collection: AsyncCollection, filter: Mapping[str, Any] | None = None,
                 skip: int = 0, limit: int = 0, no_cursor_timeout: bool = False,
                 sort: Any = None, batch_size: int = 0, session: Any = None) -> None:
        check_root(collection)
        check_session(session)
        root = without_type_registry(collection)
        self._root_collection = root
        self._gridfs_session = session
        super().__init__(root.files, filter, skip=skip, limit=limit,
                         no_cursor_timeout=no_cursor_timeout, sort=sort, batch_size=batch_size,
                         session=session)

    def _grid_out(self, document: Any) -> AsyncGridOut:
        return AsyncGridOut(self._root_collection, file_document=document,
                            session=self._gridfs_session)

    async def next(self) -> AsyncGridOut:
        return self._grid_out(await super().next())

    async def __anext__(self) -> AsyncGridOut:
        return await self.next()

    async def try_next(self) -> AsyncGridOut | None:
        document = await super().try_next()
        return None if document is None else self._grid_out(document)

    async def to_list(self, length: int | None = None) -> list[AsyncGridOut]:
        return [self._grid_out(doc) for doc in await super().to_list(length)]

    def add_option(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Method does not exist for GridOutCursor")

    def remove_option(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Method does not exist for GridOutCursor")

    def _clone(self, deepcopy: bool) -> "AsyncGridOutCursor":
        # The base class would build the copy on the files collection; it needs the root.
        other = AsyncGridOutCursor(self._root_collection, session=self._gridfs_session)
        for name in _CLONED:
            value = getattr(self, name)
            other.__dict__[name] = copy.deepcopy(value) if deepcopy else value
        return other

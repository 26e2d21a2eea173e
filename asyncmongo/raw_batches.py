"""Raw batch cursors: ``find_raw_batches`` and ``aggregate_raw_batches``, as PyMongo's.

Each item is one server batch as the bytes of its BSON documents end to end (``bson.decode_all``
reads it). The documents are decoded as ``RawBSONDocument`` (no field is parsed: their bytes are
kept) and joined per batch; a batch is what one find/aggregate/getMore job brought.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo.errors import InvalidOperation

from asyncmongo.command_cursor import AsyncCommandCursor
from asyncmongo.cursor import AsyncCursor


def raw_codec_options(codec_options: Any) -> Any:
    return codec_options.with_options(document_class=RawBSONDocument)


def _take_batch(data: deque[Any]) -> bytes:
    batch = b"".join(doc.raw for doc in data)
    data.clear()
    return batch


def _check_length(length: int | None) -> None:
    if length is not None:
        if not isinstance(length, int) or isinstance(length, bool):
            raise TypeError(f"length must be an int or None, not {type(length)}")
        if length < 1:
            raise ValueError("to_list() length must be greater than 0")


class AsyncRawBatchCursor(AsyncCursor):
    """The cursor of ``find_raw_batches``: AsyncCursor's modifiers; iteration yields ``bytes``,
    one server batch each."""

    def __init__(self, collection: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(collection, *args, **kwargs)
        self._codec_options = raw_codec_options(self._codec_options)

    async def next(self) -> bytes:
        if self._empty:
            raise StopAsyncIteration
        if self._data or await self._refresh():
            return _take_batch(self._data)
        raise StopAsyncIteration

    async def __anext__(self) -> bytes:
        return await self.next()

    async def try_next(self) -> bytes | None:
        if self._empty:
            return None
        if self._data or await self._refresh():
            return _take_batch(self._data)
        return None

    async def to_list(self, length: int | None = None) -> list[bytes]:
        """The remaining batches (at most ``length`` of them)."""
        _check_length(length)
        out: list[bytes] = []
        while length is None or len(out) < length:
            batch = await self.try_next()
            if batch is None:
                break
            out.append(batch)
            if not self.alive:
                break
        return out

    def __getitem__(self, index: Any) -> Any:
        raise InvalidOperation("Cannot call __getitem__ on AsyncRawBatchCursor")


class AsyncRawBatchCommandCursor(AsyncCommandCursor):
    """The cursor of ``aggregate_raw_batches``: iteration yields ``bytes``, one batch each."""

    async def next(self) -> bytes:
        while not self._data:
            if self._killed:
                raise StopAsyncIteration
            await self._get_more()
        return _take_batch(self._data)

    __anext__ = next

    async def try_next(self) -> bytes | None:
        if not self._data and not self._killed:
            await self._get_more()
        return _take_batch(self._data) if self._data else None

    async def to_list(self, length: int | None = None) -> list[bytes]:
        _check_length(length)
        out: list[bytes] = []
        while length is None or len(out) < length:
            if not self._data:
                if self._killed:
                    break
                await self._get_more()
                continue
            out.append(_take_batch(self._data))
        return out

    def __getitem__(self, index: Any) -> Any:
        raise InvalidOperation("Cannot call __getitem__ on AsyncRawBatchCommandCursor")


__all__ = ["AsyncRawBatchCursor", "AsyncRawBatchCommandCursor"]

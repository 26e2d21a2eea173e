"""GridFSHandler: a Tornado RequestHandler serving GridFS files over HTTP, as Motor's
``motor.web.GridFSHandler`` did (same hooks), with conditional requests and byte ranges.

It streams a file a chunk at a time, waiting for each to be written to the socket before reading
the next, so a large file never sits in memory whole. Re-exported as ``asyncmongo.tornado.
GridFSHandler``.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import inspect
import mimetypes
from collections.abc import Mapping
from typing import Any

import tornado.web
from gridfs.errors import NoFile
from tornado.iostream import StreamClosedError
from tornado.log import app_log

from asyncmongo.database import AsyncDatabase
from asyncmongo.gridfs import AsyncGridFSBucket, AsyncGridOut

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _utc(value: datetime.datetime) -> datetime.datetime:
    # BSON dates are UTC; a client without tz_aware returns them naive.
    if value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc)


def _parse_http_date(value: str) -> datetime.datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return _utc(parsed) if parsed is not None else None


def _parse_range(header: str, length: int) -> tuple[int, int] | None | bool:
    """One ``bytes=`` range as (start, end exclusive); None if the header is to be ignored
    (malformed, or several ranges: the whole file is sent); False if it cannot be satisfied."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:  # the last N bytes
            suffix = int(last)
            if suffix < 0:
                return None
            if suffix == 0 or length == 0:
                return False
            return max(0, length - suffix), length
        start = int(first)
        end = int(last) + 1 if last else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end <= start):
        return None
    if start >= length:
        return False
    return start, length if end is None else min(end, length)


class GridFSHandler(tornado.web.RequestHandler):
    """Serves the files of a GridFS bucket: map a URL pattern with one group to it, and the
    group is the file name (its latest revision)::

        app = tornado.web.Application([
            (r"/static/(.*)", GridFSHandler, {"database": client.my_db}),
        ])

    Responses carry Content-Type (the file's ``metadata.contentType``, else the legacy
    ``contentType`` field, else a guess from the name, else application/octet-stream),
    Last-Modified (the upload date), a strong
    ETag, and Accept-Ranges; ``If-None-Match`` and ``If-Modified-Since`` are answered with 304, a
    single byte ``Range`` with 206 (``If-Range`` honoured), a missing file with 404.

    The ETag is a SHA-256 of the file's ``_id``, length and upload date, not of its contents:
    GridFS never changes a stored file's bytes (a new upload is a new file with a new ``_id`` and
    date), so these identify the contents without reading them first, which headers sent before
    the body require. Renaming a file or editing its metadata keeps its ETag.
    """

    def initialize(self, database: Any, root_collection: str = "fs") -> None:
        """``database``: an AsyncDatabase, or the Tornado client's database (the AsyncDatabase
        it wraps is used); ``root_collection``: the bucket name."""
        if not isinstance(database, AsyncDatabase):
            database = getattr(database, "delegate", database)
        self.database = database
        self.root_collection = root_collection

    # ---- hooks (Motor's) -------------------------------------------------------------------

    def get_gridfs_file(self, bucket: AsyncGridFSBucket, filename: str, request: Any) -> Any:
        """The file to serve for the URL: by default the latest revision named by the URL's
        group. Override to map URLs otherwise; return an AsyncGridOut or an awaitable of one,
        and raise (or let through) gridfs.NoFile for a 404. For example, by ``_id``::

            def get_gridfs_file(self, bucket, filename, request):
                return bucket.open_download_stream(ObjectId(filename))
        """
        return bucket.open_download_stream_by_name(filename)

    def get_cache_time(self, path: str, modified: datetime.datetime, mime_type: str | None) -> int:
        """Seconds clients may cache the file without asking again (Expires and max-age); 0,
        the default, marks it cacheable ("public") but to be revalidated."""
        return 0

    def set_extra_headers(self, path: str, gridout: AsyncGridOut) -> None:
        """Add headers of your own to every response."""

    def compute_file_etag(self, gridout: AsyncGridOut) -> str:
        """The ETag value (without quotes) of a file; see the class docstring."""
        upload_ms = (_utc(gridout.upload_date) - _EPOCH) // datetime.timedelta(milliseconds=1)
        digest = hashlib.sha256(
            f"{gridout._id!r}\x00{int(gridout.length)}\x00{upload_ms}".encode()
        )
        return digest.hexdigest()

    # ---- the response ----------------------------------------------------------------------

    def _content_type(self, path: str, gridout: AsyncGridOut) -> str | None:
        metadata = gridout.metadata
        if isinstance(metadata, Mapping):
            mime_type = metadata.get("contentType")
            if isinstance(mime_type, str) and mime_type:
                return mime_type
        legacy = gridout.content_type  # the field the GridFS spec deprecated for metadata
        if isinstance(legacy, str) and legacy:
            return legacy
        for name in (path, gridout.filename):
            if isinstance(name, str):
                guessed, _ = mimetypes.guess_type(name)
                if guessed:
                    return guessed
        return None

    def _not_modified(self, modified: datetime.datetime) -> bool:
        # RFC 9110: If-None-Match, when present, decides alone.
        if "If-None-Match" in self.request.headers:
            return self.check_etag_header()
        since = self.request.headers.get("If-Modified-Since")
        if since is None:
            return False
        parsed = _parse_http_date(since)
        return parsed is not None and parsed >= modified

    def _range_applies(self, etag: str, modified: datetime.datetime) -> bool:
        if_range = self.request.headers.get("If-Range")
        if if_range is None:
            return True
        if_range = if_range.strip()
        if if_range.startswith(('"', "W/")):
            return if_range == etag  # a strong comparison: a weak tag never matches
        return _parse_http_date(if_range) == modified

    async def get(self, path: str, include_body: bool = True) -> None:
        bucket = AsyncGridFSBucket(self.database, self.root_collection)
        try:
            gridout = self.get_gridfs_file(bucket, path, self.request)
            if inspect.isawaitable(gridout):
                gridout = await gridout
        except NoFile:
            raise tornado.web.HTTPError(404) from None
        async with gridout:
            await self._respond(path, gridout, include_body)

    async def head(self, path: str) -> None:
        await self.get(path, include_body=False)

    async def _respond(self, path: str, gridout: AsyncGridOut, include_body: bool) -> None:
        # HTTP dates have whole seconds: compare and send the upload date at that precision.
        modified = _utc(gridout.upload_date).replace(microsecond=0)
        self.set_header("Last-Modified", modified)
        etag = f'"{self.compute_file_etag(gridout)}"'
        self.set_header("Etag", etag)
        mime_type = self._content_type(path, gridout)
        # Not Tornado's default (text/html): an unknown file is opaque bytes.
        self.set_header("Content-Type", mime_type or "application/octet-stream")
        cache_time = self.get_cache_time(path, modified, mime_type)
        if cache_time > 0:
            self.set_header(
                "Expires",
                datetime.datetime.now(datetime.timezone.utc)
                + datetime.timedelta(seconds=cache_time),
            )
            self.set_header("Cache-Control", f"max-age={cache_time}")
        else:
            self.set_header("Cache-Control", "public")
        self.set_header("Accept-Ranges", "bytes")
        self.set_extra_headers(path, gridout)

        if self._not_modified(modified):
            self.set_status(304)
            return

        length = int(gridout.length)
        start, end = 0, length
        range_header = self.request.headers.get("Range")
        if range_header is not None and self._range_applies(etag, modified):
            wanted = _parse_range(range_header, length)
            if wanted is False:
                self.set_status(416)
                self.set_header("Content-Range", f"bytes */{length}")
                self.clear_header("Content-Type")
                return
            if wanted is not None:
                start, end = wanted
                self.set_status(206)
                self.set_header("Content-Range", f"bytes {start}-{end - 1}/{length}")
        self.set_header("Content-Length", end - start)
        if include_body and end > start:
            await self._stream(gridout, start, end)

    async def _stream(self, gridout: AsyncGridOut, start: int, end: int) -> None:
        if start:
            await gridout.seek(start)
        left = end - start
        while left > 0:
            try:
                data = await gridout.readchunk()
            except Exception:
                if not self._headers_written:
                    raise  # nothing sent yet: Tornado answers 500
                # Too late for an error status: cut the response short, which the client sees
                # as shorter than its Content-Length.
                app_log.error("GridFS file %r could not be sent whole", gridout.filename,
                              exc_info=True)
                self.request.connection.close()
                return
            if not data:
                break  # the file is shorter than its length says: Tornado reports the shortfall
            if len(data) > left:
                data = data[:left]
            left -= len(data)
            self.write(data)
            try:
                # Wait for the socket to take it, so no more than a chunk is buffered here.
                await self.flush()
            except StreamClosedError:
                return  # the client went away

"""asyncmongo's Tornado GridFSHandler over real HTTP (tornado.testing): bodies and headers,
conditional requests (304), byte ranges (206/416), HEAD, 404, the overridable hooks, and files
written by PyMongo's sync gridfs."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import hashlib
import random

import gridfs as pymongo_gridfs
import pytest
import tornado.web
from bson.objectid import ObjectId
from tornado.simple_httpclient import HTTPStreamClosedError
from tornado.testing import AsyncHTTPTestCase

from asyncmongo._tornado_gridfs import GridFSHandler
from asyncmongo.gridfs import AsyncGridFS, AsyncGridFSBucket, CorruptGridFile


class ByIdHandler(GridFSHandler):
    """Files by _id, cached for an hour, with a header of its own."""

    def get_gridfs_file(self, bucket, filename, request):
        return bucket.open_download_stream(ObjectId(filename))

    def get_cache_time(self, path, modified, mime_type):
        return 3600

    def set_extra_headers(self, path, gridout):
        self.set_header("X-File-Name", gridout.filename)


def http_date(value: datetime.datetime) -> str:
    return email.utils.format_datetime(value.replace(tzinfo=datetime.timezone.utc), usegmt=True)


class GridFSHandlerTest(AsyncHTTPTestCase):
    @pytest.fixture(autouse=True)
    def _mongo(self, make_client, db_name, sync_client, caplog, server):
        # Runs before setUp, so get_app() has the client; teardown drops the database.
        self.caplog = caplog
        self.uri = server.uri
        self.mongo = make_client()
        self.db_name = db_name
        self.sync_db = sync_client[db_name]
        yield
        sync_client.drop_database(db_name)

    def get_app(self):
        db = self.mongo[self.db_name]
        return tornado.web.Application([
            (r"/static/(.*)", GridFSHandler, {"database": db}),
            (r"/media/(.*)", GridFSHandler, {"database": db, "root_collection": "media"}),
            (r"/by-id/(.*)", ByIdHandler, {"database": db}),
        ])

    def upload(self, name, data, bucket_name="fs", chunk_size=255 * 1024, metadata=None):
        async def go():
            bucket = AsyncGridFSBucket(self.mongo[self.db_name], bucket_name,
                                       chunk_size_bytes=chunk_size)
            return await bucket.upload_from_stream(name, data, metadata=metadata)

        return self.io_loop.run_sync(go)

    def files_doc(self, file_id, bucket_name="fs"):
        return self.sync_db[f"{bucket_name}.files"].find_one({"_id": file_id})

    # ---- plain GETs --------------------------------------------------------------------------

    def test_get_serves_body_and_headers(self):
        file_id = self.upload("hello.txt", b"hello, world\n")
        response = self.fetch("/static/hello.txt")
        assert response.code == 200
        assert response.body == b"hello, world\n"
        headers = response.headers
        assert headers["Content-Type"].startswith("text/plain")
        assert headers["Content-Length"] == "13"
        assert headers["Accept-Ranges"] == "bytes"
        assert headers["Cache-Control"] == "public"
        assert "Expires" not in headers
        etag = headers["Etag"]
        assert etag.startswith('"') and etag.endswith('"') and len(etag) == 66
        uploaded = self.files_doc(file_id)["uploadDate"]
        assert email.utils.parsedate_to_datetime(headers["Last-Modified"]) == (
            uploaded.replace(microsecond=0, tzinfo=datetime.timezone.utc))
        # The same file, the same ETag; HEAD gives the headers without the body.
        head = self.fetch("/static/hello.txt", method="HEAD")
        assert head.code == 200 and head.body == b""
        assert head.headers["Etag"] == etag
        assert head.headers["Content-Length"] == "13"

    def test_large_file_is_streamed_whole(self):
        data = random.Random(5).randbytes(3 * 1024 * 1024 + 11)
        self.upload("big.bin", data, chunk_size=200_000)
        response = self.fetch("/static/big.bin")
        assert response.code == 200
        assert hashlib.sha256(response.body).digest() == hashlib.sha256(data).digest()
        assert response.headers["Content-Length"] == str(len(data))
        assert response.headers["Content-Type"] == "application/octet-stream"

    def test_content_type_sources(self):
        self.upload("data.json", b"{}")
        self.upload("page.txt", b"<p>", metadata={"contentType": "text/html"})
        self.upload("no-extension", b"?")

        async def legacy():
            fs = AsyncGridFS(self.mongo[self.db_name])
            await fs.put(b"GIF89a", filename="picture", content_type="image/gif")

        self.io_loop.run_sync(legacy)
        assert self.fetch("/static/data.json").headers["Content-Type"] == "application/json"
        assert self.fetch("/static/page.txt").headers["Content-Type"] == "text/html"
        assert self.fetch("/static/picture").headers["Content-Type"] == "image/gif"
        assert self.fetch("/static/no-extension").headers["Content-Type"] == (
            "application/octet-stream")

    def test_missing_file_is_404(self):
        assert self.fetch("/static/nothing.txt").code == 404
        assert self.fetch("/static/nothing.txt", method="HEAD").code == 404
        assert self.fetch(f"/by-id/{ObjectId()}").code == 404

    def test_latest_revision_is_served(self):
        self.upload("rev.txt", b"old")
        first = self.fetch("/static/rev.txt")
        self.io_loop.run_sync(lambda: asyncio.sleep(0.005))  # distinct uploadDates
        self.upload("rev.txt", b"new!")
        second = self.fetch("/static/rev.txt")
        assert (first.body, second.body) == (b"old", b"new!")
        assert first.headers["Etag"] != second.headers["Etag"]
        # The old ETag no longer matches: the new revision is sent.
        again = self.fetch("/static/rev.txt", headers={"If-None-Match": first.headers["Etag"]})
        assert again.code == 200 and again.body == b"new!"

    # ---- conditional requests ---------------------------------------------------------------

    def test_if_none_match(self):
        self.upload("c.txt", b"cached")
        etag = self.fetch("/static/c.txt").headers["Etag"]
        for value in (etag, f'"other", {etag}', f"W/{etag}", "*"):
            response = self.fetch("/static/c.txt", headers={"If-None-Match": value})
            assert response.code == 304, value
            assert response.body == b""
            assert response.headers["Etag"] == etag
        response = self.fetch("/static/c.txt", headers={"If-None-Match": '"something-else"'})
        assert response.code == 200 and response.body == b"cached"
        head = self.fetch("/static/c.txt", method="HEAD", headers={"If-None-Match": etag})
        assert head.code == 304

    def test_if_modified_since(self):
        file_id = self.upload("m.txt", b"modified")
        uploaded = self.files_doc(file_id)["uploadDate"].replace(microsecond=0)
        for when in (uploaded, uploaded + datetime.timedelta(days=1)):
            response = self.fetch("/static/m.txt", headers={"If-Modified-Since": http_date(when)})
            assert response.code == 304
        earlier = http_date(uploaded - datetime.timedelta(seconds=1))
        response = self.fetch("/static/m.txt", headers={"If-Modified-Since": earlier})
        assert response.code == 200 and response.body == b"modified"
        response = self.fetch("/static/m.txt", headers={"If-Modified-Since": "not a date"})
        assert response.code == 200
        # If-None-Match decides alone when both are sent.
        response = self.fetch("/static/m.txt", headers={
            "If-None-Match": '"stale"', "If-Modified-Since": http_date(uploaded)})
        assert response.code == 200

    # ---- ranges -----------------------------------------------------------------------------

    def test_byte_ranges(self):
        data = bytes(range(256)) * 40  # 10240 bytes over several chunks
        self.upload("r.bin", data, chunk_size=1000)
        cases = {
            "bytes=0-9": (0, 10),
            "bytes=990-2010": (990, 2011),
            "bytes=10000-": (10000, 10240),
            "bytes=-100": (10140, 10240),
            "bytes=10200-99999": (10200, 10240),
        }
        for header, (start, end) in cases.items():
            response = self.fetch("/static/r.bin", headers={"Range": header})
            assert response.code == 206, header
            assert response.body == data[start:end], header
            assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/10240"
            assert response.headers["Content-Length"] == str(end - start)
        for header in ("bytes=10240-", "bytes=-0"):
            response = self.fetch("/static/r.bin", headers={"Range": header})
            assert response.code == 416, header
            assert response.headers["Content-Range"] == "bytes */10240"
        for header in ("bytes=0-1,5-6", "lines=1-2", "bytes=9-3"):  # ignored: the whole file
            response = self.fetch("/static/r.bin", headers={"Range": header})
            assert response.code == 200 and response.body == data, header

        etag = self.fetch("/static/r.bin", method="HEAD").headers["Etag"]
        response = self.fetch("/static/r.bin", headers={"Range": "bytes=5-9", "If-Range": etag})
        assert response.code == 206 and response.body == data[5:10]
        response = self.fetch("/static/r.bin", headers={"Range": "bytes=5-9",
                                                        "If-Range": '"changed"'})
        assert response.code == 200 and response.body == data

    # ---- hooks, buckets, files from PyMongo --------------------------------------------------

    def test_hooks_and_other_bucket(self):
        file_id = self.upload("photo.png", b"\x89PNG...", bucket_name="media")
        assert self.fetch("/static/photo.png").code == 404  # not in the "fs" bucket
        media = self.fetch("/media/photo.png")
        assert media.code == 200 and media.body == b"\x89PNG..."
        assert media.headers["Content-Type"] == "image/png"

        other_id = self.upload("by-id.txt", b"found by id")
        response = self.fetch(f"/by-id/{other_id}")
        assert response.code == 200 and response.body == b"found by id"
        assert response.headers["X-File-Name"] == "by-id.txt"
        assert response.headers["Cache-Control"] == "max-age=3600"
        expires = email.utils.parsedate_to_datetime(response.headers["Expires"])
        now = datetime.datetime.now(datetime.timezone.utc)
        assert now + datetime.timedelta(minutes=50) < expires < now + datetime.timedelta(minutes=70)
        assert file_id != other_id

    def test_serves_files_written_by_pymongo(self):
        bucket = pymongo_gridfs.GridFSBucket(self.sync_db, chunk_size_bytes=1234)
        data = random.Random(8).randbytes(50_000)
        bucket.upload_from_stream("from-pymongo.bin", data,
                                  metadata={"contentType": "application/x-test"})
        response = self.fetch("/static/from-pymongo.bin")
        assert response.code == 200 and response.body == data
        assert response.headers["Content-Type"] == "application/x-test"
        response = self.fetch("/static/from-pymongo.bin", headers={"Range": "bytes=1230-1240"})
        assert response.code == 206 and response.body == data[1230:1241]

    # ---- failures while streaming -----------------------------------------------------------

    def test_client_leaving_mid_stream_is_quiet(self):
        self.upload("long.bin", random.Random(9).randbytes(4 * 1024 * 1024), chunk_size=64 * 1024)

        async def leave_early():
            reader, writer = await asyncio.open_connection("127.0.0.1", self.get_http_port())
            writer.write(b"GET /static/long.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(100_000)
            writer.close()
            await writer.wait_closed()
            # The server notices on its next write; then it is still serving others.
            await asyncio.sleep(0.2)
            return head

        head = self.io_loop.run_sync(leave_early)
        assert head.startswith(b"HTTP/1.1 200")
        assert self.fetch("/static/long.bin", method="HEAD").code == 200
        errors = [r for r in self.caplog.records if r.levelname in ("ERROR", "CRITICAL")]
        assert errors == []

    def test_damaged_file(self):
        file_id = self.upload("broken.bin", bytes(5000), chunk_size=1000)
        self.sync_db.fs.chunks.delete_one({"files_id": file_id, "n": 0})
        assert self.fetch("/static/broken.bin").code == 500  # nothing sent yet: an error status
        other_id = self.upload("half.bin", bytes(5000), chunk_size=1000)
        self.sync_db.fs.chunks.delete_one({"files_id": other_id, "n": 3})
        # Headers are gone when chunk 3 is found missing: the response is cut short (the client
        # sees the connection close before Content-Length bytes) and the error is logged.
        with pytest.raises(HTTPStreamClosedError):
            self.fetch("/static/half.bin")
        logged = [r for r in self.caplog.records if r.levelname == "ERROR"]
        assert [r.getMessage() for r in logged][-1] == "GridFS file 'half.bin' could not be sent whole"
        assert logged[-1].exc_info[0] is CorruptGridFile
        assert self.fetch("/static/half.bin", method="HEAD").code == 200  # still serving

    # ---- with the Tornado client ---------------------------------------------------------------

    def test_database_of_the_tornado_client(self):
        from asyncmongo.tornado import GridFSHandler as TornadoGridFSHandler
        from asyncmongo.tornado import TornadoMongoClient

        tornado_client = TornadoMongoClient(self.uri, serverSelectionTimeoutMS=10000)
        try:
            database = tornado_client[self.db_name]
            self._app.add_handlers(r".*", [
                (r"/tornado/(.*)", TornadoGridFSHandler, {"database": database}),
                (r"/plain/(.*)", GridFSHandler, {"database": database}),
            ])
            data = random.Random(10).randbytes(600_000)
            self.upload("t.bin", data)
            for prefix in ("/tornado/", "/plain/"):
                response = self.fetch(prefix + "t.bin")
                assert response.code == 200 and response.body == data, prefix
                etag = response.headers["Etag"]
                assert self.fetch(prefix + "t.bin", headers={"If-None-Match": etag}).code == 304
                assert self.fetch(prefix + "missing").code == 404
        finally:
            self.io_loop.run_sync(tornado_client.close)

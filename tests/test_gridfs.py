"""GridFS (asyncmongo.gridfs) against the real server: a 50 MB round trip with a checksum, reads at
every kind of position, revisions, deletes, renames, queries, aborted and concurrent uploads, damaged
files, the legacy AsyncGridFS API, and PyMongo's sync gridfs as the witness reading what asyncmongo
wrote and writing what asyncmongo reads."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random

import gridfs as pymongo_gridfs
import pytest
from bson.int64 import Int64
from bson.objectid import ObjectId
from pymongo import monitoring
from pymongo.errors import ConfigurationError, InvalidOperation
from pymongo.write_concern import WriteConcern

import asyncmongo.gridfs._upload as upload_module
from asyncmongo.gridfs import (
    DEFAULT_CHUNK_SIZE,
    AsyncGridFS,
    AsyncGridFSBucket,
    AsyncGridIn,
    AsyncGridOut,
    CorruptGridFile,
    FileExists,
    NoFile,
)

MB = 1024 * 1024


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class Commands(monitoring.CommandListener):
    """The names and collections of the commands a client sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def started(self, event) -> None:
        self.sent.append((event.command_name, str(event.command.get(event.command_name))))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass

    def count(self, name: str, collection: str) -> int:
        return sum(1 for n, c in self.sent if n == name and c == collection)


class HashSink:
    """A destination for download_to_stream that keeps only a checksum and the size."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        self.writes += 1


@pytest.fixture
def cleanup(sync_client, db_name):
    yield
    sync_client.drop_database(db_name)


# ---- the big round trip ---------------------------------------------------------------------------

async def test_50mb_round_trip_checksum(make_client, db_name, sync_client, cleanup):
    commands = Commands()
    client = make_client(event_listeners=[commands])
    bucket = AsyncGridFSBucket(client[db_name])
    data = os.urandom(50 * MB)
    digest = hashlib.sha256(data).hexdigest()

    file_id = await bucket.upload_from_stream("big.bin", data, metadata={"kind": "random"})
    del data
    # Chunks travel in batches: a few inserts, not one per chunk.
    chunk_count = -(-50 * MB // DEFAULT_CHUNK_SIZE)
    inserts = commands.count("insert", "fs.chunks")
    assert 1 <= inserts <= 5, commands.sent
    assert commands.count("insert", "fs.files") == 1

    sink = HashSink()
    commands.sent.clear()
    await bucket.download_to_stream(file_id, sink)
    assert sink.size == 50 * MB
    assert sink.sha.hexdigest() == digest
    assert sink.writes == chunk_count  # download_to_stream writes chunk by chunk
    finds = commands.count("find", "fs.chunks") + commands.count("getMore", "fs.chunks")
    assert finds <= 10, commands.sent

    # What the server holds, read by PyMongo's sync client.
    db = sync_client[db_name]
    doc = db.fs.files.find_one({"_id": file_id})
    assert doc["length"] == 50 * MB and isinstance(doc["length"], int)
    assert doc["chunkSize"] == DEFAULT_CHUNK_SIZE
    assert doc["filename"] == "big.bin"
    assert doc["metadata"] == {"kind": "random"}
    assert "md5" not in doc
    assert db.fs.chunks.count_documents({"files_id": file_id}) == chunk_count


# ---- reading at any position --------------------------------------------------------------------

async def test_partial_reads_seek_and_tell(client, db_name, cleanup):
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=1000)
    data = payload(10_500, seed=1)
    file_id = await bucket.upload_from_stream("f", data)
    gout = await bucket.open_download_stream(file_id)
    assert (gout.length, gout.chunk_size, gout.filename, gout.name) == (10_500, 1000, "f", "f")
    assert gout.tell() == 0
    assert await gout.read(0) == b""
    assert await gout.read(10) == data[:10]
    assert gout.tell() == 10
    assert await gout.read(2500) == data[10:2510]  # across three chunks
    assert await gout.seek(999) == 999
    assert await gout.read(2) == data[999:1001]  # one byte each side of a chunk boundary
    assert await gout.seek(-500, os.SEEK_END) == 10_000
    assert await gout.read() == data[10_000:]
    assert await gout.read() == b""
    assert gout.tell() == 10_500
    assert await gout.seek(-9_000, os.SEEK_CUR) == 1_500
    assert await gout.read(100) == data[1_500:1_600]
    assert await gout.seek(20_000) == 20_000  # past the end: reads return nothing
    assert await gout.read(10) == b""
    await gout.seek(0)
    assert await gout.read() == data
    with pytest.raises(OSError):
        await gout.seek(-1)
    with pytest.raises(OSError):
        await gout.seek(0, 7)

    # readchunk: the rest of the chunk the position is in.
    await gout.seek(1_200)
    assert await gout.readchunk() == data[1_200:2_000]
    assert await gout.readchunk() == data[2_000:3_000]
    await gout.seek(10_400)
    assert await gout.readchunk() == data[10_400:]
    assert await gout.readchunk() == b""

    # Random reads compared with slices of the source.
    rng = random.Random(7)
    for _ in range(60):
        pos = rng.randrange(0, 10_500)
        size = rng.randrange(0, 3_000)
        await gout.seek(pos)
        assert await gout.read(size) == data[pos:pos + size]
        assert gout.tell() == min(pos + size, 10_500)
    await gout.close()
    assert gout.closed


async def test_readline_readlines_and_iteration(client, db_name, cleanup):
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=7)
    lines = [b"first line\n", b"\n", b"x\n", b"a much longer line spanning chunks\n", b"no newline"]
    text = b"".join(lines)
    file_id = await bucket.upload_from_stream("t.txt", text)

    async with await bucket.open_download_stream(file_id) as gout:
        assert [line async for line in gout] == lines
    gout = await bucket.open_download_stream(file_id)
    assert await gout.readline() == lines[0]
    assert await gout.readline(3) == b"\n"  # an empty line: the size is not reached
    assert await gout.readline(1) == b"x"
    assert await gout.readline() == b"\n"
    assert await gout.readlines() == lines[3:]
    await gout.seek(0)
    assert await gout.to_list() == lines
    await gout.seek(0)
    assert await gout.readlines(5) == lines[:1]


async def test_empty_file(client, db_name, sync_client, cleanup):
    bucket = AsyncGridFSBucket(client[db_name])
    file_id = await bucket.upload_from_stream("empty", b"")
    gout = await bucket.open_download_stream(file_id)
    assert gout.length == 0
    assert await gout.read() == b""
    assert await gout.readchunk() == b""
    assert sync_client[db_name].fs.chunks.count_documents({}) == 0
    assert sync_client[db_name].fs.files.find_one({"_id": file_id})["length"] == 0


# ---- writing ------------------------------------------------------------------------------------

async def test_upload_stream_writes_and_attributes(client, db_name, sync_client, cleanup):
    bucket = AsyncGridFSBucket(client[db_name], bucket_name="images", chunk_size_bytes=4)
    async with bucket.open_upload_stream("a.txt", metadata={"contentType": "text/plain"}) as gin:
        assert isinstance(gin, AsyncGridIn)
        assert isinstance(gin._id, ObjectId)
        assert (gin.filename, gin.chunk_size, gin.closed) == ("a.txt", 4, False)
        with pytest.raises(AttributeError):
            gin.length  # only once closed
        await gin.write(b"hello ")
        await gin.write(bytearray(b"w"))
        await gin.write(io.BytesIO(b"orld"))
        await gin.writelines([b"!", memoryview(b"!")])
        gin.custom = "field"  # any other attribute is a field of the files document
    assert gin.closed and gin.length == 13
    with pytest.raises(ValueError):
        await gin.write(b"more")
    with pytest.raises(AttributeError):
        gin.other = 1  # set() must be used once closed
    await gin.set("other", 2)

    doc = sync_client[db_name]["images.files"].find_one({"_id": gin._id})
    assert doc["custom"] == "field" and doc["other"] == 2
    assert doc["uploadDate"].replace(tzinfo=None) == gin.upload_date.replace(tzinfo=None)
    chunks = list(sync_client[db_name]["images.chunks"].find({"files_id": gin._id}, sort=[("n", 1)]))
    assert [c["data"] for c in chunks] == [b"hell", b"o wo", b"rld!", b"!"]

    gout = await bucket.open_download_stream(gin._id)
    assert await gout.read() == b"hello world!!"
    assert gout.custom == "field"
    assert gout.metadata == {"contentType": "text/plain"}

    # str needs an encoding; a file-like source may be async.
    gin = bucket.open_upload_stream("s.txt")
    with pytest.raises(TypeError):
        await gin.write("text")
    with pytest.raises(TypeError):
        await gin.write(12)
    await gin.abort()
    fs = AsyncGridFS(client[db_name], "images")
    text_id = await fs.put("héllo", encoding="utf-8", filename="u.txt")
    assert await (await fs.get(text_id)).read() == "héllo".encode()

    reader = asyncio.StreamReader()
    reader.feed_data(b"from an async source")
    reader.feed_eof()
    async_id = await bucket.upload_from_stream("async.bin", reader)
    assert await (await bucket.open_download_stream(async_id)).read() == b"from an async source"


async def test_download_to_async_destination(client, db_name, cleanup):
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=10)
    data = payload(95, seed=3)
    file_id = await bucket.upload_from_stream("d", data)

    class AsyncSink:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        async def write(self, chunk: bytes) -> None:
            await asyncio.sleep(0)
            self.parts.append(chunk)

    sink = AsyncSink()
    await bucket.download_to_stream(file_id, sink)
    assert b"".join(sink.parts) == data and len(sink.parts) == 10
    buf = io.BytesIO()
    await bucket.download_to_stream_by_name("d", buf)
    assert buf.getvalue() == data


async def test_upload_with_id_and_file_exists(client, db_name, sync_client, cleanup, monkeypatch):
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=5)
    chunks = sync_client[db_name].fs.chunks
    files = sync_client[db_name].fs.files
    await bucket.upload_from_stream_with_id("my-id", "one", b"first version")
    with pytest.raises(FileExists):
        await bucket.upload_from_stream_with_id("my-id", "two", b"second")

    # Chunks sent while writing (small batches) collide too: the other file is left intact,
    # even by the failed upload's cleanup and an explicit abort().
    monkeypatch.setattr(upload_module, "UPLOAD_BATCH_BYTES", 20)
    with pytest.raises(FileExists):
        async with bucket.open_upload_stream_with_id("my-id", "three") as gin:
            await gin.write(payload(200))
    await gin.abort()
    gout = await bucket.open_download_stream("my-id")
    assert (gout.filename, await gout.read()) == ("one", b"first version")
    assert files.count_documents({}) == 1
    assert chunks.count_documents({"files_id": "my-id"}) == 3

    # The _id of an empty file (no chunks to collide with): the upload's chunks are removed.
    await bucket.upload_from_stream_with_id("empty-id", "empty", b"")
    with pytest.raises(FileExists):
        await bucket.upload_from_stream_with_id("empty-id", "four", payload(200))
    assert chunks.count_documents({"files_id": "empty-id"}) == 0
    assert await (await bucket.open_download_stream("empty-id")).read() == b""


async def test_abort_removes_sent_chunks(client, db_name, sync_client, cleanup, monkeypatch):
    # Small upload batches, so chunks reach the server before the file is closed.
    monkeypatch.setattr(upload_module, "UPLOAD_BATCH_BYTES", 100)
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=50)
    chunks = sync_client[db_name].fs.chunks
    files = sync_client[db_name].fs.files

    gin = bucket.open_upload_stream("aborted")
    await gin.write(payload(1000))
    assert chunks.count_documents({"files_id": gin._id}) >= 10
    await gin.abort()
    assert gin.closed
    assert chunks.count_documents({}) == 0 and files.count_documents({}) == 0
    with pytest.raises(ValueError):
        await gin.write(b"x")

    # An exception inside "async with" removes what was sent; the exception propagates.
    with pytest.raises(RuntimeError, match="boom"):
        async with bucket.open_upload_stream("failed") as gin:
            await gin.write(payload(1000))
            raise RuntimeError("boom")
    assert chunks.count_documents({}) == 0 and files.count_documents({}) == 0

    # So does a source whose read() fails.
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, n: int) -> bytes:
            self.calls += 1
            if self.calls > 10:
                raise OSError("disk gone")
            return b"z" * n

    with pytest.raises(OSError, match="disk gone"):
        await bucket.upload_from_stream("broken", Broken())
    assert chunks.count_documents({}) == 0 and files.count_documents({}) == 0


async def test_concurrent_uploads_and_downloads(client, db_name, sync_client, cleanup, monkeypatch):
    monkeypatch.setattr(upload_module, "UPLOAD_BATCH_BYTES", 256 * 1024)
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=64 * 1024)
    sources = {f"file-{i}": payload(MB + i * 12345, seed=100 + i) for i in range(8)}

    async def upload(name: str) -> ObjectId:
        async with bucket.open_upload_stream(name) as gin:
            data = sources[name]
            for start in range(0, len(data), 100_000):  # many writes, interleaved with the others
                await gin.write(data[start:start + 100_000])
        return gin._id

    ids = await asyncio.gather(*(upload(name) for name in sources))
    assert len(set(ids)) == 8

    async def download(file_id: ObjectId) -> tuple[str, bytes]:
        gout = await bucket.open_download_stream(file_id)
        return gout.filename, await gout.read()

    for name, data in await asyncio.gather(*(download(i) for i in ids)):
        assert data == sources[name]

    # The spec's indexes exist once, whatever the race between the first uploads.
    db = sync_client[db_name]
    chunk_indexes = {ix["name"]: ix for ix in db.fs.chunks.list_indexes()}
    assert chunk_indexes["files_id_1_n_1"]["unique"] is True
    assert list(chunk_indexes["files_id_1_n_1"]["key"].items()) == [("files_id", 1), ("n", 1)]
    file_indexes = {ix["name"]: ix for ix in db.fs.files.list_indexes()}
    assert list(file_indexes["filename_1_uploadDate_1"]["key"].items()) == [
        ("filename", 1), ("uploadDate", 1)]


async def test_indexes_only_created_on_an_empty_bucket(client, db_name, sync_client, cleanup):
    db = sync_client[db_name]
    # A bucket already holding files (written by someone without the indexes) is left as it is.
    db.fs.files.insert_one({"_id": 1, "filename": "old", "length": 0, "chunkSize": 10,
                            "uploadDate": ObjectId().generation_time})
    db.fs.chunks.insert_one({"files_id": 99, "n": 0, "data": b""})
    bucket = AsyncGridFSBucket(client[db_name])
    await bucket.upload_from_stream("new", b"data")
    assert set(db.fs.files.index_information()) == {"_id_"}
    assert set(db.fs.chunks.index_information()) == {"_id_"}

    # An index with the same key under another name counts as the index.
    other = AsyncGridFSBucket(client[db_name], bucket_name="named")
    db["named.chunks"].create_index([("files_id", 1), ("n", 1)], unique=True, name="mine")
    await other.upload_from_stream("x", b"data")
    assert set(db["named.chunks"].index_information()) == {"_id_", "mine"}
    assert "filename_1_uploadDate_1" in db["named.files"].index_information()


# ---- revisions, deletes, renames, queries ---------------------------------------------------------

async def test_revisions(client, db_name, cleanup):
    bucket = AsyncGridFSBucket(client[db_name])
    for i in range(4):
        await bucket.upload_from_stream("doc.txt", f"version {i}".encode())
        await asyncio.sleep(0.005)  # distinct uploadDates (milliseconds) order the revisions
    await bucket.upload_from_stream("other.txt", b"other")

    async def content(revision: int) -> bytes:
        gout = await bucket.open_download_stream_by_name("doc.txt", revision=revision)
        return await gout.read()

    assert await content(-1) == b"version 3"
    assert await (await bucket.open_download_stream_by_name("doc.txt")).read() == b"version 3"
    assert await content(0) == b"version 0"
    assert await content(1) == b"version 1"
    assert await content(3) == b"version 3"
    assert await content(-2) == b"version 2"
    assert await content(-4) == b"version 0"
    for missing in (4, -5):
        with pytest.raises(NoFile):
            await bucket.open_download_stream_by_name("doc.txt", revision=missing)
    with pytest.raises(NoFile):
        await bucket.open_download_stream_by_name("nothing.txt")
    with pytest.raises(TypeError):
        await bucket.open_download_stream_by_name(b"doc.txt")
    sink = io.BytesIO()
    await bucket.download_to_stream_by_name("doc.txt", sink, revision=-3)
    assert sink.getvalue() == b"version 1"


async def test_delete(client, db_name, sync_client, cleanup):
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=3)
    keep = await bucket.upload_from_stream("keep", b"kept data")
    gone = await bucket.upload_from_stream("gone", b"deleted data")
    await bucket.delete(gone)
    with pytest.raises(NoFile):
        await bucket.open_download_stream(gone)
    with pytest.raises(NoFile):
        await bucket.download_to_stream(gone, io.BytesIO())
    with pytest.raises(NoFile):
        await bucket.delete(gone)
    with pytest.raises(NoFile):
        await bucket.delete(ObjectId())
    db = sync_client[db_name]
    assert db.fs.chunks.count_documents({"files_id": gone}) == 0
    assert db.fs.chunks.count_documents({"files_id": keep}) == 3
    assert await (await bucket.open_download_stream(keep)).read() == b"kept data"

    for _ in range(3):
        await bucket.upload_from_stream("many", b"revision")
    await bucket.delete_by_name("many")
    assert db.fs.files.count_documents({"filename": "many"}) == 0
    assert db.fs.chunks.count_documents({}) == 3  # only "keep"'s
    with pytest.raises(NoFile):
        await bucket.delete_by_name("many")


async def test_rename(client, db_name, cleanup):
    bucket = AsyncGridFSBucket(client[db_name])
    file_id = await bucket.upload_from_stream("before", b"content")
    await bucket.rename(file_id, "after")
    assert await (await bucket.open_download_stream_by_name("after")).read() == b"content"
    with pytest.raises(NoFile):
        await bucket.open_download_stream_by_name("before")
    with pytest.raises(NoFile):
        await bucket.rename(ObjectId(), "x")

    await bucket.upload_from_stream("after", b"second revision")
    await bucket.rename_by_name("after", "renamed")
    assert len(await bucket.find({"filename": "renamed"}).to_list()) == 2
    with pytest.raises(NoFile):
        await bucket.rename_by_name("after", "y")


async def test_find(client, db_name, cleanup):
    bucket = AsyncGridFSBucket(client[db_name])
    for i in range(6):
        await bucket.upload_from_stream(f"f{i}", bytes([i]) * (i + 1),
                                        metadata={"even": i % 2 == 0, "i": i})

    found = await bucket.find({"metadata.even": True}, sort=[("metadata.i", -1)]).to_list()
    assert all(isinstance(g, AsyncGridOut) for g in found)
    assert [g.filename for g in found] == ["f4", "f2", "f0"]
    assert [await g.read() for g in found] == [b"\x04" * 5, b"\x02" * 3, b"\x00"]

    cursor = bucket.find({}, sort=[("length", 1)], skip=1, limit=3)
    assert [g.length async for g in cursor] == [2, 3, 4]
    assert [g.filename for g in await bucket.find().sort("filename", -1).limit(2).to_list()] == [
        "f5", "f4"]
    assert (await bucket.find({"filename": "f3"}).next()).metadata == {"even": False, "i": 3}
    cursor = bucket.find({"filename": {"$in": ["f1", "f2"]}}, sort=[("filename", 1)])
    clone = cursor.clone()
    assert [g.filename for g in await cursor.to_list()] == ["f1", "f2"]
    assert [g.filename for g in await clone.to_list()] == ["f1", "f2"]
    assert await bucket.find({"filename": "none"}).to_list() == []
    with pytest.raises(NotImplementedError):
        bucket.find().add_option(2)


# ---- damaged files --------------------------------------------------------------------------------

async def test_corrupt_files(client, db_name, sync_client, cleanup):
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=100)
    data = payload(1_050, seed=9)
    chunks = sync_client[db_name].fs.chunks

    # A chunk deleted behind the file's back: the bytes before it still read, then the error.
    file_id = await bucket.upload_from_stream("missing", data)
    chunks.delete_one({"files_id": file_id, "n": 3})
    gout = await bucket.open_download_stream(file_id)
    assert await gout.read(300) == data[:300]
    with pytest.raises(CorruptGridFile):
        await gout.read(100)
    with pytest.raises(CorruptGridFile):
        await bucket.download_to_stream(file_id, io.BytesIO())
    gout = await bucket.open_download_stream(file_id)
    await gout.seek(400)  # past the hole: fine
    assert await gout.read() == data[400:]
    # The same stream, after the error: the chunks around the hole are still there.
    gout = await bucket.open_download_stream(file_id)
    with pytest.raises(CorruptGridFile, match="expected chunk #3 but found chunk with n=4"):
        await gout.read()
    await gout.seek(400)
    assert await gout.read(200) == data[400:600]
    await gout.seek(250)
    assert await gout.read(50) == data[250:300]

    # The last chunk missing.
    file_id = await bucket.upload_from_stream("no-tail", data)
    chunks.delete_one({"files_id": file_id, "n": 10})
    with pytest.raises(CorruptGridFile):
        await (await bucket.open_download_stream(file_id)).read()

    # A chunk of the wrong size.
    file_id = await bucket.upload_from_stream("short", data)
    chunks.update_one({"files_id": file_id, "n": 2}, {"$set": {"data": b"short"}})
    with pytest.raises(CorruptGridFile, match="truncated chunk #2"):
        await (await bucket.open_download_stream(file_id)).read()

    # Extra data after the last chunk; an empty extra chunk is tolerated (the spec).
    file_id = await bucket.upload_from_stream("extra", data)
    chunks.insert_one({"files_id": file_id, "n": 11, "data": b""})
    assert await (await bucket.open_download_stream(file_id)).read() == data
    chunks.insert_one({"files_id": file_id, "n": 12, "data": b"surplus"})
    with pytest.raises(CorruptGridFile, match="Extra chunk"):
        await (await bucket.open_download_stream(file_id)).read()


# ---- PyMongo's sync gridfs as the witness ----------------------------------------------------------

async def test_pymongo_reads_what_asyncmongo_wrote(client, db_name, sync_client, cleanup):
    bucket = AsyncGridFSBucket(client[db_name], bucket_name="shared", chunk_size_bytes=100_003)
    data = payload(3 * MB + 17, seed=11)
    file_id = await bucket.upload_from_stream("a.bin", data, metadata={"by": "asyncmongo"})
    await bucket.upload_from_stream("a.bin", b"newer")

    witness = pymongo_gridfs.GridFSBucket(sync_client[db_name], bucket_name="shared")
    out = witness.open_download_stream(file_id)
    assert out.read() == data
    assert (out.length, out.chunk_size, out.filename, out.metadata) == (
        len(data), 100_003, "a.bin", {"by": "asyncmongo"})
    assert witness.open_download_stream_by_name("a.bin").read() == b"newer"
    assert witness.open_download_stream_by_name("a.bin", revision=0).read() == data
    legacy = pymongo_gridfs.GridFS(sync_client[db_name], "shared")
    assert sorted(legacy.list()) == ["a.bin"]


async def test_asyncmongo_reads_what_pymongo_wrote(client, db_name, sync_client, cleanup):
    witness = pymongo_gridfs.GridFSBucket(sync_client[db_name], chunk_size_bytes=77_777)
    data = payload(2 * MB + 5, seed=12)
    file_id = witness.upload_from_stream("p.bin", data, metadata={"by": "pymongo"})
    witness.upload_from_stream("p.bin", b"")

    bucket = AsyncGridFSBucket(client[db_name])
    gout = await bucket.open_download_stream(file_id)
    assert await gout.read() == data
    assert (gout.length, gout.chunk_size, gout.metadata) == (len(data), 77_777, {"by": "pymongo"})
    assert await (await bucket.open_download_stream_by_name("p.bin")).read() == b""
    # The files documents both drivers write have the same fields.
    mine = await bucket.upload_from_stream("m.bin", b"x", metadata={"by": "asyncmongo"})
    files = sync_client[db_name].fs.files
    assert set(files.find_one({"_id": mine})) == set(files.find_one({"_id": file_id}))
    doc = files.find_one({"_id": mine})
    assert isinstance(doc["length"], Int64) or type(doc["length"]) is int


# ---- the legacy API and argument checks ------------------------------------------------------------

async def test_legacy_gridfs_api(client, db_name, cleanup):
    fs = AsyncGridFS(client[db_name])
    first = await fs.put(b"one", filename="a", color="red")
    await asyncio.sleep(0.005)
    second = await fs.put(b"two", filename="a", color="blue")
    await fs.put(io.BytesIO(b"three"), filename="b", _id="b-id")
    with pytest.raises(FileExists):
        await fs.put(b"again", _id="b-id")

    assert await (await fs.get(first)).read() == b"one"
    assert await (await fs.get_last_version("a")).read() == b"two"
    assert await (await fs.get_version("a", 0)).read() == b"one"
    assert await (await fs.get_version(color="red")).read() == b"one"
    with pytest.raises(NoFile):
        await fs.get_version("a", 2)
    with pytest.raises(NoFile):
        await fs.get(ObjectId())
    assert sorted(await fs.list()) == ["a", "b"]
    assert await fs.exists(first) and await fs.exists({"filename": "b"})
    assert await fs.exists(color="blue") and not await fs.exists(color="green")
    found = await fs.find_one({"filename": "a"}, sort=[("uploadDate", -1)])
    assert found._id == second and found.color == "blue"
    assert (await fs.find_one("b-id")).filename == "b"
    assert await fs.find_one({"filename": "zzz"}) is None
    assert len(await fs.find({"filename": "a"}).to_list()) == 2

    async with fs.new_file(filename="c", content_type="text/plain") as gin:
        await gin.write(b"new file")
    assert (await fs.get(gin._id)).content_type == "text/plain"

    await fs.delete(first)
    await fs.delete(first)  # a missing file is not an error here
    assert not await fs.exists(first)


async def test_argument_checks(client, db_name, cleanup):
    db = client[db_name]
    with pytest.raises(TypeError):
        AsyncGridFSBucket(db.some_collection)
    with pytest.raises(TypeError):
        AsyncGridFS("not a database")
    with pytest.raises(ConfigurationError):
        AsyncGridFSBucket(db, write_concern=WriteConcern(w=0))
    with pytest.raises(ConfigurationError):
        AsyncGridFS(client.get_database(db_name, write_concern=WriteConcern(w=0)))
    with pytest.raises(ValueError):
        AsyncGridFSBucket(db, chunk_size_bytes=0)
    bucket = AsyncGridFSBucket(db)
    with pytest.raises(TypeError):
        bucket.open_upload_stream(123)
    with pytest.raises(TypeError):
        AsyncGridIn("not a collection")
    with pytest.raises(NoFile):
        await bucket.open_download_stream(ObjectId())

    # An AsyncGridOut built directly is opened before its attributes are read.
    file_id = await bucket.upload_from_stream("n", b"data")
    gout = AsyncGridOut(db.fs, file_id)
    with pytest.raises(InvalidOperation):
        gout.length
    await gout.open()
    assert gout.length == 4 and await gout.read() == b"data"
    missing = AsyncGridOut(db.fs, ObjectId())
    with pytest.raises(NoFile):
        await missing.read()

    gout = await bucket.open_download_stream(file_id)
    with pytest.raises(io.UnsupportedOperation):
        gout.write(b"x")
    assert gout.readable() and gout.seekable() and not gout.writable()
    gin = bucket.open_upload_stream("w")
    with pytest.raises(io.UnsupportedOperation):
        gin.read()
    await gin.close()
    await gin.close()  # closing twice is allowed


async def test_session_reaches_every_operation(make_client, db_name, cleanup):
    class Sessions(Commands):
        def started(self, event) -> None:
            self.sent.append((event.command_name, event.command.get("lsid")))

    commands = Sessions()
    client = make_client(event_listeners=[commands])
    db = client[db_name]
    bucket = AsyncGridFSBucket(db, chunk_size_bytes=10)
    fs = AsyncGridFS(db)
    # Two sessions checked out at once have distinct ids, and neither can serve as an implicit
    # session meanwhile: the commands carrying ``mine``'s id were given that session.
    async with client.start_session() as other, client.start_session() as mine:
        await db.command("ping", session=other)
        await db.command("ping", session=mine)
        mine_id = commands.sent[-1][1]
        assert mine_id is not None and mine_id != commands.sent[-2][1]
        commands.sent.clear()

        file_id = await bucket.upload_from_stream("s", b"session data " * 10, session=mine)
        gout = await bucket.open_download_stream(file_id, session=mine)
        assert await gout.read() == b"session data " * 10
        sink = io.BytesIO()
        await bucket.download_to_stream_by_name("s", sink, session=mine)
        assert sink.getvalue() == b"session data " * 10
        found = await bucket.find({"filename": "s"}, session=mine).to_list()
        assert await found[0].read() == b"session data " * 10
        await bucket.rename(file_id, "t", session=mine)
        await bucket.delete(file_id, session=mine)
        names = {name for name, _ in commands.sent}
        assert {"insert", "find", "update", "delete", "listIndexes", "createIndexes"} <= names
        assert [lsid for _, lsid in commands.sent] == [mine_id] * len(commands.sent)

        commands.sent.clear()
        legacy_id = await fs.put(b"legacy", filename="l")  # no session: an implicit one
        assert commands.sent and all(lsid != mine_id for _, lsid in commands.sent)
        commands.sent.clear()
        assert await fs.exists(legacy_id, session=mine)
        await fs.delete(legacy_id, session=mine)
        assert [lsid for _, lsid in commands.sent] == [mine_id] * 3

        # GridFS refuses to run inside a transaction.
        await mine.start_transaction()
        with pytest.raises(InvalidOperation, match="transactions"):
            await bucket.delete(file_id, session=mine)
        with pytest.raises(InvalidOperation, match="transactions"):
            bucket.open_upload_stream("t", session=mine)
        with pytest.raises(InvalidOperation, match="transactions"):
            await bucket.open_download_stream_by_name("t", session=mine)
        await mine.abort_transaction()


async def test_cancelled_read_and_upload(client, db_name, sync_client, cleanup, monkeypatch):
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=64 * 1024)
    data = payload(3 * MB, seed=13)
    file_id = await bucket.upload_from_stream("c.bin", data)

    # Cancelled while its first window is being fetched: the stream stays usable.
    gout = await bucket.open_download_stream(file_id)
    task = asyncio.ensure_future(gout.read())
    await asyncio.sleep(0)  # the task is now waiting for the find
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    await gout.seek(0)
    assert await gout.read() == data

    # Cancelled while a batch of chunks is being inserted: the file never appears, and abort()
    # removes whatever chunks reached the server.
    monkeypatch.setattr(upload_module, "UPLOAD_BATCH_BYTES", 256 * 1024)
    gin = bucket.open_upload_stream("cancelled.bin")

    async def upload():
        async with gin:
            await gin.write(data)

    task = asyncio.ensure_future(upload())
    for _ in range(10):  # through the index checks, into the first insert_many
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gin.closed
    db = sync_client[db_name]
    assert db.fs.files.count_documents({"filename": "cancelled.bin"}) == 0
    await gin.abort()
    assert db.fs.chunks.count_documents({"files_id": gin._id}) == 0

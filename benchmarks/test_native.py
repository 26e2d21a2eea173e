"""Tests of the native measuring instruments: the C bench server and the libmongoc ceiling.

The server is driven by PyMongo (sync) and by asyncmongo through the commands the benchmarks use, fed
malformed messages, and asked for a thousand connections; the ceiling runs every op with tiny counts
(its GridFS ops on SecantusDB: the bench server has no GridFS, and refuses what GridFS sends).
Timings are never asserted.
"""
from __future__ import annotations

import asyncio
import random
import socket
import struct

import bson
import pymongo
import pytest
from pymongo import monitoring
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from benchmarks import native

CEILING_KEYS = {
    "driver", "version", "op", "concurrency", "pool_size", "ops", "warmup_ops", "wall_s", "ops_per_s",
    "cpu_s", "cpu_user_s", "cpu_sys_s", "cpu_us_per_op", "lat_p50_us", "lat_p99_us", "lat_mean_us",
    "lat_max_us", "misses",
}
DB = "native_test"


@pytest.fixture(scope="module")
def binaries():
    return native.build()


@pytest.fixture(scope="module")
def bench_server(binaries):
    with native.BenchServer(binaries["server"]) as server:
        yield server


@pytest.fixture(scope="module")
def secantus():
    from benchmarks._server import SecantusServer

    with SecantusServer() as server:
        yield server


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.started_names: list[str] = []
        self.replies: dict[str, list] = {}

    def started(self, event) -> None:
        self.started_names.append(event.command_name)

    def succeeded(self, event) -> None:
        self.replies.setdefault(event.command_name, []).append(event.reply)

    def failed(self, event) -> None:
        pass


# ---- raw wire helpers ----

def op_msg(cmd: dict, request_id: int = 7, flags: int = 0, seqs: tuple = ()) -> bytes:
    body = struct.pack("<I", flags) + b"\x00" + bson.encode(cmd)
    for ident, docs in seqs:
        payload = ident.encode() + b"\x00" + b"".join(bson.encode(d) for d in docs)
        body += b"\x01" + struct.pack("<i", 4 + len(payload)) + payload
    return struct.pack("<iiii", 16 + len(body), request_id, 0, 2013) + body


def raw_msg(sections: bytes, flags: int = 0) -> bytes:
    body = struct.pack("<I", flags) + sections
    return struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body


def op_query(ns: str, query: dict, request_id: int = 9) -> bytes:
    body = struct.pack("<i", 0) + ns.encode() + b"\x00" + struct.pack("<ii", 0, -1) + bson.encode(query)
    return struct.pack("<iiii", 16 + len(body), request_id, 0, 2004) + body


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_reply(sock: socket.socket) -> tuple[int, int, int, dict]:
    """(opcode, responseTo, flags, document) of one reply."""
    length, _, response_to, opcode = struct.unpack("<iiii", recv_exact(sock, 16))
    body = recv_exact(sock, length - 16)
    if opcode == 2013:
        flags = struct.unpack_from("<I", body)[0]
        assert body[4] == 0
        return opcode, response_to, flags, bson.decode(body[5:])
    assert opcode == 1  # OP_REPLY
    flags, _cursor, _start, nret = struct.unpack_from("<iqii", body)
    assert nret == 1
    return opcode, response_to, flags, bson.decode(body[20:])


def command(port: int, cmd: dict, seqs: tuple = ()) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(op_msg(cmd, seqs=seqs))
        return read_reply(s)[3]


# ---- build and lifecycle ----

@pytest.mark.parametrize("name", ["server", "ceiling"])
def test_compiles_without_warnings(name, tmp_path):
    out = tmp_path / name
    assert native.compile_program(name, out) == ""
    assert out.stat().st_size > 0


def test_build_is_incremental(binaries):
    assert set(binaries) == {"server", "ceiling"}
    mtimes = {k: p.stat().st_mtime_ns for k, p in binaries.items()}
    again = native.build()
    assert again == binaries
    assert {k: p.stat().st_mtime_ns for k, p in again.items()} == mtimes


def test_server_starts_on_a_free_port_and_exits_zero_on_sigterm(binaries):
    server = native.BenchServer(binaries["server"]).start()
    try:
        assert server.port and server.uri == f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
        assert command(server.port, {"ping": 1, "$db": "admin"})["ok"] == 1.0
    finally:
        server.stop()
    assert server.returncode == 0


# ---- the drivers ----

def test_pymongo_workload(bench_server):
    rec = Recorder()
    with pymongo.MongoClient(bench_server.uri, event_listeners=[rec], serverSelectionTimeoutMS=5000) as client:
        hello = client.admin.command("hello")
        assert hello["isWritablePrimary"] is True
        assert (hello["minWireVersion"], hello["maxWireVersion"]) == (0, 21)
        assert hello["maxBsonObjectSize"] == 16 * 1024 * 1024
        assert hello["maxMessageSizeBytes"] == 48000000 and hello["maxWriteBatchSize"] == 100000
        assert hello["logicalSessionTimeoutMinutes"] == 30 and "setName" not in hello
        assert client.admin.command("ping")["ok"] == 1.0
        assert client.server_info()["version"] == "7.0.0"

        coll = client[DB]["pymongo"]
        coll.drop()
        assert coll.insert_one({"_id": 0, "x": "0"}).inserted_id == 0
        assert coll.insert_many([{"_id": i, "x": str(i)} for i in range(1, 120)]).inserted_ids == list(range(1, 120))
        auto = coll.insert_one({"x": "auto"}).inserted_id  # PyMongo made the ObjectId
        assert coll.find_one({"_id": auto}) == {"_id": auto, "x": "auto"}
        assert coll.find_one({"_id": 7}) == {"_id": 7, "x": "7"}
        assert coll.find_one({"_id": 7.0}) == {"_id": 7, "x": "7"}  # numbers compare by value
        assert coll.find_one({"_id": 1000}) is None
        assert coll.find_one({"x": "9"}) == {"_id": 9, "x": "9"}
        assert coll.count_documents({}) == 121
        assert coll.estimated_document_count() == 121

        rec.started_names.clear()
        got = list(coll.find({}, batch_size=25))
        assert [d["_id"] for d in got[:120]] == list(range(120)) and len(got) == 121
        assert rec.started_names.count("getMore") == 4  # 25 + 25*3 + 21
        assert [d["_id"] for d in coll.find({}, skip=5, limit=3)] == [5, 6, 7]

        cursor = coll.find({}, batch_size=10)
        next(cursor)
        cursor_id = cursor.cursor_id
        assert cursor_id
        cursor.close()
        assert rec.replies["killCursors"][-1]["cursorsKilled"] == [cursor_id]
        with pytest.raises(OperationFailure) as info:
            client[DB].command("getMore", cursor_id, collection="pymongo")
        assert info.value.code == 43

        with pytest.raises(DuplicateKeyError) as dup:
            coll.insert_one({"_id": 3, "x": "again"})
        assert dup.value.details["keyValue"] == {"_id": 3}
        with pytest.raises(BulkWriteError) as bulk:
            coll.insert_many([{"_id": 500}, {"_id": 3}, {"_id": 501}])
        assert bulk.value.details["nInserted"] == 1
        assert [(e["index"], e["code"]) for e in bulk.value.details["writeErrors"]] == [(1, 11000)]
        assert coll.find_one({"_id": 501}) is None  # ordered: the batch stopped at the error
        assert coll.find_one({"_id": 3}) == {"_id": 3, "x": "3"}

        # A cursor does not outlive a drop of its collection.
        cursor = coll.find({}, batch_size=2)
        next(cursor)
        coll.drop()
        with pytest.raises(OperationFailure) as killed:
            list(cursor)
        assert killed.value.code == 175
        assert "pymongo" not in client[DB].list_collection_names()
        assert coll.find_one({}) is None and coll.count_documents({}) == 0

        coll.insert_many([{"_id": i} for i in range(10)])
        assert coll.delete_one({"_id": 4}).deleted_count == 1
        assert coll.delete_many({}).deleted_count == 9
        with pytest.raises(OperationFailure) as unknown:
            client.admin.command("getParameter", "*")
        assert unknown.value.code == 59
        with pytest.raises(OperationFailure) as refused:
            coll.find_one({"x": {"$gt": 1}})
        assert refused.value.code == 2  # refused, never approximated


def test_asyncmongo_workload(bench_server):
    from asyncmongo import AsyncMongoClient

    rec = Recorder()

    async def main() -> None:
        client = AsyncMongoClient(bench_server.uri, event_listeners=[rec], serverSelectionTimeoutMS=5000)
        try:
            hello = await client.admin.command("hello")
            assert hello["isWritablePrimary"] is True and hello["maxWireVersion"] == 21
            assert (await client.admin.command("ping"))["ok"] == 1.0
            coll = client[DB]["asyncmongo"]
            await coll.drop()
            assert (await coll.insert_one({"_id": 0, "x": "0"})).inserted_id == 0
            res = await coll.insert_many([{"_id": i, "x": str(i)} for i in range(1, 100)])
            assert res.inserted_ids == list(range(1, 100))
            assert await coll.find_one({"_id": 42}) == {"_id": 42, "x": "42"}
            assert await coll.find_one({"_id": 4200}) is None
            assert await coll.count_documents({}) == 100

            rec.started_names.clear()
            docs = await coll.find({}, batch_size=30).to_list()
            assert [d["_id"] for d in docs] == list(range(100))
            assert rec.started_names.count("getMore") == 3  # 30 + 30 + 30 + 10

            cursor = coll.find({}, batch_size=10)
            await cursor.next()
            cursor_id = cursor.cursor_id
            assert cursor_id
            await cursor.close()
            with pymongo.MongoClient(bench_server.uri, serverSelectionTimeoutMS=5000) as witness:
                with pytest.raises(OperationFailure) as info:
                    witness[DB].command("getMore", cursor_id, collection="asyncmongo")
                assert info.value.code == 43  # the close really killed the server cursor

            with pytest.raises(DuplicateKeyError):
                await coll.insert_one({"_id": 5})
            with pytest.raises(BulkWriteError) as bulk:
                await coll.insert_many([{"_id": 200}, {"_id": 5}, {"_id": 201}])
            assert bulk.value.details["nInserted"] == 1
            assert bulk.value.details["writeErrors"][0]["code"] == 11000

            await coll.drop()
            assert "asyncmongo" not in await client[DB].list_collection_names()
            assert await coll.find_one({}) is None
        finally:
            await client.close()

    asyncio.run(main())


# ---- the wire ----

def test_legacy_op_query_handshake(bench_server):
    with socket.create_connection(("127.0.0.1", bench_server.port), timeout=10) as s:
        s.sendall(op_query("admin.$cmd", {"isMaster": 1, "helloOk": True}, request_id=41))
        opcode, response_to, flags, doc = read_reply(s)
        assert (opcode, response_to, flags) == (1, 41, 0)
        assert doc["ismaster"] is True and doc["helloOk"] is True and doc["ok"] == 1.0
        # Wrapped as drivers do with a read preference.
        s.sendall(op_query("admin.$cmd", {"$query": {"hello": 1}, "$readPreference": {"mode": "primary"}}))
        assert read_reply(s)[3]["isWritablePrimary"] is True
        # Only the handshake is answered over OP_QUERY, as by MongoDB 6+.
        s.sendall(op_query("admin.$cmd", {"ping": 1}))
        assert read_reply(s)[3]["code"] == 352
        s.sendall(op_query("db.coll", {}))
        opcode, _, flags, doc = read_reply(s)
        assert flags & 2 and "$err" in doc  # QueryFailure
        # The connection goes on with OP_MSG.
        s.sendall(op_msg({"ping": 1, "$db": "admin"}, request_id=43))
        assert read_reply(s)[1:] == (43, 0, {"ok": 1.0})


def test_op_msg_sequences_and_more_to_come(bench_server):
    port = bench_server.port
    command(port, {"drop": "wire", "$db": DB})
    reply = command(port, {"insert": "wire", "$db": DB},
                    seqs=(("documents", [{"_id": 1}, {"_id": 2}, {"_id": 2}]),))
    assert reply["n"] == 2 and reply["writeErrors"][0]["index"] == 2
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        # moreToCome: an unacknowledged write gets no reply; the next request's reply comes first.
        s.sendall(op_msg({"insert": "wire", "$db": DB, "writeConcern": {"w": 0}}, request_id=50, flags=2,
                         seqs=(("documents", [{"_id": 3}]),)))
        s.sendall(op_msg({"count": "wire", "$db": DB}, request_id=51))
        _, response_to, _, doc = read_reply(s)
        assert response_to == 51 and doc["n"] == 3
    # A document that is not valid BSON is refused, not stored.
    bad = bson.encode({"_id": 9, "s": "x"})
    bad = bad[:-7] + struct.pack("<i", 100) + bad[-3:]  # the string's length runs past the document
    payload = b"documents\x00" + bad
    msg = raw_msg(b"\x00" + bson.encode({"insert": "wire", "$db": DB})
                  + b"\x01" + struct.pack("<i", 4 + len(payload)) + payload)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(msg)
        doc = read_reply(s)[3]
        assert doc["n"] == 0 and doc["writeErrors"][0]["code"] == 2
    assert command(port, {"count": "wire", "$db": DB})["n"] == 3


def nested(depth: int) -> bytes:
    """{"a": {"a": ... {}}} with `depth` nested documents, built by hand (encoders refuse the deep ones)."""
    sizes = [5]
    for _ in range(depth):
        sizes.append(sizes[-1] + 8)  # int32 length + type + "a\0" + terminator
    head = b"".join(struct.pack("<i", sizes[k]) + b"\x03a\x00" for k in range(depth, 0, -1))
    return head + b"\x05\x00\x00\x00\x00" + b"\x00" * depth


def test_deeply_nested_documents_are_refused_not_fatal(bench_server):
    port = bench_server.port
    command(port, {"drop": "deep", "$db": DB})
    for depth, stored in ((100, True), (101, False), (100_000, False)):
        payload = b"documents\x00" + nested(depth)
        msg = raw_msg(b"\x00" + bson.encode({"insert": "deep", "$db": DB})
                      + b"\x01" + struct.pack("<i", 4 + len(payload)) + payload)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(msg)
            reply = read_reply(s)[3]
        assert reply["n"] == (1 if stored else 0), (depth, reply)
        if not stored:
            assert reply["writeErrors"][0]["code"] == 2
    assert command(port, {"count": "deep", "$db": DB})["n"] == 1


def _send_and_drain(port: int, payload: bytes) -> None:
    """Send, half-close, read until the server closes: it must never hang or die."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except TimeoutError:
            raise AssertionError(f"the server neither answered nor closed: {payload[:40]!r}")
        except OSError:
            pass  # it closed first (reset, broken pipe, not connected): fine


def test_malformed_messages_do_not_kill_the_server(bench_server):
    port = bench_server.port
    rng = random.Random(20240601)
    valid_insert = op_msg({"insert": "fuzz", "$db": DB}, seqs=(("documents", [{"_id": i, "v": "x" * i} for i in range(3)]),))
    valid_find = op_msg({"find": "fuzz", "filter": {"_id": 1}, "batchSize": 1, "$db": DB})
    header = struct.pack("<iiii", 0, 1, 0, 2013)
    small = bson.encode({"_id": 1})
    overrun = b"documents\x00" + struct.pack("<i", len(small) + 50) + small[4:]
    cases = [
        bytes(rng.randrange(256) for _ in range(1000)),
        struct.pack("<iiii", 0x7FFFFFFF, 1, 0, 2013),
        struct.pack("<iiii", -5, 1, 0, 2013),
        struct.pack("<iiii", 16, 1, 0, 2013),
        struct.pack("<iiii", 200, 1, 0, 2013) + b"\x00" * 20,  # truncated body
        header[:8],  # truncated header
        struct.pack("<iiii", 40, 1, 0, 2012) + b"\x00" * 24,  # OP_COMPRESSED, never negotiated
        struct.pack("<iiii", 40, 1, 0, 9999) + b"\x00" * 24,  # unknown opcode
        valid_find[:20] + struct.pack("<i", 10000) + valid_find[24:],  # body longer than the message
        op_msg({"ping": 1, "$db": "admin"}, flags=1 << 5),  # unknown required flag bit
        op_msg({"ping": 1, "$db": "admin"}) + b"",
        raw_msg(b"\x01" + struct.pack("<i", 4 + len(overrun)) + overrun),  # kind-1 document overruns
        op_query("admin.$cmd", {"hello": 1})[:30],
        op_msg({}),  # empty command
        op_msg({"find": 12, "$db": DB}),
        op_msg({"getMore": "x", "collection": "fuzz", "$db": DB}),
        op_msg({"killCursors": "fuzz", "cursors": ["a", 2**62], "$db": DB}),
        op_msg({"insert": "fuzz", "documents": [1, 2], "$db": DB}),
        op_msg({"insert": "fuzz", "documents": [], "$db": DB}),
        op_msg({"aggregate": "fuzz", "pipeline": [{"$sort": {"a": 1}}], "cursor": {}, "$db": DB}),
        op_msg({"ping": 1}),  # no $db
    ]
    cases.append(raw_msg(b"\x00" + bson.encode({"ping": 1}) + b"\x00" + bson.encode({"ping": 1})))  # two bodies
    cases.append(raw_msg(b"\x05" + bson.encode({"ping": 1})))  # unknown section kind
    for msg in (valid_insert, valid_find):
        for _ in range(150):
            b = bytearray(msg)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            cases.append(bytes(b))
    for payload in cases:
        _send_and_drain(port, payload)
    assert bench_server.proc is not None and bench_server.proc.poll() is None
    assert command(port, {"ping": 1, "$db": "admin"}) == {"ok": 1.0}
    with pymongo.MongoClient(bench_server.uri, serverSelectionTimeoutMS=5000) as client:
        stored = list(client[DB]["fuzz"].find({}))  # whatever the mutated inserts stored decodes
        assert all("_id" in d for d in stored)
        client[DB]["fuzz"].drop()


def test_a_thousand_connections_at_once(bench_server):
    socks = []
    try:
        for _ in range(1100):
            socks.append(socket.create_connection(("127.0.0.1", bench_server.port), timeout=20))
        for i, s in enumerate(socks):
            s.sendall(op_msg({"hello": 1, "$db": "admin"}, request_id=1000 + i))
        ids = set()
        for i, s in enumerate(socks):
            _, response_to, _, doc = read_reply(s)
            assert response_to == 1000 + i and doc["ok"] == 1.0
            ids.add(doc["connectionId"])
        assert len(ids) == len(socks)
    finally:
        for s in socks:
            s.close()


# ---- the ceiling ----

def test_ceiling_runs_every_op(bench_server, tmp_path):
    doc = tmp_path / "doc.json"
    doc.write_text('{"_id": {"$oid": "5f0000000000000000000000"}, "text": "a small document", '
                   '"n": {"$numberLong": "42"}, "tags": ["a", "b"], "nested": {"x": 1.5}}')
    runs = {
        "find_one": dict(seed_docs=100),
        "insert_one": dict(doc_path=doc),
        "command": {},
        "find_many": dict(seed_docs=40, doc_path=doc),
        "bulk_insert": dict(doc_path=doc, batch=20),
    }
    for op, kw in runs.items():
        r = native.run_ceiling(bench_server.uri, op, concurrency=4, ops=30, db=DB, timeout=120, **kw)
        assert CEILING_KEYS <= r.keys(), (op, sorted(CEILING_KEYS - r.keys()))
        assert (r["driver"], r["op"], r["concurrency"], r["ops"]) == ("ceiling", op, 4, 30)
        assert r["version"].startswith("1.")
        assert r["warmup_ops"] == 4 and r["pool_size"] == 100 and r["threads"] == 4
        assert r["ops_per_s"] > 0 and r["wall_s"] > 0 and r["misses"] == 0, r
        assert r["lat_p50_us"] <= r["lat_p99_us"] <= r["lat_max_us"]
        if op == "insert_one":
            assert r["docs_in_collection"] == 34
        if op == "bulk_insert":
            assert r["docs_in_collection"] == 34 * 20
    with pymongo.MongoClient(bench_server.uri, serverSelectionTimeoutMS=5000) as client:
        inserted = client[DB]["ceiling_insert_one"].find_one()
        assert isinstance(inserted["_id"], bson.ObjectId) and inserted["_id"] != bson.ObjectId("5f" + "0" * 22)
        assert inserted["text"] == "a small document" and inserted["n"] == 42
        assert client[DB]["ceiling_find_many"].find_one({"_id": 39})["tags"] == ["a", "b"]


def test_bench_server_refuses_gridfs_rather_than_approximating_it(bench_server):
    # Why the runner skips the GridFS tasks there: every query GridFS needs is refused.
    import gridfs

    with pymongo.MongoClient(bench_server.uri, serverSelectionTimeoutMS=5000) as client:
        # A database of its own: the fuzz test leaves collections with undecodable names in DB.
        db = client["native_gridfs"]
        with pytest.raises(OperationFailure) as upload:
            gridfs.GridFSBucket(db, "nogridfs").upload_from_stream("f", b"x" * 1000)
        assert upload.value.code == 2 and "projection" in str(upload.value)
        with pytest.raises(OperationFailure) as chunks:
            db["nogridfs.chunks"].find_one({"files_id": 1, "n": {"$gte": 0}}, sort=[("n", 1)])
        assert chunks.value.code == 2
        for name in ("listIndexes", "createIndexes"):
            with pytest.raises(OperationFailure) as info:
                db.command(name, "nogridfs.chunks", indexes=[])
            assert info.value.code == 59
        assert db.list_collection_names() == []  # nothing was half-stored


def _gridfs_file(tmp_path, size: int):
    data = random.Random(size).randbytes(size)
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    return data, path


def test_ceiling_gridfs_upload_stores_the_whole_file(secantus, tmp_path):
    import gridfs

    data, path = _gridfs_file(tmp_path, 600_000)  # two whole 255 KiB chunks and a short third
    r = native.run_ceiling(secantus.uri, "gridfs_upload", 1, 3, db=DB, coll="up", doc_path=path,
                           timeout=120)
    assert CEILING_KEYS <= r.keys(), sorted(CEILING_KEYS - r.keys())
    assert (r["op"], r["ops"], r["warmup_ops"], r["threads"], r["misses"]) == ("gridfs_upload", 3, 1, 1, 0)
    assert r["file_bytes"] == 600_000 and r["wall_s"] > 0
    assert r["lat_p50_us"] <= r["lat_p99_us"] <= r["lat_max_us"]
    # Each upload went into a bucket emptied and given a 1-byte file first (the spec's before task).
    with pymongo.MongoClient(secantus.uri, serverSelectionTimeoutMS=5000) as client:
        bucket = gridfs.GridFSBucket(client[DB], "up")
        files = sorted((f.filename, f.length) for f in bucket.find())
        assert files == [("gridfstest", 600_000), ("one-byte", 1)]
        assert bucket.open_download_stream_by_name("gridfstest").read() == data
        assert client[DB]["up.chunks"].count_documents({}) == 3 + 1
        keys = [ix["key"] for ix in client[DB]["up.chunks"].list_indexes()]
        assert {"files_id": 1, "n": 1} in [dict(k) for k in keys]


def test_ceiling_gridfs_download_reads_the_file_it_stored(secantus, tmp_path):
    import gridfs

    data, path = _gridfs_file(tmp_path, 600_000)
    r = native.run_ceiling(secantus.uri, "gridfs_download", 1, 4, db=DB, coll="down", doc_path=path,
                           file_bytes=300_000, timeout=120)
    assert (r["op"], r["ops"], r["warmup_ops"], r["misses"], r["file_bytes"]) == \
        ("gridfs_download", 4, 1, 0, 300_000)
    with pymongo.MongoClient(secantus.uri, serverSelectionTimeoutMS=5000) as client:
        bucket = gridfs.GridFSBucket(client[DB], "down")
        assert [(f.filename, f.length) for f in bucket.find()] == [("gridfstest", 300_000)]
        assert bucket.open_download_stream_by_name("gridfstest").read() == data[:300_000]


def test_ceiling_gridfs_argument_errors(secantus, tmp_path):
    _, path = _gridfs_file(tmp_path, 1000)
    with pytest.raises(RuntimeError, match="--concurrency 1"):
        native.run_ceiling(secantus.uri, "gridfs_upload", 2, 1, doc_path=path)
    with pytest.raises(RuntimeError, match="need --doc FILE"):
        native.run_ceiling(secantus.uri, "gridfs_download", 1, 1)
    with pytest.raises(RuntimeError, match="holds 1000 bytes, --bytes asks for 1001"):
        native.run_ceiling(secantus.uri, "gridfs_upload", 1, 1, doc_path=path, file_bytes=1001)
    with pytest.raises(RuntimeError, match="--bytes is for the gridfs ops"):
        native.run_ceiling(secantus.uri, "command", 1, 1, file_bytes=10)


def test_ceiling_threads_are_capped_by_the_pool(bench_server):
    r = native.run_ceiling(bench_server.uri, "find_one", concurrency=16, ops=40, warmup=0, pool=3,
                           seed_docs=10, db=DB, coll="capped", timeout=120)
    assert (r["pool_size"], r["threads"], r["warmup_ops"], r["misses"]) == (3, 3, 0, 0)


def test_ceiling_keeps_documents_the_harness_seeded(bench_server):
    with pymongo.MongoClient(bench_server.uri, serverSelectionTimeoutMS=5000) as client:
        coll = client[DB]["seeded"]
        coll.drop()
        coll.insert_many([{"_id": i, "name": f"doc-{i}", "n": i, "by": "harness"} for i in range(50)])
        r = native.run_ceiling(bench_server.uri, "find_one", 2, 20, seed_docs=50, db=DB, coll="seeded")
        assert r["misses"] == 0
        assert coll.find_one({"_id": 49})["by"] == "harness"
        # A collection that does not hold exactly 0..S-1 is re-seeded.
        r = native.run_ceiling(bench_server.uri, "find_one", 2, 20, seed_docs=30, db=DB, coll="seeded")
        assert r["misses"] == 0 and coll.count_documents({}) == 30
        assert coll.find_one({"_id": 29}) == {"_id": 29, "name": "doc-29", "n": 29}


def test_ceiling_reports_errors(bench_server):
    with pytest.raises(RuntimeError, match="unknown --op"):
        native.run_ceiling(bench_server.uri, "update_one", 1, 1)
    with pytest.raises(RuntimeError, match="No suitable servers"):
        native.run_ceiling("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300", "command", 1, 1, timeout=60)

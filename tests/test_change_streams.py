"""Change streams (coll/db/client.watch): changes seen in order, resume tokens (stored, and
interchangeable with PyMongo's), the options on the wire, closing, automatic resume after a cut
connection or a killed server cursor (and none after a fatal error), and many streams on one client
not starving its other operations. PyMongo's synchronous watch on the same server is the witness."""

import asyncio
import decimal

import pytest
from bson.codec_options import CodecOptions, TypeDecoder, TypeRegistry
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from pymongo import monitoring
from pymongo.errors import (
    AutoReconnect,
    CursorNotFound,
    InvalidOperation,
    OperationFailure,
)

from asyncmongo.change_stream import (
    AsyncChangeStream,
    AsyncClusterChangeStream,
    AsyncCollectionChangeStream,
    AsyncDatabaseChangeStream,
    _resumable,
)
from tests.proxy import DelayProxy

# Short server waits: the machine is shared, and a getMore holds a worker this long.
AWAIT_MS = 200
# Guards against hangs only; nothing here asserts how long anything took.
HANG_GUARD = 60


class Recorder(monitoring.CommandListener):
    def __init__(self):
        self.commands = []  # (name, command) in the order sent
        self.replies = []   # (name, reply)
        self.failures = []  # (name, failure)

    def started(self, event):
        if event.command_name in ("aggregate", "getMore", "killCursors"):
            self.commands.append((event.command_name, event.command))

    def succeeded(self, event):
        if event.command_name in ("aggregate", "getMore", "killCursors"):
            self.replies.append((event.command_name, event.reply))

    def failed(self, event):
        self.failures.append((event.command_name, event.failure))

    def sent(self, name):
        return [cmd for n, cmd in self.commands if n == name]

    def cursor_ids(self):
        """Ids of the server cursors the aggregates opened, in order."""
        return [int(r["cursor"]["id"]) for n, r in self.replies if n == "aggregate"]


async def changes(stream, n):
    """The next n changes of a stream."""
    out = []
    async with asyncio.timeout(HANG_GUARD):
        while len(out) < n:
            out.append(await stream.next())
    return out


def summary(events):
    return [(e["operationType"], e.get("documentKey", {}).get("_id")) for e in events]


# ---- seeing changes ------------------------------------------------------------------------


async def test_inserts_updates_deletes_in_order(coll, sync_client, db_name):
    witness = sync_client[db_name]["items"].watch(max_await_time_ms=AWAIT_MS)
    async with await coll.watch(max_await_time_ms=AWAIT_MS) as stream:
        assert isinstance(stream, AsyncCollectionChangeStream)
        assert isinstance(stream, AsyncChangeStream)
        assert stream.alive
        await coll.insert_one({"_id": 1, "x": 1})
        await coll.insert_many([{"_id": 2}, {"_id": 3}])
        await coll.update_one({"_id": 1}, {"$set": {"x": 2}})
        await coll.replace_one({"_id": 2}, {"y": 1})
        await coll.delete_one({"_id": 3})
        got = await changes(stream, 6)
    with witness:
        expected = [witness.next() for _ in range(6)]
    assert summary(got) == [("insert", 1), ("insert", 2), ("insert", 3), ("update", 1),
                            ("replace", 2), ("delete", 3)]
    assert got == expected  # same events, same resume tokens, as PyMongo sees them
    assert got[0]["fullDocument"] == {"_id": 1, "x": 1}
    assert got[3]["updateDescription"]["updatedFields"] == {"x": 2}
    assert got[4]["fullDocument"] == {"_id": 2, "y": 1}
    assert got[0]["ns"] == {"db": db_name, "coll": "items"}
    assert not stream.alive


async def test_async_for_and_try_next(coll):
    stream = await coll.watch(max_await_time_ms=AWAIT_MS)
    # Nothing happened yet: one getMore, no change, but the stream knows how far it looked.
    assert await stream.try_next() is None
    assert stream.resume_token is not None
    await coll.insert_many([{"_id": i} for i in range(5)])
    seen = []
    async with asyncio.timeout(HANG_GUARD):
        async for change in stream:
            seen.append(change["documentKey"]["_id"])
            assert stream.resume_token == change["_id"]
            if len(seen) == 5:
                break
    assert seen == list(range(5))
    assert await stream.try_next() is None
    await stream.close()
    assert not stream.alive
    assert await stream.try_next() is None
    with pytest.raises(StopAsyncIteration):
        await stream.next()
    assert [c async for c in stream] == []


async def test_database_and_cluster_streams(client, db_name, sync_client):
    other_db = db_name + "_b"
    db_stream = await client[db_name].watch(max_await_time_ms=AWAIT_MS)
    cluster = await client.watch(
        [{"$match": {"ns.db": {"$in": [db_name, other_db]}}}], max_await_time_ms=AWAIT_MS
    )
    try:
        assert isinstance(db_stream, AsyncDatabaseChangeStream)
        assert isinstance(cluster, AsyncClusterChangeStream)
        sync_client[db_name]["a"].insert_one({"_id": "a"})
        sync_client[other_db]["c"].insert_one({"_id": "c"})
        sync_client[db_name]["b"].insert_one({"_id": "b"})
        in_db = await changes(db_stream, 2)
        everywhere = await changes(cluster, 3)
    finally:
        await db_stream.close()
        await cluster.close()
        sync_client.drop_database(db_name)
        sync_client.drop_database(other_db)
    assert [(c["ns"]["coll"], c["documentKey"]["_id"]) for c in in_db] == [("a", "a"), ("b", "b")]
    assert [(c["ns"]["db"], c["documentKey"]["_id"]) for c in everywhere] == [
        (db_name, "a"), (other_db, "c"), (db_name, "b")
    ]


async def test_pipeline_full_document_and_pre_images(client, db_name, sync_client):
    sync_client[db_name].create_collection("items", changeStreamPreAndPostImages={"enabled": True})
    coll = client[db_name]["items"]
    await coll.insert_one({"_id": 1, "v": 1})
    try:
        stream = await coll.watch(
            [{"$match": {"operationType": "update"}}],
            full_document="updateLookup",
            full_document_before_change="whenAvailable",
            max_await_time_ms=AWAIT_MS,
        )
        witness = sync_client[db_name]["items"].watch(
            [{"$match": {"operationType": "update"}}],
            full_document="updateLookup",
            full_document_before_change="whenAvailable",
            max_await_time_ms=AWAIT_MS,
        )
        await coll.insert_one({"_id": 2, "v": 1})
        await coll.update_one({"_id": 1}, {"$inc": {"v": 1}})
        [change] = await changes(stream, 1)
        await stream.close()
        with witness:
            expected = witness.next()
    finally:
        sync_client.drop_database(db_name)
    assert change["operationType"] == "update"
    assert change["fullDocument"] == {"_id": 1, "v": 2}
    assert change["fullDocumentBeforeChange"] == {"_id": 1, "v": 1}
    assert change == expected


async def test_options_on_the_wire(make_client, db_name, sync_client):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    coll = client[db_name]["items"]
    try:
        stream = await coll.watch(
            batch_size=3, max_await_time_ms=AWAIT_MS, comment="why", collation={"locale": "en"},
            show_expanded_events=True,
        )
        await coll.insert_many([{"_id": i} for i in range(7)])
        got = await changes(stream, 7)
        await stream.close()
    finally:
        sync_client.drop_database(db_name)
    assert [c["documentKey"]["_id"] for c in got] == list(range(7))
    [agg] = rec.sent("aggregate")
    assert agg["aggregate"] == "items"
    assert agg["pipeline"] == [{"$changeStream": {"showExpandedEvents": True}}]
    assert agg["cursor"] == {"batchSize": 3}
    assert agg["comment"] == "why"
    assert agg["collation"]["locale"] == "en"
    assert "maxAwaitTimeMS" not in agg  # it is the getMores' wait, not the aggregate's
    getmores = rec.sent("getMore")
    assert len(getmores) >= 3  # 7 changes in batches of at most 3
    for gm in getmores:
        assert gm["collection"] == "items"
        assert gm["batchSize"] == 3
        assert gm["maxTimeMS"] == AWAIT_MS
        assert gm["comment"] == "why"
    for name, reply in rec.replies:
        if name == "getMore":
            assert len(reply["cursor"]["nextBatch"]) <= 3
    [kill] = rec.sent("killCursors")
    assert kill["cursors"] == [Int64(rec.cursor_ids()[0])]


async def test_cluster_stream_command(make_client):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    stream = await client.watch(max_await_time_ms=AWAIT_MS)
    assert await stream.try_next() is None
    await stream.close()
    [agg] = rec.sent("aggregate")
    assert agg["aggregate"] == 1
    assert agg["$db"] == "admin"
    assert agg["pipeline"] == [{"$changeStream": {"allChangesForCluster": True}}]
    [gm] = rec.sent("getMore")
    assert gm["$db"] == "admin"
    assert gm["collection"] == "$cmd.aggregate"


async def test_invalidate_ends_the_stream(coll, sync_client, db_name):
    await coll.insert_one({"_id": 1})
    stream = await coll.watch(max_await_time_ms=AWAIT_MS)
    sync_client[db_name].drop_collection("items")
    got = await changes(stream, 2)
    assert [c["operationType"] for c in got] == ["drop", "invalidate"]
    assert not stream.alive
    with pytest.raises(StopAsyncIteration):
        await stream.next()
    await stream.close()


async def test_custom_type_decoder(client, db_name, sync_client):
    class DecimalDecoder(TypeDecoder):
        bson_type = Decimal128

        def transform_bson(self, value):
            return value.to_decimal()

    options = CodecOptions(type_registry=TypeRegistry([DecimalDecoder()]))
    coll = client[db_name].get_collection("items", codec_options=options)
    try:
        async with await coll.watch(max_await_time_ms=AWAIT_MS) as stream:
            await coll.insert_one({"_id": 1, "price": Decimal128("1.25")})
            await coll.insert_one({"_id": 2})
            [first] = await changes(stream, 1)
            token = stream.resume_token
        assert first["fullDocument"]["price"] == decimal.Decimal("1.25")
        async with await coll.watch(resume_after=token, max_await_time_ms=AWAIT_MS) as again:
            [second] = await changes(again, 1)
        assert second["documentKey"] == {"_id": 2}
    finally:
        sync_client.drop_database(db_name)


# ---- resume tokens -------------------------------------------------------------------------


async def test_resume_after_start_after_and_operation_time(coll, sync_client, db_name):
    stream = await coll.watch(max_await_time_ms=AWAIT_MS)
    await coll.insert_many([{"_id": i} for i in range(6)])
    first_two = await changes(stream, 2)
    token = stream.resume_token
    assert token == first_two[1]["_id"]
    await stream.close()

    async with await coll.watch(resume_after=token, max_await_time_ms=AWAIT_MS) as resumed:
        rest = await changes(resumed, 4)
    assert [c["documentKey"]["_id"] for c in rest] == [2, 3, 4, 5]

    async with await coll.watch(start_after=token, max_await_time_ms=AWAIT_MS) as started:
        rest = await changes(started, 4)
    assert [c["documentKey"]["_id"] for c in rest] == [2, 3, 4, 5]

    at = first_two[1]["clusterTime"]
    async with await coll.watch(start_at_operation_time=at, max_await_time_ms=AWAIT_MS) as timed:
        rest = await changes(timed, 5)
    assert [c["documentKey"]["_id"] for c in rest] == [1, 2, 3, 4, 5]


async def test_start_after_an_invalidate(coll, sync_client, db_name):
    await coll.insert_one({"_id": 0})
    stream = await coll.watch(max_await_time_ms=AWAIT_MS)
    sync_client[db_name].drop_collection("items")
    drop, invalidate = await changes(stream, 2)
    assert invalidate["operationType"] == "invalidate"
    await stream.close()
    # resumeAfter cannot pass an invalidate; startAfter can: the new collection's changes follow.
    async with await coll.watch(start_after=invalidate["_id"], max_await_time_ms=AWAIT_MS) as s:
        await coll.insert_one({"_id": "new"})
        [change] = await changes(s, 1)
    assert change["documentKey"] == {"_id": "new"}


async def test_tokens_interchangeable_with_pymongo(coll, sync_client, db_name):
    sync_coll = sync_client[db_name]["items"]
    stream = await coll.watch(max_await_time_ms=AWAIT_MS)
    await coll.insert_many([{"_id": i} for i in range(4)])
    [first] = await changes(stream, 1)
    await stream.close()
    # Our token, PyMongo's stream.
    with sync_coll.watch(resume_after=first["_id"], max_await_time_ms=AWAIT_MS) as theirs:
        after_ours = [theirs.next() for _ in range(3)]
        their_token = theirs.resume_token
    assert [c["documentKey"]["_id"] for c in after_ours] == [1, 2, 3]
    await coll.insert_one({"_id": 4})
    # PyMongo's token, our stream.
    async with await coll.watch(resume_after=their_token, max_await_time_ms=AWAIT_MS) as ours:
        [after_theirs] = await changes(ours, 1)
    assert after_theirs["documentKey"] == {"_id": 4}


# ---- closing -------------------------------------------------------------------------------


async def test_close_kills_the_server_cursor(make_client, db_name, sync_client):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    async with await client[db_name]["items"].watch(max_await_time_ms=AWAIT_MS) as stream:
        assert await stream.try_next() is None
        assert client._core.stats()["sessions"] == 1
    assert not stream.alive
    assert client._core.stats()["sessions"] == 0
    [cursor_id] = rec.cursor_ids()
    [(_, reply)] = [r for r in rec.replies if r[0] == "killCursors"]
    assert reply["cursorsKilled"] == [Int64(cursor_id)]
    # Gone on the server too: a getMore from the witness finds nothing.
    with pytest.raises(OperationFailure):
        sync_client[db_name].command("getMore", Int64(cursor_id), collection="items")


async def test_cancelled_wait_closes_the_stream(make_client, db_name):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    stream = await client[db_name]["items"].watch(max_await_time_ms=AWAIT_MS)
    task = asyncio.create_task(stream.next())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # As PyMongo's: the batch being fetched is lost, so the stream is over.
    assert not stream.alive
    async with asyncio.timeout(HANG_GUARD):
        while not rec.sent("killCursors"):
            await asyncio.sleep(0.05)
    await stream.close()
    await client[db_name]["items"].find_one({})  # the client is fine


async def test_bad_arguments_send_nothing(make_client, db_name, sync_client):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    coll = client[db_name]["items"]
    with pytest.raises(TypeError):
        await coll.watch({"$match": {}})
    with pytest.raises(TypeError):
        await coll.watch(full_document=1)
    with pytest.raises(ValueError):
        await coll.watch(batch_size=-1)
    with pytest.raises(TypeError):
        await coll.watch(max_await_time_ms="1")
    with pytest.raises(TypeError):
        await client.watch(session=object())
    with pytest.raises(OperationFailure) as ours:  # the server refuses the stage: no retry
        await coll.watch([{"$noSuchStage": {}}])
    with pytest.raises(OperationFailure) as theirs:
        sync_client[db_name]["items"].watch([{"$noSuchStage": {}}])
    assert ours.value.code == theirs.value.code
    assert len(rec.sent("aggregate")) == 1
    assert rec.sent("getMore") == []


async def test_sessions(make_client, client, db_name, sync_client):
    rec = Recorder()
    watcher = make_client(event_listeners=[rec])
    coll = watcher[db_name]["items"]
    try:
        async with watcher.start_session() as session:
            async with await coll.watch(session=session, max_await_time_ms=AWAIT_MS) as stream:
                await coll.insert_one({"_id": 1})
                [change] = await changes(stream, 1)
        assert change["documentKey"] == {"_id": 1}
        lsids = {bytes(cmd["lsid"]["id"]) for name, cmd in rec.commands}
        assert len(lsids) == 1  # aggregate, getMores and killCursors: all in the user's session
        async with client.start_session() as foreign:
            with pytest.raises(InvalidOperation):
                await coll.watch(session=foreign)
    finally:
        sync_client.drop_database(db_name)


# ---- automatic resume ----------------------------------------------------------------------


def test_resumable_errors_follow_the_specification():
    assert _resumable(AutoReconnect("reset"))
    assert _resumable(CursorNotFound("gone", 43))
    labelled = OperationFailure("x", 6, {"code": 6, "errorLabels": ["ResumableChangeStreamError"]})
    assert _resumable(labelled)
    unlabelled = OperationFailure("x", 6, {"code": 6})
    assert not _resumable(unlabelled)  # a 4.4+ server labels what is resumable
    assert _resumable(unlabelled, max_wire_version=8)  # an older one: the listed codes
    assert not _resumable(OperationFailure("x", 2, {"code": 2}), max_wire_version=8)
    fatal = OperationFailure("x", 280, {"code": 280,
                                        "errorLabels": ["NonResumableChangeStreamError"]})
    assert not _resumable(fatal)


async def test_resume_after_the_server_cursor_is_killed(make_client, db_name, sync_client):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    coll = client[db_name]["items"]
    sync_coll = sync_client[db_name]["items"]
    try:
        stream = await coll.watch(max_await_time_ms=AWAIT_MS)
        sync_coll.insert_many([{"_id": 0}, {"_id": 1}])
        [first] = await changes(stream, 1)
        [cursor_id] = rec.cursor_ids()
        killed = sync_client[db_name].command("killCursors", "items", cursors=[Int64(cursor_id)])
        assert killed["cursorsKilled"] == [Int64(cursor_id)]
        sync_coll.insert_many([{"_id": 2}, {"_id": 3}])
        rest = await changes(stream, 3)
        await stream.close()
    finally:
        sync_client.drop_database(db_name)
    assert [c["documentKey"]["_id"] for c in [first] + rest] == [0, 1, 2, 3]
    assert [f["code"] for n, f in rec.failures if n == "getMore"] == [43]  # CursorNotFound
    aggregates = rec.sent("aggregate")
    assert len(aggregates) == 2  # resumed once, after the last change seen
    assert aggregates[1]["pipeline"][0]["$changeStream"] == {"resumeAfter": rest[0]["_id"]}
    assert len(rec.cursor_ids()) == 2


async def test_resume_after_a_network_error(server, make_client, db_name, sync_client):
    rec = Recorder()
    sync_coll = sync_client[db_name]["items"]
    with DelayProxy(server.host, server.port) as proxy:
        client = make_client(proxy.uri, event_listeners=[rec])
        coll = client[db_name]["items"]
        try:
            stream = await coll.watch(max_await_time_ms=1000)
            sync_coll.insert_one({"_id": 0})
            [first] = await changes(stream, 1)
            # Cut the connection under the getMore waiting on the server, then change things.
            waiting = asyncio.create_task(stream.next())
            await asyncio.sleep(0.3)
            await asyncio.to_thread(proxy.drop_connections)
            sync_coll.insert_many([{"_id": i} for i in range(1, 5)])
            async with asyncio.timeout(HANG_GUARD):
                second = await waiting
            rest = await changes(stream, 3)
            await stream.close()
        finally:
            sync_client.drop_database(db_name)
    ids = [c["documentKey"]["_id"] for c in [first, second] + rest]
    assert ids == [0, 1, 2, 3, 4]  # nothing lost, nothing twice
    assert any(n == "getMore" for n, f in rec.failures), "the cut did not reach a getMore"
    aggregates = rec.sent("aggregate")
    assert len(aggregates) == 2
    assert aggregates[1]["pipeline"][0]["$changeStream"]["resumeAfter"] == first["_id"]


async def test_no_resume_after_a_fatal_error(make_client, db_name, sync_client):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    coll = client[db_name]["items"]
    try:
        # Without _id a change has no resume token: the server fails the getMore for good.
        stream = await coll.watch([{"$project": {"_id": 0}}], max_await_time_ms=AWAIT_MS)
        await coll.insert_one({"_id": 1})
        with pytest.raises(OperationFailure) as caught:
            await changes(stream, 1)
        assert caught.value.has_error_label("NonResumableChangeStreamError")
        assert not stream.alive
        await stream.close()
    finally:
        sync_client.drop_database(db_name)
    assert len(rec.sent("aggregate")) == 1


# ---- many streams on one client ------------------------------------------------------------


async def _streams_and_traffic(client, db_name, n_streams, n_ops):
    """n_streams streams blocked waiting on their own collection, while other tasks run n_ops
    reads and writes; then one change for each stream."""
    db = client[db_name]
    streams = [await db[f"s{i}"].watch(max_await_time_ms=300) for i in range(n_streams)]
    try:
        waiting = [asyncio.create_task(s.next()) for s in streams]
        await asyncio.sleep(0.1)

        async def traffic(k):
            coll = db["traffic"]
            for j in range(n_ops // 10):
                await coll.insert_one({"_id": (k, j)})
                assert await coll.find_one({"_id": (k, j)}) == {"_id": [k, j]}

        async with asyncio.timeout(HANG_GUARD):
            await asyncio.gather(*(traffic(k) for k in range(5)))
            assert not any(t.done() for t in waiting)  # the streams were waiting all along
            for i in range(n_streams):
                await db[f"s{i}"].insert_one({"_id": i})
            got = await asyncio.gather(*waiting)
        assert [c["ns"]["coll"] for c in got] == [f"s{i}" for i in range(n_streams)]
        assert await db["traffic"].count_documents({}) == 5 * (n_ops // 10)
    finally:
        for s in streams:
            await s.close()


async def test_many_streams_do_not_starve_other_operations(client, db_name, sync_client):
    try:
        await _streams_and_traffic(client, db_name, 16, 200)
    finally:
        sync_client.drop_database(db_name)


async def test_more_streams_than_workers_only_delay_others(make_client, db_name, sync_client):
    # maxPoolSize bounds the workers: with more streams waiting than workers, other operations
    # queue behind getMores (each returns within max_await_time_ms) but still all complete.
    client = make_client(maxPoolSize=3)
    try:
        await _streams_and_traffic(client, db_name, 5, 40)
    finally:
        sync_client.drop_database(db_name)

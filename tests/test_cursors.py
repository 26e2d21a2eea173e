"""The find cursor (AsyncCursor): no I/O until iterated, one core job per batch, PyMongo's limit and
batch size rules (the commands sent are PyMongo's), chaining refused once iteration began, and a
server cursor that never outlives its use: killed on close, on collection, on a cancelled fetch and
on an error (the server is the witness: a getMore on the id answers CursorNotFound, and serverStatus
counts one open cursor fewer)."""

from __future__ import annotations

import asyncio
import copy
import gc
import time

import pymongo
import pytest
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from pymongo import monitoring
from pymongo.cursor import CursorType
from pymongo.errors import CursorNotFound, InvalidOperation, OperationFailure

from asyncmongo import _core
from asyncmongo.cursor import AsyncCursor
from tests.proxy import DelayProxy


# ---- helpers -------------------------------------------------------------------------------------


def jobs() -> int:
    return _core.debug_counters()["jobs_submitted"]


async def settle(timeout: float = 5.0) -> None:
    """Wait until every job handed to the core has completed (fire-and-forget killCursors too)."""
    deadline = time.monotonic() + timeout
    while True:
        c = _core.debug_counters()
        if c["jobs_submitted"] == c["jobs_completed"]:
            return
        assert time.monotonic() < deadline, f"jobs never completed: {c}"
        await asyncio.sleep(0.01)


def open_cursors(sync_client) -> int:
    return sync_client.admin.command("serverStatus")["metrics"]["cursor"]["open"]["total"]


def assert_cursor_gone(sync_client, db_name: str, coll_name: str, cursor_id: int) -> None:
    """The server no longer knows the cursor: a getMore on its id is CursorNotFound (43)."""
    with pytest.raises(CursorNotFound) as info:
        sync_client[db_name].command("getMore", Int64(cursor_id), collection=coll_name)
    assert info.value.code == 43


def seed(sync_client, coll, n: int) -> None:
    w = sync_client[coll.database.name][coll.name]
    w.insert_many([{"_id": i, "v": i * 2} for i in range(n)])


class Commands(monitoring.CommandListener):
    """The commands a client sends, as the server gets them, minus what each driver adds of its own
    (session, cluster time, $db, read preference) and with cursor ids made comparable."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def started(self, event) -> None:
        if event.command_name not in ("find", "getMore", "killCursors", "explain"):
            return  # PyMongo's endSessions at close, for one
        cmd = {k: v for k, v in event.command.items()
               if k not in ("lsid", "$clusterTime", "$db", "$readPreference", "txnNumber")}
        if "getMore" in cmd:
            cmd["getMore"] = "ID"
        if "killCursors" in cmd:
            cmd["cursors"] = ["ID" for _ in cmd["cursors"]]
        self.sent.append(cmd)

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


# ---- construction without I/O, iteration ---------------------------------------------------------


async def test_find_builds_a_cursor_without_io(coll, sync_client):
    seed(sync_client, coll, 3)
    before = jobs()
    cursor = coll.find({"v": {"$gte": 0}}).sort("_id").skip(0).limit(0).batch_size(2)
    cursor = cursor.max_time_ms(5000).comment("c").hint([("_id", 1)]).allow_disk_use(False)
    assert jobs() == before, "find() and chaining must not send anything"
    assert isinstance(cursor, AsyncCursor)
    assert cursor.collection is coll
    assert cursor.cursor_id is None and cursor.address is None and cursor.alive
    assert cursor.retrieved == 0 and cursor.session is None
    assert [d async for d in cursor] == [{"_id": i, "v": i * 2} for i in range(3)]
    # Two batches of two (the find, one getMore that also tells the cursor ended).
    assert jobs() - before == 2
    assert not cursor.alive and cursor.cursor_id == 0
    assert cursor.address == await coll.database.client.address
    assert cursor.retrieved == 3
    with pytest.raises(StopAsyncIteration):
        await cursor.next()


async def test_100000_documents_cost_one_job_per_batch(coll, sync_client):
    w = sync_client[coll.database.name][coll.name]
    w.insert_many([{"_id": i, "s": f"doc{i}"} for i in range(100_000)])
    before = jobs()
    n = 0
    async for doc in coll.find(batch_size=1000, sort=[("_id", 1)]):
        assert doc == {"_id": n, "s": f"doc{n}"}
        n += 1
    spent = jobs() - before
    assert n == 100_000
    # 1 find + 99 getMores, and at most one getMore more that finds the cursor exhausted.
    assert 100 <= spent <= 101, spent
    # to_list() runs the same batches.
    before = jobs()
    docs = await coll.find({}, {"_id": 1}, batch_size=1000).to_list()
    assert 100 <= jobs() - before <= 101
    assert sorted(d["_id"] for d in docs) == list(range(100_000))


async def test_next_try_next_to_list_and_async_with(coll, sync_client):
    seed(sync_client, coll, 10)
    cursor = coll.find(sort=[("_id", 1)], batch_size=3)
    assert await cursor.next() == {"_id": 0, "v": 0}
    assert await cursor.try_next() == {"_id": 1, "v": 2}
    assert await cursor.to_list(4) == [{"_id": i, "v": i * 2} for i in range(2, 6)]
    assert [d["_id"] for d in await cursor.to_list()] == [6, 7, 8, 9]
    assert await cursor.to_list() == []
    assert await cursor.try_next() is None
    assert not cursor.alive

    async with coll.find(batch_size=2) as cursor:
        assert (await cursor.next())["_id"] == 0
        cursor_id = cursor.cursor_id
        assert cursor_id
    assert not cursor.alive
    await settle()
    assert_cursor_gone(sync_client, coll.database.name, coll.name, cursor_id)

    # to_list's own argument checks (PyMongo's ValueError for < 1).
    cursor = coll.find()
    with pytest.raises(ValueError):
        await cursor.to_list(0)
    with pytest.raises(TypeError):
        await cursor.to_list("2")
    assert len(await cursor.to_list(20)) == 10


async def test_limit_and_batch_size_rules(coll, sync_client):
    seed(sync_client, coll, 40)
    w = sync_client[coll.database.name][coll.name]
    # The getMores ask for what the limit leaves: 10 + 10 + 5, and the server closes the cursor.
    before = jobs()
    cursor = coll.find(limit=25, batch_size=10, sort=[("_id", 1)])
    docs = await cursor.to_list()
    assert [d["_id"] for d in docs] == list(range(25))
    assert jobs() - before == 3
    assert cursor.cursor_id == 0 and not cursor.alive and cursor.retrieved == 25

    # A negative limit is one batch, whatever is left (PyMongo's singleBatch).
    before = jobs()
    ours = await coll.find(limit=-7, sort=[("_id", -1)]).to_list()
    assert ours == list(w.find(limit=-7, sort=[("_id", -1)]))
    assert len(ours) == 7 and jobs() - before == 1

    # Limit equal to the batch size: one batch, no getMore to learn the end.
    before = jobs()
    cursor = coll.find(limit=5, batch_size=5)
    assert len(await cursor.to_list()) == 5
    assert jobs() - before == 1 and cursor.cursor_id == 0

    # limit(0) is no limit; the chained forms give what PyMongo's give.
    assert len(await coll.find().limit(0).to_list()) == 40
    for build in (
        lambda c: c.find().sort("_id", -1).skip(3).limit(4),
        lambda c: c.find({"v": {"$gt": 10}}).sort([("v", pymongo.DESCENDING)]).limit(-3),
        lambda c: c.find().sort({"_id": 1}).skip(38).batch_size(1),
    ):
        assert await build(coll).to_list() == list(build(w))


async def test_chaining_after_iteration_is_invalid_operation(coll, sync_client):
    seed(sync_client, coll, 5)
    cursor = coll.find(batch_size=2)
    await cursor.next()
    for modify in (
        lambda c: c.sort("_id"),
        lambda c: c.skip(1),
        lambda c: c.limit(1),
        lambda c: c.batch_size(1),
        lambda c: c.max_time_ms(10),
        lambda c: c.max_await_time_ms(10),
        lambda c: c.hint("_id_"),
        lambda c: c.comment("x"),
        lambda c: c.collation({"locale": "en"}),
        lambda c: c.where("true"),
        lambda c: c.allow_disk_use(True),
        lambda c: c.min([("_id", 0)]),
        lambda c: c.max([("_id", 9)]),
        lambda c: c.remove_option(2),
    ):
        with pytest.raises(InvalidOperation, match="cannot set options after executing query"):
            modify(cursor)
    with pytest.raises(InvalidOperation):
        await cursor.add_option(2)
    # The cursor is unharmed by the refusals.
    assert [d["_id"] for d in await cursor.to_list()] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "modify",
    [
        lambda c: c.skip("1"),
        lambda c: c.skip(-1),
        lambda c: c.limit(1.5),
        lambda c: c.batch_size("2"),
        lambda c: c.batch_size(-1),
        lambda c: c.max_time_ms("10"),
        lambda c: c.max_await_time_ms(1.0),
        lambda c: c.sort(5),
        lambda c: c.sort([]),
        lambda c: c.sort(["a", ("b", 1.5)]),
        lambda c: c.sort(("a", 1), 1),
        lambda c: c.hint(5),
        lambda c: c.collation(5),
        lambda c: c.allow_disk_use(1),
        lambda c: c.min({"a": 1}),
        lambda c: c.max("a"),
        lambda c: c.where(5),
        lambda c: c.remove_option("2"),
        lambda c: c[0],
        lambda c: c[1:2],
    ],
)
async def test_modifier_bad_arguments_match_pymongo(coll, sync_client, modify):
    w = sync_client[coll.database.name][coll.name]
    with pytest.raises(Exception) as theirs:
        modify(_pymongo_async_like(w))
    before = jobs()
    with pytest.raises(type(theirs.value)) as ours:
        modify(coll.find())
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)
    assert jobs() == before


def _pymongo_async_like(w):
    """PyMongo's sync cursor raises what its async cursor raises (shared code), except indexing,
    which only the async cursor refuses outright."""
    cursor = w.find()

    class Refusing:
        def __getattr__(self, name):
            return getattr(cursor, name)

        def __getitem__(self, index):
            raise IndexError("AsyncCursor does not support indexing")

    return Refusing()


# ---- killing the server cursor -------------------------------------------------------------------


async def test_close_kills_the_server_cursor(coll, sync_client):
    seed(sync_client, coll, 50)
    cursor = coll.find(batch_size=5)
    await cursor.next()
    cursor_id = cursor.cursor_id
    assert cursor_id and cursor.alive
    live = open_cursors(sync_client)
    await cursor.close()
    assert not cursor.alive
    with pytest.raises(StopAsyncIteration):
        await cursor.next()
    assert_cursor_gone(sync_client, coll.database.name, coll.name, cursor_id)
    assert open_cursors(sync_client) == live - 1
    # Closing again sends nothing.
    before = jobs()
    await cursor.close()
    assert jobs() == before


async def test_collected_unfinished_cursor_is_killed(coll, sync_client):
    seed(sync_client, coll, 50)
    cursor = coll.find(batch_size=5)
    assert (await cursor.next())["_id"] == 0
    cursor_id = cursor.cursor_id
    live = open_cursors(sync_client)
    del cursor
    gc.collect()
    await asyncio.sleep(0)
    await settle()
    assert_cursor_gone(sync_client, coll.database.name, coll.name, cursor_id)
    assert open_cursors(sync_client) == live - 1


async def test_exhausted_cursor_sends_no_kill(coll, sync_client):
    seed(sync_client, coll, 6)
    cursor = coll.find(batch_size=4)
    assert len(await cursor.to_list()) == 6
    before = jobs()
    await cursor.close()
    del cursor
    gc.collect()
    assert jobs() == before


async def test_rewind_kills_and_runs_the_query_again(coll, sync_client):
    seed(sync_client, coll, 20)
    cursor = coll.find(sort=[("_id", 1)], batch_size=3)
    assert [d["_id"] for d in await cursor.to_list(2)] == [0, 1]
    old_id = cursor.cursor_id
    assert await cursor.rewind() is cursor
    assert cursor.cursor_id is None and cursor.alive and cursor.retrieved == 0
    assert_cursor_gone(sync_client, coll.database.name, coll.name, old_id)
    # Options may change again, as before the first fetch.
    cursor.limit(5)
    assert [d["_id"] for d in await cursor.to_list()] == [0, 1, 2, 3, 4]


async def test_limit_reached_closes_the_cursor(coll, sync_client):
    seed(sync_client, coll, 30)
    live = open_cursors(sync_client)
    cursor = coll.find(limit=12, batch_size=5)
    assert len(await cursor.to_list()) == 12
    assert not cursor.alive
    await settle()
    assert open_cursors(sync_client) == live


@pytest.fixture
def proxy(server):
    p = DelayProxy(server.host, server.port, delay=0.5)
    p.start()
    yield p
    p.stop()


async def test_cancelled_fetch_closes_the_cursor_and_client_stays_usable(
    make_client, proxy, sync_client, db_name
):
    sync_client[db_name]["items"].insert_many([{"_id": i} for i in range(100)])
    client = make_client(proxy.uri)
    coll = client[db_name]["items"]
    cursor = coll.find(batch_size=5, sort=[("_id", 1)])
    assert [d["_id"] for d in await cursor.to_list(5)] == [0, 1, 2, 3, 4]
    cursor_id = cursor.cursor_id
    assert cursor_id
    task = asyncio.create_task(cursor.next())  # a getMore, slowed by the proxy
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The getMore may have been taken on the server: the cursor is closed rather than skip a batch.
    assert not cursor.alive
    await cursor.close()
    with pytest.raises(StopAsyncIteration):
        await cursor.next()
    await settle()
    assert_cursor_gone(sync_client, db_name, "items", cursor_id)
    # The client serves the next queries.
    assert await coll.find_one({"_id": 7}) == {"_id": 7}
    assert len(await coll.find(batch_size=200).to_list()) == 100


async def test_cancelled_first_batch_leaves_a_closed_cursor(
    make_client, proxy, sync_client, db_name
):
    sync_client[db_name]["items"].insert_many([{"_id": i} for i in range(10)])
    client = make_client(proxy.uri)
    coll = client[db_name]["items"]
    cursor = coll.find()
    task = asyncio.create_task(cursor.to_list())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not cursor.alive and cursor.cursor_id is None
    await cursor.close()
    assert await cursor.to_list() == []
    await settle()
    assert len(await coll.find().to_list()) == 10


async def test_cursor_killed_elsewhere_is_cursor_not_found(coll, sync_client):
    seed(sync_client, coll, 30)
    cursor = coll.find(batch_size=5)
    await cursor.to_list(5)
    sync_client[coll.database.name].command(
        "killCursors", coll.name, cursors=[Int64(cursor.cursor_id)]
    )
    # The batch fetched ahead before the kill still comes; the next getMore finds no cursor.
    with pytest.raises(CursorNotFound) as info:
        for _ in range(10):
            await cursor.next()
    assert info.value.code == 43
    # The server has no cursor left: closing sends nothing, and the cursor is done.
    assert not cursor.alive
    before = jobs()
    await cursor.close()
    assert jobs() == before


async def test_server_error_on_first_batch(coll, sync_client):
    seed(sync_client, coll, 3)
    w = sync_client[coll.database.name][coll.name]
    with pytest.raises(OperationFailure) as theirs:
        list(w.find(hint="no_such_index"))
    cursor = coll.find(hint="no_such_index")
    with pytest.raises(OperationFailure) as ours:
        await cursor.next()
    assert type(ours.value) is type(theirs.value) and ours.value.code == theirs.value.code
    assert not cursor.alive
    with pytest.raises(StopAsyncIteration):
        await cursor.next()
    await cursor.close()


# ---- clone, explain, distinct, where, min/max, tailable, codec options ---------------------------


async def test_clone_copies_the_query_not_the_position(coll, sync_client):
    seed(sync_client, coll, 10)
    filt = {"v": {"$gte": 4}}
    cursor = coll.find(filt, {"v": 0}, sort=[("_id", -1)], limit=4, batch_size=2)
    assert (await cursor.next())["_id"] == 9
    clone = cursor.clone()
    assert clone is not cursor and clone.cursor_id is None and clone.alive
    assert await clone.to_list() == [{"_id": i} for i in (9, 8, 7, 6)]
    assert [d["_id"] for d in await cursor.to_list()] == [8, 7, 6]
    # Deep copies: changing the clone's filter leaves the original's alone.
    assert copy.deepcopy(cursor)._spec == filt and copy.deepcopy(cursor)._spec is not filt
    assert copy.copy(cursor)._spec is cursor._spec
    clone2 = cursor.clone().where("this.v > 0")
    assert "$where" in clone2._spec and "$where" not in filt


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"filter": {"v": {"$gt": 1}}, "projection": ["v"], "sort": [("v", -1)], "skip": 2,
         "limit": 5, "batch_size": 3},
        {"limit": 5, "batch_size": 5},
        {"hint": "_id_", "comment": "hi", "max_time_ms": 500, "collation": {"locale": "en"},
         "allow_disk_use": True, "return_key": True, "show_record_id": False},
        {"no_cursor_timeout": True, "allow_partial_results": True},
        {"filter": {"$query": {"v": 2}, "$orderby": {"_id": -1}}},
        {"min": {"_id": 2}, "max": {"_id": 5}, "hint": [("_id", 1)]},
    ],
)
async def test_explain_shows_the_find_command_pymongo_sends(coll, sync_client, kwargs):
    seed(sync_client, coll, 10)
    w = sync_client[coll.database.name][coll.name]
    before = jobs()
    ours = await coll.find(**kwargs).explain()
    assert jobs() - before == 1
    theirs = w.find(**kwargs).explain()
    # The server echoes the find command it was asked to explain.
    assert ours["command"] == theirs["command"]
    assert ours["ok"] == 1.0 and "queryPlanner" in ours


async def test_let_survives_clone(coll, sync_client):
    # PyMongo's clone() drops ``let`` (and so its explain()): ours keeps the query whole. (Not
    # checked through explain: SecantusDB's explain ignores ``let``.)
    seed(sync_client, coll, 6)
    w = sync_client[coll.database.name][coll.name]
    filt = {"$expr": {"$gt": ["$v", "$$floor"]}}
    cursor = coll.find(filt, let={"floor": 6}, sort=[("_id", 1)])
    expected = list(w.find(filt, let={"floor": 6}, sort=[("_id", 1)]))
    assert [d["_id"] for d in expected] == [4, 5]
    assert await cursor.clone().to_list() == expected
    assert await cursor.to_list() == expected


async def test_cursor_distinct_and_where(coll, sync_client):
    seed(sync_client, coll, 12)
    w = sync_client[coll.database.name][coll.name]
    w.update_many({}, [{"$set": {"m": {"$mod": ["$_id", 3]}}}])
    ours = await coll.find({"_id": {"$gte": 4}}, max_time_ms=1000, comment="d").distinct("m")
    assert sorted(ours) == sorted(w.find({"_id": {"$gte": 4}}).distinct("m")) == [0, 1, 2]
    with pytest.raises(TypeError):
        await coll.find().distinct(5)
    # $where needs JavaScript, which SecantusDB lacks: the same server error as for PyMongo.
    filt = {"_id": 1}
    with pytest.raises(OperationFailure) as theirs:
        list(w.find(filt).where("this.v > 1"))
    with pytest.raises(OperationFailure) as ours_err:
        await coll.find(filt).where("this.v > 1").to_list()
    assert ours_err.value.code == theirs.value.code
    assert filt == {"_id": 1}


async def test_min_max_need_a_hint(coll, sync_client):
    seed(sync_client, coll, 10)
    w = sync_client[coll.database.name][coll.name]
    cursor = coll.find().min([("_id", 3)])
    with pytest.raises(InvalidOperation, match="hint"):
        await cursor.next()
    ours = await coll.find().min([("_id", 3)]).max([("_id", 6)]).hint([("_id", 1)]).to_list()
    theirs = list(w.find().min([("_id", 3)]).max([("_id", 6)]).hint([("_id", 1)]))
    assert ours == theirs == [{"_id": i, "v": i * 2} for i in (3, 4, 5)]


async def test_tailable_cursor_waits_for_new_documents(client, db_name, sync_client):
    sdb = sync_client[db_name]
    sdb.create_collection("capped", capped=True, size=100_000)
    sdb.capped.insert_many([{"n": i} for i in range(3)])
    coll = client[db_name]["capped"]
    cursor = coll.find(cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(100)
    assert [d["n"] async for d in cursor] == [0, 1, 2]
    # At the end a tailable cursor stops the iteration but stays open.
    assert cursor.alive and cursor.cursor_id
    assert await cursor.try_next() is None
    sdb.capped.insert_one({"n": 3})
    assert (await cursor.next())["n"] == 3
    cursor_id = cursor.cursor_id
    await cursor.close()
    assert_cursor_gone(sync_client, db_name, "capped", cursor_id)

    tail = coll.find(cursor_type=CursorType.TAILABLE)
    assert len(await tail.to_list()) == 4 and tail.alive
    await tail.close()
    with pytest.raises(ValueError, match="cursor_type"):
        coll.find(cursor_type=1)
    with pytest.raises(InvalidOperation, match="exhaust"):
        coll.find(cursor_type=CursorType.EXHAUST, limit=2)
    # An exhaust cursor is served batch by batch: the same documents.
    assert len(await coll.find(cursor_type=CursorType.EXHAUST, batch_size=2).to_list()) == 4


async def test_documents_decoded_with_the_collection_codec_options(coll, sync_client):
    seed(sync_client, coll, 5)
    son = coll.with_options(codec_options=CodecOptions(document_class=SON))
    docs = await son.find(sort=[("_id", 1)], batch_size=2).to_list()
    assert all(type(d) is SON for d in docs) and docs[4] == SON([("_id", 4), ("v", 8)])
    raw = coll.with_options(codec_options=CodecOptions(document_class=RawBSONDocument))
    docs = await raw.find({"_id": {"$lt": 3}}, sort=[("_id", 1)]).to_list()
    assert all(isinstance(d, RawBSONDocument) for d in docs)
    assert [d["v"] for d in docs] == [0, 2, 4]


@pytest.mark.parametrize(
    "kwargs, take",
    [
        ({"limit": 25, "batch_size": 10}, None),  # getMores ask for 10, then the 5 left
        ({"limit": 12, "batch_size": 5, "comment": "why"}, None),  # the comment rides the getMores
        ({"limit": 5, "batch_size": 5}, None),  # batchSize 6: no getMore to learn the end
        ({"limit": -4, "batch_size": 2}, None),  # singleBatch
        ({"batch_size": 7, "sort": [("_id", -1)], "skip": 3}, None),
        ({"batch_size": 4}, 6),  # closed early: killCursors
        ({"limit": 30}, 3),
    ],
)
async def test_commands_sent_are_pymongos(make_client, sync_client, db_name, server, kwargs, take):
    sync_client[db_name]["items"].insert_many([{"_id": i} for i in range(40)])
    ours, theirs = Commands(), Commands()
    client = make_client(event_listeners=[ours])
    cursor = client[db_name]["items"].find(**kwargs)
    got = await cursor.to_list(take)
    await cursor.close()
    with pymongo.MongoClient(server.uri, event_listeners=[theirs]) as pm:
        pm_cursor = pm[db_name]["items"].find(**kwargs)
        expected = [d for _, d in zip(range(take or 10**6), pm_cursor)]
        pm_cursor.close()
    assert got == expected
    sent = ours.sent
    if take is not None and len(sent) == len(theirs.sent) + 1:
        # Closed early: the batch fetched ahead (a getMore PyMongo never sends) may have gone out
        # before the killCursors, which still follows it.
        assert sent[-2]["getMore"] == "ID" and "killCursors" in sent[-1]
        sent = sent[:-2] + sent[-1:]
    assert sent == theirs.sent

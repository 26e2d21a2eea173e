"""Cursors fetch ahead: while the application reads one batch, the next getMore already runs on a
worker (one batch ahead at most; not for tailable cursors or change streams). A cursor closed,
collected or cancelled with a fetch in flight drops it and still kills the server cursor; results
are PyMongo's whatever the batch size and limit.
"""

from __future__ import annotations

import asyncio
import gc

import pytest
from bson.int64 import Int64
from pymongo import CursorType
from pymongo.errors import CursorNotFound
from pymongo.monitoring import CommandListener



class Events(CommandListener):
    def __init__(self) -> None:
        self.started_events: list[tuple[str, dict]] = []

    def started(self, event) -> None:
        self.started_events.append((event.command_name, dict(event.command)))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass

    def names(self) -> list[str]:
        return [name for name, _ in self.started_events]


@pytest.fixture
def seeded(sync_client, db_name):
    sync_client[db_name].items.insert_many([{"_id": i, "v": i % 7} for i in range(250)])
    return sync_client[db_name].items


async def _until(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


async def test_the_next_batch_is_fetched_while_this_one_is_read(make_client, db_name, seeded):
    events = Events()
    client = make_client(event_listeners=[events])
    cursor = client[db_name].items.find(batch_size=50, sort=[("_id", 1)])
    first = await cursor.next()
    assert first["_id"] == 0
    # Without asking for more, a getMore goes out while the first batch is still being read.
    await _until(lambda: "getMore" in events.names())
    assert events.names().count("getMore") == 1  # one batch ahead, not more
    docs = [first] + [d async for d in cursor]
    assert [d["_id"] for d in docs] == list(range(250))
    # 250 documents in batches of 50: the find and 4 getMores, plus at most one finding the end.
    assert 4 <= events.names().count("getMore") <= 5


@pytest.mark.parametrize("batch_size,limit", [(1, 0), (2, 0), (101, 0), (2, 7), (50, 120),
                                              (0, 0), (7, -9), (3, 3)])
async def test_results_are_pymongos(client, db_name, seeded, batch_size, limit):
    kwargs = {"batch_size": batch_size, "limit": limit, "sort": [("_id", 1)]}
    ours = await client[db_name].items.find({"v": {"$lt": 5}}, **kwargs).to_list()
    theirs = list(seeded.find({"v": {"$lt": 5}}, **kwargs))
    assert ours == theirs
    aggregate = await client[db_name].items.aggregate([{"$sort": {"_id": -1}}],
                                                      batchSize=batch_size or None)
    assert await aggregate.to_list() == list(seeded.aggregate([{"$sort": {"_id": -1}}]))


async def _server_cursor_gone(sync_client, db_name, cursor_id) -> bool:
    try:
        sync_client[db_name].command("getMore", Int64(cursor_id), collection="items")
    except CursorNotFound:
        return True
    return False


async def test_closed_after_its_first_batch_it_kills_the_server_cursor(
        make_client, db_name, seeded, sync_client):
    events = Events()
    client = make_client(event_listeners=[events])
    cursor = client[db_name].items.find(batch_size=10)
    await cursor.next()
    cursor_id = cursor.cursor_id
    assert cursor_id
    await cursor.close()  # a getMore may be in flight: it is dropped
    await _until(lambda: "killCursors" in events.names())
    kill = [c for n, c in events.started_events if n == "killCursors"]
    assert kill and kill[-1]["cursors"] == [cursor_id]
    assert await _server_cursor_gone(sync_client, db_name, cursor_id)
    # The C debug counters (checked after every test) show no job, reply or buffer left.


async def test_collected_with_a_fetch_in_flight(make_client, db_name, seeded, sync_client):
    events = Events()
    client = make_client(event_listeners=[events])
    cursor = client[db_name].items.find(batch_size=10)
    await cursor.next()
    cursor_id = cursor.cursor_id
    del cursor
    gc.collect()
    await _until(lambda: "killCursors" in events.names())
    assert await _server_cursor_gone(sync_client, db_name, cursor_id)


async def test_a_cancelled_consumer_leaves_the_client_usable(client, db_name, seeded):
    for delay in (0, 0.0005, 0.002, 0.01):
        cursor = client[db_name].items.find(batch_size=3)

        async def consume():
            return [d async for d in cursor]

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(delay)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await cursor.close()
    assert len(await client[db_name].items.find(batch_size=3).to_list()) == 250


async def test_tailable_cursors_and_streams_do_not_fetch_ahead(make_client, db_name, sync_client):
    events = Events()
    client = make_client(event_listeners=[events])
    db = sync_client[db_name]
    db.create_collection("capped", capped=True, size=100000)
    db.capped.insert_many([{"i": i} for i in range(20)])
    cursor = client[db_name].capped.find(cursor_type=CursorType.TAILABLE, batch_size=5)
    await cursor.next()
    await asyncio.sleep(0.2)
    assert "getMore" not in events.names()
    await cursor.close()
    stream = await client[db_name].items.watch(max_await_time_ms=50)
    await asyncio.sleep(0.2)
    assert "getMore" not in events.names()
    await stream.close()


async def test_no_fetch_ahead_in_an_explicit_session(make_client, db_name, seeded):
    # There a getMore would take the session's turn, and the user's next operation in the session
    # would find it busy: the next batch is fetched when it is asked for.
    events = Events()
    client = make_client(event_listeners=[events])
    async with client.start_session() as session:
        cursor = client[db_name].items.find(batch_size=10, session=session)
        await cursor.next()
        await asyncio.sleep(0.2)
        assert "getMore" not in events.names()
        assert await client[db_name].items.count_documents({}, session=session) == 250
        assert len(await cursor.to_list()) == 249

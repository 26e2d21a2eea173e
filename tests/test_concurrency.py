"""Concurrency against the real server: many tasks get their own answers, the loop stays free while
operations wait on the network, and both wake-up paths (eventfd, call_soon_threadsafe) deliver."""

import asyncio
import time

import pytest

from asyncmongo import AsyncMongoClient
from tests.proxy import DelayProxy


@pytest.fixture
def slow_proxy(server):
    proxy = DelayProxy(server.host, server.port, delay=0.25)
    proxy.start()
    yield proxy
    proxy.stop()


async def test_ten_thousand_concurrent_find_one(coll, sync_client, db_name):
    n = 10_000
    sync_client[db_name]["items"].insert_many([{"_id": i, "sq": i * i, "s": f"v{i}"} for i in range(n)])

    async def one(i):
        return i, await coll.find_one({"_id": i})

    results = await asyncio.gather(*(one(i) for i in range(n)))
    assert len(results) == n
    for i, doc in results:
        assert doc == {"_id": i, "sq": i * i, "s": f"v{i}"}


async def test_concurrent_inserts_all_land(coll, sync_client, db_name):
    n = 2_000
    results = await asyncio.gather(*(coll.insert_one({"k": i}) for i in range(n)))
    ids = [r.inserted_id for r in results]
    assert len(set(ids)) == n
    stored = {d["k"]: d["_id"] for d in sync_client[db_name]["items"].find({})}
    assert stored == {i: ids[i] for i in range(n)}


async def test_loop_stays_free_while_operations_wait(make_client, slow_proxy, sync_client, db_name):
    """A ticker on the same loop keeps its pace while 64 slow operations are in flight."""
    sync_client[db_name]["items"].insert_one({"_id": 1, "x": "y"})
    client = make_client(slow_proxy.uri, maxPoolSize=64)
    coll = client[db_name]["items"]
    await coll.find_one({"_id": 1})  # connect first: measure the steady state

    period = 0.005
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker():
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(period)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    gaps.clear()
    start = time.perf_counter()
    docs = await asyncio.gather(*(coll.find_one({"_id": 1}) for _ in range(64)))
    elapsed = time.perf_counter() - start
    stop.set()
    await tick

    assert docs == [{"_id": 1, "x": "y"}] * 64
    # The operations really waited on the network, and together rather than one after another.
    assert elapsed >= 0.25
    assert elapsed < 64 * 0.25 / 4
    # Meanwhile the ticker kept running: it ticked through the whole wait, never stalled long.
    assert sum(gaps) >= elapsed * 0.8
    assert len(gaps) >= elapsed / period * 0.3
    assert max(gaps) < 0.2, f"the loop stalled for {max(gaps):.3f}s"


@pytest.mark.parametrize("wakeup", ["eventfd", "threadsafe"])
async def test_both_wakeup_paths(make_client, db_name, sync_client, wakeup):
    client = make_client(wakeup=wakeup)
    coll = client[db_name]["w"]
    res = await asyncio.gather(*(coll.insert_one({"i": i}) for i in range(300)))
    docs = await asyncio.gather(*(coll.find_one({"_id": r.inserted_id}) for r in res))
    assert [d["i"] for d in docs] == list(range(300))
    assert client._core.queue().mode == wakeup
    assert sync_client[db_name]["w"].count_documents({}) == 300
    sync_client.drop_database(db_name)


class LoopWithoutReaders(asyncio.SelectorEventLoop):
    """A loop that cannot watch file descriptors, as Windows' proactor loop."""

    def add_reader(self, *args, **kwargs):
        raise NotImplementedError


def test_fallback_when_loop_has_no_add_reader(make_client, db_name, sync_client):
    client = make_client()  # asks for the default, eventfd

    async def work():
        coll = client[db_name]["f"]
        r = await coll.insert_one({"a": 1})
        return client._core.queue().mode, await coll.find_one({"_id": r.inserted_id})

    loop = LoopWithoutReaders()
    try:
        mode, doc = loop.run_until_complete(work())
    finally:
        loop.close()
    assert mode == "threadsafe"
    assert doc["a"] == 1
    sync_client.drop_database(db_name)


async def test_completions_are_coalesced(client, coll):
    """One wake-up serves a whole batch of completions: never more wake-ups than operations."""
    from asyncmongo import _core

    await coll.insert_one({"_id": "x"})
    before = _core.debug_counters()
    n = 2000
    await asyncio.gather(*(coll.find_one({"_id": "x"}) for _ in range(n)))
    after = _core.debug_counters()
    wakeups = after["wakeups"] - before["wakeups"]
    drains = after["drains"] - before["drains"]
    assert 0 < wakeups <= n
    assert 0 < drains <= wakeups


async def test_client_without_running_loop_is_created_and_used_later(server, db_name, sync_client):
    client = AsyncMongoClient(server.uri)  # made outside any coroutine in real apps: no loop needed
    try:
        await client[db_name]["c"].insert_one({"_id": 1})
        assert await client[db_name]["c"].find_one(1) == {"_id": 1}
    finally:
        await client.close()
        sync_client.drop_database(db_name)

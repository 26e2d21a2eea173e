"""Cancellation as the design decides it: a job cancelled while queued is never sent; one cancelled
while running finishes on its worker and its result is dropped; the client stays usable; thousands
of random cancellations leave nothing behind (the C counters fixture checks every test)."""

import asyncio
import random
import time

import pytest

from asyncmongo import _core
from tests.proxy import DelayProxy


@pytest.fixture
def proxy(server):
    p = DelayProxy(server.host, server.port, delay=0.5)
    p.start()
    yield p
    p.stop()


async def wait_for_stats(client, timeout=5.0, **expected):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = client._core.stats()
        if all(stats[k] == v for k, v in expected.items()):
            return stats
        await asyncio.sleep(0.005)
    raise AssertionError(f"stats never reached {expected}: {client._core.stats()}")


async def test_cancelled_while_queued_is_never_sent(make_client, proxy, sync_client, db_name):
    sync_client[db_name]["items"].insert_one({"_id": "seed"})
    client = make_client(proxy.uri, maxPoolSize=1)
    coll = client[db_name]["items"]
    await coll.find_one({"_id": "seed"})  # the one worker exists and is connected

    running = asyncio.create_task(coll.find_one({"_id": "seed"}))
    await wait_for_stats(client, workers=1, queued=0)
    await asyncio.sleep(0.05)  # the worker has taken it: it is in flight on the slow proxy
    cancelled_before = _core.debug_counters()["jobs_cancelled"]
    queued = asyncio.create_task(coll.insert_one({"_id": "must-not-appear"}))
    await wait_for_stats(client, queued=1)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert client._core.stats()["queued"] == 0
    assert _core.debug_counters()["jobs_cancelled"] == cancelled_before + 1

    assert await running == {"_id": "seed"}
    # Long enough for the write to have landed, had it been sent.
    await coll.insert_one({"_id": "after"})
    await asyncio.sleep(0.6)
    ids = {d["_id"] for d in sync_client[db_name]["items"].find({})}
    assert ids == {"seed", "after"}


async def test_cancelled_while_running_completes_and_client_stays_usable(
    make_client, proxy, sync_client, db_name
):
    client = make_client(proxy.uri, maxPoolSize=1)
    coll = client[db_name]["items"]
    await coll.find_one({})
    task = asyncio.create_task(coll.insert_one({"_id": "in-flight"}))
    await wait_for_stats(client, queued=0)
    await asyncio.sleep(0.1)  # taken by the worker and sent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # libmongoc calls cannot be interrupted: the write finishes on its worker.
    deadline = time.monotonic() + 5
    while sync_client[db_name]["items"].find_one({"_id": "in-flight"}) is None:
        assert time.monotonic() < deadline, "the running write never completed"
        await asyncio.sleep(0.05)
    # Its result was dropped, and the same client (and its one connection) serves the next call.
    assert await coll.find_one({"_id": "in-flight"}) == {"_id": "in-flight"}
    assert client._core.stats()["workers"] == 1


async def test_wait_for_timeout_cancels(make_client, proxy, db_name):
    client = make_client(proxy.uri, maxPoolSize=4)
    coll = client[db_name]["items"]
    await coll.find_one({})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(coll.find_one({}), 0.1)
    assert await coll.find_one({"_id": "nothing"}) is None


async def test_ten_thousand_random_cancellations(make_client, server, sync_client, db_name):
    rng = random.Random(20261125)
    sync_client[db_name]["items"].insert_many([{"_id": i, "v": i} for i in range(100)])
    client = make_client(server.uri, maxPoolSize=16)
    coll = client[db_name]["items"]
    loop = asyncio.get_running_loop()
    n = 10_000
    tasks = []
    kinds = []
    for i in range(n):
        if i % 5 == 0:
            tasks.append(asyncio.ensure_future(coll.insert_one({"w": i})))
            kinds.append(("insert", i))
        else:
            tasks.append(asyncio.ensure_future(coll.find_one({"_id": i % 100})))
            kinds.append(("find", i % 100))
        if rng.random() < 0.5:
            loop.call_later(rng.random() * 0.5, tasks[-1].cancel)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = 0
    for (kind, key), res in zip(kinds, results):
        if isinstance(res, asyncio.CancelledError):
            cancelled += 1
        elif kind == "find":
            assert res == {"_id": key, "v": key}
        else:
            assert res.acknowledged
    assert 0 < cancelled < n
    # Every insert that was not reported cancelled is on the server; cancelled ones may or may not be.
    stored = {d["w"] for d in sync_client[db_name]["items"].find({"w": {"$exists": True}})}
    reported = {key for (kind, key), res in zip(kinds, results)
                if kind == "insert" and not isinstance(res, BaseException)}
    assert reported <= stored
    # Still usable.
    assert await coll.find_one({"_id": 7}) == {"_id": 7, "v": 7}


def _idle_cursors(sync_client, db_name):
    """The server's open cursors on the test's database (currentOp lists them as idleCursor)."""
    ops = sync_client.admin.command("currentOp", idleCursors=True)["inprog"]
    return [op for op in ops if op.get("type") == "idleCursor" and op["ns"].startswith(db_name + ".")]


@pytest.mark.parametrize("opener", ["find", "aggregate", "watch", "find_in_session"])
async def test_cancelled_while_opening_a_cursor_leaves_none_open(
        make_client, proxy, sync_client, db_name, opener):
    """A task cancelled while a worker runs the command that opens a server cursor: the command
    finishes there and its result is dropped; the cursor it opened is killed then, not left open on
    the server until its timeout (found by the cancellation storm of tests/test_fault_cancel.py)."""
    # More than a default first batch (101), whatever batch size the opener asks for.
    sync_client[db_name]["items"].insert_many([{"_id": i} for i in range(300)])
    client = make_client(proxy.uri, maxPoolSize=4)
    coll = client[db_name]["items"]
    await coll.find_one({})  # connected
    proxy.set_delay(0.3)

    async def open_it():
        if opener == "find":
            return await coll.find({}, batch_size=2).next()
        if opener == "aggregate":
            return await (await coll.aggregate([], batch_size=2)).next()
        if opener == "watch":
            return await coll.watch(max_await_time_ms=50)
        async with client.start_session() as s:
            return await coll.find({}, batch_size=2, session=s).next()

    task = asyncio.ensure_future(open_it())
    await wait_for_stats(client, queued=0)
    await asyncio.sleep(0.15)  # sent, its reply held in the proxy
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    proxy.set_delay(0)
    # The command finishes on its worker; what it opened is closed then (a job of its own).
    deadline = time.monotonic() + 5
    while True:
        c = _core.debug_counters()
        settled = (c["jobs_submitted"] == c["jobs_completed"] and not client._core.stats()["queued"]
                   and not _idle_cursors(sync_client, db_name))
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert _idle_cursors(sync_client, db_name) == []
    assert client._core.stats()["sessions"] == 0
    assert await coll.find_one({"_id": 3}) == {"_id": 3}

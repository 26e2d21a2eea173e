"""A session's operations reach the server in the order they were submitted, also when some are
cancelled: the core gives each session one ordered queue (a cancelled operation still queued is
never sent; one already running finishes before the next starts).

The server is the witness: each operation appends its sequence number to an array with ``$push``
(in the session), so the array is the order in which the server ran them.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.proxy import DelayProxy


@pytest.fixture
def slow_proxy(server):
    """Every reply a little late, so cancellations land while operations are queued and running."""
    with DelayProxy(server.host, server.port, 0.02) as p:
        yield p


async def _cancel_storm(coll, session, rng, n):
    """Start operations 0..n-1 in the session, cancelling some at random points; return the numbers
    of those whose outcome was seen (completed, not cancelled)."""
    done = []
    for i in range(n):
        task = asyncio.ensure_future(
            coll.update_one({"_id": "log"}, {"$push": {"seq": i}}, upsert=True, session=session))
        roll = rng.random()
        if roll < 0.4:  # cancelled before or while it runs
            await asyncio.sleep(rng.choice([0, 0, 0.001, 0.005, 0.02, 0.03]))
            task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is None:
            done.append(i)
    return done


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_session_operations_run_in_submission_order_under_cancellation(
        slow_proxy, make_client, db_name, sync_client, seed):
    client = make_client(slow_proxy.uri, maxPoolSize=8)
    coll = client[db_name].log
    # Other traffic keeps every worker busy, so a session's jobs land on different workers.
    stop = asyncio.Event()

    async def noise():
        while not stop.is_set():
            await asyncio.gather(*(client[db_name].other.find_one({}) for _ in range(6)))

    background = asyncio.ensure_future(noise())
    async with client.start_session() as session:
        done = await _cancel_storm(coll, session, random.Random(seed), 60)
        # The session's next operation waits for every earlier one, run or dropped.
        await coll.find_one({"_id": "log"}, session=session)
    stop.set()
    await background
    seq = sync_client[db_name].log.find_one({"_id": "log"})["seq"]
    assert seq == sorted(seq), seq  # the server ran them in submission order
    assert len(seq) == len(set(seq))  # none twice
    assert set(done) <= set(seq)  # every one seen to complete ran
    assert len(seq) < 60  # and some cancelled ones were never sent


async def test_cancelled_operations_in_transactions_abort_them_in_order(
        slow_proxy, make_client, db_name, sync_client):
    client = make_client(slow_proxy.uri, maxPoolSize=8)
    coll = client[db_name].log
    await coll.insert_one({"_id": "log", "seq": []})
    rng = random.Random(7)
    committed: list[int] = []
    async with client.start_session() as session:
        for t in range(12):
            await session.start_transaction()
            ops = list(range(t * 10, t * 10 + 4))
            cancelled = False
            for i in ops:
                task = asyncio.ensure_future(
                    coll.update_one({"_id": "log"}, {"$push": {"seq": i}}, session=session))
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.choice([0, 0.005, 0.02]))
                    task.cancel()
                await asyncio.wait([task])
                if task.cancelled():
                    cancelled = True
                    break
            if cancelled:
                assert not session.in_transaction  # the cancellation aborted it
                continue
            await session.commit_transaction()
            committed.extend(ops)
    seq = sync_client[db_name].log.find_one({"_id": "log"})["seq"]
    # Exactly the committed transactions' writes, in order: an aborted transaction left nothing,
    # and no cancelled operation ran outside its transaction.
    assert seq == committed

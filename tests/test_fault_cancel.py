"""Fault matrix, row "cancellation storm": 10,000 tasks, in batches, each running one of finds,
inserts, cursors read part way (find and aggregate, in and out of sessions), change streams,
sessions, transactions (explicit and with_transaction), and each cancelled at a random point
(``random.Random(seed)``: a delay drawn over the operations' own duration), 64 at a time.

After each batch:
- every task ended within its bound (hung: 0);
- the C core's debug counters balance (every job submitted completed, no job or reply alive), and
  the client holds no libmongoc client for a session or a cursor (stats ``sessions`` 0);
- the server has no open cursor: ``serverStatus().metrics.cursor.open.total`` is 0 and
  ``currentOp`` (idleCursors) lists none;
- no transaction is left open. SecantusDB reports open transactions nowhere (no
  ``serverStatus().transactions``, ``$currentOp`` lists no sessions, ``$listSessions`` is a stub
  answering one synthetic ``$currentOp`` document), so the test asks what it does have: every
  transaction of the storm writes one of a few probe documents, and a transaction of PyMongo's
  then writes each probe: an open transaction holding one would make it fail with WriteConflict
  (112), which a control transaction, left open on purpose, shows first;
- the same client serves a read.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time

import pymongo
import pytest
from pymongo.errors import OperationFailure

from asyncmongo import _core
from tests.reliability import Figures
from tests.servers import ServerProcess

TOTAL = int(os.environ.get("ASYNCMONGO_STORM_CANCELS", "10000"))
BATCHES = 5
WINDOW = 64  # tasks running at once
BOUND = 30.0
PROBES = 8
DOCS = 300


@pytest.fixture(scope="module")
def storm_server():
    """A server of the storm's own, so that its cursor and transaction answers are the storm's."""
    srv = ServerProcess().start()
    yield srv
    srv.kill()
    srv.stop()


class Storm:
    def __init__(self, client, db_name: str, rng: random.Random) -> None:
        self.client = client
        self.db = client[db_name]
        self.rng = rng
        self.kinds = [self.find_one, self.insert_one, self.cursor, self.aggregate, self.stream,
                      self.session_ops, self.session_cursor, self.transaction,
                      self.with_transaction]

    def pick(self):
        return self.rng.choice(self.kinds)

    async def find_one(self):
        await self.db.docs.find_one({"_id": self.rng.randrange(DOCS)})

    async def insert_one(self):
        await self.db.writes.insert_one({"r": self.rng.random()})

    async def cursor(self):
        n = self.rng.randrange(1, DOCS)
        cursor = self.db.docs.find({}, batch_size=self.rng.choice([2, 5, 20]))
        async for doc in cursor:
            n -= 1
            if n == 0:
                break  # abandoned part way: closed when collected
        if self.rng.random() < 0.5:
            await cursor.close()

    async def aggregate(self):
        cursor = await self.db.docs.aggregate([{"$match": {"_id": {"$gte": 0}}}], batch_size=3)
        await cursor.to_list(self.rng.randrange(1, 30))
        if self.rng.random() < 0.5:
            await cursor.close()

    async def stream(self):
        async with await self.db.writes.watch(max_await_time_ms=20) as stream:
            for _ in range(self.rng.randrange(1, 4)):
                await stream.try_next()

    async def session_ops(self):
        async with self.client.start_session() as s:
            await self.db.docs.find_one({"_id": 1}, session=s)
            await self.db.writes.insert_one({"s": 1}, session=s)

    async def session_cursor(self):
        async with self.client.start_session() as s:
            cursor = self.db.docs.find({}, batch_size=4, session=s)
            await cursor.to_list(self.rng.randrange(1, 40))

    async def _txn_body(self, s):
        probe = f"probe-{self.rng.randrange(PROBES)}"
        await self.db.probes.update_one({"_id": probe}, {"$inc": {"n": 1}}, upsert=True, session=s)
        await self.db.writes.insert_one({"t": 1}, session=s)

    async def transaction(self):
        async with self.client.start_session() as s:
            async with await s.start_transaction():
                await self._txn_body(s)

    async def with_transaction(self):
        async with self.client.start_session() as s:
            await s.with_transaction(self._txn_body)


def open_transactions(sync_db) -> list[str]:
    """Probe documents an open transaction still holds (a write of another transaction to them
    fails with WriteConflict at once)."""
    held = []
    for k in range(PROBES):
        with sync_db.client.start_session() as s:
            s.start_transaction()
            try:
                sync_db.probes.update_one({"_id": f"probe-{k}"}, {"$set": {"probed": 1}}, upsert=True,
                                          session=s)
            except OperationFailure as exc:
                if exc.code != 112:
                    raise
                held.append(f"probe-{k}")
            finally:
                if s.in_transaction:
                    s.abort_transaction()
    return held


def server_cursors(sync_client) -> tuple[int, list]:
    total = sync_client.admin.command("serverStatus")["metrics"]["cursor"]["open"]["total"]
    idle = [op for op in sync_client.admin.command("currentOp", idleCursors=True)["inprog"]
            if op.get("type") == "idleCursor"]
    return total, idle


async def settled(client, bound: float = BOUND):
    """Wait (bounded) until the C counters balance and the client holds no session: killCursors
    and session ends are jobs of their own, and a collected cursor's kill starts then."""
    deadline = time.monotonic() + bound
    while True:
        gc.collect()
        c = _core.debug_counters()
        held = client._core.stats()["sessions"]
        ok = (c["jobs_submitted"] == c["jobs_completed"] and c["jobs_live"] == 0
              and c["replies_live"] == 0 and held == 0)
        if ok or time.monotonic() > deadline:
            return ok, c, held
        await asyncio.sleep(0.05)


async def test_cancellation_storm(storm_server, make_client):
    seed = 20261203
    rng = random.Random(seed)
    fig = Figures("cancellation storm", f"{TOTAL} cancellations in {BATCHES} batches", seed)
    witness = pymongo.MongoClient(storm_server.uri)
    sync_db = witness.storm
    sync_db.docs.insert_many([{"_id": i} for i in range(DOCS)])
    sync_db.probes.insert_many([{"_id": f"probe-{k}", "n": 0} for k in range(PROBES)])
    sync_db.writes.insert_one({"_id": "first"})
    # The probe works: a transaction left open on a probe is seen.
    with witness.start_session() as s:
        s.start_transaction()
        sync_db.probes.update_one({"_id": "probe-0"}, {"$inc": {"n": 1}}, session=s)
        assert open_transactions(sync_db) == ["probe-0"]
        s.abort_transaction()
    assert open_transactions(sync_db) == []
    fig.notes["$listSessions answer"] = [
        {k: d.get(k) for k in ("type", "desc", "op", "ns")}
        for d in witness.config.system.sessions.aggregate([{"$listSessions": {"allUsers": True}}])]

    client = make_client(storm_server.uri, maxPoolSize=32)
    storm = Storm(client, "storm", rng)
    problems: list[str] = []
    landed = 0
    recovered = True
    try:
        for batch in range(BATCHES):
            n = TOTAL // BATCHES
            window = asyncio.Semaphore(WINDOW)

            async def one(kind, delay):
                async with window:
                    task = asyncio.ensure_future(kind())
                    asyncio.get_running_loop().call_later(delay, task.cancel)
                    out = await fig.bounded(asyncio.wait([task]), BOUND)
                    if out.hung:
                        task.cancel()
                        return "hung"
                    if task.cancelled():
                        return "cancelled"
                    exc = task.exception()
                    return "ok" if exc is None else f"{type(exc).__name__}({getattr(exc, 'code', None)})"

            # Delays over the operations' own durations: before they start, while queued,
            # running, between a cursor's batches, inside transactions, during commits.
            jobs = [one(storm.pick(), rng.choice([0, rng.uniform(0, 0.002), rng.uniform(0, 0.03),
                                                  rng.uniform(0, 0.2), rng.uniform(0, 1.0)]))
                    for _ in range(n)]
            unqueued = _core.debug_counters()["jobs_cancelled"]
            results = await asyncio.gather(*jobs)
            fig.count("jobs unqueued (never sent)", _core.debug_counters()["jobs_cancelled"] - unqueued)
            fig.runs += 1
            landed += results.count("cancelled")
            for r in set(results):
                fig.count(f"outcome.{r}", results.count(r))
            ok, counters, held = await settled(client)
            if not ok:
                problems.append(f"batch {batch}: counters {counters}, sessions held {held}")
            total, idle = await asyncio.to_thread(server_cursors, witness)
            if total or idle:
                problems.append(f"batch {batch}: server cursors open {total}: {idle[:3]}")
            held_probes = await asyncio.to_thread(open_transactions, sync_db)
            if held_probes:
                problems.append(f"batch {batch}: open transactions hold {held_probes}")
            out = await fig.bounded(client.storm.docs.find_one({"_id": 7}), BOUND)
            recovered = recovered and out.ok and out.value == {"_id": 7}
            fig.notes[f"batch {batch}"] = {"server cursors": total, "idle cursors": len(idle),
                                           "open transactions": len(held_probes)}
    finally:
        witness.close()
    fig.recovered = recovered
    fig.notes["cancellations landed"] = landed
    fig.notes["cancellations issued"] = TOTAL
    fig.finish(problems)
    # Most cancellations land on a running operation (the rest found theirs finished).
    assert landed > TOTAL // 2, landed

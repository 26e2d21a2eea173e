#!/usr/bin/env python3
"""Soak: N mixed operations (reads, writes, cursors, aggregations, sessions, transactions, change
streams and cancellations) through one asyncmongo client, sampling every few seconds the process's
RSS, the Python objects the collector tracks (by type), and the C core's debug counters; prints a
table and writes JSON. Not a CI test: ``tests/RELIABILITY.md`` reports its last run.

    python scripts/soak.py                       # 1,000,000 operations on a SecantusDB it starts
    python scripts/soak.py --ops 200000 --json soak.json --max-minutes 30
    MONGODB_URI=mongodb://localhost:27017 python scripts/soak.py

The verdict compares the samples after a warm-up (the first quarter): RSS growth and its slope, the
object types that grew most, and whether the core's counters came back to zero (no job or reply
alive) at the end. Every operation is bounded (``--bound`` seconds): one that does not end counts
as hung.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pymongo.errors import PyMongoError  # noqa: E402

from asyncmongo import AsyncMongoClient, _core  # noqa: E402
from tests.servers import ServerProcess  # noqa: E402

DOCS = 2000
SMALL = 200  # cursors and aggregations read this collection: SecantusDB scans for ranges
LOG_TRIM = 20000  # the log collection is emptied this often (inserts), so the server stays small
BATCH_TRIM = 200


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def object_counts() -> collections.Counter:
    gc.collect()
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


class Soak:
    def __init__(self, client: AsyncMongoClient, args: argparse.Namespace) -> None:
        self.client = client
        self.db = client.soak
        self.args = args
        self.rng = random.Random(args.seed)
        self.done = 0
        self.hung = 0
        self.cancelled = 0
        self.errors: collections.Counter = collections.Counter()
        self.kinds: collections.Counter = collections.Counter()
        self.kind_seconds: collections.Counter = collections.Counter()
        self.inserted = 0
        self.batches = 0
        self.samples: list[dict] = []
        self.started = time.monotonic()
        weights = {self.find_one: 30, self.insert_one: 15, self.update_one: 10, self.cursor: 8,
                   self.aggregate: 5, self.session_ops: 5, self.transaction: 7,
                   self.stream: 1, self.cancelled_op: 15, self.delete_insert_many: 3}
        self.ops = list(weights)
        self.weights = list(weights.values())

    # ---- operations ------------------------------------------------------------------------

    async def find_one(self):
        await self.db.docs.find_one({"_id": self.rng.randrange(DOCS)})

    async def insert_one(self):
        self.inserted += 1
        if self.inserted % LOG_TRIM == 0:
            await self.db.log.delete_many({})
        await self.db.log.insert_one({"n": self.inserted, "pad": "x" * self.rng.randrange(200)})

    async def update_one(self):
        await self.db.docs.update_one({"_id": self.rng.randrange(DOCS)}, {"$inc": {"v": 1}})

    async def cursor(self):
        n = 0
        async for _ in self.db.small.find({}, batch_size=10).skip(self.rng.randrange(SMALL - 30)):
            n += 1
            if n == 30:
                break  # left open: killed when collected

    async def aggregate(self):
        cursor = await self.db.small.aggregate([{"$match": {"_id": {"$lt": 20}}},
                                               {"$group": {"_id": None, "v": {"$sum": "$v"}}}])
        await cursor.to_list(None)

    async def session_ops(self):
        async with self.client.start_session() as s:
            await self.db.docs.find_one({"_id": 1}, session=s)
            await self.db.docs.update_one({"_id": 2}, {"$inc": {"v": 1}}, session=s)

    async def transaction(self):
        async with self.client.start_session() as s:
            async with await s.start_transaction():
                await self.db.accounts.update_one({"_id": self.rng.randrange(500)},
                                                  {"$inc": {"b": -1}}, upsert=True, session=s)
                await self.db.accounts.update_one({"_id": 500 + self.rng.randrange(500)},
                                                  {"$inc": {"b": 1}}, upsert=True, session=s)

    async def stream(self):
        async with await self.db.log.watch(max_await_time_ms=10) as stream:
            await stream.try_next()

    async def delete_insert_many(self):
        self.batches += 1
        if self.batches % BATCH_TRIM == 0:
            await self.db.batch.delete_many({})
        await self.db.batch.insert_many([{"b": self.batches, "i": i} for i in range(10)],
                                        ordered=self.rng.random() < 0.5)

    async def cancelled_op(self):
        """Another operation, cancelled at a random point of its life."""
        others = [(o, w) for o, w in zip(self.ops, self.weights) if o != self.cancelled_op]
        op = self.rng.choices([o for o, _ in others], [w for _, w in others])[0]
        task = asyncio.ensure_future(op())
        await asyncio.sleep(self.rng.choice([0, 0.0005, 0.002, 0.01]))
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            self.cancelled += 1

    # ---- running ---------------------------------------------------------------------------

    async def worker(self, quota: list[int], deadline: float):
        while quota[0] > 0 and time.monotonic() < deadline:
            quota[0] -= 1
            op = self.rng.choices(self.ops, self.weights)[0]
            self.kinds[op.__name__] += 1
            t = time.monotonic()
            try:
                await asyncio.wait_for(op(), self.args.bound)
            except asyncio.TimeoutError:
                self.hung += 1
            except PyMongoError as exc:  # write conflicts of concurrent transactions, mostly
                self.errors[f"{type(exc).__name__}({getattr(exc, 'code', None)})"] += 1
            self.kind_seconds[op.__name__] += time.monotonic() - t
            self.done += 1

    def sample(self, baseline: collections.Counter | None) -> collections.Counter:
        counts = object_counts()
        c = _core.debug_counters()
        elapsed = time.monotonic() - self.started
        prev = self.samples[-1] if self.samples else None
        rate = (self.done - prev["ops"]) / (elapsed - prev["t"]) if prev else 0.0
        growers = []
        if baseline is not None:
            growers = sorted(((k, counts[k] - baseline.get(k, 0)) for k in counts),
                             key=lambda kv: -kv[1])[:5]
        s = {"t": round(elapsed, 1), "ops": self.done, "ops_per_s": round(rate),
             "rss_mb": round(rss_mb(), 1), "objects": sum(counts.values()),
             "jobs_live": c["jobs_live"], "replies_live": c["replies_live"],
             "jobs_in_flight": c["jobs_submitted"] - c["jobs_completed"],
             "workers": c["workers_live"], "hung": self.hung, "cancelled": self.cancelled,
             "errors": sum(self.errors.values()), "top_growers": growers}
        self.samples.append(s)
        grow = ", ".join(f"{k}+{n}" for k, n in growers[:3] if n > 0) or "-"
        print(f"{s['t']:8.0f} {s['ops']:9d} {s['ops_per_s']:6d} {s['rss_mb']:8.1f} {s['objects']:9d} "
              f"{s['jobs_live']:5d} {s['replies_live']:5d} {s['workers']:4d} {s['hung']:4d}  {grow}",
              flush=True)
        return counts

    async def sampler(self, stop: asyncio.Event):
        print(f"{'t (s)':>8} {'ops':>9} {'ops/s':>6} {'RSS MB':>8} {'objects':>9} {'jobs':>5} "
              f"{'reps':>5} {'wrk':>4} {'hung':>4}  top growers since the first sample", flush=True)
        baseline = self.sample(None)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.args.sample_seconds)
            except asyncio.TimeoutError:
                pass
            self.sample(baseline)

    async def run(self) -> None:
        sync_docs = [{"_id": i, "v": 0} for i in range(DOCS)]
        await self.db.docs.drop()
        await self.db.docs.insert_many(sync_docs)
        await self.db.small.drop()
        await self.db.small.insert_many([{"_id": i, "v": i} for i in range(SMALL)])
        await self.db.accounts.insert_one({"_id": "x"})  # the collection exists (transactions)
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(self.sampler(stop))
        quota = [self.args.ops]
        deadline = time.monotonic() + self.args.max_minutes * 60
        await asyncio.gather(*(self.worker(quota, deadline) for _ in range(self.args.concurrency)))
        stop.set()
        await sampler


def verdict(samples: list[dict]) -> dict:
    """Growth after the warm-up quarter: RSS (MB, and MB per 100k operations by least squares),
    object count, and whether the core ended with nothing alive."""
    start = samples[max(1, len(samples) // 4)] if len(samples) > 2 else samples[0]
    end = samples[-1]
    tail = [s for s in samples if s["t"] >= start["t"]]
    n = len(tail)
    slope = 0.0
    if n > 2:
        mx = sum(s["ops"] for s in tail) / n
        my = sum(s["rss_mb"] for s in tail) / n
        sxx = sum((s["ops"] - mx) ** 2 for s in tail)
        if sxx:
            slope = sum((s["ops"] - mx) * (s["rss_mb"] - my) for s in tail) / sxx * 100_000
    return {
        "from_sample_t": start["t"], "rss_start_mb": start["rss_mb"], "rss_end_mb": end["rss_mb"],
        "rss_growth_mb": round(end["rss_mb"] - start["rss_mb"], 1),
        "rss_mb_per_100k_ops": round(slope, 2),
        "objects_start": start["objects"], "objects_end": end["objects"],
        "objects_growth": end["objects"] - start["objects"],
    }


async def main(args: argparse.Namespace) -> int:
    server = None
    uri = args.uri or os.environ.get("MONGODB_URI")
    if not uri:
        server = ServerProcess().start()
        uri = server.uri
    try:
        client = AsyncMongoClient(uri, maxPoolSize=args.pool, serverSelectionTimeoutMS=20000)
        soak = Soak(client, args)
        t0 = time.monotonic()
        try:
            await soak.run()
        finally:
            await client.close()
        gc.collect()
        await asyncio.sleep(0.5)
        gc.collect()
        end = _core.debug_counters()
        summary = {
            "ops_requested": args.ops, "ops_done": soak.done, "seconds": round(time.monotonic() - t0),
            "hung": soak.hung, "cancelled": soak.cancelled, "errors": dict(soak.errors),
            "kinds": dict(soak.kinds),
            "mean_ms": {k: round(soak.kind_seconds[k] / n * 1000, 1) for k, n in soak.kinds.items()},
            "counters_at_end": end,
            "counters_balanced": end["jobs_submitted"] == end["jobs_completed"]
            and end["jobs_live"] == 0 and end["replies_live"] == 0,
            **verdict(soak.samples),
        }
        print(json.dumps(summary, indent=1))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "summary": summary, "samples": soak.samples}, f,
                          indent=1)
        return 0 if summary["counters_balanced"] and not soak.hung else 1
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=1_000_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--pool", type=int, default=32, help="maxPoolSize")
    p.add_argument("--sample-seconds", type=float, default=10.0)
    p.add_argument("--max-minutes", type=float, default=float("inf"),
                   help="stop after this long even if fewer operations ran")
    p.add_argument("--bound", type=float, default=60.0, help="seconds an operation may take")
    p.add_argument("--seed", type=int, default=20261203)
    p.add_argument("--uri")
    p.add_argument("--json")
    sys.exit(asyncio.run(main(p.parse_args())))

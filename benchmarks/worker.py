"""Child process for one measurement: one driver, one op, one concurrency, one JSON line out.

Runs alone in its process so process CPU time (all threads) is that driver's own cost.
Usage: python -m benchmarks.worker --driver pymongo --op find_one --concurrency 64 --ops 4000 --uri URI
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import resource
import sys
import threading
import time
import traceback

from benchmarks import drivers

OPS = ("find_one", "insert_one")


def _split(total: int, parts: int) -> list[int]:
    q, r = divmod(total, parts)
    return [q + (1 if i < r else 0) for i in range(parts)]


def _percentile(sorted_vals: list[float], p: float) -> float:
    # Nearest-rank: a reported p99 is always a latency some op really had.
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p * len(sorted_vals)) - 1))
    return sorted_vals[k]


def prepare(uri: str, op: str, collection: str, seed_docs: int) -> None:
    """Seed/drop with PyMongo sync, before the driver under test exists and before timing."""
    import pymongo

    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000) as c:
        coll = c[drivers.DB_NAME][collection]
        coll.drop()
        if op == "find_one":
            coll.insert_many([{"_id": i, "name": f"doc-{i}", "n": i} for i in range(seed_docs)])


def count_docs(uri: str, collection: str) -> int:
    import pymongo

    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000) as c:
        return c[drivers.DB_NAME][collection].count_documents({})


async def run_phase(adapter: drivers.Adapter, op: str, concurrency: int, total: int,
                    seed_docs: int, tag: int) -> tuple[list[float], int]:
    """``total`` ops over ``concurrency`` tasks; returns (per-op latencies in s, misses)."""
    misses = 0
    lat: list[float] = []

    async def find_task(t: int, n: int) -> None:
        nonlocal misses
        fn, pc, rec = adapter.find_one, time.perf_counter, lat.append
        start = t * 7919  # spread tasks over the id space instead of all hitting _id 0..n
        for j in range(n):
            t0 = pc()
            doc = await fn((start + j) % seed_docs)
            rec(pc() - t0)
            if doc is None:
                misses += 1

    async def insert_task(t: int, n: int) -> None:
        nonlocal misses
        fn, pc, rec = adapter.insert_one, time.perf_counter, lat.append
        for j in range(n):
            doc = {"name": "bench", "n": j, "task": t, "phase": tag}
            t0 = pc()
            res = await fn(doc)
            rec(pc() - t0)
            if res is None:
                misses += 1

    task = find_task if op == "find_one" else insert_task
    await asyncio.gather(*(task(t, n) for t, n in enumerate(_split(total, concurrency)) if n))
    return lat, misses


async def measure(args: argparse.Namespace, collection: str) -> dict:
    adapter = await drivers.connect(args.driver, args.uri, collection, args.pool_size)
    try:
        # Connection setup and server discovery stay out of both phases.
        await adapter.ping()
        await run_phase(adapter, args.op, args.concurrency, args.warmup, args.seed_docs, 0)
        gc.collect()  # start the timed phase without the warm-up's garbage pending

        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = time.process_time()
        w0 = time.perf_counter()
        lat, misses = await run_phase(adapter, args.op, args.concurrency, args.ops,
                                      args.seed_docs, 1)
        wall = time.perf_counter() - w0
        cpu = time.process_time() - cpu0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        threads = threading.active_count()
    finally:
        await adapter.close()

    lat.sort()
    n = len(lat)
    return {
        "ops": n,
        "warmup_ops": args.warmup,
        "wall_s": wall,
        "ops_per_s": n / wall if wall > 0 else 0.0,
        "cpu_s": cpu,
        "cpu_user_s": ru1.ru_utime - ru0.ru_utime,
        "cpu_sys_s": ru1.ru_stime - ru0.ru_stime,
        "cpu_us_per_op": cpu / n * 1e6 if n else float("nan"),
        "lat_p50_us": _percentile(lat, 0.50) * 1e6,
        "lat_p99_us": _percentile(lat, 0.99) * 1e6,
        "lat_mean_us": (sum(lat) / n * 1e6) if n else float("nan"),
        "lat_max_us": (lat[-1] * 1e6) if n else float("nan"),
        "misses": misses,
        "python_threads": threads,
        "max_rss_kb": ru1.ru_maxrss,
    }


def _run_loop(coro, loop_name: str):
    if loop_name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            return r.run(coro)
    return asyncio.run(coro)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.worker", description=__doc__.splitlines()[0])
    p.add_argument("--driver", required=True, choices=drivers.DRIVERS)
    p.add_argument("--probe", action="store_true", help="only report whether the driver imports")
    p.add_argument("--op", choices=OPS, default="find_one")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--ops", type=int, default=2000,
                   help="timed operations, all tasks together (raised to --concurrency)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up operations (default: max(ops/10, concurrency))")
    p.add_argument("--uri", default=os.environ.get("MONGODB_URI"))
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--pool-size", type=int, default=100)
    p.add_argument("--seed-docs", type=int, default=1000)
    p.add_argument("--collection", default=None)
    args = p.parse_args(argv)
    # Every task runs at least one op, so "concurrency C" really means C requests in flight.
    args.ops = max(args.ops, args.concurrency)
    if args.warmup is None:
        args.warmup = max(args.ops // 10, args.concurrency)
    if not args.probe and not args.uri:
        p.error("--uri (or MONGODB_URI) is required")
    if args.concurrency < 1 or args.ops < 1 or args.seed_docs < 1:
        p.error("--concurrency, --ops and --seed-docs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = drivers.probe(args.driver)
    if args.probe:
        print(json.dumps({"driver": args.driver, **info}), flush=True)
        return 0

    out = {
        "driver": args.driver, "version": info["version"], "op": args.op,
        "concurrency": args.concurrency, "loop": args.loop, "pool_size": args.pool_size,
        "python": platform.python_version(), "pid": os.getpid(),
    }
    if not info["available"]:
        out["error"] = info["error"]
        print(json.dumps(out), flush=True)
        return 2

    args.uri = drivers.bench_uri(args.uri)
    collection = args.collection or f"{args.op}_{args.driver}".replace("-", "_")
    try:
        prepare(args.uri, args.op, collection, args.seed_docs)
        out.update(_run_loop(measure(args, collection), args.loop))
        if args.op == "insert_one":
            # Cheap end-to-end check that acknowledged inserts really landed.
            out["docs_in_collection"] = count_docs(args.uri, collection)
    except Exception as e:  # noqa: BLE001 - reported as a failed cell, the run goes on
        traceback.print_exc(file=sys.stderr)
        out["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(out), flush=True)
        return 1
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Child process for one measurement: one driver, one task, one concurrency, one JSON line out.

Runs alone in its process so process CPU time (all threads) is that driver's own cost. Resets
happen outside the timed windows; CPU is summed over the timed iterations only. No PyMongo sync
client lives here unless the worker seeds for itself: its threads would add to the CPU figures.
Usage: python -m benchmarks.worker --driver pymongo --task sweep_find_one --concurrency 64 --ops 4000 --uri URI
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
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

from benchmarks import drivers, spec_tasks
from benchmarks.spec_tasks import TASKS, Task


def _split(total: int, parts: int) -> list[int]:
    q, r = divmod(total, parts)
    return [q + (1 if i < r else 0) for i in range(parts)]


def percentile(sorted_vals: list[float], p: float) -> float:
    # Nearest-rank (as the spec asks): a reported p99 is always a latency some op really had.
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p * len(sorted_vals)) - 1))
    return sorted_vals[k]


def _sync_client(uri: str):
    import pymongo

    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000)


def drop_task_data(client, task: Task, name: str) -> None:
    """Drop what a task wrote under ``name``: a collection, or a GridFS bucket's two."""
    db = client[drivers.DB_NAME]
    for coll in ((f"{name}.files", f"{name}.chunks") if task.gridfs else (name,)):
        db.drop_collection(coll)


def seed(client, task: Task, collection: str, doc: dict | bytes, count: int) -> None:
    """Fill a read task's collection with a PyMongo sync client (the runner's, once per task); for
    the GridFS download, a bucket holding the one file ``doc``."""
    if task.gridfs:
        import gridfs

        drop_task_data(client, task, collection)
        bucket = gridfs.GridFSBucket(client[drivers.DB_NAME], bucket_name=collection)
        bucket.upload_from_stream(spec_tasks.GRIDFS_FILENAME, doc)
        return
    coll = client[drivers.DB_NAME][collection]
    coll.drop()
    docs = spec_tasks.seed_docs(task, doc, count)
    for i in range(0, len(docs), 1000):  # bounded messages, whatever the doc size
        coll.insert_many(docs[i:i + 1000])


def count_docs(client, collection: str) -> int:
    return client[drivers.DB_NAME][collection].count_documents({})


class Workload:
    """One task's calls against one adapter; ``run(n)`` does n ops over the configured tasks."""

    def __init__(self, adapter: drivers.Adapter, task: Task, doc: dict | bytes, concurrency: int,
                 seed_count: int) -> None:
        self.adapter = adapter
        self.task = task
        self.doc = doc  # the GridFS tasks' file data, as bytes
        self.concurrency = concurrency
        self.seed_count = seed_count
        self.misses = 0
        self.lat: list[float] = []
        self.file_id = None

    async def setup(self) -> None:
        """Untimed, once: the download looks up its file's _id (the spec's "record the _id")."""
        if self.task.op == "gridfs_download":
            self.file_id = await self.adapter.gridfs_file_id(spec_tasks.GRIDFS_FILENAME)
            if self.file_id is None:
                raise RuntimeError(f"the bucket holds no file named {spec_tasks.GRIDFS_FILENAME!r}: "
                                   "it was not seeded")

    @property
    def resets(self) -> bool:
        return self.task.op in spec_tasks.RESET_OPS

    async def reset(self) -> None:
        """The spec's "before task" of a write task: an empty collection, or a bucket holding
        only a 1-byte file."""
        if self.task.op == "gridfs_upload":
            await self.adapter.gridfs_reset()
        else:
            await self.adapter.reset()

    def before(self, n: int) -> list | None:
        """Untimed set-up of one phase: fresh copies to insert (drivers add _id to what they get)."""
        if self.task.op == "insert_one":
            return [dict(self.doc) for _ in range(n)]
        if self.task.op == "bulk_insert":
            return [[dict(self.doc) for _ in range(n)] for _ in range(self.concurrency)]
        return None

    async def run(self, n: int, prepared: list | None) -> int:
        """The timed part: returns how many ops (documents, for multi-doc tasks) were done."""
        op = self.task.op
        if op in spec_tasks.GRIDFS_OPS:
            await self._files(n)
            return n
        if op in spec_tasks.MULTI_DOC_OPS:
            # One call per task; n is documents per call.
            done = await asyncio.gather(*(self._multi(prepared[t] if prepared else None, n)
                                          for t in range(self.concurrency)))
            return sum(done)
        parts = _split(n, self.concurrency)
        offsets = [sum(parts[:t]) for t in range(len(parts))]
        await asyncio.gather(*(self._single(offsets[t], parts[t], prepared)
                               for t in range(len(parts)) if parts[t]))
        return n

    async def _single(self, offset: int, n: int, prepared: list | None) -> None:
        pc, rec, op = time.perf_counter, self.lat.append, self.task.op
        if op == "find_one":
            fn, seeded = self.adapter.find_one, self.seed_count
            # Each task walks its own slice of the ids: with one task, _id 0..n-1 in order (the spec).
            for j in range(offset, offset + n):
                t0 = pc()
                doc = await fn(j % seeded)
                rec(pc() - t0)
                if doc is None:
                    self.misses += 1
        elif op == "insert_one":
            fn = self.adapter.insert_one
            for j in range(offset, offset + n):
                d = prepared[j]
                t0 = pc()
                res = await fn(d)
                rec(pc() - t0)
                if res is None:
                    self.misses += 1
        else:
            fn = self.adapter.command_hello
            for _ in range(n):
                t0 = pc()
                res = await fn()
                rec(pc() - t0)
                if not res or not res.get("ok"):
                    self.misses += 1

    async def _files(self, n: int) -> None:
        """n files, one after the other (concurrency is always 1 here)."""
        pc, rec = time.perf_counter, self.lat.append
        if self.task.op == "gridfs_upload":
            fn, data = self.adapter.gridfs_upload, self.doc
            for _ in range(n):
                t0 = pc()
                file_id = await fn(data)
                rec(pc() - t0)
                if file_id is None:
                    self.misses += 1
        else:
            fn, file_id, want = self.adapter.gridfs_download, self.file_id, len(self.doc)
            for _ in range(n):
                t0 = pc()
                data = await fn(file_id)
                rec(pc() - t0)
                if len(data) != want:
                    self.misses += 1
                del data  # discarded, as the spec says: never two downloads held at once

    async def _multi(self, docs: list | None, n: int) -> int:
        pc = time.perf_counter
        t0 = pc()
        if self.task.op == "find_many":
            got = len(await self.adapter.find_all())
            want = self.seed_count
        else:
            got = drivers.inserted_count(await self.adapter.insert_many(docs))
            want = n
        self.lat.append(pc() - t0)
        if got != want:
            self.misses += 1
        return got


async def measure(args: argparse.Namespace, task: Task, doc: dict, collection: str) -> dict:
    adapter = await drivers.connect(args.driver, args.uri, collection, args.pool_size)
    try:
        # Connection setup and server discovery stay out of every phase.
        await adapter.ping()
        wl = Workload(adapter, task, doc, args.concurrency, args.seed_docs)
        await wl.setup()
        # Multi-doc and GridFS tasks warm up with whole calls (iterations' worth), the rest with ops.
        by_call = task.multi_doc or task.gridfs
        warm_n = args.ops if by_call else args.warmup
        for _ in range(args.warmup if by_call else 1):
            if warm_n:
                await wl.run(warm_n, wl.before(warm_n))
        wl.lat.clear()
        wl.misses = 0

        iter_s: list[float] = []
        cpu = user = sys_ = 0.0
        ops = 0
        for _ in range(args.iterations):
            if wl.resets:
                await wl.reset()  # the spec's "before task": every timed phase starts empty
            prepared = wl.before(args.ops)
            gc.collect()  # no iteration pays for the garbage of the one before
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            c0 = time.process_time()
            w0 = time.perf_counter()
            ops += await wl.run(args.ops, prepared)
            iter_s.append(time.perf_counter() - w0)
            cpu += time.process_time() - c0
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            user += ru1.ru_utime - ru0.ru_utime
            sys_ += ru1.ru_stime - ru0.ru_stime
            del prepared
        threads = threading.active_count()
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        await adapter.close()

    lat = sorted(wl.lat)
    wall = sum(iter_s)
    median = statistics.median(iter_s)
    per_op = spec_tasks.op_bytes(task, doc)
    iter_bytes = per_op * args.ops * (args.concurrency if task.multi_doc else 1)
    out = {
        "ops": ops,
        "warmup_ops": warm_n * (args.warmup if by_call else 1),
        "iterations": args.iterations,
        "ops_per_iteration": args.ops,
        "unit": task.unit,
        "op_bytes": per_op,
        "iteration_bytes": iter_bytes,
        "iteration_s": iter_s,
        "iteration_median_s": median,
        # The spec's score: task size in MB (10^6 bytes) over the median iteration time.
        "mb_per_s": iter_bytes / 1e6 / median if median > 0 else 0.0,
        "wall_s": wall,
        "ops_per_s": ops / wall if wall > 0 else 0.0,
        "cpu_s": cpu,
        "cpu_user_s": user,
        "cpu_sys_s": sys_,
        "cpu_us_per_op": cpu / ops * 1e6 if ops else float("nan"),
        "calls": len(lat),
        "lat_p50_us": percentile(lat, 0.50) * 1e6,
        "lat_p99_us": percentile(lat, 0.99) * 1e6,
        "lat_mean_us": (sum(lat) / len(lat) * 1e6) if lat else float("nan"),
        "lat_max_us": (lat[-1] * 1e6) if lat else float("nan"),
        "misses": wl.misses,
        "python_threads": threads,
        "max_rss_kb": max_rss,
    }
    if task.gridfs:
        out["file_bytes"] = len(doc)
    return out


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
    p.add_argument("--task", choices=list(TASKS), default="sweep_find_one")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--ops", type=int, default=2000,
                   help="ops per timed iteration, all tasks together (documents per call for "
                        "find_many/bulk_insert, files for GridFS); raised to --concurrency")
    p.add_argument("--iterations", type=int, default=1, help="timed iterations (score: median)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up ops (default max(ops/10, concurrency)); for find_many, "
                        "bulk_insert and GridFS, warm-up calls (default 1)")
    p.add_argument("--uri", default=os.environ.get("MONGODB_URI"))
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--pool-size", type=int, default=100)
    p.add_argument("--seed-docs", type=int, default=None,
                   help="docs a read task's collection holds (default: --ops)")
    p.add_argument("--no-seed", action="store_true",
                   help="the read collection is already seeded (the runner seeds once per task)")
    p.add_argument("--data-dir", default=None,
                   help="folder with tweet/small_doc/large_doc.json and gridfs_large.bin")
    p.add_argument("--file-bytes", type=int, default=None,
                   help="GridFS tasks: move the first N bytes of gridfs_large.bin (default: all)")
    p.add_argument("--collection", default=None)
    args = p.parse_args(argv)
    task = TASKS[args.task]
    if task.gridfs and args.concurrency != 1:
        p.error("GridFS tasks move one file at a time: --concurrency must be 1")
    if not task.multi_doc:
        # Every task runs at least one op, so "concurrency C" really means C requests in flight.
        args.ops = max(args.ops, args.concurrency)
    if args.warmup is None:
        args.warmup = 1 if task.multi_doc or task.gridfs else max(args.ops // 10, args.concurrency)
    if args.seed_docs is None:
        args.seed_docs = args.ops
    if not args.probe and not args.uri:
        p.error("--uri (or MONGODB_URI) is required")
    if args.concurrency < 1 or args.ops < 1 or args.seed_docs < 1 or args.iterations < 1:
        p.error("--concurrency, --ops, --iterations and --seed-docs must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.file_bytes is not None and args.file_bytes < 1:
        p.error("--file-bytes must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = drivers.probe(args.driver)
    if args.probe:
        print(json.dumps({"driver": args.driver, **info}), flush=True)
        return 0

    task = TASKS[args.task]
    out = {
        "driver": args.driver, "version": info["version"], "task": task.name, "op": task.op,
        "kind": task.kind, "concurrency": args.concurrency, "loop": args.loop,
        "pool_size": args.pool_size, "python": platform.python_version(), "pid": os.getpid(),
    }
    if not info["available"]:
        out["error"] = info["error"]
        print(json.dumps(out), flush=True)
        return 2

    args.uri = drivers.bench_uri(args.uri)
    collection = args.collection or spec_tasks.collection_name(task, args.driver)
    out["collection"] = collection
    try:
        folder = Path(args.data_dir) if args.data_dir else None
        doc = spec_tasks.load_data(task, folder, args.file_bytes)
        if task.seeded and not args.no_seed:
            with _sync_client(args.uri) as c:
                seed(c, task, collection, doc, args.seed_docs)
        out.update(_run_loop(measure(args, task, doc, collection), args.loop))
        if task.op in spec_tasks.WRITE_OPS:
            # The last timed iteration's inserts; the runner counts what the server holds, with its
            # own client, then drops the collection.
            out["expected_docs"] = args.ops * (args.concurrency if task.multi_doc else 1)
    except Exception as e:  # noqa: BLE001 - reported as a failed cell, the run goes on
        traceback.print_exc(file=sys.stderr)
        out["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(out), flush=True)
        return 1
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The result line is out: skip interpreter finalisation. mongojet 0.5.8's runtime threads can
    # abort a finalising interpreter (PyGILState_Release), and PyMongo's executor threads make exit
    # wait up to half a second; neither is part of the measurement.
    os._exit(rc)

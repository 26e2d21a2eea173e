"""pytest-benchmark timings of every task for asyncmongo and each peer, in this process, on one server.

In the normal suite each runs tiny counts for two rounds (or once under --benchmark-disable), so the
benchmarks keep working. For figures: ASYNCMONGO_BENCH_MODE=full (or demo) python -m pytest
benchmarks/test_bench_tasks.py --benchmark-only. ASYNCMONGO_BENCH_SERVER picks the server (cbench,
the default; secantus; uri = MONGODB_URI); the GridFS tasks, which the C bench server cannot serve,
run on SecantusDB instead of it. CPU per op comes from the runner, not from here: only a process of
its own gives a driver's CPU time.
"""
from __future__ import annotations

import asyncio
import os

import pymongo
import pytest

from benchmarks import drivers, spec_tasks, worker
from benchmarks.run import MODES, UNSUPPORTED, probe
from benchmarks.spec_tasks import SPEC_TASKS, SWEEP_CONCURRENCY, SWEEP_TASKS, TASKS

MODE = MODES[os.environ.get("ASYNCMONGO_BENCH_MODE", "quick")]

CASES = [(t.name, 1) for t in SPEC_TASKS] + [(t.name, c) for t in SWEEP_TASKS for c in SWEEP_CONCURRENCY]


def _counts(task, concurrency: int) -> tuple[int, int]:
    """(ops per round, docs seeded) in this mode; sweep rounds run at least one op per task."""
    if task.kind == "sweep":
        return max(MODE.sweep_ops, concurrency), MODE.seed_docs
    n = spec_tasks.scaled(task, MODE.scale)
    return n, n


def _gridfs_bytes() -> int:
    return spec_tasks.file_bytes(MODE.scale, spec_tasks.gridfs_size())


class Servers:
    """The servers this module measures on, each started on first use and stopped at the end, with
    a witness client each (it seeds read tasks and checks writes; never measured)."""

    def __init__(self) -> None:
        self.default = os.environ.get("ASYNCMONGO_BENCH_SERVER", "cbench")
        self._started: dict[str, tuple] = {}

    def kind_for(self, task) -> str:
        return "secantus" if task.name in UNSUPPORTED.get(self.default, {}) else self.default

    def get(self, kind: str) -> tuple[str, pymongo.MongoClient]:
        if kind not in self._started:
            srv = None
            if kind == "uri":
                uri = os.environ["MONGODB_URI"]
            elif kind == "secantus":
                from benchmarks._server import SecantusServer

                srv = SecantusServer(extra_args=["--oplog-max-entries", "5000"]).start()
                uri = srv.uri
            else:
                from benchmarks import native

                srv = native.BenchServer().start()
                uri = srv.uri
            uri = drivers.bench_uri(uri)
            self._started[kind] = (srv, uri, pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000))
        _, uri, witness = self._started[kind]
        return uri, witness

    def close(self) -> None:
        for srv, _, witness in self._started.values():
            witness.close()
            if srv is not None:
                srv.stop()


@pytest.fixture(scope="module")
def servers():
    s = Servers()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def seeded_colls():
    """(server, collection) -> docs (or file bytes) seeded: each read task is seeded once, for every
    driver alike."""
    return {}


@pytest.fixture(scope="module")
def available():
    return {n: probe(n) for n in drivers.DRIVERS}


@pytest.mark.parametrize("driver", drivers.DRIVERS)
@pytest.mark.parametrize("task_name,concurrency", CASES,
                         ids=[f"{t}-c{c}" if t.startswith("sweep") else t for t, c in CASES])
def test_task(benchmark, servers, seeded_colls, available, driver, task_name, concurrency):
    task = TASKS[task_name]
    info = available[driver]
    if not info["available"]:
        # scripts/setup.sh installs every peer and builds asyncmongo: asyncmongo missing is a
        # broken setup; a peer missing only leaves its column out.
        assert not driver.startswith("asyncmongo"), info["error"]
        pytest.skip(f"{driver} is not importable: {info['error']}")
    if task.kind == "spec":
        ok, why = spec_tasks.data_available()
        if not ok:
            pytest.skip(why)
    ops, seeded = _counts(task, concurrency)
    nbytes = _gridfs_bytes() if task.gridfs else None
    doc = spec_tasks.load_data(task, None, nbytes)
    coll = spec_tasks.collection_name(task, driver)
    kind = servers.kind_for(task)
    server_uri, witness = servers.get(kind)
    marker = nbytes or seeded
    if task.seeded and seeded_colls.get((kind, coll)) != marker:
        worker.seed(witness, task, coll, doc, seeded)
        seeded_colls[(kind, coll)] = marker

    with asyncio.Runner() as runner:
        adapter = runner.run(drivers.connect(driver, server_uri, coll, 100))
        try:
            runner.run(adapter.ping())
            wl = worker.Workload(adapter, task, doc, concurrency, seeded)
            runner.run(wl.setup())

            def setup():
                if wl.resets:
                    runner.run(wl.reset())  # every round starts on an empty collection or bucket
                return (wl.before(ops),), {}

            def one_round(prepared):
                return runner.run(wl.run(ops, prepared))

            # pytest-benchmark's tables then compare the drivers task by task.
            benchmark.group = f"{task.name} c={concurrency}"
            done = benchmark.pedantic(one_round, setup=setup, rounds=MODE.iterations,
                                      warmup_rounds=0 if benchmark.disabled else 1)
            if task.op == "gridfs_download":
                downloaded = runner.run(adapter.gridfs_download(wl.file_id))
        finally:
            runner.run(adapter.close())
            if driver == "mongojet":
                # Let mongojet's runtime threads go idle: one still dropping a Python object while
                # the interpreter finalises aborts the whole test process (mongojet 0.5.8).
                runner.run(asyncio.sleep(0.1))

    per_op = spec_tasks.op_bytes(task, doc)
    benchmark.extra_info.update({"task": task.name, "driver": driver, "concurrency": concurrency,
                                 "server": kind, "ops_per_round": ops, "round_bytes": per_op * ops})
    if benchmark.stats is not None and not benchmark.disabled:
        # The spec's score: task size in MB over the median round time.
        benchmark.extra_info["mb_per_s"] = per_op * ops / 1e6 / benchmark.stats.stats.median

    assert done == ops
    assert wl.misses == 0, f"{wl.misses} calls came back empty or short"
    if task.op in spec_tasks.WRITE_OPS:
        assert worker.count_docs(witness, coll) == ops
        witness[drivers.DB_NAME].drop_collection(coll)
    if task.gridfs:
        assert per_op == nbytes
    if task.op == "gridfs_download":
        assert downloaded == doc  # what the driver hands back is the file, byte for byte
    if task.op == "gridfs_upload":
        # The last round's bucket: the 1-byte file and the upload, whose bytes read back whole.
        import gridfs

        bucket = gridfs.GridFSBucket(witness[drivers.DB_NAME], bucket_name=coll)
        files = sorted((f.filename, f.length) for f in bucket.find())
        assert files == sorted([(drivers.ONE_BYTE_FILENAME, 1), (spec_tasks.GRIDFS_FILENAME, nbytes)])
        assert bucket.open_download_stream_by_name(spec_tasks.GRIDFS_FILENAME).read() == doc
        worker.drop_task_data(witness, task, coll)

"""pytest-benchmark timings of every task for asyncmongo and each peer, in this process, on one server.

In the normal suite each runs tiny counts for two rounds (or once under --benchmark-disable), so the
benchmarks keep working. For figures: ASYNCMONGO_BENCH_MODE=full (or demo) python -m pytest
benchmarks/test_bench_tasks.py --benchmark-only. ASYNCMONGO_BENCH_SERVER picks the server (cbench,
the default; secantus; uri = MONGODB_URI). CPU per op comes from the runner, not from here: only a
process of its own gives a driver's CPU time.
"""
from __future__ import annotations

import asyncio
import os

import pymongo
import pytest

from benchmarks import drivers, spec_tasks, worker
from benchmarks.run import MODES, probe
from benchmarks.spec_tasks import SPEC_TASKS, SWEEP_CONCURRENCY, SWEEP_TASKS, TASKS

MODE = MODES[os.environ.get("ASYNCMONGO_BENCH_MODE", "quick")]

CASES = [(t.name, 1) for t in SPEC_TASKS] + [(t.name, c) for t in SWEEP_TASKS for c in SWEEP_CONCURRENCY]


def _counts(task, concurrency: int) -> tuple[int, int]:
    """(ops per round, docs seeded) in this mode; sweep rounds run at least one op per task."""
    if task.kind == "sweep":
        return max(MODE.sweep_ops, concurrency), MODE.seed_docs
    n = spec_tasks.scaled(task, MODE.scale)
    return n, n


@pytest.fixture(scope="module")
def server_uri():
    kind = os.environ.get("ASYNCMONGO_BENCH_SERVER", "cbench")
    if kind == "uri":
        yield drivers.bench_uri(os.environ["MONGODB_URI"])
        return
    if kind == "secantus":
        from benchmarks._server import SecantusServer

        srv = SecantusServer(extra_args=["--oplog-max-entries", "5000"]).start()
    else:
        from benchmarks import native

        srv = native.BenchServer().start()
    try:
        yield drivers.bench_uri(srv.uri)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def witness(server_uri):
    """Seeds read tasks and checks writes; never measured."""
    with pymongo.MongoClient(server_uri, serverSelectionTimeoutMS=10000) as c:
        yield c


@pytest.fixture(scope="module")
def seeded_colls():
    """collection -> docs seeded: each read task is seeded once, for every driver alike."""
    return {}


@pytest.fixture(scope="module")
def available():
    return {n: probe(n) for n in drivers.DRIVERS}


@pytest.mark.parametrize("driver", drivers.DRIVERS)
@pytest.mark.parametrize("task_name,concurrency", CASES,
                         ids=[f"{t}-c{c}" if t.startswith("sweep") else t for t, c in CASES])
def test_task(benchmark, server_uri, witness, seeded_colls, available, driver, task_name, concurrency):
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
    doc = spec_tasks.load_doc(task.dataset) if task.op != "command" else {}
    coll = spec_tasks.collection_name(task, driver)
    if task.seeded and seeded_colls.get(coll) != seeded:
        worker.seed(witness, task, coll, doc, seeded)
        seeded_colls[coll] = seeded
    writes = task.op in spec_tasks.WRITE_OPS

    with asyncio.Runner() as runner:
        adapter = runner.run(drivers.connect(driver, server_uri, coll, 100))
        try:
            runner.run(adapter.ping())
            wl = worker.Workload(adapter, task, doc, concurrency, seeded)

            def setup():
                if writes:
                    runner.run(adapter.reset())  # every round starts on an empty collection
                return (wl.before(ops),), {}

            def one_round(prepared):
                return runner.run(wl.run(ops, prepared))

            # pytest-benchmark's tables then compare the drivers task by task.
            benchmark.group = f"{task.name} c={concurrency}"
            done = benchmark.pedantic(one_round, setup=setup, rounds=MODE.iterations,
                                      warmup_rounds=0 if benchmark.disabled else 1)
        finally:
            runner.run(adapter.close())
            if driver == "mongojet":
                # Let mongojet's runtime threads go idle: one still dropping a Python object while
                # the interpreter finalises aborts the whole test process (mongojet 0.5.8).
                runner.run(asyncio.sleep(0.1))

    per_op = spec_tasks.op_bytes(task, doc)
    benchmark.extra_info.update({"task": task.name, "driver": driver, "concurrency": concurrency,
                                 "ops_per_round": ops, "round_bytes": per_op * ops})
    if benchmark.stats is not None and not benchmark.disabled:
        # The spec's score: task size in MB over the median round time.
        benchmark.extra_info["mb_per_s"] = per_op * ops / 1e6 / benchmark.stats.stats.median

    assert done == ops
    assert wl.misses == 0, f"{wl.misses} calls came back empty or short"
    if writes:
        assert worker.count_docs(witness, coll) == ops
        witness[drivers.DB_NAME].drop_collection(coll)

"""client.stats(): the live figures add up after a mixed workload with errors and cancellations,
on both wake-up paths, and the Prometheus exporter of examples/ serves them over HTTP."""

from __future__ import annotations

import asyncio
import random

import pytest
from pymongo.errors import DuplicateKeyError

from examples.prometheus_stats import render, serve_metrics


async def _idle(client, timeout: float = 10.0) -> dict:
    """stats() once nothing is queued or running, no worker is busy, and every outcome is counted."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        s = client.stats()
        # A worker still counts as busy for the instant after it handed its last result back.
        if (s["queued"] == 0 and s["running"] == 0 and s["workers_busy"] == 0
                and s["completed"] + s["failed"] + s["cancelled"] == s["submitted"]):
            return s
        assert loop.time() < deadline, s
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("wakeup", ["eventfd", "threadsafe"])
async def test_figures_add_up_after_a_mixed_workload(make_client, db_name, wakeup):
    client = make_client(wakeup=wakeup, maxPoolSize=4)
    coll = client[db_name].items
    await coll.insert_many([{"_id": i} for i in range(100)])
    start = client.stats()
    rng = random.Random(11)
    tasks = []
    finds = set()
    for i in range(300):
        kind = rng.random()
        if kind < 0.5:
            tasks.append(asyncio.ensure_future(coll.find_one({"_id": i % 100})))
        elif kind < 0.7:
            tasks.append(asyncio.ensure_future(coll.insert_one({"_id": i % 100})))  # duplicates
        else:
            finds.add(len(tasks))
            tasks.append(asyncio.ensure_future(coll.find({}, batch_size=7).to_list()))
    await asyncio.sleep(0.005)
    cancelled = rng.sample(range(len(tasks)), 60)
    for i in cancelled:
        tasks[i].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    s = await _idle(client)
    duplicates = sum(isinstance(r, DuplicateKeyError) for r in results)
    cancelled_tasks = sum(isinstance(r, asyncio.CancelledError) for r in results)
    submitted = s["submitted"] - start["submitted"]
    assert submitted > 300  # cursors' batches are jobs of their own
    assert s["completed"] + s["failed"] + s["cancelled"] == s["submitted"]
    assert s["failed"] - start["failed"] >= duplicates > 0
    # A cancelled task's job was taken out unsent or had its result dropped (a cursor cancelled
    # mid-way may also have its batch fetched ahead dropped), except a find already running: it
    # completes, and the server cursor it opened is killed.
    cancelled_finds = sum(isinstance(results[i], asyncio.CancelledError) and i in finds
                          for i in cancelled)
    assert s["cancelled"] - start["cancelled"] >= cancelled_tasks - cancelled_finds > 0
    assert s["queued"] == s["running"] == 0 and s["max_workers"] == 4
    assert 1 <= s["workers"] <= 4 and s["workers_busy"] == 0
    [loop] = s["loops"]
    assert loop["wakeup"] == wakeup and loop["in_flight"] == 0
    # Every completion came by a wake-up; coalescing shows as more completions than drains.
    assert loop["drains"] >= 1 and loop["completions"] >= loop["drains"]
    assert s["wakeups"] == loop["wakeups"] and s["drains"] == loop["drains"]


async def test_prometheus_exporter_serves_the_figures(make_client, db_name):
    client = make_client()
    await client[db_name].items.insert_one({"x": 1})
    server = await serve_metrics(client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        response = (await reader.read()).decode()
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    head, body = response.split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 200 OK") and "text/plain; version=0.0.4" in head
    metrics = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            metrics[name] = float(value)
    submitted = metrics['asyncmongo_operations_submitted_total{client="default"}']
    assert submitted >= 1
    assert "# TYPE asyncmongo_workers gauge" in body
    assert any(k.startswith("asyncmongo_loop_wakeups_total{") for k in metrics)
    assert render(client.stats()).count("# HELP") == 14

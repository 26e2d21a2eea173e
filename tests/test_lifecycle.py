"""A client's life: close() with operations running and queued, idempotent close, the ResourceWarning
of an unclosed client, event loops closed under running operations, one client on several loops in
several threads, fork(), leaks over repeated workloads, the libmongoc log bridge, interpreter exit.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref

import pytest
from pymongo.errors import DuplicateKeyError, InvalidOperation

from asyncmongo import AsyncMongoClient, _core
from tests.proxy import DelayProxy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_LIMIT = 20


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _run(kind: str, coro):
    """Run a coroutine to completion on a fresh loop of `kind` (for threads and sync tests)."""
    loop = _new_loop(kind)
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        result = loop.run_until_complete(coro)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
        gc.collect()
    assert not errors, [f"{c.get('message')}: {c.get('exception')!r}" for c in errors]
    return result


async def _balanced(deadline_s: float = 10.0) -> dict:
    """Wait (on the loop, so completions keep draining) until the C counters balance."""
    deadline = time.monotonic() + deadline_s
    while True:
        c = _core.debug_counters()
        if (c["jobs_submitted"] == c["jobs_completed"] and c["jobs_live"] == 0
                and c["replies_live"] == 0):
            return c
        assert time.monotonic() < deadline, f"C counters did not balance: {c}"
        await asyncio.sleep(0.01)


def _connections_to(port: int) -> int:
    """TCP connections this process has open (established) to 127.0.0.1:port, from /proc."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and int(remote.split(":")[1], 16) == port and inode in inodes:
                n += 1
    return n


async def _wait_connections(port: int, expected: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while (n := _connections_to(port)) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return n


@pytest.fixture
def proxy(server):
    """A delaying proxy in front of the session server (no delay until a test sets one)."""
    with DelayProxy(server.host, server.port, 0.0) as p:
        yield p


@pytest.fixture
def seeded(server, db_name, sync_client):
    """db_name.items holding {_id: 1, name: "one"}, written by PyMongo; dropped afterwards."""
    sync_client[db_name].items.insert_one({"_id": 1, "name": "one"})
    yield db_name
    sync_client.drop_database(db_name)


# -- close() -------------------------------------------------------------------------------------


async def test_close_resolves_running_and_queued_operations(proxy, make_client, seeded):
    client = make_client(proxy.uri, maxPoolSize=2)
    coll = client[seeded].items
    # Both workers up, each with its connection, before the proxy turns slow.
    assert await asyncio.gather(coll.find_one({"_id": 1}), coll.find_one({"_id": 2})) == [
        {"_id": 1, "name": "one"}, None,
    ]
    proxy.set_delay(0.5)
    tasks = [asyncio.ensure_future(coll.find_one({"_id": 1 if i % 2 else 2})) for i in range(20)]
    await asyncio.sleep(0.1)
    stats = client._core.stats()
    assert stats["workers"] == 2 and stats["queued"] == 18, stats
    await asyncio.wait_for(client.close(), HANG_LIMIT)

    assert all(t.done() for t in tasks)
    ran, refused = [], []
    for i, t in enumerate(tasks):
        exc = t.exception()
        if exc is None:
            ran.append(i)
            # Running operations were let finish: their true result, not an error.
            assert t.result() == ({"_id": 1, "name": "one"} if i % 2 else None)
        else:
            assert type(exc) is InvalidOperation, repr(exc)
            assert "after close" in str(exc)
            refused.append(i)
    assert len(ran) == 2 and len(refused) == 18, (ran, refused)
    # The two that ran are the two submitted first (FIFO).
    assert ran == [0, 1]

    with pytest.raises(InvalidOperation, match="after close"):
        await coll.find_one({"_id": 1})
    with pytest.raises(InvalidOperation, match="after close"):
        await coll.insert_one({"x": 1})
    with pytest.raises(InvalidOperation):
        await client.admin.command("ping")


async def test_close_is_idempotent_and_async_with_closes(server, make_client, seeded):
    client = make_client()
    assert await client[seeded].items.find_one({"_id": 1}) == {"_id": 1, "name": "one"}
    await client.close()
    await client.close()
    assert client._core.closed
    with pytest.raises(InvalidOperation):
        await client[seeded].items.find_one({"_id": 1})

    async with AsyncMongoClient(server.uri) as c2:
        assert await c2[seeded].items.find_one({"_id": 1}) == {"_id": 1, "name": "one"}
        assert not c2._core.closed
    assert c2._core.closed
    with pytest.raises(InvalidOperation):
        await c2[seeded].items.insert_one({"x": 1})
    await c2.close()  # closing again after async with is harmless

    # Two close() calls racing on the loop both return; the client ends closed.
    c3 = AsyncMongoClient(server.uri)
    assert await c3[seeded].items.find_one({"_id": 1}) == {"_id": 1, "name": "one"}
    await asyncio.wait_for(asyncio.gather(c3.close(), c3.close()), HANG_LIMIT)
    assert c3._core.closed


async def test_unclosed_client_warns_when_collected(server, seeded):
    workers_before = _core.debug_counters()["workers_live"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = AsyncMongoClient(server.uri)
        doc = await client[seeded].items.find_one({"_id": 1})
        assert doc == {"_id": 1, "name": "one"}
        core = weakref.ref(client._core)
        del client
        gc.collect()
    resource = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(resource) == 1, [str(w.message) for w in caught]
    assert "Unclosed AsyncMongoClient" in str(resource[0].message)
    # The recorded warning holds the client (its `source`); once that goes, so does the native
    # client, and it lets go of its worker threads (each counts itself out as it exits).
    del caught, resource
    gc.collect()
    assert core() is None
    deadline = time.monotonic() + 5
    while _core.debug_counters()["workers_live"] != workers_before and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert _core.debug_counters()["workers_live"] == workers_before

    # A closed client does not warn.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = AsyncMongoClient(server.uri)
        await client.close()
        del client
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


async def test_close_releases_connections_and_threads(proxy, make_client, seeded):
    workers_before = _core.debug_counters()["workers_live"]
    client = make_client(proxy.uri)
    coll = client[seeded].items
    assert await asyncio.gather(*[coll.find_one({"_id": 1}) for _ in range(4)]) == [
        {"_id": 1, "name": "one"}] * 4
    assert _connections_to(proxy.port) >= 2  # the monitor's, and the workers'
    assert _core.debug_counters()["workers_live"] > workers_before
    await client.close()
    assert await _wait_connections(proxy.port, 0) == 0
    deadline = time.monotonic() + 5
    while _core.debug_counters()["workers_live"] != workers_before and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert _core.debug_counters()["workers_live"] == workers_before


async def test_cancelled_close_still_releases_connections(proxy, make_client, seeded):
    # close() is shielded: "a cancelled close still finishes closing in the background". So an
    # application that bounds its shutdown (wait_for(client.close(), t)) and then closes again
    # must end up with the client's connections closed.
    client = make_client(proxy.uri)
    coll = client[seeded].items
    assert await coll.find_one({"_id": 1}) == {"_id": 1, "name": "one"}
    proxy.set_delay(0.5)
    running = asyncio.ensure_future(coll.find_one({"_id": 1}))
    await asyncio.sleep(0.1)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.close(), 0.1)  # the running find_one holds it up
    assert await running == {"_id": 1, "name": "one"}  # let finish, as close() promises
    await asyncio.sleep(0.3)
    await client.close()
    assert client._core.closed
    with pytest.raises(InvalidOperation):
        await coll.find_one({"_id": 1})
    assert await _wait_connections(proxy.port, 0, 3.0) == 0, "connections left open after close()"


# -- event loops ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wakeup", ["eventfd", "threadsafe"])
@pytest.mark.parametrize("how", ["loop.close", "asyncio.run"])
async def test_loop_closed_with_operations_in_flight(proxy, make_client, seeded, loop_kind, wakeup, how):
    client = make_client(proxy.uri, wakeup=wakeup)
    coll = client[seeded].items
    assert await coll.find_one({"_id": 1}) == {"_id": 1, "name": "one"}
    proxy.set_delay(0.6)
    report: dict = {}

    def other_thread():
        loop = _new_loop(loop_kind)
        errors: list[dict] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))

        async def start():
            tasks = [asyncio.ensure_future(coll.find_one({"_id": 1})) for _ in range(4)]
            await asyncio.sleep(0.2)
            report["pending"] = sum(not t.done() for t in tasks)
            return tasks

        try:
            tasks = loop.run_until_complete(start())
            if how == "asyncio.run":
                # What asyncio.run does on the way out: cancel what is left, then close.
                for t in tasks:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                report["cancelled"] = sum(t.cancelled() for t in tasks)
            loop.close()  # with "loop.close" the four operations are still running
            del tasks
            gc.collect()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            report["error"] = exc
        report["loop_errors"] = [c.get("message") for c in errors]

    t = threading.Thread(target=other_thread)
    t.start()
    await asyncio.to_thread(t.join, HANG_LIMIT)
    assert not t.is_alive()
    assert "error" not in report, report
    assert report["pending"] == 4
    if how == "asyncio.run":
        assert report["cancelled"] == 4
        assert report["loop_errors"] == []
    else:
        # Only asyncio's own complaint about tasks abandoned on a closed loop.
        assert set(report["loop_errors"]) <= {"Task was destroyed but it is pending!"}, report

    # The same client keeps serving the test's loop, while and after those complete.
    proxy.set_delay(0.0)
    assert await asyncio.wait_for(coll.find_one({"_id": 1}), HANG_LIMIT) == {"_id": 1, "name": "one"}
    await asyncio.sleep(0.7)  # the abandoned operations have finished by now
    assert await asyncio.wait_for(coll.find_one({"_id": 1}), HANG_LIMIT) == {"_id": 1, "name": "one"}
    await asyncio.wait_for(client.close(), HANG_LIMIT)
    # Their completions were dropped, and counted: nothing is left alive.
    await _balanced()


async def test_one_client_on_three_loops_at_once(make_client, db_name, sync_client, loop_kind):
    client = make_client()
    coll = client[db_name].items
    n = 500
    max_loops = 0

    async def worker(tag: str, count: int) -> int:
        nonlocal max_loops
        ok = 0
        for start in range(0, count, 50):
            keys = [f"{tag}-{i}" for i in range(start, min(start + 50, count))]
            results = await asyncio.gather(*[coll.insert_one({"_id": k, "tag": tag}) for k in keys])
            assert [r.inserted_id for r in results] == keys
            docs = await asyncio.gather(*[coll.find_one({"_id": k}) for k in keys])
            assert docs == [{"_id": k, "tag": tag} for k in keys]
            ok += len(docs)
            max_loops = max(max_loops, len(client._core.stats()["loops"]))
        return ok

    def in_thread(tag: str) -> int:
        # A loop of this thread's own (asyncio.Runner would do, from Python 3.11 on).
        loop = _new_loop(loop_kind)
        errors: list[dict] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        try:
            ok = loop.run_until_complete(worker(tag, n))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
        assert not errors, errors
        return ok

    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                asyncio.to_thread(in_thread, "a"),
                asyncio.to_thread(in_thread, "b"),
                worker("main", 200),
            ),
            60,
        )
        assert results == [n, n, 200]
        assert max_loops >= 2
        items = sync_client[db_name].items
        assert items.count_documents({}) == 2 * n + 200
        assert items.count_documents({"tag": "a"}) == n and items.count_documents({"tag": "b"}) == n
    finally:
        sync_client.drop_database(db_name)


async def test_close_while_another_threads_loop_keeps_running(server, make_client, seeded, loop_kind):
    client = make_client()
    coll = client[seeded].items
    other = _new_loop(loop_kind)
    thread = threading.Thread(target=other.run_forever)
    thread.start()

    def on_other(coro):
        return asyncio.wait_for(asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, other)),
                                HANG_LIMIT)

    try:
        for _ in range(3):
            assert await on_other(coll.find_one({"_id": 1})) == {"_id": 1, "name": "one"}
        assert await coll.find_one({"_id": 1}) == {"_id": 1, "name": "one"}
        assert len(client._core.stats()["loops"]) == 2
        # Closed from this loop while the other loop is alive and idle.
        await client.close()
        with pytest.raises(InvalidOperation):
            await on_other(coll.find_one({"_id": 1}))

        async def later():
            await asyncio.sleep(0.05)
            return "still running"

        assert await on_other(later()) == "still running"
        async with AsyncMongoClient(server.uri) as fresh:
            # A new client on that loop works (and is closed from there).
            async def use_and_close():
                c = AsyncMongoClient(server.uri)
                try:
                    return await c[seeded].items.find_one({"_id": 1})
                finally:
                    await c.close()

            assert await on_other(use_and_close()) == {"_id": 1, "name": "one"}
            assert await fresh[seeded].items.find_one({"_id": 1}) == {"_id": 1, "name": "one"}
    finally:
        other.call_soon_threadsafe(other.stop)
        await asyncio.to_thread(thread.join, HANG_LIMIT)
        other.close()


# -- fork ----------------------------------------------------------------------------------------


def test_fork_child_gets_a_clear_error(server, make_client, seeded, loop_kind):
    uri = server.uri
    client = make_client()
    coll = client[seeded].items
    # The parent has workers, connections and a monitor thread running when it forks.
    assert _run(loop_kind, coll.find_one({"_id": 1})) == {"_id": 1, "name": "one"}

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        try:
            os.close(r)

            async def child() -> str:
                lines = []
                for op in (lambda: coll.find_one({"_id": 1}), lambda: coll.insert_one({"x": 1})):
                    try:
                        await asyncio.wait_for(op(), 5)
                        lines.append("no error")
                    except Exception as exc:  # noqa: BLE001 - reported to the parent
                        lines.append(f"{type(exc).__name__}: {exc}")
                await asyncio.wait_for(client.close(), 5)  # must neither hang nor touch the pool
                lines.append("closed")
                # What the message advises: a new client, made in the child, works.
                async with AsyncMongoClient(uri) as fresh:
                    doc = await asyncio.wait_for(fresh[seeded].items.find_one({"_id": 1}), 5)
                lines.append(f"new client: {doc}")
                return "\n".join(lines)

            msg = _run(loop_kind, child())
        except BaseException as exc:  # noqa: BLE001
            msg = f"child failed: {exc!r}"
        os.write(w, msg.encode())
        os._exit(0)

    os.close(w)
    deadline = time.monotonic() + 15
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung using the parent's client")
        time.sleep(0.02)
    with os.fdopen(r, "rb") as f:
        report = f.read().decode()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, report)
    lines = report.split("\n")
    assert len(lines) == 4, report
    for line in lines[:2]:
        assert line.startswith("InvalidOperation: "), report
        assert "fork" in line, report
    assert lines[2] == "closed", report
    assert lines[3] == "new client: {'_id': 1, 'name': 'one'}", report

    # The parent's client is untouched by the child.
    async def parent():
        assert await coll.find_one({"_id": 1}) == {"_id": 1, "name": "one"}
        return (await coll.insert_one({"_id": "parent"})).inserted_id

    assert _run(loop_kind, parent()) == "parent"


# -- leaks ---------------------------------------------------------------------------------------


async def _census() -> collections.Counter:
    """Live GC-tracked objects by type. Yield once first: the loop's handle that resumed this task
    (e.g. a gather's wake-up, holding every gathered task) stays referenced while this step runs."""
    await asyncio.sleep(0)
    gc.collect()
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


async def test_no_leak_over_repeated_workloads(make_client, db_name, sync_client):
    client = make_client()
    coll = client[db_name].items

    async def workload(round_no: int) -> None:
        keys = [f"{round_no}-{i}" for i in range(200)]
        results = await asyncio.gather(*[coll.insert_one({"_id": k, "v": i}) for i, k in enumerate(keys)])
        assert len(results) == 200
        docs = await asyncio.gather(*[coll.find_one({"_id": k}) for k in keys])
        assert [d["_id"] for d in docs] == keys
        for k in keys[:5]:
            try:
                await coll.insert_one({"_id": k})
            except DuplicateKeyError as exc:
                assert exc.code == 11000
            else:
                raise AssertionError("duplicate insert succeeded")
        errors = await asyncio.gather(*[coll.insert_one({"_id": k}) for k in keys[5:10]],
                                      return_exceptions=True)
        assert all(type(e) is DuplicateKeyError for e in errors)
        # Cancel half of a batch: some while queued, some while running.
        tasks = [asyncio.ensure_future(coll.find_one({"v": i})) for i in range(150)]
        await asyncio.sleep(0)
        for t in tasks[::2]:
            t.cancel()
        outcome = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcome[::2])
        assert all(isinstance(o, dict) for o in outcome[1::2])
        del results, docs, errors, tasks, outcome
        await _balanced()

    try:
        await workload(1)  # warm-up: caches, workers, connections
        await workload(2)
        before = await _census()
        await workload(3)
        after = await _census()
        growth = sum(after.values()) - sum(before.values())
        assert growth < 200, f"{growth} more objects after one more round: {(after - before).most_common(8)}"
        assert sync_client[db_name].items.count_documents({}) == 600
    finally:
        sync_client.drop_database(db_name)


# -- logging -------------------------------------------------------------------------------------


def test_libmongoc_log_reaches_python_logging(caplog, capfd):
    _core.flush_logs()  # anything left over from earlier tests
    caplog.set_level(logging.DEBUG, logger="asyncmongo")
    caplog.clear()
    capfd.readouterr()

    levels = {0: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.INFO, 5: logging.DEBUG}
    for level in (0, 1, 2, 3, 4, 5):
        _core._mongoc_log(level, "unittest", f"message at level {level}")
    _core.flush_logs()

    records = [r for r in caplog.records if r.name == "asyncmongo" and "unittest" in r.getMessage()]
    assert [r.getMessage() for r in records] == [
        f"libmongoc unittest: message at level {level}" for level in range(6)
    ]
    for level, record in zip(range(6), records):
        if level == 1:  # libmongoc's CRITICAL ranks between its ERROR and WARNING
            assert record.levelno >= logging.ERROR
        else:
            assert record.levelno == levels[level], (level, record.levelname)

    # From another thread: parked, delivered at the next flush on this one.
    caplog.clear()
    t = threading.Thread(target=_core._mongoc_log, args=(2, "bgthread", "from a background thread"))
    t.start()
    t.join()
    assert not [r for r in caplog.records if "bgthread" in r.getMessage()]
    _core.flush_logs()
    records = [r for r in caplog.records if "bgthread" in r.getMessage()]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING and records[0].name == "asyncmongo"
    assert records[0].getMessage() == "libmongoc bgthread: from a background thread"

    # libmongoc's default handler would have printed to stdout; nothing was.
    out, err = capfd.readouterr()
    assert out == ""
    assert "unittest" not in err and "bgthread" not in err


# -- interpreter exit ----------------------------------------------------------------------------

_EXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, os
    from asyncmongo import AsyncMongoClient

    if os.environ["LOOP_KIND"] == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    client = AsyncMongoClient(os.environ["PROXY_URI"], wakeup=os.environ["ASYNCMONGO_WAKEUP"])
    coll = client.exit_test.items

    async def start():
        tasks = [asyncio.ensure_future(coll.find_one({"_id": i})) for i in range(8)]
        await asyncio.sleep(0.4)
        return tasks

    tasks = loop.run_until_complete(start())
    print("in flight:", sum(not t.done() for t in tasks), flush=True)
    if os.environ["HOW"] == "asyncio.run":
        async def main():
            asyncio.ensure_future(coll.find_one({"_id": "late"}))
            await asyncio.sleep(0.1)
        asyncio.run(main())
    # Exit now: client open, loop open, operations running on the workers.
    """
)


@pytest.mark.parametrize("wakeup", ["eventfd", "threadsafe"])
@pytest.mark.parametrize("how", ["loop left open", "asyncio.run"])
def test_interpreter_exit_with_operations_in_flight(proxy, loop_kind, wakeup, how):
    proxy.set_delay(1.5)
    env = dict(os.environ, PYTHONPATH=ROOT, PROXY_URI=proxy.uri, ASYNCMONGO_WAKEUP=wakeup,
               LOOP_KIND=loop_kind, HOW=how, PYTHONFAULTHANDLER="1")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT], env=env, capture_output=True,
                          timeout=60, text=True)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert proc.stdout == "in flight: 8\n", proc.stdout
    for bad in ("Segmentation fault", "Fatal Python error", "Traceback", "Aborted"):
        assert bad not in proc.stderr, proc.stderr[-3000:]
    # Exit does not wait out the operations' 1.5 s replies... by much.
    assert elapsed < 15, elapsed

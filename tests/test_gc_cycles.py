"""Garbage collection is part of the API: every asyncmongo object survives being collected in a
reference cycle, at any time, with its loop in the same cycle, while other operations run.

The crash these tests would have caught: a client collected in a cycle with its event loop, the
loop's attributes cleared first by the collector, made the client's deallocator fail a call on the
loop and report it with the dying client itself as the unraisable object, which pytest's hook (or
the default hook's arguments) then kept and freed again: a use-after-free, or a recursion to a
stack overflow.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest
from pymongo import monitoring

from asyncmongo import AsyncMongoClient, _core
from asyncmongo.gridfs import AsyncGridFSBucket
from asyncmongo.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorGridFSBucket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRASH_MARKS = ("Fatal Python error", "Segmentation fault", "AddressSanitizer", "runtime error:")

# A loop created before its client and holding it: the collector clears the loop first.
_LOOP_CYCLE_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, os, sys
    from asyncmongo import AsyncMongoClient

    kept = []  # an unraisable hook that keeps what it is given, as pytest's does
    sys.unraisablehook = lambda u: kept.append((u.exc_value, u.object))

    def new_loop():
        if os.environ["LOOP_KIND"] == "uvloop":
            import uvloop
            return uvloop.new_event_loop()
        if os.environ["LOOP_KIND"] == "tornado":
            from tornado.ioloop import IOLoop
            return IOLoop(make_current=False).asyncio_loop
        return asyncio.new_event_loop()

    from pymongo import monitoring

    class Heartbeats(monitoring.ServerHeartbeatListener):
        def started(self, event): pass
        def succeeded(self, event): pass
        def failed(self, event): pass

    for i in range(12):
        loop = new_loop()
        async def main():
            client = AsyncMongoClient(os.environ["MONGODB_URI"], wakeup=os.environ["WAKEUP"],
                                      heartbeatFrequencyMS=500, event_listeners=[Heartbeats()])
            loop.app_client = client  # loop -> client -> core -> queues -> loop
            cursor = client.gc_cycles.items.find(batch_size=2)
            await cursor.to_list(3)
            loop.app_cursor = cursor
            await client.admin.command("ping")
        loop.run_until_complete(main())
        if i % 2:
            loop.close()
        del loop, main
        gc.collect()
    for exc, obj in kept:
        repr(obj)  # touches every object kept: freed memory would show under ASan
    print("unraisable:", [repr(exc) for exc, obj in kept if "asyncmongo" in repr(obj)])
    """
)


@pytest.mark.modes_inside
@pytest.mark.parametrize("wakeup", ["eventfd", "threadsafe"])
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop", "tornado"])
def test_client_collected_in_a_cycle_with_its_loop(server, sync_client, loop_kind, wakeup):
    sync_client.gc_cycles.items.insert_many([{"i": i} for i in range(10)])
    env = dict(os.environ, PYTHONPATH=ROOT, MONGODB_URI=server.uri, LOOP_KIND=loop_kind,
               WAKEUP=wakeup, PYTHONFAULTHANDLER="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", _LOOP_CYCLE_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    sync_client.drop_database("gc_cycles")
    for mark in CRASH_MARKS:
        assert mark not in proc.stderr, proc.stderr[-4000:]
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-4000:])
    assert proc.stdout.strip() == "unraisable: []", proc.stdout


class _SdamListener(monitoring.ServerListener, monitoring.ServerHeartbeatListener):
    def opened(self, event): ...
    def closed(self, event): ...
    def description_changed(self, event): ...
    def started(self, event): ...
    def succeeded(self, event): ...
    def failed(self, event): ...


class Node:
    """An object that references itself, and whatever asyncmongo object it is given."""

    def __init__(self, **refs) -> None:
        self.me = self
        self.__dict__.update(refs)


async def _make_garbage(uri: str, db: str) -> None:
    """Open clients, cursors half read, command cursors, sessions (one in a transaction), change
    streams and GridFS streams, each left unclosed inside a self-referencing object with the
    running loop, and drop them."""
    loop = asyncio.get_running_loop()
    # SDAM listeners holding the client: client -> core -> carrier -> publisher -> listener -> client.
    listener = _SdamListener()
    client = AsyncMongoClient(uri, serverSelectionTimeoutMS=10000, heartbeatFrequencyMS=500,
                              event_listeners=[listener])
    listener.client = client
    coll = client[db].items
    cursor = coll.find(batch_size=3)
    await cursor.next()
    agg = await coll.aggregate([{"$match": {}}], batchSize=2)
    await agg.next()
    session = client.start_session()
    await session.start_transaction()
    await coll.insert_one({"txn": 1}, session=session)
    plain_session = client.start_session()
    await coll.find_one({}, session=plain_session)
    stream = await coll.watch(max_await_time_ms=50)
    bucket = AsyncGridFSBucket(client[db])
    upload = bucket.open_upload_stream("g", chunk_size_bytes=256)
    await upload.write(b"y" * 1000)
    # Motor's shapes: a latent cursor half read, a session in a transaction, a GridFS download.
    mclient = AsyncIOMotorClient(uri, serverSelectionTimeoutMS=10000)
    mcoll = mclient[db].items
    latent = mcoll.aggregate([{"$match": {}}], batchSize=2)
    await latent.next()
    msession = await mclient.start_session()
    async with msession.start_transaction():
        await mcoll.insert_one({"mtxn": 1}, session=msession)
    await msession.start_transaction().__aenter__()
    mbucket = AsyncIOMotorGridFSBucket(mclient[db])
    file_id = await mbucket.upload_from_stream("m", b"z" * 600)
    download = await mbucket.open_download_stream(file_id)
    await download.read(10)
    Node(loop=loop, client=client, cursor=cursor, agg=agg, session=session,
         plain_session=plain_session, stream=stream, upload=upload, coll=coll, mclient=mclient,
         latent=latent, msession=msession, download=download)
    # Each object also in a cycle of its own with the client.
    for obj in (cursor, agg, session, stream, upload):
        Node(obj=obj, client=client)


def _load(uri: str, db: str, stop: threading.Event, errors: list) -> None:
    """Another loop, in another thread, running operations the whole time."""

    async def main() -> None:
        client = AsyncMongoClient(uri)
        try:
            while not stop.is_set():
                await asyncio.gather(*(client[db].items.find_one({"i": i}) for i in range(8)))
                await client[db].items.find({}, batch_size=4).to_list(20)
        finally:
            await client.close()

    try:
        asyncio.run(main())
    except BaseException as exc:  # reported by the test
        errors.append(exc)


async def test_cycles_collected_under_load(server, sync_client, db_name):
    sync_client[db_name].items.insert_many([{"i": i} for i in range(40)])
    kept: list = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: kept.append((u.exc_value, u.object))
    stop = threading.Event()
    errors: list = []
    other = threading.Thread(target=_load, args=(server.uri, db_name, stop, errors))
    other.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            for round_ in range(15):
                await _make_garbage(server.uri, db_name)
                gc.collect()
                # The collector may run at any point of an operation's life, too.
                gc.set_threshold(5, 1, 1)
                await asyncio.gather(*(_make_garbage(server.uri, db_name) for _ in range(2)))
                gc.set_threshold(700, 10, 10)
                gc.collect()
                await asyncio.sleep(0.01)  # lets killCursors sent by collected cursors complete
    finally:
        gc.set_threshold(700, 10, 10)
        stop.set()
        other.join(60)
        sys.unraisablehook = old_hook
    assert not other.is_alive()
    assert not errors, errors
    for exc, obj in kept:
        repr(obj)
    ours = [(exc, obj) for exc, obj in kept if "asyncmongo" in repr(obj) or "asyncmongo" in repr(exc)]
    assert not ours, ours
    # Every core collected released its pool: no worker of theirs is left.
    for _ in range(100):
        gc.collect()
        if _core.debug_counters()["jobs_live"] == 0:
            break
        await asyncio.sleep(0.05)
    assert _core.debug_counters()["jobs_live"] == 0

"""An application that ends badly with everything open: run as a subprocess by tests/test_exit.py.

It opens a client, a cursor half read, a change stream, a session inside a transaction (with a
write in it), a GridFS upload stream half written, and operations in flight, then ends the way
END says, on the loop RUNNER says:

    RUNNER  asyncio | uvloop | tornado (asyncmongo.tornado, IOLoop.run_sync, gen.coroutine)
    END     raise     an ordinary exception escapes: status 1, its traceback on stderr
            exit      sys.exit(3) inside a coroutine: status 3
            sigint    SIGINT arrives while operations run: KeyboardInterrupt, killed by SIGINT
            cycle     returns normally (status 0), leaving the client, its loop and every object
                      above in one reference cycle for the collector at interpreter exit

MONGODB_URI names the server; ASYNCMONGO_WAKEUP picks the wake-up path. Prints "ready" on stdout
once everything is open.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

RUNNER = os.environ.get("RUNNER", "asyncio")
END = os.environ.get("END", "raise")
URI = os.environ["MONGODB_URI"]


class Holder:
    """Everything the app opened, in a cycle with itself (so only the collector frees it)."""

    def __init__(self) -> None:
        self.me = self


holder = Holder()


def sdam_listener():
    """SDAM and heartbeat listeners, with heartbeats every 500 ms: events are on their way from
    libmongoc's monitor threads whenever the app ends."""
    from pymongo import monitoring

    class Listener(monitoring.ServerListener, monitoring.ServerHeartbeatListener,
                   monitoring.TopologyListener):
        def __init__(self) -> None:
            self.events = holder.sdam_events = []

        def opened(self, event): self.events.append(event)
        def closed(self, event): self.events.append(event)
        def description_changed(self, event): self.events.append(event)
        def started(self, event): self.events.append(event)
        def succeeded(self, event): self.events.append(event)
        def failed(self, event): self.events.append(event)

    return {"event_listeners": [Listener()], "heartbeatFrequencyMS": 500}


async def open_everything(client, delegate) -> None:
    """Open what a busy application has open. `client` is what the app uses (AsyncMongoClient or
    TornadoMongoClient), `delegate` the AsyncMongoClient underneath."""
    from asyncmongo.gridfs import AsyncGridFSBucket

    db = client.exit_app
    coll = db.items
    await coll.delete_many({})
    await coll.insert_many([{"i": i} for i in range(300)])
    holder.client = client
    holder.loop = asyncio.get_running_loop()

    cursor = coll.find(batch_size=10)
    got = 0
    if RUNNER == "tornado":
        while got < 15 and (await cursor.fetch_next):
            cursor.next_object()
            got += 1
    else:
        async for _ in cursor:
            got += 1
            if got == 15:
                break
    holder.cursor = cursor

    stream = await coll.watch(max_await_time_ms=200)
    holder.stream = stream

    session = client.start_session()
    if RUNNER in ("tornado", "motor"):
        session = await session
    holder.session = session
    if RUNNER == "motor":  # Motor's start_transaction is synchronous
        await session.start_transaction().__aenter__()
    else:
        await session.start_transaction()
    await coll.insert_one({"in": "transaction"}, session=session)

    bucket = AsyncGridFSBucket(delegate.exit_app)
    upload = bucket.open_upload_stream("half.bin", chunk_size_bytes=1024)
    await upload.write(b"x" * 5000)
    holder.upload = upload

    # Operations in flight when the app ends.
    holder.tasks = [asyncio.ensure_future(coll.find_one({"i": i})) for i in range(20)]
    holder.tasks.append(asyncio.ensure_future(stream.try_next()))
    print("ready", flush=True)


async def end() -> None:
    if END == "raise":
        raise RuntimeError("the application failed")
    if END == "exit":
        sys.exit(3)
    if END == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
        coll = holder.client.exit_app.items
        while True:  # busy with operations when the signal lands
            await asyncio.gather(*(coll.find_one({"i": i}) for i in range(10)))
    # "cycle": return normally, everything left open in the holder's cycle.


async def main_asyncio() -> None:
    from asyncmongo import AsyncMongoClient

    client = AsyncMongoClient(URI, **sdam_listener())
    await open_everything(client, client)
    await end()


async def main_motor() -> None:
    from asyncmongo.motor_asyncio import AsyncIOMotorClient

    client = AsyncIOMotorClient(URI, **sdam_listener())
    await open_everything(client, client.delegate)
    await end()


async def main_tornado() -> None:
    from asyncmongo.tornado import TornadoMongoClient

    client = TornadoMongoClient(URI, **sdam_listener())
    await open_everything(client, client.delegate)
    await end()


def run() -> None:
    if RUNNER == "tornado":
        from tornado.ioloop import IOLoop

        IOLoop.current().run_sync(main_tornado)
    elif RUNNER == "uvloop":
        import uvloop

        uvloop.run(main_asyncio())
    elif RUNNER == "motor":
        asyncio.run(main_motor())
    else:
        asyncio.run(main_asyncio())


if __name__ == "__main__":
    run()

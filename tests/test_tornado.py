"""The Tornado adapter (asyncmongo.tornado) on the real server: futures that native coroutines await,
gen.coroutine generators yield, IOLoop.add_future, gen.multi and WaitIterator take, run_sync runs;
Motor's fetch_next/next_object; which loop an operation belongs to (one client, two IOLoops in two
threads); and an adapter that covers the whole asyncio API. PyMongo's client is the witness.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import re
import threading
import time

import pytest
from pymongo import monitoring
from pymongo.errors import DuplicateKeyError, InvalidOperation, OperationFailure
from pymongo.results import InsertManyResult, InsertOneResult, UpdateResult
from tornado import gen
from tornado.ioloop import IOLoop
import tornado.web
from tornado.testing import AsyncHTTPTestCase, AsyncTestCase, gen_test

from asyncmongo import (
    AsyncCollection,
    AsyncCommandCursor,
    AsyncCursor,
    AsyncDatabase,
    AsyncMongoClient,
)
from asyncmongo.change_stream import AsyncChangeStream
from asyncmongo.client_session import AsyncClientSession
from asyncmongo.tornado import (
    CursorFuture,
    TornadoChangeStream,
    TornadoClientSession,
    TornadoCollection,
    TornadoCommandCursor,
    TornadoCursor,
    TornadoDatabase,
    TornadoMongoClient,
)

# Guards against hangs only: nothing here asserts how long anything took.
TIMEOUT = 60


@pytest.fixture(autouse=True)
def loop_policy(loop_kind):
    """Under --loop=uvloop every IOLoop these tests make (tornado.testing's too) runs on uvloop."""
    if loop_kind != "uvloop":
        yield
        return
    import uvloop

    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)


class CheckedLoop:
    """For tornado.testing cases: the server fixtures as attributes, clients made with
    ``make_client`` closed on the test's loop at teardown, and a failure if the loop's exception
    handler was called (an unretrieved future exception, a task destroyed while pending)."""

    @pytest.fixture(autouse=True)
    def _fixtures(self, server, db_name, sync_client, loop_kind):
        self.server = server
        self.db_name = db_name
        self.sync_client = sync_client
        self.loop_kind = loop_kind
        yield
        sync_client.drop_database(db_name)

    def setUp(self):
        self.clients = []
        self.loop_errors = []
        super().setUp()
        if self.loop_kind == "uvloop":  # the policy fixture really gave Tornado a uvloop loop
            assert type(self.io_loop.asyncio_loop).__module__.startswith("uvloop")
        self.watch_loop()

    def watch_loop(self):
        loop = self.io_loop.asyncio_loop
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))

    def make_client(self, **kwargs) -> TornadoMongoClient:
        self.watch_loop()
        kwargs.setdefault("serverSelectionTimeoutMS", 10000)
        client = TornadoMongoClient(self.server.uri, io_loop=self.io_loop, **kwargs)
        self.clients.append(client)
        return client

    def tearDown(self):
        for client in self.clients:
            self.io_loop.run_sync(client.close, timeout=TIMEOUT)
        super().tearDown()
        gc.collect()
        assert not self.loop_errors, [
            f"{c.get('message')}: {c.get('exception')!r}" for c in self.loop_errors
        ]


@contextlib.contextmanager
def checked_ioloop():
    """A fresh IOLoop (not made current) whose exception handler must never be called."""
    loop = IOLoop(make_current=False)
    errors = []
    loop.asyncio_loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield loop
    finally:
        loop.close()
        gc.collect()
    assert not errors, [f"{c.get('message')}: {c.get('exception')!r}" for c in errors]


class Recorder(monitoring.CommandListener):
    def __init__(self):
        self.names = []

    def started(self, event):
        self.names.append(event.command_name)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


class TestFutures(CheckedLoop, AsyncTestCase):
    @gen_test(timeout=TIMEOUT)
    async def test_native_coroutines_await_operations(self):
        client = self.make_client()
        coll = client[self.db_name]["items"]
        future = coll.insert_one({"_id": 1, "n": 1})
        # An asyncio future (Tornado's Future in Tornado 6) of this test's loop.
        assert isinstance(future, asyncio.Future)
        assert future.get_loop() is self.io_loop.asyncio_loop
        res = await future
        assert isinstance(res, InsertOneResult) and res.inserted_id == 1
        res = await coll.insert_many([{"_id": i, "n": i} for i in range(2, 6)])
        assert isinstance(res, InsertManyResult) and res.inserted_ids == [2, 3, 4, 5]
        assert await coll.find_one({"_id": 3}) == {"_id": 3, "n": 3}
        res = await coll.update_many({"n": {"$gte": 4}}, {"$set": {"big": True}})
        assert isinstance(res, UpdateResult) and res.modified_count == 2
        assert await coll.count_documents({"big": True}) == 2
        assert (await coll.delete_one({"_id": 1})).deleted_count == 1
        assert (await client.admin.command("ping"))["ok"] == 1.0
        witness = self.sync_client[self.db_name]["items"]
        assert sorted(d["_id"] for d in witness.find()) == [2, 3, 4, 5]
        assert witness.count_documents({"big": True}) == 2

    @gen_test(timeout=TIMEOUT)
    def test_gen_coroutine_yields_futures(self):
        client = self.make_client()
        coll = client[self.db_name]["items"]

        @gen.coroutine
        def work():
            res = yield coll.insert_many([{"_id": i, "sq": i * i} for i in range(10)])
            assert res.inserted_ids == list(range(10))
            doc = yield coll.find_one({"_id": 7})
            # A list or a dict of futures is waited for as a whole.
            pair = yield [coll.find_one({"_id": 2}), coll.count_documents({})]
            named = yield {"three": coll.find_one({"_id": 3}), "none": coll.find_one({"_id": 99})}
            squares = []
            cursor = coll.find({"_id": {"$lt": 5}}).sort("_id", 1)
            while (yield cursor.fetch_next):
                squares.append(cursor.next_object()["sq"])
            return doc, pair, named, squares

        doc, pair, named, squares = yield work()
        assert doc == {"_id": 7, "sq": 49}
        assert pair == [{"_id": 2, "sq": 4}, 10]
        assert named == {"three": {"_id": 3, "sq": 9}, "none": None}
        assert squares == [0, 1, 4, 9, 16]

    @gen_test(timeout=TIMEOUT)
    def test_errors_arrive_through_the_future(self):
        client = self.make_client()
        coll = client[self.db_name]["items"]
        yield coll.insert_one({"_id": "dup"})

        @gen.coroutine
        def insert_twice():
            yield coll.insert_one({"_id": "dup"})

        with pytest.raises(DuplicateKeyError) as info:
            yield insert_twice()
        assert info.value.code == 11000
        with pytest.raises(OperationFailure):
            yield client[self.db_name].command("noSuchCommand")
        # Arguments are checked as by the asyncio API, and the error comes with the future.
        future = coll.insert_one("not a document")
        with pytest.raises(TypeError):
            yield future
        assert self.sync_client[self.db_name]["items"].count_documents({}) == 1

    @gen_test(timeout=TIMEOUT)
    async def test_gen_multi_and_wait_iterator(self):
        client = self.make_client()
        coll = client[self.db_name]["items"]
        await gen.multi([coll.insert_one({"_id": i, "v": f"v{i}"}) for i in range(30)])
        docs = await gen.multi([coll.find_one({"_id": i}) for i in range(30)])
        assert [d["v"] for d in docs] == [f"v{i}" for i in range(30)]
        by_name = await gen.multi({f"k{i}": coll.find_one({"_id": i}) for i in (4, 9)})
        assert by_name == {"k4": {"_id": 4, "v": "v4"}, "k9": {"_id": 9, "v": "v9"}}

        futures = [coll.find_one({"_id": i}) for i in range(0, 30, 3)]
        futures.append(coll.count_documents({"_id": {"$gte": 10}}))
        seen = {}
        waiter = gen.WaitIterator(*futures)
        async for result in waiter:
            seen[waiter.current_index] = result
        assert len(seen) == len(futures)
        for index in range(10):
            assert seen[index] == {"_id": index * 3, "v": f"v{index * 3}"}
        assert seen[10] == 20

    @gen_test(timeout=TIMEOUT)
    async def test_add_future(self):
        client = self.make_client()
        coll = client[self.db_name]["items"]
        done = asyncio.Event()
        calls = []

        def callback(future):
            calls.append(future)
            done.set()

        future = coll.insert_one({"_id": "added"})
        self.io_loop.add_future(future, callback)
        await done.wait()
        assert calls == [future]
        assert calls[0].result().inserted_id == "added"

        done.clear()
        failing = coll.insert_one({"_id": "added"})
        self.io_loop.add_future(failing, callback)
        await done.wait()
        assert isinstance(calls[1].exception(), DuplicateKeyError)

    @gen_test(timeout=TIMEOUT)
    async def test_close_returns_a_future(self):
        client = TornadoMongoClient(self.server.uri, io_loop=self.io_loop)
        coll = client[self.db_name]["items"]
        await coll.insert_one({"_id": 1})
        future = client.close()
        assert isinstance(future, asyncio.Future)
        assert await future is None
        with pytest.raises(InvalidOperation):
            await coll.find_one({})
        await client.close()  # again: nothing to do

    @gen_test(timeout=TIMEOUT)
    async def test_async_with_client(self):
        async with TornadoMongoClient(self.server.uri) as client:
            assert isinstance(client, TornadoMongoClient)
            assert (await client.admin.command("ping"))["ok"] == 1.0
        with pytest.raises(InvalidOperation):
            await client.admin.command("ping")


class TestCursors(CheckedLoop, AsyncTestCase):
    def setUp(self):
        super().setUp()
        self.sync_client[self.db_name]["items"].insert_many(
            [{"_id": i, "even": i % 2 == 0} for i in range(10)]
        )

    @gen_test(timeout=TIMEOUT)
    async def test_async_for_chaining_and_futures(self):
        coll = self.make_client()[self.db_name]["items"]
        cursor = coll.find({"even": True})
        assert isinstance(cursor, TornadoCursor)
        # Chainable modifiers return the same wrapper.
        assert cursor.sort("_id", -1).skip(1).limit(3).batch_size(2) is cursor
        assert [d["_id"] async for d in cursor] == [6, 4, 2]
        assert cursor.alive is False and cursor.retrieved == 3

        cursor = coll.find().sort("_id", 1)
        first = await cursor.next()
        assert first["_id"] == 0
        rest = cursor.to_list(4)
        assert isinstance(rest, asyncio.Future)
        assert [d["_id"] for d in await rest] == [1, 2, 3, 4]
        assert await cursor.try_next() == {"_id": 5, "even": False}
        await cursor.close()
        assert cursor.alive is False

        clone = cursor.clone()
        assert isinstance(clone, TornadoCursor) and clone is not cursor
        assert len(await clone.to_list()) == 10
        assert isinstance(cursor.collection, TornadoCollection)
        assert cursor.collection == coll
        rewound = await cursor.rewind()
        assert rewound is cursor
        assert [d["_id"] async for d in cursor.limit(2)] == [0, 1]

        async with coll.find({}, batch_size=3).sort("_id", 1) as open_cursor:
            assert (await open_cursor.next())["_id"] == 0
        assert open_cursor.alive is False
        assert sorted(await coll.find().distinct("even")) == [False, True]
        with pytest.raises(StopAsyncIteration):
            await coll.find({"_id": -1}).next()

    @gen_test(timeout=TIMEOUT)
    def test_fetch_next_goes_to_the_server_once_per_batch(self):
        recorder = Recorder()
        coll = self.make_client(event_listeners=[recorder])[self.db_name]["items"]
        cursor = coll.find().sort("_id", 1).batch_size(3)
        assert cursor.next_object() is None  # nothing fetched yet
        ids = []
        while (yield cursor.fetch_next):
            sent = len(recorder.names)
            ids.append(cursor.next_object()["_id"])
            if ids[-1] % 3 != 2 and ids[-1] != 9:
                # More of this batch of 3 is buffered: no round trip to ask for it.
                assert (yield cursor.fetch_next) is True
                assert len(recorder.names) == sent
        assert ids == list(range(10))
        assert recorder.names.count("find") == 1
        assert recorder.names.count("getMore") >= 3
        # Exhausted: fetch_next stays False and next_object None, without asking the server.
        sent = len(recorder.names)
        assert (yield cursor.fetch_next) is False
        assert cursor.next_object() is None
        assert len(recorder.names) == sent

    @gen_test(timeout=TIMEOUT)
    def test_command_cursor_future_is_awaitable_and_usable_as_the_cursor(self):
        client = self.make_client()
        coll = client[self.db_name]["items"]
        pipeline = [{"$match": {"even": False}}, {"$sort": {"_id": 1}}]
        future = coll.aggregate(pipeline, batchSize=2)
        assert isinstance(future, CursorFuture) and isinstance(future, asyncio.Future)
        cursor = yield future  # the asyncio API's way
        assert isinstance(cursor, TornadoCommandCursor)
        assert [d["_id"] for d in (yield cursor.to_list())] == [1, 3, 5, 7, 9]

        # Motor's way: the cursor straight from aggregate(), with fetch_next/next_object.
        motor_style = coll.aggregate(pipeline, batchSize=2)
        ids = []
        while (yield motor_style.fetch_next):
            ids.append(motor_style.next_object()["_id"])
        assert ids == [1, 3, 5, 7, 9]

        async def native():
            return [d["_id"] async for d in coll.aggregate(pipeline, batchSize=2)]

        assert (yield native()) == [1, 3, 5, 7, 9]
        assert len((yield coll.aggregate(pipeline).to_list(2))) == 2
        names = [ix["name"] for ix in (yield coll.list_indexes().to_list())]
        assert names == ["_id_"]
        listed = yield client[self.db_name].list_collections()
        assert isinstance(listed, TornadoCommandCursor)
        assert [c["name"] for c in (yield listed.to_list())] == ["items"]
        databases = client.list_databases()
        names = []
        while (yield databases.fetch_next):
            names.append(databases.next_object()["name"])
        assert self.db_name in names

    @gen_test(timeout=TIMEOUT)
    async def test_failed_command_cursor_future(self):
        coll = self.make_client()[self.db_name]["items"]
        bad = [{"$noSuchStage": {}}]
        with pytest.raises(OperationFailure):
            await coll.aggregate(bad)
        with pytest.raises(OperationFailure):
            async for _ in coll.aggregate(bad):
                pass
        motor_style = coll.aggregate(bad)
        with pytest.raises(OperationFailure):
            await motor_style.fetch_next
        assert motor_style.next_object() is None


class TestObjects(CheckedLoop, AsyncTestCase):
    @gen_test(timeout=TIMEOUT)
    async def test_wrapped_objects_and_names(self):
        client = self.make_client()
        assert client.io_loop is self.io_loop and client.get_io_loop() is self.io_loop
        assert isinstance(client.delegate, AsyncMongoClient)
        db = client[self.db_name]
        assert isinstance(db, TornadoDatabase) and isinstance(db.delegate, AsyncDatabase)
        assert db == client.get_database(self.db_name) == getattr(client, self.db_name)
        assert db.client is client and db.name == self.db_name
        coll = db.things
        assert isinstance(coll, TornadoCollection) and isinstance(coll.delegate, AsyncCollection)
        assert coll == db["things"] == db.get_collection("things")
        assert coll.database == db and coll.full_name == f"{self.db_name}.things"
        assert coll.sub.name == "things.sub"
        assert repr(coll) == f"TornadoCollection(TornadoDatabase({client!r}, {self.db_name!r}), 'things')"
        assert repr(client).startswith("TornadoMongoClient(host=")
        from pymongo import WriteConcern

        quiet = coll.with_options(write_concern=WriteConcern(w=1, j=True))
        assert isinstance(quiet, TornadoCollection) and quiet.write_concern.document["j"] is True
        with pytest.raises(NotImplementedError):
            bool(db)
        with pytest.raises(TypeError):
            iter(coll)
        with pytest.raises(TypeError):
            coll.insert_won({})  # a misspelt method is a sub-collection: calling it says so
        with pytest.raises(AttributeError):
            client._private

        created = await db.create_collection("made")
        assert isinstance(created, TornadoCollection) and created.name == "made"
        # Wrappers passed as arguments reach the asyncio API as what they wrap.
        await db.drop_collection(created)
        assert "made" not in await db.list_collection_names()
        await coll.insert_one({"_id": 1})
        assert self.db_name in await client.list_database_names()
        await client.drop_database(db)
        assert self.db_name not in self.sync_client.list_database_names()

        direct = TornadoCollection(TornadoDatabase(client, self.db_name), "direct")
        await direct.insert_one({"_id": "d"})
        assert [d async for d in TornadoCursor(direct, {"_id": "d"})] == [{"_id": "d"}]

    @gen_test(timeout=TIMEOUT)
    async def test_sessions(self):
        client = self.make_client()
        db = client[self.db_name]
        async with client.start_session() as session:
            assert isinstance(session, TornadoClientSession)
            assert isinstance(session.delegate, AsyncClientSession)
            assert session.client is client
            assert (await db.command("ping", session=session))["ok"] == 1.0
            names = await db.list_collection_names(session=session)
            assert isinstance(names, list)
        assert session.has_ended
        # Motor's start_session was a coroutine: awaiting it still gives the session.
        motor_style = await client.start_session()
        assert isinstance(motor_style, TornadoClientSession)
        ended = motor_style.end_session()
        assert isinstance(ended, asyncio.Future)
        await ended
        assert motor_style.has_ended

    @gen_test(timeout=TIMEOUT)
    async def test_change_stream_both_ways(self):
        coll = self.make_client()[self.db_name]["items"]
        await coll.insert_one({"_id": "first"})
        # Motor's way: async with straight on watch().
        async with coll.watch(max_await_time_ms=200) as stream:
            assert isinstance(stream, TornadoChangeStream)
            assert isinstance(stream.delegate, AsyncChangeStream)
            await coll.insert_one({"_id": "seen"})
            change = await stream.next()
            assert change["operationType"] == "insert" and change["documentKey"] == {"_id": "seen"}
            assert stream.resume_token is not None
        assert stream.alive is False
        # The asyncio API's way.
        stream = await coll.watch(max_await_time_ms=200)
        await coll.delete_one({"_id": "seen"})
        async for change in stream:
            assert change["operationType"] == "delete"
            break
        await stream.close()


class TestGridFSHandler(CheckedLoop, AsyncHTTPTestCase):
    """asyncmongo.tornado.GridFSHandler takes a TornadoDatabase (the handler itself is GridFS's)."""

    def get_app(self):
        from asyncmongo.tornado import GridFSHandler

        self.db = self.make_client()[self.db_name]
        return tornado.web.Application([(r"/files/(.*)", GridFSHandler, {"database": self.db})])

    @gen_test(timeout=TIMEOUT)
    async def test_serves_a_file_of_a_tornado_database(self):
        from asyncmongo.gridfs import AsyncGridFSBucket

        data = bytes(range(256)) * 1000
        await AsyncGridFSBucket(self.db.delegate, chunk_size_bytes=4096).upload_from_stream(
            "blob.bin", data)
        response = await self.http_client.fetch(self.get_url("/files/blob.bin"))
        assert response.code == 200 and response.body == data
        response = await self.http_client.fetch(self.get_url("/files/none.bin"), raise_error=False)
        assert response.code == 404


def test_operations_before_the_loop_runs(server, db_name, sync_client):
    with checked_ioloop() as loop:
        client = TornadoMongoClient(server.uri, io_loop=loop)
        coll = client[db_name]["items"]
        # Nothing runs yet: the operations are queued on the client's IOLoop.
        futures = [coll.insert_one({"_id": i}) for i in range(5)]
        assert all(f.get_loop() is loop.asyncio_loop for f in futures)
        results = loop.run_sync(lambda: gen.multi(futures), timeout=TIMEOUT)
        assert [r.inserted_id for r in results] == list(range(5))
        assert loop.run_sync(lambda: coll.count_documents({}), timeout=TIMEOUT) == 5
        loop.run_sync(client.close, timeout=TIMEOUT)
    assert sync_client[db_name]["items"].count_documents({}) == 5
    sync_client.drop_database(db_name)


def run_in_thread(fn):
    """Run fn() in a new thread and return its result (or raise its exception)."""
    out = {}

    def target():
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]
    return out["result"]


def test_binds_to_the_current_ioloop_on_first_use(server, db_name, sync_client):
    def main():
        # The classic Tornado main: IOLoop.current() is the loop that run_sync runs.
        loop = IOLoop()
        try:
            client = TornadoMongoClient(server.uri)
            future = client[db_name]["items"].insert_one({"_id": "main"})
            assert client.io_loop is loop is IOLoop.current()
            assert future.get_loop() is loop.asyncio_loop
            result = IOLoop.current().run_sync(lambda: future, timeout=TIMEOUT)
            IOLoop.current().run_sync(client.close, timeout=TIMEOUT)
            return result.inserted_id
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    assert run_in_thread(main) == "main"
    assert sync_client[db_name]["items"].find_one() == {"_id": "main"}
    sync_client.drop_database(db_name)


def test_one_client_two_ioloops_in_two_threads(server, db_name, sync_client):
    client = TornadoMongoClient(server.uri, maxPoolSize=20)
    coll = client[db_name]["items"]
    barrier = threading.Barrier(2)
    loops = {}

    def worker(n):
        with checked_ioloop() as loop:
            loops[n] = loop

            async def main():
                barrier.wait(TIMEOUT)  # both threads start their operations together
                writes = [coll.insert_one({"t": n, "i": i}) for i in range(40)]
                # Each operation's future belongs to the loop that started it.
                assert all(f.get_loop() is loop.asyncio_loop for f in writes)
                await gen.multi(writes)
                docs = await gen.multi([coll.find_one({"t": n, "i": i}) for i in range(40)])
                listed = []
                cursor = coll.find({"t": n}).sort("i", 1).batch_size(7)
                while await cursor.fetch_next:
                    listed.append(cursor.next_object()["i"])
                return [d["i"] for d in docs], listed

            return loop.run_sync(main, timeout=TIMEOUT)

    results = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, _catch(worker, n)))
               for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    try:
        for n in (1, 2):
            if isinstance(results[n], BaseException):
                raise results[n]
            found, listed = results[n]
            assert found == list(range(40)) and listed == list(range(40))
        # Bound to the first loop that used it; the other thread's operations still ran on their own.
        assert client.io_loop in (loops[1], loops[2])
    finally:
        with checked_ioloop() as closer:  # a third loop closes it
            closer.run_sync(client.close, timeout=TIMEOUT)
    witness = sync_client[db_name]["items"]
    assert witness.count_documents({"t": 1}) == witness.count_documents({"t": 2}) == 40
    sync_client.drop_database(db_name)


def _catch(fn, *args):
    try:
        return fn(*args)
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        return exc


def test_caller_loop_wins_over_io_loop(server, db_name, sync_client):
    """A client given io_loop=A, used from a coroutine of loop B: the future is B's (a future of A
    could not be awaited in B)."""
    with checked_ioloop() as a, checked_ioloop() as b:
        client = TornadoMongoClient(server.uri, io_loop=a)

        async def on_b():
            future = client[db_name]["items"].insert_one({"_id": "b"})
            assert future.get_loop() is b.asyncio_loop
            return (await future).inserted_id

        assert b.run_sync(on_b, timeout=TIMEOUT) == "b"
        assert client.io_loop is a
        a.run_sync(client.close, timeout=TIMEOUT)
    assert sync_client[db_name]["items"].find_one() == {"_id": "b"}
    sync_client.drop_database(db_name)


def test_starting_from_another_thread_is_refused(server, db_name):
    with checked_ioloop() as loop:
        client = TornadoMongoClient(server.uri, io_loop=loop)
        started = threading.Event()
        release = asyncio.Event()

        async def serve():
            started.set()
            await release.wait()

        thread = threading.Thread(target=lambda: loop.run_sync(serve, timeout=TIMEOUT))
        thread.start()
        try:
            assert started.wait(TIMEOUT)
            # This thread runs no loop, and the client's IOLoop runs in the other thread.
            with pytest.raises(RuntimeError, match="another thread"):
                client[db_name]["items"].find_one()
            with pytest.raises(RuntimeError, match="another thread"):
                client[db_name]["items"].find().fetch_next
        finally:
            loop.add_callback(release.set)
            thread.join(TIMEOUT)
        # The way to do it: a coroutine on that IOLoop.
        assert loop.run_sync(lambda: client[db_name]["items"].find_one(), timeout=TIMEOUT) is None
        loop.run_sync(client.close, timeout=TIMEOUT)
    # Its IOLoop closed, a client cannot queue operations there any more.
    with pytest.raises(RuntimeError, match="closed"):
        client[db_name]["items"].find_one()


def test_close_after_its_loop_has_closed(server, db_name):
    """Tear-down code that closes a client once its IOLoop has closed (ODMantic's test fixture
    does): close() closes it there and then, as Motor's synchronous close() does, instead of
    refusing for want of a loop; the future it gives is done, the threads go."""
    with checked_ioloop() as loop:
        client = TornadoMongoClient(server.uri, io_loop=loop)
        assert loop.run_sync(lambda: client[db_name]["items"].find_one(), timeout=TIMEOUT) is None
        assert client.stats()["workers"] >= 1
    future = client.close()
    assert future.done() and future.result() is None
    deadline = time.monotonic() + TIMEOUT
    while client.stats()["workers"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.stats()["workers"] == 0
    assert client.close().done()  # again: nothing left to do
    with pytest.raises(RuntimeError, match="closed"):
        client[db_name]["items"].find_one()


def test_io_loop_must_be_an_ioloop(server):
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(TypeError, match="io_loop"):
            TornadoMongoClient(server.uri, io_loop=loop)  # an asyncio loop, not an IOLoop
    finally:
        loop.close()


# ---- the adapter is the asyncio API ---------------------------------------------------------

PAIRS = [
    (TornadoMongoClient, AsyncMongoClient),
    (TornadoDatabase, AsyncDatabase),
    (TornadoCollection, AsyncCollection),
    (TornadoCursor, AsyncCursor),
    (TornadoCommandCursor, AsyncCommandCursor),
    (TornadoClientSession, AsyncClientSession),
    (TornadoChangeStream, AsyncChangeStream),
]


@pytest.mark.parametrize("wrapper, original", PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_every_public_member_is_adapted(wrapper, original):
    """A method or property added to the asyncio API must be added here too (the lists in
    asyncmongo/tornado.py): this fails until it is."""
    for name in dir(original):
        if name.startswith("_"):
            continue
        member = inspect.getattr_static(original, name)
        assert hasattr(wrapper, name), f"{wrapper.__name__} lacks {name}"
        if inspect.iscoroutinefunction(member):
            assert name in wrapper._async_methods, f"{wrapper.__name__}.{name} must return a future"
        elif isinstance(member, property):
            assert isinstance(inspect.getattr_static(wrapper, name), property), name


def test_methods_show_the_asyncio_signature_and_docs():
    for wrapper, original in PAIRS:
        for name in wrapper._async_methods + wrapper._sync_methods:
            mine, theirs = getattr(wrapper, name), getattr(original, name)
            assert mine.__name__ == name
            assert mine.__qualname__ == f"{wrapper.__name__}.{name}"
            if name == "with_transaction":
                continue  # its own docs: the callback receives the Tornado session
            assert list(inspect.signature(mine).parameters) == list(
                inspect.signature(theirs).parameters
            )
            if theirs.__doc__:
                first_line = theirs.__doc__.split("\n")[0]
                assert re.sub(r"\bAsync\w+", "X", first_line) in re.sub(r"\bTornado\w+", "X", mine.__doc__)
    sig = inspect.signature(TornadoCollection.insert_one)
    assert sig.return_annotation == "asyncio.Future[InsertOneResult]"
    assert inspect.signature(TornadoCollection.find).return_annotation == "TornadoCursor"
    assert "future" in TornadoCollection.insert_one.__doc__
    # Not coroutine functions: they return futures, so Tornado never mistakes them.
    assert not inspect.iscoroutinefunction(TornadoCollection.insert_one)

"""Motor code moves to asyncmongo by changing ``motor`` to ``asyncmongo`` in its imports.

Member by member, asyncmongo.motor_asyncio's and asyncmongo.motor_tornado's classes have Motor
3.7's members with Motor's shapes, read from Motor's own class definitions (its AsyncRead/AsyncWrite/
AsyncCommand members return futures, DelegateMethod and chaining members return values,
ReadOnlyProperty members are properties; its latent cursors are usable without awaiting). Then
Motor's shapes are driven against the server: ``await client.start_session()``,
``aggregate(...).to_list()`` without awaiting, synchronous ``close()``, ``async with
s.start_transaction()``, the io_loop rules, the topology properties as plain values, GridFS,
``each()``.
"""

from __future__ import annotations

import asyncio
import inspect

import motor.core as motor_core
import motor.metaprogramming as motor_meta
import motor.motor_gridfs as motor_gridfs
import pytest
from pymongo.errors import InvalidOperation
from pymongo.topology_description import TopologyDescription
from tornado.ioloop import IOLoop

from asyncmongo import motor_asyncio, motor_tornado

MOTOR_CLASSES = {
    "Client": motor_core.AgnosticClient,
    "Database": motor_core.AgnosticDatabase,
    "Collection": motor_core.AgnosticCollection,
    "Cursor": motor_core.AgnosticCursor,
    "CommandCursor": motor_core.AgnosticCommandCursor,
    "LatentCommandCursor": motor_core.AgnosticLatentCommandCursor,
    "ChangeStream": motor_core.AgnosticChangeStream,
    "ClientSession": motor_core.AgnosticClientSession,
    "GridFSBucket": motor_gridfs.AgnosticGridFSBucket,
    "GridIn": motor_gridfs.AgnosticGridIn,
    "GridOut": motor_gridfs.AgnosticGridOut,
    "GridOutCursor": motor_gridfs.AgnosticGridOutCursor,
}
MODULES = {"AsyncIOMotor": motor_asyncio, "Motor": motor_tornado}

# Motor's plain methods that return a future (not marked by its metaprogramming).
MOTOR_FUTURE_METHODS = {("Cursor", "to_list"), ("CommandCursor", "to_list"),
                        ("LatentCommandCursor", "to_list"), ("GridOutCursor", "to_list"),
                        ("GridOut", "open")}
# Motor's plain methods that return a latent cursor or change stream: usable without await.
MOTOR_CURSOR_METHODS = {
    ("Client", "watch"), ("Database", "aggregate"), ("Database", "watch"),
    ("Collection", "aggregate"), ("Collection", "aggregate_raw_batches"),
    ("Collection", "list_indexes"), ("Collection", "list_search_indexes"),
    ("Collection", "watch"),
}
DUNDERS = {"__aiter__", "__anext__", "__aenter__", "__aexit__", "__getattr__", "__getitem__",
           "__enter__", "__exit__", "__copy__", "__await__"}

# Deliberately absent, as on asyncmongo's AsyncClientSession (tests/test_api_parity.py): libmongoc
# keeps a session's id and clock to itself. Each raises NotImplementedError naming itself.
ABSENT = {("ClientSession", n) for n in ("session_id", "cluster_time", "operation_time",
                                         "advance_cluster_time", "advance_operation_time")}


def motor_shape(kind: str, cls: type, name: str) -> str | None:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            attr = klass.__dict__[name]
            break
    else:
        return None
    if (kind, name) in MOTOR_CURSOR_METHODS:
        return "cursor"
    if (kind, name) in MOTOR_FUTURE_METHODS:
        return "future"
    if isinstance(attr, (motor_meta.AsyncRead, motor_meta.AsyncWrite, motor_meta.AsyncCommand)):
        return "future"
    if isinstance(attr, (motor_meta.DelegateMethod, motor_meta.MotorCursorChainingMethod)):
        return "sync"
    if isinstance(attr, (motor_meta.ReadOnlyProperty, property)):
        return "property"
    if inspect.iscoroutinefunction(attr):
        return "future"
    return "sync"


def our_shape(cls: type, name: str) -> str | None:
    attr = inspect.getattr_static(cls, name, None)
    if attr is None:
        return None
    if isinstance(attr, property):
        return "property"
    kind = getattr(attr, "_adapter_kind", None)
    if kind is not None:
        return kind
    return "future" if inspect.iscoroutinefunction(attr) else "sync"


def _cases():
    for prefix, module in MODULES.items():
        for kind, motor_cls in MOTOR_CLASSES.items():
            yield pytest.param(kind, motor_cls, getattr(module, prefix + kind),
                               id=f"{prefix}{kind}")


@pytest.mark.parametrize("kind, motor_cls, ours", list(_cases()))
def test_every_motor_member_has_motors_shape(kind, motor_cls, ours):
    names = sorted({n for k in motor_cls.__mro__ for n in k.__dict__
                    if (not n.startswith("_") or n in DUNDERS) and k is not object})
    missing, different = [], []
    for name in names:
        if (kind, name) in ABSENT:
            assert hasattr(ours, name), name
            continue
        want, got = motor_shape(kind, motor_cls, name), our_shape(ours, name)
        if got is None:
            missing.append(name)
        # A future-returning Motor member may be served by one that is also a cursor.
        elif got != want and not (want == "future" and got == "cursor"):
            different.append((name, want, got))
    assert not missing, f"{ours.__name__} lacks {missing}"
    assert not different, f"{ours.__name__}: (member, Motor's shape, ours) {different}"


def test_module_names_are_motors():
    import motor.motor_asyncio
    import motor.motor_tornado

    for theirs, ours in ((motor.motor_asyncio, motor_asyncio), (motor.motor_tornado, motor_tornado)):
        wanted = {n for n in dir(theirs) if n.startswith(("AsyncIOMotor", "Motor"))}
        assert wanted <= set(dir(ours)), wanted - set(dir(ours))
    with pytest.raises(NotImplementedError, match="AsyncIOMotorClientEncryption"):
        motor_asyncio.AsyncIOMotorClientEncryption()


async def test_motor_shapes_against_the_server(server, db_name):
    client = motor_asyncio.AsyncIOMotorClient(server.uri, serverSelectionTimeoutMS=10000)
    coll = client[db_name].items
    assert isinstance(coll, motor_asyncio.AsyncIOMotorCollection)
    assert client.get_io_loop() is asyncio.get_running_loop() is coll.get_io_loop()
    await coll.insert_many([{"_id": i, "g": i % 2} for i in range(6)])

    # aggregate() is a cursor at once: to_list, async for, no await needed.
    agg = coll.aggregate([{"$match": {"g": 0}}, {"$sort": {"_id": 1}}])
    assert isinstance(agg, motor_asyncio.AsyncIOMotorLatentCommandCursor)
    assert [d["_id"] for d in await agg.to_list(None)] == [0, 2, 4]
    assert [d["_id"] async for d in coll.aggregate([{"$sort": {"_id": -1}}], batchSize=2)] == [
        5, 4, 3, 2, 1, 0]
    assert len(await coll.list_indexes().to_list(None)) == 1
    cursor = coll.find({}, sort=[("_id", 1)])
    assert isinstance(cursor, motor_asyncio.AsyncIOMotorCursor)
    assert [d["_id"] for d in await cursor.to_list(length=2)] == [0, 1]
    assert cursor.rewind() is cursor  # synchronous, as Motor's
    assert len(await cursor.to_list(None)) == 6
    assert cursor.clone().add_option(16) is not None  # add_option is synchronous too
    # Motor's fetch_next / next_object and each().
    cursor = coll.find({"g": 1}).sort("_id")
    seen = []
    while await cursor.fetch_next:
        seen.append(cursor.next_object()["_id"])
    assert seen == [1, 3, 5]
    done = asyncio.get_running_loop().create_future()
    got = []

    def callback(doc, error):
        if doc is not None:
            got.append(doc["_id"])
        elif not done.done():
            done.set_result(error)

    coll.find({"g": 0}).sort("_id").each(callback)
    assert await done is None and got == [0, 2, 4]

    # await client.start_session(); async with s.start_transaction() (synchronous there).
    async with await client.start_session() as s:
        assert isinstance(s, motor_asyncio.AsyncIOMotorClientSession)
        async with s.start_transaction():
            await coll.insert_one({"_id": 10}, session=s)
            assert s.in_transaction
        assert not s.in_transaction
        assert await coll.count_documents({"_id": 10}) == 1
        with pytest.raises(AttributeError):
            with s:
                pass
        with pytest.raises(NotImplementedError, match="session_id"):
            s.session_id
    # Commands and listings awaited, as in Motor.
    assert (await client.admin.command("ping"))["ok"] == 1.0
    assert db_name in await client.list_database_names()
    names = [c["name"] async for c in await client[db_name].list_collections()]
    assert names == ["items"]

    # The topology as plain values (waiting for discovery, as Motor's).
    assert client.address == (server.host, server.port)
    assert client.is_primary is True and client.is_mongos is False
    assert client.nodes == frozenset({(server.host, server.port)})
    assert isinstance(client.topology_description, TopologyDescription)
    assert client.HOST == "localhost" and client.PORT == 27017

    await client.drop_database(db_name)
    # close() is synchronous; the client refuses operations afterwards.
    assert client.close() is None
    with pytest.raises(InvalidOperation):
        await coll.find_one()


async def test_motor_gridfs(server, db_name):
    client = motor_asyncio.AsyncIOMotorClient(server.uri)
    try:
        bucket = motor_asyncio.AsyncIOMotorGridFSBucket(client[db_name], bucket_name="files")
        file_id = await bucket.upload_from_stream("a.txt", b"hello gridfs" * 100,
                                                  metadata={"k": 1})
        grid_in = bucket.open_upload_stream("b.txt", chunk_size_bytes=4)
        assert isinstance(grid_in, motor_asyncio.AsyncIOMotorGridIn)
        async with grid_in:
            await grid_in.write(b"0123456789")
        out = await bucket.open_download_stream(file_id)
        assert isinstance(out, motor_asyncio.AsyncIOMotorGridOut)
        assert out.filename == "a.txt" and out.metadata == {"k": 1} and out.length == 1200
        assert await out.read(5) == b"hello"
        assert out.tell() == 5 and out.seek(0) == 0  # synchronous, as Motor's
        assert await out.read() == b"hello gridfs" * 100
        out.close()
        names = []
        cursor = bucket.find({}, sort=[("filename", 1)])
        async for grid_out in cursor:
            assert isinstance(grid_out, motor_asyncio.AsyncIOMotorGridOut)
            names.append(grid_out.filename)
        assert names == ["a.txt", "b.txt"]
        await bucket.delete(file_id)
        assert [f.filename for f in await bucket.find().to_list(None)] == ["b.txt"]
    finally:
        await client.drop_database(db_name)
        client.close()


def test_motor_io_loop_rules(server, db_name):
    with pytest.raises(TypeError, match="io_loop"):
        motor_asyncio.AsyncIOMotorClient(server.uri, io_loop=object())
    loop = asyncio.new_event_loop()
    try:
        client = motor_asyncio.AsyncIOMotorClient(server.uri, io_loop=loop)
        assert client.get_io_loop() is loop and client.io_loop is loop
        # Started before the loop runs: a future of the client's loop, run when it runs.
        future = client[db_name].items.insert_one({"x": 1})
        assert future.get_loop() is loop
        loop.run_until_complete(future)
        assert loop.run_until_complete(client[db_name].items.count_documents({})) == 1
        loop.run_until_complete(client.drop_database(db_name))
        client.close()
    finally:
        loop.close()


def test_motor_tornado_client(server, db_name):
    io_loop = IOLoop(make_current=False)
    try:
        client = motor_tornado.MotorClient(server.uri, io_loop=io_loop)
        assert client.get_io_loop() is io_loop

        async def main():
            coll = client[db_name].items
            assert isinstance(coll, motor_tornado.MotorCollection)
            await coll.insert_one({"_id": 1})
            assert await coll.aggregate([]).to_list(None) == [{"_id": 1}]
            async with await client.start_session() as s:
                assert isinstance(s, motor_tornado.MotorClientSession)
                async with s.start_transaction():
                    await coll.insert_one({"_id": 2}, session=s)
            assert await coll.count_documents({}) == 2
            await client.drop_database(db_name)

        io_loop.run_sync(main)
        assert client.close() is None
    finally:
        io_loop.close()

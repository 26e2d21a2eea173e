"""Every public member of PyMongo 4.20's async classes exists on asyncmongo's, with the same shape.

Shape: method, coroutine function, async generator function, property, awaitable property (an
``async def`` under ``@property``, awaited on access), a plain value, or None (``__iter__ = None``).
The classes are walked with ``dir()`` and ``inspect.getattr_static``, so a member that only exists
through ``__getattr__`` (which makes databases and collections of unknown names) counts as missing.
The members asyncmongo deliberately lacks are listed in ABSENT with the reason; each still exists
and raises NotImplementedError naming itself, so no code silently gets a database or a collection.

The new members are then driven against the server: topology facts (tests/test_topology.py),
cursor_command, dereference, validate_collection, raw batches, the search index commands (the same
commands PyMongo sends), session.bind, aclose, client equality.
"""

from __future__ import annotations

import copy
import inspect

import bson
import gridfs.asynchronous as pymongo_gridfs
import pytest
from bson.dbref import DBRef
from pymongo import AsyncMongoClient as PyMongoAsyncClient
from pymongo import monitoring
from pymongo.driver_info import DriverInfo
from pymongo.asynchronous import change_stream as pm_change_stream
from pymongo.asynchronous import client_session as pm_session
from pymongo.asynchronous import collection as pm_collection
from pymongo.asynchronous import command_cursor as pm_command_cursor
from pymongo.asynchronous import cursor as pm_cursor
from pymongo.asynchronous import database as pm_database
from pymongo.asynchronous import mongo_client as pm_client
from pymongo.errors import InvalidOperation, OperationFailure
from pymongo.operations import SearchIndexModel

import asyncmongo
from asyncmongo import change_stream, client_session, gridfs
from asyncmongo.raw_batches import AsyncRawBatchCommandCursor, AsyncRawBatchCursor

PAIRS = [
    (pm_client.AsyncMongoClient, asyncmongo.AsyncMongoClient),
    (pm_database.AsyncDatabase, asyncmongo.AsyncDatabase),
    (pm_collection.AsyncCollection, asyncmongo.AsyncCollection),
    (pm_cursor.AsyncCursor, asyncmongo.AsyncCursor),
    (pm_cursor.AsyncRawBatchCursor, AsyncRawBatchCursor),
    (pm_command_cursor.AsyncCommandCursor, asyncmongo.AsyncCommandCursor),
    (pm_command_cursor.AsyncRawBatchCommandCursor, AsyncRawBatchCommandCursor),
    (pm_session.AsyncClientSession, client_session.AsyncClientSession),
    (pm_change_stream.AsyncChangeStream, change_stream.AsyncChangeStream),
    (pm_change_stream.AsyncCollectionChangeStream, change_stream.AsyncCollectionChangeStream),
    (pm_change_stream.AsyncDatabaseChangeStream, change_stream.AsyncDatabaseChangeStream),
    (pm_change_stream.AsyncClusterChangeStream, change_stream.AsyncClusterChangeStream),
    (pymongo_gridfs.AsyncGridFS, gridfs.AsyncGridFS),
    (pymongo_gridfs.AsyncGridFSBucket, gridfs.AsyncGridFSBucket),
    (pymongo_gridfs.AsyncGridIn, gridfs.AsyncGridIn),
    (pymongo_gridfs.AsyncGridOut, gridfs.AsyncGridOut),
    (pymongo_gridfs.AsyncGridOutCursor, gridfs.AsyncGridOutCursor),
]

# The protocol methods code relies on, beside the public names.
DUNDERS = {
    "__aiter__", "__anext__", "__aenter__", "__aexit__", "__iter__", "__next__", "__getitem__",
    "__getattr__", "__call__", "__bool__", "__eq__", "__ne__", "__hash__", "__copy__",
    "__deepcopy__", "__enter__", "__exit__", "__await__", "__contains__", "__len__",
}

# Deliberately absent: (class, member) -> why. Each exists and raises NotImplementedError.
ABSENT = {
    # libmongoc keeps a session's lsid, $clusterTime and operationTime inside its
    # mongoc_client_session_t, which only the worker running the session's operation may touch.
    ("AsyncClientSession", "session_id"): "session id",
    ("AsyncClientSession", "cluster_time"): "cluster time",
    ("AsyncClientSession", "operation_time"): "operation time",
    ("AsyncClientSession", "advance_cluster_time"): "cluster time",
    ("AsyncClientSession", "advance_operation_time"): "operation time",
}


def shape(cls: type, name: str) -> str | None:
    try:
        attr = inspect.getattr_static(cls, name)
    except AttributeError:
        return None
    if attr is None:
        return "None"
    if isinstance(attr, property):
        return "awaitable property" if inspect.iscoroutinefunction(attr.fget) else "property"
    if isinstance(attr, (staticmethod, classmethod)):
        attr = attr.__func__
    if inspect.iscoroutinefunction(attr):
        return "coroutine function"
    if inspect.isasyncgenfunction(attr):
        return "async generator function"
    if callable(attr):
        return "method"
    return "value"


def members(cls: type) -> list[str]:
    return sorted(n for n in dir(cls) if not n.startswith("_") or n in DUNDERS)


@pytest.mark.parametrize("theirs, ours", PAIRS, ids=[p.__name__ for p, _ in PAIRS])
def test_every_member_has_pymongos_shape(theirs, ours):
    missing, different = [], []
    for name in members(theirs):
        want, got = shape(theirs, name), shape(ours, name)
        if got is None:
            missing.append(name)
        elif got != want:
            different.append((name, want, got))
    assert not missing, f"{ours.__name__} lacks {missing}"
    assert not different, f"{ours.__name__}: (member, PyMongo's shape, ours) {different}"


def test_absent_list_is_exact():
    # Every listed member is one PyMongo has (no stale entries).
    by_name = {ours.__name__: theirs for theirs, ours in PAIRS}
    for cls_name, member in ABSENT:
        assert member in members(by_name[cls_name]), (cls_name, member)


async def test_absent_members_raise_naming_themselves():
    client = asyncmongo.AsyncMongoClient(connect=False)
    session = client.start_session()
    targets = {"AsyncClientSession": session}
    for (cls_name, member), _why in ABSENT.items():
        obj = targets[cls_name]
        with pytest.raises(NotImplementedError, match=member):
            attr = getattr(obj, member)
            attr(None)  # a method: calling it raises
    await client.close()


def test_pymongo_names_never_become_databases_or_collections():
    client = asyncmongo.AsyncMongoClient(connect=False)
    db, coll = client.test, client.test.items
    for obj, theirs in ((client, pm_client.AsyncMongoClient), (db, pm_database.AsyncDatabase),
                        (coll, pm_collection.AsyncCollection)):
        for name in members(theirs):
            if name.startswith("_") or shape(theirs, name) == "awaitable property":
                continue
            value = getattr(obj, name)
            if shape(theirs, name) != "property":
                assert not isinstance(value, (asyncmongo.AsyncDatabase, asyncmongo.AsyncCollection)), name
    with pytest.raises(TypeError, match="not iterable"):
        iter(client)
    with pytest.raises(TypeError, match="not iterable"):
        iter(db)
    with pytest.raises(TypeError, match="not iterable"):
        next(coll)


def test_append_metadata_is_checked_and_kept():
    # Beanie's init_beanie calls it. libmongoc 1.23 cannot send it (its handshake metadata is fixed
    # at the process's first client): kept in the options, as the README says.
    client = asyncmongo.AsyncMongoClient(connect=False)
    info = DriverInfo("beanie", "2.2.0")
    client.append_metadata(info)
    assert client.options.driver_info == [info]
    with pytest.raises(TypeError, match="DriverInfo"):
        client.append_metadata({"name": "x"})


async def test_client_identity_aclose_and_equality(server):
    a = asyncmongo.AsyncMongoClient(server.uri, connect=False)
    b = asyncmongo.AsyncMongoClient(server.uri, connect=False)
    theirs = PyMongoAsyncClient(server.uri, connect=False)
    assert a.eq_props() == theirs.eq_props()
    assert a == b and hash(a) == hash(b) and a["x"] == b["x"] and a.x.y == b.x.y
    assert a != asyncmongo.AsyncMongoClient(f"mongodb://127.0.0.1:{server.port + 1}", connect=False)
    await b.aclose()
    with pytest.raises(InvalidOperation):
        await b.admin.command("ping")
    await a.aclose()
    await theirs.close()


async def test_cursor_command(client, coll):
    await coll.insert_many([{"i": i} for i in range(7)])
    cursor = await coll.database.cursor_command(
        {"find": "items", "filter": {"i": {"$gte": 2}}, "sort": {"i": 1}, "batchSize": 2})
    assert [d["i"] async for d in cursor] == [2, 3, 4, 5, 6]
    cursor = await coll.database.cursor_command("listCollections", filter={"name": "items"})
    assert [d["name"] for d in await cursor.to_list()] == ["items"]
    with pytest.raises(InvalidOperation, match="does not return a cursor"):
        await coll.database.cursor_command("ping")


async def test_dereference(client, coll):
    await coll.insert_one({"_id": 5, "x": 1})
    db = coll.database
    assert await db.dereference(DBRef("items", 5)) == {"_id": 5, "x": 1}
    assert await db.dereference(DBRef("items", 5, db.name)) == {"_id": 5, "x": 1}
    assert await db.dereference(DBRef("items", 6)) is None
    with pytest.raises(ValueError):
        await db.dereference(DBRef("items", 5, "elsewhere"))
    with pytest.raises(TypeError):
        await db.dereference({"$ref": "items", "$id": 5})


async def test_validate_collection(client, coll, sync_client):
    await coll.insert_one({"x": 1})
    db = coll.database
    ours = await db.validate_collection(coll)
    theirs = sync_client[db.name].validate_collection("items")
    assert ours["valid"] is theirs["valid"] is True
    assert ours["ns"] == theirs["ns"] == coll.full_name
    with pytest.raises(OperationFailure):
        await db.validate_collection("no_such_collection")
    with pytest.raises(TypeError):
        await db.validate_collection(5)


async def test_raw_batches(client, coll):
    await coll.insert_many([{"_id": i} for i in range(5)])
    batches = [b async for b in coll.find_raw_batches(sort=[("_id", 1)], batch_size=2)]
    assert [[d["_id"] for d in bson.decode_all(b)] for b in batches] == [[0, 1], [2, 3], [4]]
    cursor = await coll.aggregate_raw_batches([{"$sort": {"_id": -1}}], batchSize=3)
    assert [[d["_id"] for d in bson.decode_all(b)] for b in await cursor.to_list()] == [
        [4, 3, 2], [1, 0]]
    with pytest.raises(InvalidOperation):
        coll.find_raw_batches()[0]


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list = []

    def started(self, event):
        if event.command_name.lower().find("search") >= 0 or event.command_name == "aggregate":
            cmd = {k: v for k, v in event.command.items() if k not in {"lsid", "$db", "$clusterTime", "$readPreference", "txnNumber"}}
            self.sent.append(cmd)

    def succeeded(self, event): ...
    def failed(self, event): ...


async def test_search_index_commands_are_pymongos(make_client, server, db_name):
    """An Atlas feature this server lacks: what matters is that the commands and their outcome are
    PyMongo's."""
    ours_rec, theirs_rec = _Commands(), _Commands()
    ours = make_client(event_listeners=[ours_rec])
    theirs = PyMongoAsyncClient(server.uri, event_listeners=[theirs_rec])
    model = SearchIndexModel({"mappings": {"dynamic": True}}, name="s1")
    try:
        await ours[db_name].items.insert_one({"x": 1})
        outcomes = []
        for client in (ours, theirs):
            coll = client[db_name].items
            got = []
            for call in (
                lambda: coll.create_search_index(model),
                lambda: coll.create_search_indexes([model]),
                lambda: coll.update_search_index("s1", {"mappings": {"dynamic": False}}),
                lambda: coll.drop_search_index("s1"),
                lambda: coll.list_search_indexes("s1"),
            ):
                try:
                    result = await call()
                    got.append(("ok", type(result).__name__ if result is not None else None))
                except OperationFailure as exc:
                    got.append(("error", exc.code))
            outcomes.append(got)
        assert outcomes[0] == outcomes[1]
        assert ours_rec.sent == theirs_rec.sent
        assert len(ours_rec.sent) == 5
    finally:
        await theirs.close()
        await ours.drop_database(db_name)


async def test_session_bind_and_copy(client, coll):
    session = client.start_session()
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.copy(session)
    async with session.bind(end_session=False):
        await session.start_transaction()
        await coll.insert_one({"x": 1})  # no session= : the bound one, inside its transaction
        assert await coll.count_documents({}) == 1
        await session.abort_transaction()
    assert await coll.count_documents({}) == 0  # it ran in the aborted transaction
    assert not session.has_ended
    async with session.bind():
        await coll.insert_one({"x": 2})
    assert session.has_ended
    other = asyncmongo.AsyncMongoClient(client.options.nodes[0][0], client.options.nodes[0][1])
    try:
        bound = client.start_session()
        async with bound.bind():
            with pytest.raises(InvalidOperation, match="bound session"):
                await other.admin.command("ping")
    finally:
        await other.close()

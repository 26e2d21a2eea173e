"""Indexes (create_index(es), list_indexes, index_information, drop_index(es)), rename, options, the
database's collection administration (list/create/drop collections, aggregate, command read
preferences), the client's list_databases/drop_database, and concern inheritance: each compared with
what PyMongo's sync client does on the same server, argument errors checked before anything is sent."""

from __future__ import annotations

import pytest
from bson.son import SON
from pymongo import ASCENDING, DESCENDING, IndexModel, ReadPreference, monitoring
from pymongo.collation import Collation
from pymongo.errors import (
    CollectionInvalid,
    ConfigurationError,
    DuplicateKeyError,
    InvalidName,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WriteError,
)
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from asyncmongo import AsyncCollection, AsyncDatabase
from asyncmongo.command_cursor import AsyncCommandCursor


class Recorder(monitoring.CommandListener):
    """Records the names of the commands a client sends (to prove a bad call sends nothing)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event):
        self.names.append(event.command_name)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


# (keys, options) pairs: each is created by us and by PyMongo, names and index info must agree.
INDEX_SPECS = [
    ("a", {}),
    ([("b", DESCENDING), ("c", ASCENDING)], {"unique": True, "sparse": True}),
    ([("d", ASCENDING), "e"], {}),  # PyMongo 4.4+ accepts bare keys in the list
    ({"f": -1}, {}),
    ("ttl", {"expireAfterSeconds": 3600}),
    ("p", {"partialFilterExpression": {"p": {"$gt": 5}}}),
    ("s", {"collation": Collation("en", strength=2)}),
    ("named", {"name": "my_custom_name"}),
]


async def test_create_index_names_and_options_match_pymongo(coll, sync_client, db_name):
    await coll.insert_one({"a": 1})
    witness = sync_client[db_name]["witness"]
    witness.insert_one({"a": 1})
    for keys, kwargs in INDEX_SPECS:
        ours = await coll.create_index(keys, **kwargs)
        theirs = witness.create_index(keys, **kwargs)
        assert ours == theirs, (keys, kwargs)
    info = await coll.index_information()
    # PyMongo reading our collection sees exactly what we report, and the same as its own indexes.
    assert info == sync_client[db_name]["items"].index_information()
    assert info == witness.index_information()
    assert info["b_-1_c_1"]["unique"] is True and info["b_-1_c_1"]["sparse"] is True
    assert info["b_-1_c_1"]["key"] == [("b", -1), ("c", 1)]
    assert info["ttl_1"]["expireAfterSeconds"] == 3600
    assert info["p_1"]["partialFilterExpression"] == {"p": {"$gt": 5}}
    assert info["s_1"]["collation"]["locale"] == "en"
    assert "my_custom_name" in info and "name" not in info["a_1"]
    # Creating the same index again is a no-op returning the same name (as PyMongo).
    assert await coll.create_index("a", maxTimeMS=5000, comment="again") == "a_1"


async def test_unique_index_enforced(coll):
    assert await coll.create_index("email", unique=True) == "email_1"
    await coll.insert_one({"email": "x@example.com"})
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"email": "x@example.com"})


async def test_create_indexes_and_list_indexes(coll, sync_client, db_name):
    models = [
        IndexModel([("hello", DESCENDING), ("world", ASCENDING)], name="hello_world"),
        IndexModel([("goodbye", DESCENDING)]),
        IndexModel("u", unique=True),
    ]
    assert await coll.create_indexes(models, comment="batch") == ["hello_world", "goodbye_-1", "u_1"]
    cursor = await coll.list_indexes()
    assert isinstance(cursor, AsyncCommandCursor)
    docs = await cursor.to_list()
    assert all(isinstance(d, SON) for d in docs)  # PyMongo returns SON index documents
    assert docs == list(sync_client[db_name]["items"].list_indexes())
    # (SecantusDB lists indexes sorted by name; the comparison above is with PyMongo's own listing.)
    assert sorted(d["name"] for d in docs) == ["_id_", "goodbye_-1", "hello_world", "u_1"]
    async with await coll.list_indexes(comment="iterating") as cursor:
        assert [d["name"] async for d in cursor][0] == "_id_"
    # An empty list is sent as it is, and comes back as no names (as PyMongo on this server).
    assert await coll.create_indexes([]) == sync_client[db_name]["items"].create_indexes([]) == []


async def test_list_indexes_missing_collection_is_empty(client, db_name):
    missing = client[db_name]["never_created"]
    assert await (await missing.list_indexes()).to_list() == []
    assert await missing.index_information() == {}
    # Dropping indexes of a missing collection is not an error either (ns not found is allowed).
    await missing.drop_indexes()
    await missing.drop_index("x_1")


async def test_drop_index_and_drop_indexes(coll, sync_client, db_name):
    await coll.insert_one({"x": 1})
    await coll.create_index([("y", -1), ("z", 1)])
    await coll.create_index("x")
    await coll.create_index("w", name="custom")
    await coll.drop_index([("y", -1), ("z", 1)])  # by the key list: the generated name
    await coll.drop_index("x_1")
    assert sorted(await coll.index_information()) == ["_id_", "custom"]
    with pytest.raises(OperationFailure) as ours:
        await coll.drop_index("nope_1")
    with pytest.raises(OperationFailure) as theirs:
        sync_client[db_name]["items"].drop_index("nope_1")
    assert ours.value.code == theirs.value.code == 27  # IndexNotFound
    await coll.drop_indexes(comment="all")
    assert list(await coll.index_information()) == ["_id_"]
    assert sync_client[db_name]["items"].index_information().keys() == {"_id_"}


async def test_index_server_errors_match_pymongo(coll, sync_client, db_name):
    await coll.create_index("x")
    sync_coll = sync_client[db_name]["items"]
    # Same generated name, different options: the server refuses (IndexKeySpecsConflict).
    with pytest.raises(OperationFailure) as ours:
        await coll.create_index("x", unique=True)
    with pytest.raises(OperationFailure) as theirs:
        sync_coll.create_index("x", unique=True)
    assert ours.value.code == theirs.value.code == 86
    # SecantusDB has no text indexes: its refusal reaches the caller as PyMongo's does.
    with pytest.raises(OperationFailure) as ours:
        await coll.create_index([("t", "text")])
    with pytest.raises(OperationFailure) as theirs:
        sync_coll.create_index([("t", "text")])
    assert ours.value.code == theirs.value.code


# Calls that must fail on the loop thread, with PyMongo's exception type, before anything is sent.
BAD_CALLS = [
    ("create_index", (5,), {}),
    ("create_index", ([],), {}),
    ("create_index", ("x",), {"collation": "bad"}),
    ("create_indexes", ("x",), {}),
    ("create_indexes", ([{"x": 1}],), {}),
    ("drop_index", (5,), {}),
    ("rename", (5,), {}),
    ("rename", ("",), {}),
    ("rename", ("a..b",), {}),
    ("rename", (".a",), {}),
    ("rename", ("a$b",), {}),
]


async def test_bad_arguments_raise_pymongo_types_before_sending(make_client, db_name, sync_client):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    coll = client[db_name]["items"]
    sync_coll = sync_client[db_name]["items"]
    for method, args, kwargs in BAD_CALLS:
        with pytest.raises(Exception) as theirs:
            getattr(sync_coll, method)(*args, **kwargs)
        with pytest.raises(type(theirs.value)):
            await getattr(coll, method)(*args, **kwargs)
    assert rec.names == []  # nothing reached the server
    assert isinstance(theirs.value, InvalidName)


async def test_rename(coll, client, db_name, sync_client):
    await coll.insert_one({"_id": 1})
    reply = await coll.rename("renamed", comment="moving")
    assert reply["ok"] == 1.0
    db = client[db_name]
    assert await db.list_collection_names() == ["renamed"]
    assert sync_client[db_name]["renamed"].find_one() == {"_id": 1}
    # Missing source, existing target: the server's codes, as PyMongo gets them.
    with pytest.raises(OperationFailure) as exc:
        await db["missing"].rename("other")
    assert exc.value.code == 26
    await db["other"].insert_one({"_id": 2})
    with pytest.raises(OperationFailure) as exc:
        await db["renamed"].rename("other")
    with pytest.raises(OperationFailure) as theirs:
        sync_client[db_name]["renamed"].rename("other")
    assert exc.value.code == theirs.value.code == 48
    # Extra keywords go to the command (dropTarget), a writeConcern keyword is honoured.
    await db["renamed"].rename("other", dropTarget=True, writeConcern={"w": 1})
    assert await db["other"].find_one() == {"_id": 1}


async def test_options(client, db_name, sync_client):
    db = client[db_name]
    capped = await db.create_collection("capped", capped=True, size=4096, max=10)
    assert await capped.options() == sync_client[db_name]["capped"].options()
    assert await capped.options() == {"capped": True, "size": 4096, "max": 10}
    assert await db["missing"].options() == {}
    await db["plain"].insert_one({})
    assert await db["plain"].options() == {}


async def test_list_collections_and_names(client, db_name, sync_client):
    db = client[db_name]
    for name in ("alpha", "beta", "gamma"):
        await db[name].insert_one({"n": name})
    names = await db.list_collection_names()
    assert sorted(names) == ["alpha", "beta", "gamma"]
    assert sorted(names) == sorted(sync_client[db_name].list_collection_names())
    assert await db.list_collection_names(filter={"name": "beta"}) == ["beta"]
    regex = {"name": {"$regex": "^[ag]"}}
    assert sorted(await db.list_collection_names(filter=regex, comment="c")) == ["alpha", "gamma"]
    cursor = await db.list_collections(filter={"name": "alpha"})
    assert isinstance(cursor, AsyncCommandCursor)
    docs = await cursor.to_list()
    theirs = list(sync_client[db_name].list_collections(filter={"name": "alpha"}))
    assert docs == theirs and docs[0]["type"] == "collection"
    with pytest.raises(TypeError):
        await db.list_collection_names(filter=["name"])


async def test_create_collection(client, db_name, sync_client):
    db = client[db_name]
    wc = WriteConcern(w=1, j=True)
    coll = await db.create_collection(
        "validated",
        write_concern=wc,
        validator={"$jsonSchema": {"required": ["a"]}},
        validationLevel="strict",
        validationAction="error",
    )
    assert isinstance(coll, AsyncCollection) and coll.name == "validated"
    assert coll.write_concern == wc and coll.database == db
    assert await coll.options() == sync_client[db_name]["validated"].options()
    assert (await coll.options())["validationAction"] == "error"
    with pytest.raises(WriteError) as exc:
        await coll.insert_one({"b": 1})
    assert exc.value.code == 121  # the validator is in force
    with pytest.raises(CollectionInvalid):
        await db.create_collection("validated")
    # Without the check the server's own refusal comes back (NamespaceExists), as for PyMongo.
    with pytest.raises(OperationFailure) as exc:
        await db.create_collection("validated", check_exists=False)
    assert exc.value.code == 48
    with pytest.raises(InvalidName):
        await db.create_collection("bad$name")
    with pytest.raises(TypeError):
        await db.create_collection("c", clusteredIndex=5)
    with pytest.raises(TypeError):
        await db.create_collection("c", collation=5)


async def test_drop_collection(client, db_name, sync_client):
    db = client[db_name]
    await db["a"].insert_one({})
    await db["b"].insert_one({})
    reply = await db.drop_collection("a")
    assert reply["ok"] == 1.0 and reply["ns"] == f"{db_name}.a"
    await db.drop_collection(db["b"], comment="by object")
    assert sync_client[db_name].list_collection_names() == []
    assert (await db.drop_collection("never"))["ok"] == 1.0  # missing: no error, as PyMongo
    with pytest.raises(TypeError):
        await db.drop_collection(5)


async def test_database_write_concern_is_sent(client, db_name, sync_client):
    # w=2 on this one-node replica set: the server reports a write concern error, which proves
    # the database's (not the client's) write concern travelled with the command.
    await client[db_name]["a"].insert_one({})
    db = client[db_name].with_options(write_concern=WriteConcern(w=2, wtimeout=100))
    with pytest.raises(WriteConcernError):
        await db.drop_collection("a")
    with pytest.raises(WriteConcernError):
        sync_client[db_name].with_options(write_concern=WriteConcern(w=2, wtimeout=100)).drop_collection("a")
    coll = client[db_name]["b"].with_options(write_concern=WriteConcern(w=5, wtimeout=100))
    with pytest.raises(WriteConcernError):
        await coll.create_index("q")


async def test_database_aggregate(client, db_name, sync_client):
    db = client[db_name]
    docs = [{"a": i} for i in range(5)]
    cursor = await db.aggregate([{"$documents": docs}], batchSize=2)
    assert isinstance(cursor, AsyncCommandCursor)
    assert await cursor.to_list() == docs == list(sync_client[db_name].aggregate([{"$documents": docs}]))
    # $out writes (the write concern path): the documents land in the target collection.
    await (await db.aggregate([{"$documents": docs}, {"$out": "out"}])).to_list()
    assert [d["a"] for d in sync_client[db_name]["out"].find({}, {"_id": 0})] == list(range(5))
    with pytest.raises(ConfigurationError):
        await db.aggregate([], explain=True)
    with pytest.raises(ConfigurationError):
        await db.aggregate([], aggregate=1)
    with pytest.raises(TypeError):
        await db.aggregate({"$documents": []})
    with pytest.raises(ValueError):
        await db.aggregate([], batchSize=-1)


async def test_command_read_preference(make_client, server):
    # A replica-set client: the server is the set's only member, its primary, so a secondary
    # read preference finds no server while primary and secondaryPreferred do.
    client = make_client(server.uri + "/?replicaSet=secantus", serverSelectionTimeoutMS=300)
    admin = client.admin
    assert (await admin.command("ping", read_preference=ReadPreference.PRIMARY))["ok"] == 1.0
    assert (await admin.command("ping", read_preference=ReadPreference.SECONDARY_PREFERRED))["ok"] == 1.0
    with pytest.raises(ServerSelectionTimeoutError):
        await admin.command("ping", read_preference=ReadPreference.SECONDARY)
    with pytest.raises(TypeError):
        await admin.command("ping", read_preference="secondary")


async def test_list_databases_and_drop_database(client, db_name, sync_client):
    await client[db_name]["x"].insert_one({})
    cursor = await client.list_databases()
    assert isinstance(cursor, AsyncCommandCursor) and not cursor.cursor_id
    dbs = await cursor.to_list()
    assert {d["name"] for d in dbs} == {d["name"] for d in sync_client.list_databases()}
    mine = next(d for d in dbs if d["name"] == db_name)
    assert set(mine) >= {"name", "sizeOnDisk", "empty"}
    named = await (await client.list_databases(nameOnly=True, comment="c")).to_list()
    assert db_name in [d["name"] for d in named]
    assert sorted(await client.list_database_names()) == sorted(sync_client.list_database_names())
    await client.drop_database(db_name)
    assert db_name not in sync_client.list_database_names()
    await client[db_name]["x"].insert_one({})
    await client.drop_database(client[db_name])  # by object
    assert db_name not in await client.list_database_names()
    with pytest.raises(TypeError):
        await client.drop_database(5)


async def test_default_database_and_concern_inheritance(make_client, server):
    client = make_client(server.uri + "/defaultdb?w=1&readConcernLevel=local")
    assert client.get_default_database().name == "defaultdb"
    assert client.get_database().name == "defaultdb"
    assert client.get_default_database("other").name == "defaultdb"  # the URI's wins
    db = client.get_default_database(write_concern=WriteConcern(w=1, j=True))
    assert db.write_concern == WriteConcern(w=1, j=True)
    plain = make_client()
    assert plain.get_default_database("fallback").name == "fallback"
    with pytest.raises(ConfigurationError):
        plain.get_default_database()
    with pytest.raises(ConfigurationError):
        plain.get_database()
    # client -> database -> collection, each level overriding the one above, as PyMongo.
    assert client.write_concern == WriteConcern(w=1)
    assert client.read_concern == ReadConcern("local")
    db = client["d"]
    assert db.write_concern == client.write_concern and db.read_concern == client.read_concern
    coll = db["c"]
    assert coll.write_concern == db.write_concern and coll.read_preference == db.read_preference
    db2 = db.with_options(write_concern=WriteConcern(w="majority"), read_preference=ReadPreference.SECONDARY)
    assert db2["c"].write_concern == WriteConcern(w="majority")
    assert db2["c"].read_preference == ReadPreference.SECONDARY
    assert db2.read_concern == ReadConcern("local")
    with pytest.raises(TypeError):
        db.with_options(write_concern="majority")
    with pytest.raises(TypeError):
        client.get_database("d", read_preference="secondary")
    with pytest.raises(TypeError):
        client.get_database("d", codec_options=5)
    assert isinstance(client.get_database("$external"), AsyncDatabase)


async def test_listings_go_to_the_primary_whatever_the_client_read_preference(
    make_client, server, db_name, sync_client
):
    # PyMongo sends listCollections/listIndexes/listDatabases to the primary with no read concern.
    # On this one-member replica set a secondary read finds no server, so these calls succeeding
    # shows they do not follow the client's read preference (or its read concern).
    sync_client[db_name]["items"].insert_one({"x": 1})
    base = server.uri + "/?replicaSet=secantus&readPreference=secondary"
    for uri in (base, base + "&readConcernLevel=majority"):
        client = make_client(uri, serverSelectionTimeoutMS=300)
        db = client[db_name]
        assert await db.list_collection_names() == ["items"]
        assert list(await db["items"].index_information()) == ["_id_"]
        assert await db["items"].options() == {}
        assert db_name in await client.list_database_names()
        with pytest.raises(ServerSelectionTimeoutError):
            await db["items"].find_one()  # while a read does follow the client's preference
        with pytest.raises(ServerSelectionTimeoutError):
            await db.aggregate([{"$documents": [{"a": 1}]}])  # and so does aggregate, as PyMongo

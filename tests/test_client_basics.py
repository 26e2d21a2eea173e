"""The issue's first example, end to end, and the client's PyMongo-shaped surface."""

import pytest
from bson import ObjectId
from pymongo.results import InsertOneResult

from asyncmongo import AsyncCollection, AsyncDatabase, AsyncMongoClient


async def test_first_example(server, db_name, sync_client):
    async with AsyncMongoClient(server.uri, maxPoolSize=50) as client:
        coll = client[db_name]["orders"]
        doc = {"item": "tea", "qty": 3}
        res = await coll.insert_one(doc)
        assert isinstance(res, InsertOneResult)
        assert res.acknowledged
        assert isinstance(res.inserted_id, ObjectId)
        assert doc["_id"] == res.inserted_id  # added to the caller's document, as PyMongo does
        found = await coll.find_one({"_id": res.inserted_id})
        assert found == {"_id": res.inserted_id, "item": "tea", "qty": 3}
        assert (await client.admin.command("ping"))["ok"] == 1.0
        # The witness: PyMongo's own client sees the same document on the server.
        assert sync_client[db_name]["orders"].find_one({"_id": res.inserted_id}) == found
    sync_client.drop_database(db_name)


async def test_names_and_attributes(client, db_name):
    db = client[db_name]
    assert isinstance(db, AsyncDatabase)
    assert client.get_database(db_name) == db == getattr(client, db_name)
    assert db.name == db_name and db.client is client
    coll = db["things"]
    assert isinstance(coll, AsyncCollection)
    assert coll == db.things == db.get_collection("things")
    assert coll.name == "things" and coll.full_name == f"{db_name}.things"
    assert coll.database == db
    assert db.things.sub.name == "things.sub"
    with pytest.raises(AttributeError):
        client._private
    with pytest.raises(NotImplementedError):  # PyMongo refuses truth testing too
        bool(db)


async def test_find_one_forms(coll):
    await coll.insert_one({"_id": 1, "a": 1, "b": 2})
    await coll.insert_one({"_id": 2, "a": 2, "b": 3})
    assert await coll.find_one(2) == {"_id": 2, "a": 2, "b": 3}
    assert await coll.find_one({"a": 1}, projection={"b": 1}) == {"_id": 1, "b": 2}
    assert await coll.find_one({}, projection=["a"], sort=[("a", -1)]) == {"_id": 2, "a": 2}
    assert await coll.find_one({"a": 99}) is None
    assert await coll.find_one({}, skip=1, sort={"_id": 1}) == {"_id": 2, "a": 2, "b": 3}


async def test_server_info_and_command(client):
    info = await client.server_info()
    assert "version" in info and isinstance(info["versionArray"], list)
    reply = await client.admin.command({"ping": 1})
    assert reply["ok"] == 1.0
    names = await client.list_database_names()
    assert isinstance(names, list)

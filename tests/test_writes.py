"""Writes: update_one/update_many/replace_one, delete_one/delete_many, bulk_write and find_one_and_*
against the real server, each with its options and error cases, every result compared with what
PyMongo's sync client returns for the same call on a twin collection holding the same data."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from bson.codec_options import CodecOptions
from bson.son import SON
from pymongo import (
    DeleteMany,
    DeleteOne,
    InsertOne,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
    monitoring,
)
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidOperation,
    OperationFailure,
    WriteConcernError,
    WriteError,
)
from pymongo.results import BulkWriteResult, DeleteResult, UpdateResult
from pymongo.write_concern import WriteConcern

from asyncmongo import _core

# Server bookkeeping that differs between two calls (or names the collection) is not compared.
_VOLATILE = ("$clusterTime", "operationTime", "electionId", "opTime")
BIG = "x" * (17 * 1024 * 1024)  # over the 16 MiB document limit


def strip(doc):
    return {k: v for k, v in doc.items() if k not in _VOLATILE} if doc is not None else None


def public(result):
    """What a user reads from a write result (acknowledged ones)."""
    if isinstance(result, UpdateResult):
        return ("update", result.acknowledged, result.matched_count, result.modified_count,
                result.upserted_id, result.did_upsert, strip(result.raw_result))
    if isinstance(result, DeleteResult):
        return ("delete", result.acknowledged, result.deleted_count, strip(result.raw_result))
    if isinstance(result, BulkWriteResult):
        return ("bulk", result.acknowledged, result.inserted_count, result.matched_count,
                result.modified_count, result.deleted_count, result.upserted_count,
                result.upserted_ids, result.bulk_api_result)
    return result


def details(exc, names):
    """An error's details with the collection's namespace made neutral (messages name it)."""
    d = copy.deepcopy(exc.details)

    def fix(v):
        if isinstance(v, str):
            for n in names:
                v = v.replace(n, "NS")
            return v
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items() if k not in _VOLATILE}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return fix(d)


class Twin:
    """Runs one call on the async collection and on PyMongo's collection holding the same data."""

    def __init__(self, coll, sync_client):
        self.a = coll
        self.b = sync_client[coll.database.name][coll.name + "_pymongo"]
        self.names = (self.b.full_name, coll.full_name)  # the longer first: it contains the other

    def seed(self, docs):
        self.b.database[self.a.name].insert_many(copy.deepcopy(docs))
        self.b.insert_many(copy.deepcopy(docs))

    async def call(self, name, *args, **kwargs):
        """Both outcomes must be equal: results by their public attributes, errors by class and
        details. Returns asyncmongo's result, or raises asyncmongo's exception."""
        outcomes, mine = [], None
        for side in ("a", "b"):
            a2, k2 = copy.deepcopy(args), copy.deepcopy(kwargs)
            try:
                r = getattr(getattr(self, side), name)(*a2, **k2)
                if side == "a":
                    r = await r
                outcomes.append(("ok", public(r)))
            except Exception as e:  # the class and details are what is compared
                d = details(e, self.names) if hasattr(e, "details") else str(e)
                outcomes.append((type(e), d))
                if side == "a":
                    mine = e
        assert outcomes[0] == outcomes[1], (
            f"{name}: asyncmongo {outcomes[0]!r} != PyMongo {outcomes[1]!r}"
        )
        if mine is not None:
            raise mine
        return outcomes[0][1]

    async def same_contents(self):
        docs_b = list(self.b.find({}, sort=[("_id", 1)]))
        docs_a = list(self.b.database[self.a.name].find({}, sort=[("_id", 1)]))
        assert docs_a == docs_b
        return docs_a


def seed_docs():
    return [
        {"_id": i, "a": i % 3, "s": "Ab" if i % 2 else "ab", "arr": [1, 2, 3]} for i in range(8)
    ]


@contextlib.contextmanager
def nothing_submitted():
    before = _core.debug_counters()["jobs_submitted"]
    yield
    assert _core.debug_counters()["jobs_submitted"] == before, "refused input reached the core"


@pytest.fixture
def twin(coll, sync_client):
    t = Twin(coll, sync_client)
    t.seed(seed_docs())
    sync_client[coll.database.name][coll.name].create_index("a")
    t.b.create_index("a")
    return t


# ---- update_one / update_many / replace_one -----------------------------------------------------


async def test_update_one_and_many_results(twin):
    r = await twin.call("update_one", {"a": 1}, {"$set": {"x": 1}})
    assert r[2:4] == (1, 1)  # matched, modified
    r = await twin.call("update_many", {"a": 1}, {"$set": {"x": 1}})
    assert r[2:4] == (3, 2)  # one already had x=1: matched but not modified
    r = await twin.call("update_one", {"_id": 100}, {"$set": {"x": 2}}, upsert=True)
    assert r[2] == 0 and r[4] == 100 and r[5] is True
    r = await twin.call("update_many", {"_id": 101, "a": 9}, {"$set": {"y": 1}}, upsert=True)
    assert r[2:6] == (0, 0, 101, True)
    r = await twin.call("update_many", {"a": 9}, {"$set": {"y": 2}}, upsert=True)
    assert r[2:4] == (1, 1) and r[5] is False
    docs = await twin.same_contents()
    assert {"_id": 101, "a": 9, "y": 2} in docs and {"_id": 100, "x": 2} in docs


async def test_update_options(twin):
    await twin.call("update_many", {}, {"$set": {"arr.$[e]": 0}}, array_filters=[{"e": {"$gt": 2}}])
    await twin.call("update_many", {"s": "ab"}, {"$set": {"c": 1}},
                    collation={"locale": "en", "strength": 2})
    await twin.call("update_many", {"$expr": {"$eq": ["$a", "$$v"]}}, {"$set": {"l": 1}},
                    let={"v": 2})
    await twin.call("update_many", {"a": 1}, {"$inc": {"h": 1}}, hint="a_1")
    await twin.call("update_many", {"a": 1}, {"$inc": {"h": 1}}, hint=[("a", 1)])
    await twin.call("update_one", {"a": 2}, {"$set": {"sorted": True}}, sort={"_id": -1})
    await twin.call("update_one", {"a": 0}, [{"$set": {"p": {"$add": ["$a", 10]}}}])
    await twin.call("update_one", {"a": 0}, {"$set": {"q": 1}}, comment={"why": "test"},
                    bypass_document_validation=True)
    await twin.call("replace_one", {"a": 2}, {"a": 2, "r": 1}, sort={"_id": 1}, hint="a_1")
    await twin.call("replace_one", {"_id": 200}, {"r": 2}, upsert=True)
    await twin.call("replace_one", {"_id": 1}, {})  # an empty replacement is allowed
    docs = await twin.same_contents()
    assert {"_id": 200, "r": 2} in docs and {"_id": 1} in docs
    assert [d["_id"] for d in docs if d.get("sorted")] == [5]


async def test_update_refused_before_sending(coll, twin):
    bad = [
        (ValueError, "update_one", ({"a": 1}, {"x": 1}), {}),  # no $-operator
        (ValueError, "update_many", ({"a": 1}, {}), {}),  # empty update
        (ValueError, "replace_one", ({"a": 1}, {"$set": {"x": 1}}), {}),
        (TypeError, "update_one", ([("a", 1)], {"$set": {"x": 1}}), {}),  # filter not a mapping
        (TypeError, "update_one", ({}, "x"), {}),
        (TypeError, "update_one", ({}, {"$set": {"x": 1}}), {"upsert": "yes"}),
        (TypeError, "update_many", ({}, {"$set": {"x": 1}}), {"array_filters": {"e": 1}}),
        (TypeError, "update_one", ({}, {"$set": {"x": 1}}), {"collation": "en"}),
        (TypeError, "update_one", ({}, {"$set": {"x": 1}}), {"let": [1]}),
        (TypeError, "update_one", ({}, {"$set": {"x": 1}}), {"sort": [("a", 1)]}),
        (TypeError, "replace_one", ({}, [1]), {}),
        (TypeError, "delete_one", ([1],), {}),
        (TypeError, "delete_many", ({},), {"let": 5}),
        (TypeError, "delete_many", ({},), {"collation": 5}),
        # A command beyond the server's size limit: refused by the client, as PyMongo does.
        (DocumentTooLarge, "update_one", ({}, {"$set": {"x": BIG}}), {}),
        (DocumentTooLarge, "delete_one", ({"x": BIG},), {}),
    ]
    for exc, name, args, kwargs in bad:
        with nothing_submitted(), pytest.raises(exc):
            await getattr(coll, name)(*args, **kwargs)
        with pytest.raises(exc):  # PyMongo refuses the same call with the same class
            getattr(twin.b, name)(*args, **kwargs)
    await twin.same_contents()


async def test_server_side_write_errors(twin):
    with pytest.raises(WriteError) as info:
        await twin.call("update_one", {"_id": 1}, {"$set": {"_id": 2}})
    assert info.type is WriteError
    with pytest.raises(WriteError):
        await twin.call("update_one", {"_id": 1}, {"$bad": {"x": 1}})
    with pytest.raises(WriteError):
        await twin.call("update_many", {"a": 1}, {"$inc": {"h": 1}}, hint="nope_1")
    twin.b.create_index("u", unique=True, sparse=True)
    twin.b.database[twin.a.name].create_index("u", unique=True, sparse=True)
    await twin.call("update_one", {"_id": 1}, {"$set": {"u": 1}})
    with pytest.raises(DuplicateKeyError):
        await twin.call("update_one", {"_id": 2}, {"$set": {"u": 1}})
    with pytest.raises(DuplicateKeyError):
        await twin.call("replace_one", {"_id": 3}, {"u": 1})
    # The exception itself, as PyMongo builds it: code, details (keyValue...), message.
    try:
        await twin.a.update_one({"_id": 2}, {"$set": {"u": 1}})
    except DuplicateKeyError as e:
        assert e.code == 11000 and e.details["keyValue"] == {"u": 1} and "E11000" in str(e)
    await twin.same_contents()


@pytest.mark.parametrize("update", [[None], [1, {"$set": {"x": 1}}], [{"x": 1}], [{"$set": {"x": 1}}, "s"],
                                    [{}]], ids=["null", "number", "no-dollar", "string", "empty"])
async def test_array_update_that_is_no_pipeline_is_refused_by_the_server(twin, update):
    """An update given as an array whose stages are not all operator documents: PyMongo sends the
    array and the server refuses it. libmongoc's bulk API would send it as a replacement document
    ({"0": ..., "1": ...}), which replaced the matched document (found by the fuzzed-input row
    of the fault matrix, tests/test_fault_fuzz.py): it goes by command instead."""
    for name in ("update_one", "update_many"):
        with pytest.raises(OperationFailure):
            await twin.call(name, {"_id": 1}, update)
    for request in (UpdateOne({"_id": 1}, update), UpdateMany({"_id": 1}, update)):
        with pytest.raises(OperationFailure):  # the update command refused as a whole
            await twin.call("bulk_write", [InsertOne({"_id": "new"}), request], ordered=False)
        twin.b.delete_one({"_id": "new"})
        twin.b.database[twin.a.name].delete_one({"_id": "new"})
    assert (await twin.same_contents())[1] == seed_docs()[1]


# ---- delete --------------------------------------------------------------------------------


async def test_delete_one_and_many(twin):
    r = await twin.call("delete_one", {"a": 1})
    assert r[2] == 1
    r = await twin.call("delete_one", {"a": 7})
    assert r[2] == 0
    r = await twin.call("delete_many", {"s": "AB"}, collation={"locale": "en", "strength": 2},
                        hint="_id_", comment="c")
    assert r[2] == 7
    await twin.call("delete_many", {"$expr": {"$eq": ["$a", "$$v"]}}, let={"v": 1})
    with pytest.raises(WriteError):
        await twin.call("delete_one", {}, hint="nope_1")
    assert await twin.same_contents() == []


# ---- unacknowledged writes -----------------------------------------------------------------------


async def test_unacknowledged_writes(coll, sync_client):
    w0 = coll.with_options(write_concern=WriteConcern(w=0))
    witness = sync_client[coll.database.name][coll.name]
    r = await w0.update_one({"_id": 1}, {"$set": {"x": 1}}, upsert=True)
    assert isinstance(r, UpdateResult) and r.acknowledged is False and r.raw_result is None
    with pytest.raises(InvalidOperation):
        r.matched_count
    r = await w0.replace_one({"_id": 2}, {"y": 1}, upsert=True)
    assert r.acknowledged is False
    # A failing unacknowledged write reports nothing (the server's verdict is not read).
    r = await w0.update_one({"_id": 1}, {"$set": {"_id": 5}})
    assert r.acknowledged is False
    r = await w0.delete_one({"_id": 2})
    assert isinstance(r, DeleteResult) and r.acknowledged is False
    with pytest.raises(InvalidOperation):
        r.deleted_count
    r = await w0.bulk_write([InsertOne({"_id": 3}), UpdateOne({"_id": 3}, {"$set": {"z": 1}})])
    assert isinstance(r, BulkWriteResult) and r.acknowledged is False and r.bulk_api_result == {}
    assert await w0.find_one_and_update({"_id": 1}, {"$set": {"f": 1}}) is None
    # Options PyMongo refuses for unacknowledged writes, refused before sending.
    for call in (
        lambda: w0.update_one({}, {"$set": {"x": 1}}, collation={"locale": "en"}),
        lambda: w0.update_many({}, {"$set": {"x": 1}}, array_filters=[{"e": 1}]),
        lambda: w0.delete_one({}, collation={"locale": "en"}),
        lambda: w0.bulk_write([DeleteOne({}, collation={"locale": "en"})]),
        lambda: w0.find_one_and_update({}, {"$set": {"x": 1}}, array_filters=[{"e": 1}]),
        lambda: w0.find_one_and_delete({}, collation={"locale": "en"}),
    ):
        with nothing_submitted(), pytest.raises(ConfigurationError):
            await call()
    with nothing_submitted(), pytest.raises(OperationFailure):
        await w0.bulk_write([InsertOne({})], bypass_document_validation=True)
    # The writes were sent: they show up (unacknowledged: waited for, not assumed already done).
    expected = [{"_id": 1, "x": 1, "f": 1}, {"_id": 3, "z": 1}]
    deadline = time.monotonic() + 10
    while list(witness.find({}, sort=[("_id", 1)])) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert list(witness.find({}, sort=[("_id", 1)])) == expected


async def test_unacknowledged_writes_reach_the_server_in_their_order(coll, sync_client):
    """Unacknowledged writes awaited one after the other are applied in that order, as with
    PyMongo, whatever path each takes (a one-operation bulk, an update command, a bulk of several,
    findAndModify, inserts) and while other operations keep the other workers busy: each worker
    has its own connection, and a server runs two connections' messages in no set order."""
    w0 = coll.with_options(write_concern=WriteConcern(w=0))
    witness = sync_client[coll.database.name][coll.name]
    await coll.insert_one({"_id": "log", "seen": []})
    stop = asyncio.Event()

    async def busy() -> None:  # acknowledged reads in flight all along
        while not stop.is_set():
            await coll.find_one({"_id": "log"})

    readers = [asyncio.create_task(busy()) for _ in range(6)]
    n = 200
    try:
        for i in range(n):
            push = {"$push": {"seen": i}}
            kind = i % 5
            if kind == 0:
                await w0.update_one({"_id": "log"}, push)
            elif kind == 1:
                await w0.update_many({"_id": "log"}, push)
            elif kind == 2:
                await w0.bulk_write([UpdateOne({"_id": "log"}, push)])
            elif kind == 3:
                await w0.find_one_and_update({"_id": "log"}, push)
            else:  # an insert, then the push that needs it to be there
                await w0.insert_one({"_id": i})
                await w0.update_one({"_id": i, "n": {"$exists": False}}, {"$set": {"n": i}})
                await w0.update_one({"_id": "log"}, push)
    finally:
        stop.set()
        await asyncio.gather(*readers)
    deadline = time.monotonic() + 10
    while len(witness.find_one({"_id": "log"})["seen"]) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert witness.find_one({"_id": "log"})["seen"] == list(range(n))
    inserted = list(witness.find({"_id": {"$type": "int"}}, sort=[("_id", 1)]))
    assert inserted == [{"_id": i, "n": i} for i in range(4, n, 5)]


# ---- write concern errors ------------------------------------------------------------------------


async def test_write_concern_errors(coll, sync_client):
    await coll.insert_one({"_id": 1, "n": 0})
    # This server answers w=5 on its one node with a writeConcernError (code 100), after the write.
    wc = WriteConcern(w=5, wtimeout=100)
    a = coll.with_options(write_concern=wc)
    b = sync_client[coll.database.name][coll.name].with_options(write_concern=wc)
    for name, args in (
        ("update_one", ({"_id": 1}, {"$inc": {"n": 1}})),
        ("delete_many", ({"_id": 99},)),
        ("find_one_and_update", ({"_id": 1}, {"$inc": {"n": 1}})),
        ("find_one_and_delete", ({"_id": 99},)),
    ):
        with pytest.raises(WriteConcernError) as mine:
            await getattr(a, name)(*args)
        with pytest.raises(WriteConcernError) as theirs:
            getattr(b, name)(*args)
        assert mine.type is theirs.type
        assert mine.value.code == theirs.value.code == 100
        assert mine.value.details == theirs.value.details
        assert str(mine.value) == str(theirs.value)
    with pytest.raises(BulkWriteError) as mine:
        await a.bulk_write([UpdateOne({"_id": 1}, {"$inc": {"n": 1}})])
    with pytest.raises(BulkWriteError) as theirs:
        b.bulk_write([UpdateOne({"_id": 1}, {"$inc": {"n": 1}})])
    assert mine.value.details == theirs.value.details
    assert mine.value.details["writeConcernErrors"][0]["code"] == 100
    # The writes themselves were applied: two updates and two findAndModify each.
    assert (await coll.find_one({"_id": 1}))["n"] == 6


# ---- bulk_write ----------------------------------------------------------------------------------


async def test_bulk_write_results(twin):
    requests = [
        InsertOne({"_id": 10, "a": 1}),
        UpdateOne({"a": 1}, {"$set": {"b": 1}}),
        UpdateMany({"a": 2}, {"$set": {"b": 2}}),
        ReplaceOne({"_id": 0}, {"a": 0, "replaced": True}),
        UpdateOne({"_id": 50}, {"$set": {"b": 3}}, upsert=True),
        ReplaceOne({"_id": 51}, {"b": 4}, upsert=True),
        UpdateMany({"_id": 52}, [{"$set": {"b": 5}}], upsert=True),
        DeleteOne({"a": 0}),
        DeleteMany({"s": "AB"}, collation={"locale": "en", "strength": 2}),
        InsertOne({"_id": 11}),
    ]
    r = await twin.call("bulk_write", requests)
    assert r[2:8] == (2, 4, 4, 8, 3, {4: 50, 5: 51, 6: 52})
    for ordered in (True, False):
        r = await twin.call(
            "bulk_write",
            [UpdateMany({"$expr": {"$eq": ["$b", "$$v"]}}, {"$set": {"c": ordered}}, hint="_id_"),
             UpdateOne({}, {"$set": {"arr.$[e]": 9}}, array_filters=[{"e": 1}]),
             InsertOne({"_id": 20 + ordered})],
            ordered=ordered, let={"v": 3}, comment="bulk", bypass_document_validation=True)
    await twin.same_contents()


async def test_bulk_write_errors(twin):
    # Ordered: stops at the duplicate; index is the request's, op is PyMongo's operation document.
    with pytest.raises(BulkWriteError) as info:
        await twin.call("bulk_write", [
            InsertOne({"_id": 30}), UpdateOne({"_id": 1}, {"$set": {"x": 1}}),
            InsertOne({"_id": 30}), DeleteMany({})])
    d = info.value.details
    assert [e["index"] for e in d["writeErrors"]] == [2]
    assert d["writeErrors"][0]["op"] == {"_id": 30}
    assert (d["nInserted"], d["nMatched"], d["nRemoved"]) == (1, 1, 0)
    # Unordered: PyMongo runs inserts, then updates, then deletes (so DeleteOne({"_id": 31}) sees
    # the insert listed after it); errors come sorted by request index, upserts keep theirs.
    with pytest.raises(BulkWriteError) as info:
        await twin.call("bulk_write", [
            DeleteOne({"_id": 31}), InsertOne({"_id": 31}),
            UpdateOne({"_id": 2}, {"$set": {"_id": 9}}), InsertOne({"_id": 1}),
            ReplaceOne({"_id": 40}, {"n": 1}, upsert=True), InsertOne({"_id": 32})],
            ordered=False)
    d = info.value.details
    assert [e["index"] for e in d["writeErrors"]] == [2, 3]
    assert d["writeErrors"][0]["op"] == {"q": {"_id": 2}, "u": {"$set": {"_id": 9}},
                                         "multi": False, "upsert": False}
    assert d["writeErrors"][1]["code"] == 11000 and d["writeErrors"][1]["keyValue"] == {"_id": 1}
    assert (d["nInserted"], d["nRemoved"], d["upserted"]) == (2, 1, [{"index": 4, "_id": 40}])
    docs = await twin.same_contents()
    assert {"_id": 31} not in docs and {"_id": 40, "n": 1} in docs


async def test_insert_many_error_details(twin):
    # insert_many fails as PyMongo's does: BulkWriteError whose details name each failed document.
    for ordered in (True, False):
        with pytest.raises(BulkWriteError) as info:
            await twin.call("insert_many", [{"_id": 50 + ordered}, {"_id": 1}, {"_id": 2},
                                            {"_id": 60 + ordered}], ordered=ordered)
        d = info.value.details
        assert d["writeErrors"][0]["op"] == {"_id": 1} and d["upserted"] == []
        assert d["nInserted"] == (1 if ordered else 2)
    await twin.same_contents()


async def test_bulk_write_refused_before_sending(coll, twin):
    doc = {"x": 1}
    bad = [
        (TypeError, ({"x": 1},), {}),  # requests not a list
        (TypeError, ([{"x": 1}],), {}),  # not an operation
        (InvalidOperation, ([],), {}),
        (ValueError, ([UpdateOne({}, {"x": 1})],), {}),
        (ValueError, ([ReplaceOne({}, {"$x": 1})],), {}),
        (TypeError, ([InsertOne(5)],), {}),
        (TypeError, ([InsertOne({})],), {"let": 5}),
        (TypeError, ([DeleteOne({}, collation=5)],), {}),
    ]
    for exc, args, kwargs in bad:
        with nothing_submitted(), pytest.raises(exc):
            await coll.bulk_write(*args, **kwargs)
        with pytest.raises(exc):
            twin.b.bulk_write(*copy.deepcopy(args), **kwargs)
    # PyMongo's operation classes check their own arguments when built.
    with pytest.raises(TypeError):
        UpdateOne([("a", 1)], {"$set": {"x": 1}})
    # InsertOne's document gets its _id, as with PyMongo.
    r = await coll.bulk_write([InsertOne(doc)])
    assert r.inserted_count == 1 and "_id" in doc
    assert await coll.find_one({"_id": doc["_id"]}) == doc


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list = []

    def started(self, event):
        self.sent.append(event.command)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


async def test_bulk_write_with_sort(twin, make_client):
    # libmongoc 1.23's bulk API has no per-operation sort: such a bulk goes as write commands of
    # asyncmongo's own, with PyMongo's results, errors and batching.
    r = await twin.call("bulk_write", [
        UpdateOne({"a": 1}, {"$set": {"last": True}}, sort={"_id": -1}),
        ReplaceOne({"a": 2}, {"a": 2, "first": True}, sort={"_id": 1}),
        InsertOne({"_id": 60}),
        UpdateOne({"_id": 61}, {"$set": {"u": 1}}, upsert=True, sort={"_id": 1}),
        DeleteOne({"a": 0}),
    ])
    assert r[2:8] == (1, 2, 2, 1, 1, {3: 61})
    for ordered in (True, False):
        with pytest.raises(BulkWriteError) as info:
            await twin.call("bulk_write", [
                UpdateOne({"_id": 3}, {"$set": {"_id": 99}}, sort={"_id": 1}),  # immutable _id
                InsertOne({"_id": 70 + ordered}), DeleteOne({"_id": 70 + ordered})],
                ordered=ordered)
        d = info.value.details
        assert [(e["index"], e["code"]) for e in d["writeErrors"]] == [(0, 66)]
        # Ordered stops at the error; unordered runs the insert, then the delete.
        assert (d["nInserted"], d["nRemoved"]) == ((0, 0) if ordered else (1, 1))
    docs = await twin.same_contents()
    assert [d["_id"] for d in docs if d.get("last")] == [7]
    assert [d["_id"] for d in docs if d.get("first")] == [2]
    # The sort travels in the update statement, as PyMongo sends it.
    commands = Commands()
    coll = make_client(event_listeners=[commands])[twin.a.database.name][twin.a.name]
    await coll.bulk_write([UpdateOne({"a": 1}, {"$set": {"x": 1}}, sort={"_id": -1})],
                          comment="c", let={"v": 1})
    [cmd] = [c for c in commands.sent if "update" in c]
    assert cmd["updates"] == [{"q": {"a": 1}, "u": {"$set": {"x": 1}}, "multi": False,
                               "upsert": False, "sort": {"_id": -1}}]
    assert (cmd["ordered"], cmd["comment"], cmd["let"]) == (True, "c", {"v": 1})


async def test_bypass_document_validation_false_is_sent(make_client, db_name, sync_client):
    # libmongoc's bulk API leaves an explicit bypassDocumentValidation=false out of the command:
    # asyncmongo sends it, as PyMongo does, and the collection's validator still applies.
    validator = {"x": {"$type": "int"}}
    for name in ("v", "v_pymongo"):
        sync_client[db_name].create_collection(name, validator=validator)
    commands = Commands()
    coll = make_client(event_listeners=[commands])[db_name]["v"]
    witness = sync_client[db_name]["v_pymongo"]
    await coll.insert_one({"_id": 1, "x": 1}, bypass_document_validation=False)
    r = await coll.insert_many([{"_id": 2, "x": 2}, {"x": 3}], bypass_document_validation=False)
    assert r.inserted_ids[0] == 2 and r.acknowledged
    b = await coll.bulk_write(
        [InsertOne({"_id": 4, "x": 4}), UpdateOne({"_id": 4}, {"$inc": {"x": 1}})],
        bypass_document_validation=False,
    )
    assert (b.inserted_count, b.modified_count) == (1, 1)
    sent = [(next(iter(c)), c.get("bypassDocumentValidation")) for c in commands.sent]
    assert sent == [("insert", False), ("insert", False), ("insert", False), ("update", False)]
    # Refused by the validator, with PyMongo's exceptions.
    with pytest.raises(WriteError) as ours:
        await coll.insert_one({"_id": 9, "x": "no"}, bypass_document_validation=False)
    with pytest.raises(WriteError) as theirs:
        witness.insert_one({"_id": 9, "x": "no"}, bypass_document_validation=False)
    assert ours.value.code == theirs.value.code == 121
    assert type(ours.value) is type(theirs.value)
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"_id": 1, "x": 1}, bypass_document_validation=False)
    witness.insert_one({"_id": 1, "x": 1})
    for ordered in (True, False):
        docs = [{"_id": 10 + ordered, "x": 1}, {"_id": 1, "x": 1},  # a duplicate key
                {"_id": 30 + ordered, "x": 1}]
        with pytest.raises(BulkWriteError) as ours:
            await coll.insert_many(copy.deepcopy(docs), ordered=ordered,
                                   bypass_document_validation=False)
        with pytest.raises(BulkWriteError) as theirs:
            witness.insert_many(copy.deepcopy(docs), ordered=ordered,
                                bypass_document_validation=False)
        mine, pym = ours.value.details, theirs.value.details
        assert [(e["index"], e["code"], e["op"]) for e in mine["writeErrors"]] == [
            (e["index"], e["code"], e["op"]) for e in pym["writeErrors"]]
        assert mine["nInserted"] == pym["nInserted"] == (1 if ordered else 2)
    ids = [d["_id"] for d in sync_client[db_name]["v"].find({}, sort=[("_id", 1)])]
    assert ids[:6] == [1, 2, 4, 10, 11, 30] and len(ids) == 7  # and {"x": 3}'s ObjectId


async def test_bulk_write_raw_documents_and_many_operations(coll, sync_client):
    raw = RawBSONDocument(bson.encode({"_id": 7, "raw": True}))
    many = [InsertOne({"_id": i, "pad": "x" * 1000}) for i in range(100, 2100)]
    r = await coll.bulk_write([InsertOne(raw), *many, DeleteMany({"_id": {"$gte": 1100}})])
    assert (r.inserted_count, r.deleted_count, r.upserted_ids) == (2001, 1000, {})
    witness = sync_client[coll.database.name][coll.name]
    assert witness.count_documents({}) == 1001
    assert witness.find_one({"_id": 7}) == {"_id": 7, "raw": True}
    # An inserted document gets its _id first, as PyMongo sends it.
    d = {"b": 1, "a": 2}
    await coll.bulk_write([InsertOne(d)])
    assert list(witness.find_one({"_id": d["_id"]}).keys()) == ["_id", "b", "a"]


# ---- find_one_and_* ------------------------------------------------------------------------------


async def test_find_one_and_update(twin):
    await twin.call("find_one_and_update", {"a": 1}, {"$set": {"x": 1}})
    await twin.call("find_one_and_update", {"a": 1}, {"$set": {"x": 2}}, sort=[("_id", -1)],
                    return_document=ReturnDocument.AFTER, projection=["x"])
    await twin.call("find_one_and_update", {"a": 1}, {"$set": {"x": 3}}, sort={"_id": 1},
                    projection={"_id": 0, "x": 1}, hint="a_1", comment="c", let={"v": 1})
    await twin.call("find_one_and_update", {"_id": 300}, {"$set": {"x": 4}}, upsert=True)
    r = await twin.call("find_one_and_update", {"_id": 301}, [{"$set": {"x": 5}}], upsert=True,
                        return_document=ReturnDocument.AFTER)
    assert r == {"_id": 301, "x": 5}
    await twin.call("find_one_and_update", {}, {"$set": {"arr.$[e]": 0}},
                    array_filters=[{"e": {"$lt": 3}}], return_document=True)
    await twin.call("find_one_and_update", {"s": "AB"}, {"$set": {"c": 1}},
                    collation={"locale": "en", "strength": 2}, bypassDocumentValidation=True,
                    maxTimeMS=5000)
    assert await twin.call("find_one_and_update", {"_id": 999}, {"$set": {"x": 1}}) is None
    with pytest.raises(OperationFailure):
        await twin.call("find_one_and_update", {"_id": 1}, {"$set": {"_id": 2}})
    await twin.same_contents()


async def test_find_one_and_replace_and_delete(twin):
    await twin.call("find_one_and_replace", {"a": 2}, {"r": 1}, sort=[("_id", -1)])
    r = await twin.call("find_one_and_replace", {"_id": 400}, {"r": 2}, upsert=True,
                        return_document=ReturnDocument.AFTER)
    assert r == {"_id": 400, "r": 2}
    await twin.call("find_one_and_delete", {"a": 0}, sort=[("_id", -1)], projection={"arr": 0})
    await twin.call("find_one_and_delete", {"s": "AB"}, collation={"locale": "en", "strength": 2})
    assert await twin.call("find_one_and_delete", {"_id": 999}) is None
    twin.b.create_index("u", unique=True, sparse=True)
    twin.b.database[twin.a.name].create_index("u", unique=True, sparse=True)
    await twin.call("find_one_and_update", {"_id": 1}, {"$set": {"u": 1}})
    with pytest.raises(DuplicateKeyError):
        await twin.call("find_one_and_replace", {"_id": 3}, {"u": 1})
    await twin.same_contents()


async def test_find_one_and_refused_before_sending(coll, twin):
    bad = [
        (ValueError, "find_one_and_update", ({}, {"x": 1}), {}),
        (ValueError, "find_one_and_replace", ({}, {"$x": 1}), {}),
        (TypeError, "find_one_and_update", ({}, {"$set": {"x": 1}}), {"return_document": "after"}),
        (TypeError, "find_one_and_update", ([1], {"$set": {"x": 1}}), {}),
        (TypeError, "find_one_and_delete", ({},), {"projection": 5}),
        (TypeError, "find_one_and_update", ({}, {"$set": {"x": 1}}), {"upsert": 1}),
        (TypeError, "find_one_and_update", ({}, {"$set": {"x": 1}}), {"array_filters": {}}),
        (TypeError, "find_one_and_replace", ({}, {"x": 1}), {"let": 1}),
        (TypeError, "find_one_and_delete", ({},), {"collation": 1}),
        (DocumentTooLarge, "find_one_and_update", ({}, {"$set": {"x": BIG}}), {}),
    ]
    for exc, name, args, kwargs in bad:
        with nothing_submitted(), pytest.raises(exc):
            await getattr(coll, name)(*args, **kwargs)
        # PyMongo is the witness; for a return_document that is not a bool, PyMongo 4.18 (the last
        # for Python 3.10) raised ValueError, 4.20 raises TypeError, as asyncmongo does.
        witness = (exc, ValueError) if "return_document" in kwargs else exc
        with pytest.raises(witness):
            getattr(twin.b, name)(*args, **kwargs)


async def test_find_one_and_codec_options(coll, sync_client):
    # The returned document is decoded with the collection's codec options.
    await coll.insert_one({"_id": 1, "b": 2, "a": 1})
    son = coll.with_options(codec_options=CodecOptions(document_class=SON))
    doc = await son.find_one_and_update({"_id": 1}, {"$set": {"c": 3}},
                                        return_document=ReturnDocument.AFTER)
    assert isinstance(doc, SON) and list(doc.keys()) == ["_id", "b", "a", "c"]
    raw = coll.with_options(codec_options=CodecOptions(document_class=RawBSONDocument))
    doc = await raw.find_one_and_delete({"_id": 1})
    assert isinstance(doc, RawBSONDocument) and doc["c"] == 3
    # A writeConcern argument is the operation's write concern (as PyMongo's **kwargs).
    await coll.insert_one({"_id": 2})
    with pytest.raises(WriteConcernError):
        await coll.find_one_and_update({"_id": 2}, {"$set": {"x": 1}},
                                       writeConcern={"w": 5, "wtimeout": 100})
    assert sync_client[coll.database.name][coll.name].find_one({"_id": 2}) == {"_id": 2, "x": 1}


async def test_session_must_be_a_session(coll):
    for call in (
        lambda: coll.update_one({}, {"$set": {"x": 1}}, session=object()),
        lambda: coll.delete_many({}, session=object()),
        lambda: coll.bulk_write([InsertOne({})], session=object()),
        lambda: coll.find_one_and_delete({}, session=object()),
    ):
        with nothing_submitted(), pytest.raises(TypeError, match="session"):
            await call()


def test_signatures_match_pymongo():
    # Same parameter names, kinds and defaults as PyMongo's AsyncCollection: calls port unchanged.
    import inspect

    from pymongo.asynchronous.collection import AsyncCollection as PyMongoAsyncCollection

    from asyncmongo.collection import AsyncCollection

    for name in ("update_one", "update_many", "replace_one", "delete_one", "delete_many",
                 "bulk_write", "find_one_and_update", "find_one_and_replace",
                 "find_one_and_delete"):
        ours = inspect.signature(getattr(AsyncCollection, name)).parameters.values()
        theirs = inspect.signature(getattr(PyMongoAsyncCollection, name)).parameters.values()
        assert [(p.name, p.kind, p.default) for p in ours] == [
            (p.name, p.kind, p.default) for p in theirs
        ], name

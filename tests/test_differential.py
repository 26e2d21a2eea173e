"""Differential test of the write API: a seeded random sequence of writes and reads runs through
asyncmongo on collection A and through PyMongo's sync client on collection B of the same server;
every result (or exception class and details) must be equal, and so must A's and B's contents."""

from __future__ import annotations

import copy
import random

import pytest
from bson.objectid import ObjectId
from pymongo import (
    DeleteMany,
    DeleteOne,
    InsertOne,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
)
from pymongo.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)

# Small key spaces, so that upserts, duplicate keys and filters matching nothing all happen often.
IDS = 12
A_VALUES = 4
K_VALUES = 5  # "k" has a unique (sparse) index: a second source of duplicate key errors
_VOLATILE = ("$clusterTime", "operationTime")


class Gen:
    """Random operations: (method name, args, kwargs)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def _id(self):
        return self.r.randrange(IDS)

    def filter(self, for_upsert: bool = False, for_delete: bool = False):
        r = self.r
        if for_delete and r.random() < 0.7:
            return {"_id": self._id()}  # deletes mostly take one document: the data stays large
        # An upsert's filter names the _id: a server-made _id would differ between A and B.
        choice = r.randrange(5)
        if for_upsert or choice == 0:
            f = {"_id": self._id()}
            if r.random() < 0.3:
                f["a"] = r.randrange(A_VALUES)
            return f
        if choice == 1:
            return {"a": r.randrange(A_VALUES)}
        if choice == 2:
            return {"v": {"$gte": r.randrange(6)}}
        if choice == 3:
            return {"k": {"$exists": r.random() < 0.5}}
        return {}

    def document(self, with_id: bool = True):
        r = self.r
        d = {"a": r.randrange(A_VALUES), "v": r.randrange(8)}
        if r.random() < 0.3:
            d["k"] = r.randrange(K_VALUES)
        if with_id and r.random() < 0.8:
            d = {"_id": self._id(), **d}  # otherwise the driver adds an ObjectId
        return d

    def update(self):
        r = self.r
        c = r.randrange(9)
        if c == 0:
            return {"$set": {"a": r.randrange(A_VALUES)}}
        if c == 1:
            return {"$inc": {"v": r.randrange(1, 3)}}
        if c == 2:
            return {"$set": {"k": r.randrange(K_VALUES)}}
        if c == 3:
            return {"$unset": {"k": ""}}
        if c == 4:
            return {"$push": {"log": r.randrange(3)}, "$inc": {"v": 1}}
        if c == 5:
            return [{"$set": {"v": {"$add": [{"$ifNull": ["$v", 0]}, 10]}}}]  # pipeline update
        if c == 6:
            return {"$set": {"_id": self._id()}}  # immutable field: a server-side write error
        if c == 7 and r.random() < 0.3:
            return {"a": 1}  # no $-operator: ValueError before sending, from both drivers
        return {"$max": {"v": r.randrange(8)}, "$set": {"t": r.random() < 0.5}}

    def replacement(self):
        if self.r.random() < 0.05:
            return {"$set": {"a": 1}}  # refused by both drivers (ValueError)
        return self.document(with_id=False)

    def sort(self):
        return [("v", self.r.choice((1, -1))), ("_id", 1)]

    def projection(self):
        return self.r.choice((None, ["a", "v"], {"log": 0}, {"_id": 0, "k": 1}))

    def request(self):
        r = self.r
        c = r.randrange(6)
        if c == 0:
            return InsertOne(self.document())
        if c == 1:
            up = r.random() < 0.4
            return UpdateOne(self.filter(up), self.update_ok(), upsert=up)
        if c == 2:
            up = r.random() < 0.3
            return UpdateMany(self.filter(up), self.update_ok(), upsert=up)
        if c == 3:
            up = r.random() < 0.4
            return ReplaceOne(self.filter(up), self.document(with_id=False), upsert=up)
        if c == 4:
            return DeleteOne(self.filter(for_delete=True))
        return DeleteMany(self.filter(for_delete=True))

    def update_ok(self):
        u = self.update()
        while isinstance(u, dict) and not next(iter(u)).startswith("$"):
            u = self.update()
        return u

    def op(self, have_count: bool, have_find: bool):
        r = self.r
        ops = [
            ("insert_one", 8), ("insert_many", 5), ("update_one", 10), ("update_many", 6),
            ("replace_one", 6), ("delete_one", 3), ("delete_many", 1),
            ("find_one_and_update", 6), ("find_one_and_replace", 4), ("find_one_and_delete", 2),
            ("bulk_write", 6), ("find_one", 5),
        ]
        if have_count:
            ops.append(("count_documents", 3))
        if have_find:
            ops.append(("find", 3))
        name = r.choices([n for n, _ in ops], [w for _, w in ops])[0]
        if name == "insert_one":
            return name, (self.document(),), {}
        if name == "insert_many":
            docs = [self.document() for _ in range(r.randrange(1, 6))]
            return name, (docs,), {"ordered": r.random() < 0.5}
        if name in ("update_one", "update_many"):
            up = r.random() < 0.4
            kw = {"upsert": up}
            if name == "update_one" and r.random() < 0.3:
                kw["sort"] = dict(self.sort())
            return name, (self.filter(up), self.update()), kw
        if name == "replace_one":
            up = r.random() < 0.4
            return name, (self.filter(up), self.replacement()), {"upsert": up}
        if name in ("delete_one", "delete_many"):
            return name, (self.filter(for_delete=True),), {}
        if name == "find_one_and_update":
            up = r.random() < 0.3
            return name, (self.filter(up), self.update()), {
                "upsert": up, "sort": self.sort(), "projection": self.projection(),
                "return_document": r.choice((ReturnDocument.BEFORE, ReturnDocument.AFTER))}
        if name == "find_one_and_replace":
            up = r.random() < 0.3
            return name, (self.filter(up), self.replacement()), {
                "upsert": up, "sort": self.sort(), "projection": self.projection(),
                "return_document": r.choice((ReturnDocument.BEFORE, ReturnDocument.AFTER))}
        if name == "find_one_and_delete":
            return name, (self.filter(for_delete=True),), {
                "sort": self.sort(), "projection": self.projection()}
        if name == "bulk_write":
            requests = [self.request() for _ in range(r.randrange(1, 8))]
            return name, (requests,), {"ordered": r.random() < 0.5}
        if name == "find_one":
            return name, (self.filter(),), {"sort": self.sort(), "projection": self.projection()}
        if name == "count_documents":
            return name, (self.filter(),), {}
        return name, (self.filter(),), {"sort": self.sort(), "projection": self.projection()}


def neutral(value, names):
    """A value with the collections' namespaces made neutral (error messages name them) and the
    server's clock readings dropped."""
    if isinstance(value, str):
        for n in names:
            value = value.replace(n, "NS")
        return value
    if isinstance(value, dict):
        return {k: neutral(v, names) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, (list, tuple)):
        return [neutral(v, names) for v in value]
    return value


def outcome(value, names):
    """What a user reads from a result."""
    if isinstance(value, InsertOneResult):
        return ("insert_one", value.acknowledged, value.inserted_id)
    if isinstance(value, InsertManyResult):
        return ("insert_many", value.acknowledged, value.inserted_ids)
    if isinstance(value, UpdateResult):
        return ("update", value.matched_count, value.modified_count, value.upserted_id,
                value.did_upsert, neutral(value.raw_result, names))
    if isinstance(value, DeleteResult):
        return ("delete", value.deleted_count, neutral(value.raw_result, names))
    if isinstance(value, BulkWriteResult):
        return ("bulk", value.inserted_count, value.matched_count, value.modified_count,
                value.deleted_count, value.upserted_count, value.upserted_ids,
                neutral(value.bulk_api_result, names))
    return value


async def run_sequence(client, sync_client, db_name, seed: int, n_ops: int):
    a = client[db_name][f"a_{seed}"]
    b = sync_client[db_name][f"b_{seed}"]
    # Messages name the namespace: the longer name first, in case one contains the other.
    names = sorted((a.full_name, b.full_name), key=len, reverse=True)
    for c in (sync_client[db_name][a.name], b):
        c.create_index("k", unique=True, sparse=True)
    # Reads another helper may have added to asyncmongo are used when present.
    have_count = hasattr(type(a), "count_documents")
    have_find = hasattr(type(a), "find")
    gen = Gen(seed)
    kinds: dict[str, int] = {}
    for step in range(n_ops):
        name, args, kwargs = gen.op(have_count, have_find)
        # asyncmongo runs first on its own copy; PyMongo then gets a copy of that copy, so a
        # document asyncmongo gave an ObjectId _id reaches PyMongo with the same _id.
        args_a, kwargs_a = copy.deepcopy(args), copy.deepcopy(kwargs)
        try:
            if name == "find":
                got_a = ("ok", await a.find(*args_a, **kwargs_a).to_list(None))
            else:
                got_a = ("ok", outcome(await getattr(a, name)(*args_a, **kwargs_a), names))
        except Exception as e:  # compared with PyMongo's below
            got_a = (type(e), neutral(getattr(e, "details", None) or str(e), names))
        args_b, kwargs_b = copy.deepcopy(args_a), copy.deepcopy(kwargs_a)
        try:
            if name == "find":
                got_b = ("ok", list(b.find(*args_b, **kwargs_b)))
            else:
                got_b = ("ok", outcome(getattr(b, name)(*args_b, **kwargs_b), names))
        except Exception as e:
            got_b = (type(e), neutral(getattr(e, "details", None) or str(e), names))
        assert got_a == got_b, (
            f"seed {seed} step {step}: {name}{args!r} {kwargs!r}\n"
            f"asyncmongo: {got_a!r}\nPyMongo:    {got_b!r}"
        )
        kind = name if got_a[0] == "ok" else f"{name}:{got_a[0].__name__}"
        kinds[kind] = kinds.get(kind, 0) + 1
    contents_a = list(sync_client[db_name][a.name].find({}, sort=[("_id", 1)]))
    contents_b = list(b.find({}, sort=[("_id", 1)]))
    assert contents_a == contents_b
    return kinds, contents_a


@pytest.mark.parametrize("seed", [20240611, 7])
async def test_random_sequence_matches_pymongo(client, sync_client, db_name, seed):
    try:
        kinds, contents = await run_sequence(client, sync_client, db_name, seed, 400)
    finally:
        sync_client.drop_database(db_name)
    # The sequence did exercise what it is meant to: upserts, duplicate keys, refused updates,
    # server-side write errors, failing bulks, and documents given an ObjectId by the driver.
    for expected in ("update_one", "bulk_write", "find_one_and_update", "replace_one",
                     "insert_one:DuplicateKeyError", "update_one:WriteError",
                     "bulk_write:BulkWriteError", "insert_many:BulkWriteError"):
        assert kinds.get(expected, 0) > 0, f"seed {seed}: no {expected} in {kinds}"
    assert any(k.endswith(":ValueError") for k in kinds), kinds
    assert any(isinstance(d["_id"], ObjectId) for d in contents), "no driver-made _id compared"
    assert len(contents) >= 5, "the sequence left too little data to compare"

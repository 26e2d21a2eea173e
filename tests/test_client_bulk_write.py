"""AsyncMongoClient.bulk_write (the bulkWrite command) against the real server, with PyMongo's sync
client running the same models on twin collections as the witness: results, verbose results, write
errors, write concern errors, top-level errors, partial results, the command sent, batch splitting,
the results cursor's getMores, sessions, and the checks made before anything is sent."""

from __future__ import annotations

import asyncio
import copy
import time

import pymongo
import pytest
from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne, monitoring
from pymongo.errors import (
    ClientBulkWriteException,
    ConfigurationError,
    InvalidOperation,
    OperationFailure,
)
from pymongo.results import ClientBulkWriteResult
from pymongo.write_concern import WriteConcern

import asyncmongo._client_bulk as client_bulk
from asyncmongo import _core

# Command fields that differ between two clients or two runs.
_VOLATILE = {"lsid", "$clusterTime", "txnNumber", "$db", "$readPreference"}


class Events(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list = []
        self.replies: list = []

    def started(self, event):
        self.commands.append(event)

    def succeeded(self, event):
        self.replies.append(event)

    def failed(self, event):
        pass

    def named(self, name):
        return [e for e in self.commands if e.command_name == name]


def result_doc(r: ClientBulkWriteResult) -> dict:
    """What a user reads from a client bulk write result."""
    if not r.acknowledged:
        return {"acknowledged": False}
    doc = {
        "counts": (r.inserted_count, r.upserted_count, r.matched_count, r.modified_count,
                   r.deleted_count),
        "verbose": r.has_verbose_results,
    }
    if r.has_verbose_results:
        doc["insert"] = {i: x.inserted_id for i, x in r.insert_results.items()}
        doc["update"] = {i: (x.matched_count, x.modified_count, x.upserted_id, x.did_upsert)
                         for i, x in r.update_results.items()}
        doc["delete"] = {i: x.deleted_count for i, x in r.delete_results.items()}
    return doc


def error_doc(e: ClientBulkWriteException) -> dict:
    """What a user reads from ClientBulkWriteException."""
    top = e.error
    return {
        "error": None if top is None else (type(top).__name__, top.code),
        "writeErrors": [(w["idx"], w["code"], w["op"]) for w in e.write_errors],
        "writeConcernErrors": [(w["code"], w.get("codeName")) for w in e.write_concern_errors],
        "partial": None if e.partial_result is None else result_doc(e.partial_result),
    }


class Twin:
    """One bulk_write on asyncmongo (database ``a``) and on PyMongo's sync client (database ``b``)
    holding the same data; namespaces are written ``{db}.coll`` in the models."""

    def __init__(self, client, sync_client, db_name):
        self.client = client
        self.sync = sync_client
        self.dbs = (db_name, db_name + "_pymongo")

    def seed(self, coll, docs):
        for db in self.dbs:
            self.sync[db][coll].insert_many(copy.deepcopy(docs))

    async def call(self, make, **kwargs):
        """``make(ns)`` builds the models, ``ns("coll")`` naming the side's namespace. Both
        outcomes must be equal; returns asyncmongo's, or raises its exception."""
        outcomes, mine = [], None
        for side, db in zip(("a", "b"), self.dbs):
            models = make(lambda coll, db=db: f"{db}.{coll}")
            try:
                if side == "a":
                    r = await self.client.bulk_write(models, **kwargs)
                else:
                    r = self.sync.bulk_write(models, **kwargs)
                outcomes.append(("ok", result_doc(r)))
            except ClientBulkWriteException as e:
                outcomes.append(("error", _neutral(error_doc(e), self.dbs)))
                if side == "a":
                    mine = e
        assert outcomes[0] == outcomes[1], f"asyncmongo {outcomes[0]!r} != PyMongo {outcomes[1]!r}"
        if mine is not None:
            raise mine
        return outcomes[0][1]

    def contents(self, coll):
        a, b = (list(self.sync[db][coll].find({}, sort=[("_id", 1)])) for db in self.dbs)
        assert a == b
        return a

    def drop(self):
        for db in self.dbs:
            self.sync.drop_database(db)


def _neutral(value, dbs):
    """``value`` with the two sides' database names made one (error details and commands name
    them)."""
    if isinstance(value, str):
        return value.replace(dbs[1], "DB").replace(dbs[0], "DB")
    if isinstance(value, dict):
        return {k: _neutral(v, dbs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_neutral(v, dbs) for v in value)
    return value


@pytest.fixture
def twin(client, sync_client, db_name):
    t = Twin(client, sync_client, db_name)
    t.seed("c1", [{"_id": i, "a": i % 3} for i in range(6)])
    t.seed("c2", [{"_id": i, "b": i} for i in range(3)])
    yield t
    t.drop()


def mixed(ns):
    return [
        InsertOne({"_id": 10, "a": 9}, namespace=ns("c1")),
        UpdateOne({"a": 1}, {"$set": {"u": 1}}, namespace=ns("c1")),
        UpdateMany({"a": 2}, {"$inc": {"a": 10}}, namespace=ns("c1")),
        ReplaceOne({"_id": 0}, {"replaced": True}, namespace=ns("c1")),
        UpdateOne({"_id": 20}, {"$set": {"up": 1}}, upsert=True, namespace=ns("c2")),
        ReplaceOne({"_id": 21}, {"up": 2}, upsert=True, namespace=ns("c2")),
        DeleteOne({"b": 0}, namespace=ns("c2")),
        DeleteMany({"b": {"$gte": 1}}, namespace=ns("c2")),
        InsertOne({"_id": 11}, namespace=ns("c3")),
    ]


async def test_mixed_namespaces_verbose_results(twin):
    r = await twin.call(mixed, verbose_results=True)
    assert r["counts"] == (2, 2, 4, 4, 3)
    assert r["insert"] == {0: 10, 8: 11}
    # An upsert's result counts its document as matched (the server's "n"), as PyMongo's does.
    assert r["update"] == {1: (1, 1, None, False), 2: (2, 2, None, False),
                           3: (1, 1, None, False), 4: (1, 0, 20, True), 5: (1, 0, 21, True)}
    assert r["delete"] == {6: 1, 7: 2}
    assert twin.contents("c2") == [{"_id": 20, "up": 1}, {"_id": 21, "up": 2}]
    assert twin.contents("c3") == [{"_id": 11}]
    docs = twin.contents("c1")
    assert {"_id": 0, "replaced": True} in docs and {"_id": 10, "a": 9} in docs


async def test_summary_results_by_default(twin):
    r = await twin.call(mixed)
    assert r == {"counts": (2, 2, 4, 4, 3), "verbose": False}
    result = await twin.client.bulk_write([InsertOne({"_id": 12}, namespace=f"{twin.dbs[0]}.c1")])
    with pytest.raises(InvalidOperation):
        result.insert_results


async def test_ordered_stops_at_the_first_write_error(twin):
    def make(ns):
        return [InsertOne({"_id": 30}, namespace=ns("c1")),
                InsertOne({"_id": 1}, namespace=ns("c1")),  # duplicate key
                InsertOne({"_id": 31}, namespace=ns("c1"))]

    with pytest.raises(ClientBulkWriteException) as info:
        await twin.call(make, verbose_results=True)
    e = info.value
    assert [(w["idx"], w["code"]) for w in e.write_errors] == [(1, 11000)]
    assert e.write_errors[0]["op"] == {"insert": 0, "document": {"_id": 1}}
    assert e.error is None and e.write_concern_errors == []
    assert e.partial_result.inserted_count == 1
    assert {i: x.inserted_id for i, x in e.partial_result.insert_results.items()} == {0: 30}
    assert [d["_id"] for d in twin.contents("c1")] == [0, 1, 2, 3, 4, 5, 30]


async def test_unordered_runs_every_operation(twin):
    def make(ns):
        return [InsertOne({"_id": 1}, namespace=ns("c1")),
                InsertOne({"_id": 40}, namespace=ns("c1")),
                UpdateOne({"_id": 2}, {"$set": {"_id": 99}}, namespace=ns("c1")),  # immutable
                DeleteOne({"_id": 3}, namespace=ns("c1"))]

    with pytest.raises(ClientBulkWriteException) as info:
        await twin.call(make, ordered=False)
    e = info.value
    assert [(w["idx"], w["code"]) for w in e.write_errors] == [(0, 11000), (2, 66)]
    assert result_doc(e.partial_result)["counts"] == (1, 0, 0, 0, 1)
    assert [d["_id"] for d in twin.contents("c1")] == [0, 1, 2, 4, 5, 40]


async def test_failed_first_operation_of_an_ordered_bulk_has_no_partial_result(twin):
    # The bulk write spec: no partial result unless a write is known to have succeeded; an ordered
    # bulk stops at its failed first operation. (PyMongo 4.20 still reports a partial result of
    # zeros here: it reads "nErrors < operations sent" for ordered bulks too.)
    ns = f"{twin.dbs[0]}.c1"
    with pytest.raises(ClientBulkWriteException) as info:
        await twin.client.bulk_write([InsertOne({"_id": 1}, namespace=ns),
                                      InsertOne({"_id": 50}, namespace=ns)])
    assert info.value.partial_result is None
    assert [w["idx"] for w in info.value.write_errors] == [0]
    assert twin.sync[twin.dbs[0]].c1.find_one({"_id": 50}) is None
    # Unordered, the second one ran: a partial result.
    with pytest.raises(ClientBulkWriteException) as info:
        await twin.client.bulk_write([InsertOne({"_id": 1}, namespace=ns),
                                      InsertOne({"_id": 50}, namespace=ns)], ordered=False)
    assert info.value.partial_result.inserted_count == 1


async def test_top_level_error_is_embedded(twin):
    def make(ns):
        return [InsertOne({"_id": 60}, namespace="nodot")]

    with pytest.raises(ClientBulkWriteException) as info:
        await twin.call(make)
    e = info.value
    assert isinstance(e.error, OperationFailure) and e.error.code == 73  # InvalidNamespace
    assert e.partial_result is None and e.write_errors == []


async def test_write_concern_error_is_reported(twin):
    def make(ns):
        return [InsertOne({"_id": 70}, namespace=ns("c1"))]

    # One data-bearing member cannot satisfy w=2: the server says so in a writeConcernError.
    with pytest.raises(ClientBulkWriteException) as info:
        await twin.call(make, write_concern=WriteConcern(w=2, wtimeout=100))
    e = info.value
    assert [w["code"] for w in e.write_concern_errors] == [100]
    assert e.write_errors == [] and e.error is None
    assert e.partial_result.inserted_count == 1
    assert {"_id": 70} in twin.contents("c1")


async def test_command_matches_pymongo(make_client, server, twin):
    ours, theirs = Events(), Events()
    client = make_client(event_listeners=[ours])
    witness = pymongo.MongoClient(server.uri, event_listeners=[theirs])
    try:
        kwargs = dict(ordered=False, verbose_results=True, comment={"why": "test"},
                      let={"v": 1}, bypass_document_validation=False,
                      write_concern=WriteConcern(w=1))

        def models(db):
            return [
                InsertOne({"_id": 80}, namespace=f"{db}.c1"),
                UpdateOne({"a": 1}, {"$set": {"x": 1}}, upsert=True, hint="_id_",
                          collation={"locale": "en"}, sort={"_id": -1}, namespace=f"{db}.c1"),
                UpdateMany({}, [{"$set": {"y": 1}}], namespace=f"{db}.c2"),
                ReplaceOne({"_id": 1}, {"r": 1}, namespace=f"{db}.c2"),
                DeleteMany({"a": 2}, hint={"_id": 1}, namespace=f"{db}.c1"),
            ]

        await client.bulk_write(models(twin.dbs[0]), **kwargs)
        witness.bulk_write(models(twin.dbs[1]), **kwargs)
    finally:
        witness.close()
    [a], [b] = ours.named("bulkWrite"), theirs.named("bulkWrite")
    assert a.database_name == b.database_name == "admin"

    def neutral(cmd):
        return _neutral({k: v for k, v in cmd.items() if k not in _VOLATILE}, twin.dbs)

    assert neutral(a.command) == neutral(b.command)
    assert a.command["writeConcern"] == {"w": 1}
    assert a.command["nsInfo"] == [{"ns": f"{twin.dbs[0]}.c1"}, {"ns": f"{twin.dbs[0]}.c2"}]
    assert [next(iter(op.items())) for op in a.command["ops"]] == [
        ("insert", 0), ("update", 0), ("update", 1), ("update", 1), ("delete", 0)]


async def test_batches_split_by_size(make_client, twin):
    # Five 5 MB documents: a bulkWrite command must stay within 16 MiB + 16 KiB, so several go.
    events = Events()
    client = make_client(event_listeners=[events])
    ns = f"{twin.dbs[0]}.big"
    big = "x" * (5 * 1000 * 1000)
    r = await client.bulk_write(
        [InsertOne({"_id": i, "s": big}, namespace=ns) for i in range(5)], verbose_results=True
    )
    assert r.inserted_count == 5
    assert {i: x.inserted_id for i, x in r.insert_results.items()} == {i: i for i in range(5)}
    sent = [len(e.command["ops"]) for e in events.named("bulkWrite")]
    assert sum(sent) == 5 and len(sent) >= 2 and max(sent) <= 3
    assert twin.sync[twin.dbs[0]].big.count_documents({}) == 5


async def test_batches_split_by_count(make_client, twin, monkeypatch):
    # A smaller maxWriteBatchSize: indexes, errors and the ordered stop span the batches.
    monkeypatch.setattr(client_bulk, "MAX_WRITE_BATCH_SIZE", 2)
    events = Events()
    client = make_client(event_listeners=[events])
    ns = f"{twin.dbs[0]}.c1"
    models = [InsertOne({"_id": 100 + i}, namespace=ns) for i in range(3)]
    models += [InsertOne({"_id": 1}, namespace=ns), InsertOne({"_id": 200}, namespace=ns)]
    with pytest.raises(ClientBulkWriteException) as info:
        await client.bulk_write(models, verbose_results=True)
    e = info.value
    assert [len(x.command["ops"]) for x in events.named("bulkWrite")] == [2, 2]
    assert [(w["idx"], w["code"]) for w in e.write_errors] == [(3, 11000)]
    assert sorted(e.partial_result.insert_results) == [0, 1, 2]
    assert twin.sync[twin.dbs[0]].c1.find_one({"_id": 200}) is None
    # Unordered: every batch runs.
    events.commands.clear()
    with pytest.raises(ClientBulkWriteException) as info:
        await client.bulk_write([InsertOne({"_id": 300 + i}, namespace=ns) for i in range(3)]
                                + [InsertOne({"_id": 1}, namespace=ns),
                                   InsertOne({"_id": 400}, namespace=ns)], ordered=False)
    assert [len(x.command["ops"]) for x in events.named("bulkWrite")] == [2, 2, 1]
    assert [w["idx"] for w in info.value.write_errors] == [3]
    assert info.value.partial_result.inserted_count == 4


async def test_results_cursor_get_more(make_client, twin, monkeypatch):
    # The server returns the per-operation results as a cursor; ask for batches of one so that
    # the rest comes by getMore (no public option sets it: the command is patched).
    real = client_bulk._command

    def small_batches(header, ops, namespaces):
        return real(dict(header, cursor={"batchSize": 1}), ops, namespaces)

    monkeypatch.setattr(client_bulk, "_command", small_batches)
    events = Events()
    client = make_client(event_listeners=[events])
    ns = f"{twin.dbs[0]}.c1"
    with pytest.raises(ClientBulkWriteException) as info:
        await client.bulk_write(
            [InsertOne({"_id": 500}, namespace=ns), UpdateOne({"_id": 1}, {"$set": {"g": 1}},
                                                              namespace=ns),
             InsertOne({"_id": 2}, namespace=ns), DeleteOne({"_id": 3}, namespace=ns)],
            ordered=False, verbose_results=True)
    e = info.value
    assert len(events.named("getMore")) >= 1
    assert [w["idx"] for w in e.write_errors] == [2]
    p = e.partial_result
    assert (p.inserted_count, p.matched_count, p.deleted_count) == (1, 1, 1)
    assert sorted(p.insert_results) == [0] and sorted(p.update_results) == [1]
    assert sorted(p.delete_results) == [3]


async def test_session(client, twin):
    ns = f"{twin.dbs[0]}.c1"
    async with client.start_session() as session:
        r = await client.bulk_write([InsertOne({"_id": 600}, namespace=ns)], session=session)
        assert r.inserted_count == 1
    other = twin.sync.start_session()
    try:
        with pytest.raises(TypeError):
            await client.bulk_write([InsertOne({"_id": 601}, namespace=ns)], session=other)
    finally:
        other.end_session()
    assert twin.sync[twin.dbs[0]].c1.find_one({"_id": 600}) == {"_id": 600}


async def test_unacknowledged_unordered(client, twin):
    ns = f"{twin.dbs[0]}.c1"
    r = await client.bulk_write([InsertOne({"_id": 700}, namespace=ns),
                                 InsertOne({"_id": 1}, namespace=ns)],  # its error is not seen
                                ordered=False, write_concern=WriteConcern(w=0))
    assert r.acknowledged is False
    with pytest.raises(InvalidOperation):
        r.inserted_count
    # Sent without waiting for the server: the write shows up when the server has done it.
    deadline = time.monotonic() + 10
    while twin.sync[twin.dbs[0]].c1.find_one({"_id": 700}) is None:
        assert time.monotonic() < deadline, "the unacknowledged write never happened"
        await asyncio.sleep(0.05)


async def test_refused_before_sending(client, sync_client, twin):
    ns = f"{twin.dbs[0]}.c1"
    w0 = WriteConcern(w=0)
    bad = [
        (InvalidOperation, ([],), {}),
        (TypeError, ({"x": 1},), {}),  # not a list
        (TypeError, ([{"x": 1}],), {}),  # not a model
        (InvalidOperation, ([InsertOne({})],), {}),  # no namespace
        (ValueError, ([UpdateOne({}, {"x": 1}, namespace=ns)],), {}),
        (ValueError, ([ReplaceOne({}, {"$set": {"x": 1}}, namespace=ns)],), {}),
        (TypeError, ([InsertOne(5, namespace=ns)],), {}),
        (TypeError, ([InsertOne({}, namespace=ns)],), {"let": 5}),
        (InvalidOperation, ([InsertOne({}, namespace=ns)],),
         {"write_concern": w0, "verbose_results": True}),
        (InvalidOperation, ([InsertOne({}, namespace=ns)],), {"write_concern": w0}),  # ordered
        (ConfigurationError, ([DeleteOne({}, collation={"locale": "en"}, namespace=ns)],),
         {"write_concern": w0, "ordered": False}),
        (ConfigurationError, ([UpdateOne({}, {"$set": {"a.$[e]": 1}}, array_filters=[{"e": 1}],
                                         namespace=ns)],), {"write_concern": w0, "ordered": False}),
        (OperationFailure, ([InsertOne({}, namespace=ns)],),
         {"write_concern": w0, "ordered": False, "bypass_document_validation": True}),
    ]
    for exc, args, kwargs in bad:
        before = _core.debug_counters()["jobs_submitted"]
        with pytest.raises(exc):
            await client.bulk_write(*copy.deepcopy(args), **kwargs)
        assert _core.debug_counters()["jobs_submitted"] == before, (exc, args, kwargs)
        with pytest.raises(exc):
            sync_client.bulk_write(*copy.deepcopy(args), **kwargs)
    # The document of an InsertOne gets its _id, as with PyMongo.
    doc = {"x": 1}
    await client.bulk_write([InsertOne(doc, namespace=ns)])
    assert "_id" in doc and sync_client[twin.dbs[0]].c1.find_one({"_id": doc["_id"]}) == doc


def test_signature_matches_pymongo():
    import inspect

    from pymongo.asynchronous.mongo_client import AsyncMongoClient as PyMongoClient

    from asyncmongo import AsyncMongoClient

    ours = inspect.signature(AsyncMongoClient.bulk_write).parameters.values()
    theirs = inspect.signature(PyMongoClient.bulk_write).parameters.values()
    assert [(p.name, p.kind, p.default) for p in ours] == [
        (p.name, p.kind, p.default) for p in theirs
    ]

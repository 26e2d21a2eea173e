"""Collection reads: find (its options), aggregate, count_documents, estimated_document_count and
distinct, each compared with what PyMongo's sync client returns for the same call on the same data;
bad arguments refused before sending with PyMongo's exception type and message; server errors as
OperationFailure with PyMongo's code; the collection's read and write concerns reach the server."""

from __future__ import annotations

import contextlib
import re

import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.son import SON
import pymongo
from pymongo import ASCENDING, DESCENDING, monitoring
from pymongo.collation import Collation
from pymongo.errors import (
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from asyncmongo import _core
from asyncmongo.command_cursor import AsyncCommandCursor

WORDS = ["b", "A", "a", "B", "c", "é", "E"]


# ---- helpers -------------------------------------------------------------------------------------


def jobs() -> int:
    return _core.debug_counters()["jobs_submitted"]


@contextlib.contextmanager
def nothing_submitted():
    before = jobs()
    yield
    assert jobs() == before, "refused input reached the core"


@pytest.fixture
def data(coll, sync_client):
    """40 documents with numbers, words, arrays and a missing field, and two indexes; returns the
    PyMongo witness collection."""
    w = sync_client[coll.database.name][coll.name]
    w.insert_many(
        [
            {"_id": i, "n": i, "m": i % 4, "w": WORDS[i % len(WORDS)], "tags": [i % 3, "t"],
             "sub": {"k": i % 5}}
            for i in range(40)
        ]
        + [{"_id": 100, "w": "none"}]
    )
    w.create_index("m")
    w.create_index([("w", ASCENDING), ("n", DESCENDING)], name="w_n")
    return w


def message(exc: BaseException) -> str:
    """An exception's message without what differs only by name: the method's owner in Python's
    own argument errors, and PyMongo's sync class names (PyMongo's async API says Async...)."""
    return re.sub(r"^[\w.]+\(\) ", "() ", str(exc)).replace("AsyncDatabase", "Database")


def same_error(ours, theirs) -> None:
    """The exception PyMongo raises for a call, raised by ours with the same message."""
    with pytest.raises(Exception) as expected:
        theirs()
    with nothing_submitted():
        with pytest.raises(type(expected.value)) as got:
            ours()
    assert type(got.value) is type(expected.value)
    assert message(got.value) == message(expected.value)


async def same_async_error(ours, theirs) -> None:
    with pytest.raises(Exception) as expected:
        theirs()
    with nothing_submitted():
        with pytest.raises(type(expected.value)) as got:
            await ours()
    assert type(got.value) is type(expected.value)
    assert message(got.value) == message(expected.value)


async def same_server_error(ours, theirs) -> OperationFailure:
    with pytest.raises(OperationFailure) as expected:
        theirs()
    with pytest.raises(OperationFailure) as got:
        await ours()
    assert type(got.value) is type(expected.value)
    assert got.value.code == expected.value.code
    return got.value


class Commands(monitoring.CommandListener):
    """The read commands a client sends, minus what each driver adds of its own (session, cluster
    time, $db, read preference)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def started(self, event) -> None:
        if event.command_name in ("find", "aggregate", "count", "distinct", "getMore"):
            self.sent.append({k: v for k, v in event.command.items()
                              if k not in ("lsid", "$clusterTime", "$db", "$readPreference")})

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


# ---- find ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"filter": {"m": 2}},
        {"filter": {"m": {"$in": [1, 3]}}, "projection": ["n", "w"], "sort": [("n", -1)]},
        {"projection": {"_id": 0, "sub": 1}, "sort": [("_id", 1)], "skip": 5, "limit": 7},
        {"filter": {"tags": 2}, "sort": [("n", 1)], "batch_size": 2, "limit": 9},
        {"sort": [("w", 1), ("n", 1)], "collation": Collation("en", strength=2)},
        {"filter": {"w": "a"}, "collation": {"locale": "en", "strength": 1}, "sort": [("_id", 1)]},
        {"filter": {"m": 1}, "hint": "m_1", "sort": [("_id", 1)]},
        {"filter": {"m": 1}, "hint": [("m", ASCENDING)], "max_time_ms": 5000, "comment": "q"},
        {"sort": [("n", -1)], "allow_disk_use": True, "no_cursor_timeout": True,
         "allow_partial_results": True, "limit": -4},
        {"filter": {"$expr": {"$eq": ["$m", "$$want"]}}, "let": {"want": 3}, "sort": [("_id", 1)]},
        {"filter": {"m": 0}, "return_key": True, "hint": "m_1"},
        {"filter": {"_id": {"$lt": 3}}, "show_record_id": True, "sort": [("_id", 1)]},
        {"min": {"m": 1}, "max": {"m": 3}, "hint": "m_1", "projection": {"_id": 1}},
        {"filter": {"sub.k": {"$gte": 3}}, "projection": {"tags": {"$slice": 1}},
         "sort": [("_id", -1)]},
    ],
)
async def test_find_options_match_pymongo(coll, data, kwargs):
    ours = await coll.find(**kwargs).to_list()
    theirs = list(data.find(**kwargs))
    assert ours == theirs
    assert ours or kwargs.get("return_key")  # every case selects something


async def test_find_positional_arguments_as_pymongo(coll, data):
    # find(filter, projection, skip, limit): PyMongo's positional order.
    ours = await coll.find({"m": 1}, {"n": 1, "_id": 0}, 2, 3).to_list()
    assert ours == list(data.find({"m": 1}, {"n": 1, "_id": 0}, 2, 3)) and len(ours) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"filter": 5},
        {"filter": "m"},
        {"skip": "1"},
        {"limit": 2.0},
        {"no_cursor_timeout": 1},
        {"cursor_type": 7},
        {"allow_partial_results": "yes"},
        {"oplog_replay": None},
        {"batch_size": "10"},
        {"batch_size": -1},
        {"allow_disk_use": 1},
        {"projection": 5},
        {"projection": ["a", 1]},
        {"let": 5},
        {"let": [("a", 1)]},
        {"sort": 5},
        {"sort": "n"},
        {"sort": [("a", 1.5)]},
        {"sort": [(1, 1)]},
        {"collation": "en"},
        {"hint": 5},
        {"hint": []},
        {"no_such_option": 1},
    ],
)
def test_find_bad_arguments_match_pymongo(coll, data, kwargs):
    same_error(lambda: coll.find(**kwargs), lambda: data.find(**kwargs))


def test_find_session_must_be_a_session(coll):
    with nothing_submitted(), pytest.raises(TypeError, match="session"):
        coll.find({}, session=object())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"skip": -1},
        {"max_time_ms": "x"},
        {"hint": "no_such_index"},
        {"sort": [("n", 5)]},
        {"projection": {"a": 1, "b": 0}},
        {"filter": {"$bogus": 1}},
        {"limit": 3, "batch_size": 2, "filter": {"n": {"$regex": "("}}},
    ],
)
async def test_find_server_errors_match_pymongo(coll, data, kwargs):
    cursor = coll.find(**kwargs)  # nothing sent yet: the server refuses on the first fetch
    await same_server_error(lambda: cursor.to_list(), lambda: list(data.find(**kwargs)))
    assert not cursor.alive


async def test_find_on_missing_collection_is_empty(client, db_name, sync_client):
    coll = client[db_name]["missing"]
    assert await coll.find().to_list() == [] == list(sync_client[db_name]["missing"].find())
    assert await coll.find_one() is None


# ---- read concern and read preference ------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.find({}).to_list(),
        lambda c: c.find({}, batch_size=2).to_list(),
        lambda c: c.count_documents({}),
        lambda c: c.estimated_document_count(),
        lambda c: c.distinct("m"),
        lambda c: c.aggregate([{"$match": {}}]),
        lambda c: c.aggregate([{"$match": {}}, {"$out": "out_rc"}]),
    ],
)
async def test_collection_read_concern_reaches_the_server(coll, data, call):
    # A level the server refuses proves the concern was sent (PyMongo gets the same refusal).
    bogus = coll.with_options(read_concern=ReadConcern("bogus"))
    with pytest.raises(OperationFailure) as ours:
        await call(bogus)
    with pytest.raises(OperationFailure) as theirs:
        data.with_options(read_concern=ReadConcern("bogus")).find_one()
    assert ours.value.code == theirs.value.code == 9
    # A valid one: the same answers as without it.
    majority = coll.with_options(read_concern=ReadConcern("majority"))
    assert await majority.count_documents({"m": 1}) == data.count_documents({"m": 1}) == 10
    assert len(await majority.find({"m": 1}, batch_size=3).to_list()) == 10


async def test_read_concern_differing_from_the_clients(make_client, db_name, data):
    # The client has its own level: the collection's replaces it (one readConcern in the command).
    client = make_client(readConcernLevel="local")
    coll = client[db_name]["items"].with_options(read_concern=ReadConcern("majority"))
    assert await coll.find(sort=[("_id", 1)]).to_list() == list(data.find(sort=[("_id", 1)]))
    agg = await client[db_name]["items"].aggregate(
        [{"$count": "n"}], readConcern={"level": "majority"}
    )
    assert await agg.to_list() == [{"n": 41}]


async def test_read_preference_is_honoured(coll, data):
    # SecantusDB is a one-member replica set: secondaryPreferred reads from its primary.
    sp = coll.with_options(read_preference=ReadPreference.SECONDARY_PREFERRED)
    expected = list(data.find({"m": 2}, sort=[("_id", 1)]))
    assert await sp.find({"m": 2}, sort=[("_id", 1)]).to_list() == expected
    assert await sp.count_documents({}) == 41
    assert sorted(await sp.distinct("m")) == [0, 1, 2, 3]


async def test_lone_seed_discovers_the_replica_set(make_client, server, db_name, data):
    # As PyMongo: a URI with one host and no directConnection discovers the topology, here a
    # one-member replica set, so a secondary read finds no server; directConnection=true makes the
    # topology Single, where any read preference may use the one server.
    reads = [
        lambda c: c.find_one({"m": 1}),
        lambda c: c.find({"m": 1}).to_list(),
        lambda c: c.count_documents({}),
        lambda c: c.distinct("m"),
        lambda c: c.estimated_document_count(),
    ]
    rp = ReadPreference.SECONDARY
    discovered = make_client(serverSelectionTimeoutMS=300)[db_name].get_collection(
        "items", read_preference=rp)
    direct = make_client(server.uri + "/?directConnection=true")[db_name].get_collection(
        "items", read_preference=rp)
    witness = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=300)
    try:
        theirs = witness[db_name].get_collection("items", read_preference=rp)
        for read in reads:
            with pytest.raises(ServerSelectionTimeoutError):
                read(theirs)
            with pytest.raises(ServerSelectionTimeoutError):
                await read(discovered)
            await read(direct)  # no error
        assert witness.topology_description.topology_type_name == "ReplicaSetWithPrimary"
    finally:
        witness.close()
    assert await direct.find_one({"m": 1}, sort=[("_id", 1)]) == data.find_one({"m": 1}, sort=[("_id", 1)])


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"read_concern": ReadConcern("majority")},
        {"read_concern": ReadConcern("local"), "write_concern": WriteConcern(w=1, wtimeout=5000)},
        {"write_concern": WriteConcern(w="majority", j=True)},
    ],
)
async def test_commands_sent_are_pymongos(make_client, server, db_name, data, options):
    # Each read as PyMongo sends it, concerns included: readConcern in every read command,
    # writeConcern only in a pipeline that writes.
    calls = [
        lambda c: c.find({"m": 1}, batch_size=4, sort=[("_id", 1)]),
        lambda c: c.find_one({"m": 1}, sort=[("_id", -1)]),
        lambda c: c.aggregate([{"$match": {"m": 2}}, {"$sort": {"_id": 1}}], batchSize=3),
        lambda c: c.aggregate([{"$match": {"m": 3}}, {"$out": "out_cmds"}], batchSize=3),
        lambda c: c.aggregate([{"$match": {"m": 3}}, {"$merge": {"into": "merge_cmds"}}],
                              comment="m", maxTimeMS=5000, let={"x": 1}),
        lambda c: c.count_documents({"m": 1}, skip=1, limit=5, hint="m_1"),
        lambda c: c.estimated_document_count(maxTimeMS=4000),
        lambda c: c.distinct("w", {"m": 0}, collation=Collation("en"), comment="d"),
    ]
    ours, theirs = Commands(), Commands()
    coll = make_client(event_listeners=[ours])[db_name].get_collection("items", **options)
    with pymongo.MongoClient(server.uri, event_listeners=[theirs]) as pm:
        witness = pm[db_name].get_collection("items", **options)
        for call in calls:
            got = call(coll)
            if hasattr(got, "__await__"):
                got = await got
            if hasattr(got, "to_list"):
                got = await got.to_list()
            expected = call(witness)
            if hasattr(expected, "to_list"):
                expected = expected.to_list()
            assert got == expected
    for sent in (ours.sent, theirs.sent):
        for cmd in sent:
            if "getMore" in cmd:
                cmd["getMore"] = "ID"
    assert ours.sent == theirs.sent
    assert len(ours.sent) >= 8
    rc = options.get("read_concern")
    if rc is not None:
        assert all(c["readConcern"] == rc.document for c in ours.sent if "getMore" not in c)
    wc = options.get("write_concern")
    if wc is not None:
        writing = [c for c in ours.sent if "aggregate" in c and ("$out" in c["pipeline"][-1]
                                                                  or "$merge" in c["pipeline"][-1])]
        assert len(writing) == 2 and all(c["writeConcern"] == wc.document for c in writing)
        assert all("writeConcern" not in c for c in ours.sent if c not in writing)


# ---- aggregate -----------------------------------------------------------------------------------

GROUP = [
    {"$group": {"_id": "$m", "total": {"$sum": "$n"}, "c": {"$sum": 1}}},
    {"$sort": {"_id": 1}},
]


@pytest.mark.parametrize(
    "pipeline, kwargs",
    [
        (GROUP, {}),
        ([{"$match": {"m": 1}}, {"$project": {"n": 1}}, {"$sort": {"n": -1}}], {"batchSize": 3}),
        ([{"$match": {"$expr": {"$gt": ["$n", "$$min"]}}}, {"$sort": {"_id": 1}}],
         {"let": {"min": 33}}),
        ([{"$sort": {"w": 1, "_id": 1}}, {"$project": {"w": 1}}],
         {"collation": Collation("en", strength=1)}),
        ([{"$match": {"m": 3}}, {"$sort": {"_id": 1}}],
         {"hint": "m_1", "allowDiskUse": True, "maxTimeMS": 5000, "comment": {"why": "test"}}),
        ([{"$unwind": "$tags"}, {"$group": {"_id": "$tags", "c": {"$sum": 1}}},
          {"$sort": {"_id": 1}}], {"batchSize": 0}),
        ([{"$match": {"nothing": True}}], {}),
        ([], {}),
    ],
)
async def test_aggregate_matches_pymongo(coll, data, pipeline, kwargs):
    cursor = await coll.aggregate(pipeline, **kwargs)
    assert isinstance(cursor, AsyncCommandCursor)
    ours = await cursor.to_list()
    theirs = list(data.aggregate(pipeline, **kwargs))
    if pipeline == []:  # no $sort: the natural order of both
        ours.sort(key=lambda d: d["_id"])
        theirs.sort(key=lambda d: d["_id"])
    assert ours == theirs


async def test_aggregate_batches_are_one_job_each(coll, data):
    before = jobs()
    cursor = await coll.aggregate([{"$sort": {"_id": 1}}], batchSize=10)
    # The aggregate, and the first getMore already running ahead (one batch ahead at most).
    assert jobs() - before == 2
    docs = [d async for d in cursor]
    assert [d["_id"] for d in docs] == list(range(40)) + [100]
    # 41 documents in batches of 10: the aggregate, 4 getMores, at most one that finds the end.
    assert 5 <= jobs() - before <= 6
    assert not cursor.alive


async def test_aggregate_out_and_merge_write_with_the_write_concern(
    coll, data, sync_client, db_name
):
    cursor = await coll.aggregate([{"$match": {"m": 2}}, {"$out": "out_coll"}], batchSize=5)
    assert await cursor.to_list() == []
    assert list(sync_client[db_name]["out_coll"].find(sort=[("_id", 1)])) == list(
        data.find({"m": 2}, sort=[("_id", 1)])
    )
    pipeline = [{"$match": {"m": 3}}, {"$project": {"n": 1}}, {"$merge": {"into": "merged"}}]
    await (await coll.aggregate(pipeline)).to_list()
    assert sync_client[db_name]["merged"].count_documents({}) == 10
    # The collection's write concern travels with a writing pipeline: a mode the server does not
    # know proves it (PyMongo gets the same WriteConcernError code).
    bad_wc = WriteConcern(w="noSuchTag")
    with pytest.raises(WriteConcernError) as theirs:
        list(data.with_options(write_concern=bad_wc).aggregate([{"$match": {}}, {"$out": "o2"}]))
    with pytest.raises(WriteConcernError) as ours:
        await coll.with_options(write_concern=bad_wc).aggregate([{"$match": {}}, {"$out": "o3"}])
    assert ours.value.code == theirs.value.code == 79
    # A writeConcern given to aggregate() replaces the collection's.
    with pytest.raises(WriteConcernError):
        await coll.aggregate([{"$match": {}}, {"$out": "o4"}], writeConcern={"w": "noSuchTag"})
    # ...and a read-only pipeline carries none.
    assert len(await (await coll.with_options(write_concern=bad_wc).aggregate([])).to_list()) == 41


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (({"$match": {}},), {}),
        (("pipeline",), {}),
        (([],), {"explain": True}),
        (([],), {"aggregate": "x"}),
        (([],), {"pipeline": []}),
        (([],), {"batchSize": -1}),
        (([],), {"batchSize": 2.5}),
        (([],), {"let": 5}),
        (([],), {"collation": 5}),
        (([5],), {}),
    ],
)
async def test_aggregate_bad_arguments_match_pymongo(coll, data, args, kwargs):
    await same_async_error(
        lambda: coll.aggregate(*args, **kwargs), lambda: data.aggregate(*args, **kwargs)
    )


@pytest.mark.parametrize(
    "pipeline, kwargs",
    [
        ([{"$bogus": 1}], {}),
        ([{"$match": {"$bogus": 1}}], {}),
        ([{"$match": {}}], {"hint": "no_such_index"}),
        ([{"$match": {}}], {"maxTimeMS": "x"}),
        ([{"$sort": {"n": 2}}], {}),
    ],
)
async def test_aggregate_server_errors_match_pymongo(coll, data, pipeline, kwargs):
    await same_server_error(lambda: coll.aggregate(pipeline, **kwargs),
                            lambda: list(data.aggregate(pipeline, **kwargs)))


async def test_aggregate_session_must_be_a_session(coll):
    with nothing_submitted(), pytest.raises(TypeError, match="session"):
        await coll.aggregate([], session=object())


# ---- count_documents and estimated_document_count ------------------------------------------------


@pytest.mark.parametrize(
    "filter, kwargs",
    [
        ({}, {}),
        ({"m": 1}, {}),
        ({"tags": 2}, {"skip": 3}),
        ({}, {"limit": 7}),
        ({"m": {"$gte": 2}}, {"skip": 5, "limit": 6}),
        ({"m": {"$gte": 2}}, {"skip": 100}),
        ({"m": 3}, {"hint": "m_1", "maxTimeMS": 5000, "comment": "count"}),
        ({"m": 3}, {"hint": [("m", 1)]}),
        ({"w": "a"}, {"collation": Collation("en", strength=1)}),
        ({"nothing": True}, {}),
    ],
)
async def test_count_documents_matches_pymongo(coll, data, filter, kwargs):
    ours = await coll.count_documents(filter, **kwargs)
    assert type(ours) is int
    assert ours == data.count_documents(filter, **kwargs)


async def test_counts_of_an_empty_or_missing_collection_are_zero(client, db_name, sync_client):
    missing = client[db_name]["missing"]
    assert await missing.count_documents({}) == 0
    assert sync_client[db_name]["missing"].count_documents({}) == 0
    assert await missing.estimated_document_count() == 0
    sync_client[db_name].create_collection("empty")
    empty = client[db_name]["empty"]
    assert await empty.count_documents({"a": 1}) == 0
    assert await empty.estimated_document_count() == 0
    assert await empty.distinct("a") == []


async def test_counts_whatever_the_document_class(coll, data):
    raw = coll.with_options(codec_options=CodecOptions(document_class=RawBSONDocument))
    assert await raw.count_documents({"m": 0}) == 10
    assert await raw.estimated_document_count() == 41
    son = coll.with_options(codec_options=CodecOptions(document_class=SON))
    assert await son.count_documents({}) == 41


@pytest.mark.parametrize(
    "filter, kwargs",
    [
        ({"$bogus": 1}, {}),
        ({}, {"hint": "no_such_index"}),
        ({}, {"maxTimeMS": "x"}),
        ({}, {"limit": -1}),
        ({}, {"skip": "x"}),
        (5, {}),
    ],
)
async def test_count_documents_server_errors_match_pymongo(coll, data, filter, kwargs):
    await same_server_error(lambda: coll.count_documents(filter, **kwargs),
                            lambda: data.count_documents(filter, **kwargs))


async def test_count_documents_bad_arguments_match_pymongo(coll, data):
    await same_async_error(lambda: coll.count_documents({}, collation=5),
                           lambda: data.count_documents({}, collation=5))
    await same_async_error(lambda: coll.count_documents({}, hint=5),
                           lambda: data.count_documents({}, hint=5))
    await same_async_error(lambda: coll.count_documents(), lambda: data.count_documents())
    with nothing_submitted(), pytest.raises(TypeError, match="session"):
        await coll.count_documents({}, session=object())


async def test_estimated_document_count_matches_pymongo(coll, data):
    assert await coll.estimated_document_count() == data.estimated_document_count() == 41
    assert await coll.estimated_document_count(maxTimeMS=5000, comment="est") == 41
    await same_async_error(lambda: coll.estimated_document_count(session=None),
                           lambda: data.estimated_document_count(session=None))
    await same_server_error(lambda: coll.estimated_document_count(maxTimeMS="x"),
                            lambda: data.estimated_document_count(maxTimeMS="x"))


# ---- distinct ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, filter, kwargs",
    [
        ("m", None, {}),
        ("w", {"m": {"$lt": 2}}, {}),
        ("tags", None, {}),
        ("sub.k", {"n": {"$gte": 30}}, {"maxTimeMS": 5000, "comment": "d"}),
        ("w", None, {"collation": Collation("en", strength=1)}),
        ("m", {"m": 2}, {"hint": "m_1"}),
        ("m", None, {"hint": [("m", 1)]}),
        ("n", None, {"query": {"m": 3}}),
        ("no_such_field", None, {}),
    ],
)
async def test_distinct_matches_pymongo(coll, data, key, filter, kwargs):
    ours = await coll.distinct(key, filter, **kwargs)
    theirs = data.distinct(key, filter, **kwargs)
    assert type(ours) is list
    assert ours == theirs


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((5,), {}),
        ((None,), {}),
        (("m", {"m": 1}), {"query": {"m": 2}}),
        (("m",), {"collation": 5}),
        (("m",), {"hint": 5}),
    ],
)
async def test_distinct_bad_arguments_match_pymongo(coll, data, args, kwargs):
    await same_async_error(
        lambda: coll.distinct(*args, **kwargs), lambda: data.distinct(*args, **kwargs)
    )


async def test_distinct_server_errors_match_pymongo(coll, data):
    await same_server_error(lambda: coll.distinct("m", {"$bogus": 1}),
                            lambda: data.distinct("m", {"$bogus": 1}))
    await same_server_error(lambda: coll.distinct("m", hint="no_such_index"),
                            lambda: data.distinct("m", hint="no_such_index"))
    await same_server_error(lambda: coll.distinct("m", maxTimeMS="x"),
                            lambda: data.distinct("m", maxTimeMS="x"))
    with nothing_submitted(), pytest.raises(TypeError, match="session"):
        await coll.distinct("m", session=object())


class Aggregates(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def started(self, event) -> None:
        if event.command_name == "aggregate" and "$out" in event.command["pipeline"][-1]:
            self.sent.append(event.command)

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


async def test_writing_aggregate_with_a_read_preference(make_client, server, db_name, data):
    # $out/$merge with a non-primary read preference: every server is 5.0+, so the pipeline may run
    # where the preference says and the command carries it (the CRUD specification); a preference no
    # server matches fails server selection, as with PyMongo.
    pipeline = [{"$match": {"m": 1}}, {"$out": "out_rp"}]
    ours, theirs = Aggregates(), Aggregates()
    client = make_client(event_listeners=[ours], serverSelectionTimeoutMS=500)
    pm = pymongo.MongoClient(server.uri, event_listeners=[theirs], serverSelectionTimeoutMS=500)
    try:
        for mode in (ReadPreference.SECONDARY_PREFERRED, ReadPreference.NEAREST):
            coll = client[db_name].get_collection("items", read_preference=mode)
            assert await (await coll.aggregate(pipeline)).to_list() == []
            assert await client[db_name]["out_rp"].count_documents({}) == 10
            list(pm[db_name].get_collection("items", read_preference=mode).aggregate(pipeline))
            db_level = client[db_name].with_options(read_preference=mode)
            await (await db_level.aggregate([{"$documents": [{"a": 1}]}, {"$out": "out_db"}])).to_list()
            assert await client[db_name]["out_db"].find_one({}, {"_id": 0}) == {"a": 1}
        sent_rp = [c.get("$readPreference") for c in ours.sent]
        assert sent_rp == [{"mode": "secondaryPreferred"}] * 2 + [{"mode": "nearest"}] * 2
        assert [c["$readPreference"] for c in theirs.sent] == sent_rp[::2]
        secondary = client[db_name].get_collection("items", read_preference=ReadPreference.SECONDARY)
        with pytest.raises(ServerSelectionTimeoutError):
            await secondary.aggregate(pipeline)
        with pytest.raises(ServerSelectionTimeoutError):
            list(pm[db_name].get_collection("items", read_preference=ReadPreference.SECONDARY)
                 .aggregate(pipeline))
    finally:
        pm.close()

"""Fault matrix, row "bad input, fuzzed": hypothesis draws documents, filters, updates, pipelines and
option values, valid and not (odd keys, out-of-range numbers, wrong types, unknown operators), and
one operation runs with them through asyncmongo on collection A and through PyMongo's own async
client on collection B of the same server, both starting from the same documents. Then:
- both succeeded with the same result, or both raised the same exception class, and A and B hold
  the same documents; or else asyncmongo refused the input before sending anything (the core was
  handed no job) where PyMongo passed it on: this one difference is allowed, counted and listed by
  operation and argument in the figures (PyMongo sends some option values, ``ordered=0`` for one,
  as they are, for the server to refuse; libmongoc takes booleans only, so asyncmongo refuses them
  itself, ``None`` too, which this server takes as the default);
- so asyncmongo never wrote what PyMongo refused: A differs from B only where asyncmongo sent
  nothing;
- nothing crashed (the run goes on), and the C core's counters balance (conftest, after the test).

The example count is small in CI (derandomized: the same examples every run);
``ASYNCMONGO_FUZZ_EXAMPLES=5000`` runs more, with fresh random examples.
"""

from __future__ import annotations

import copy
import datetime
import os
import uuid

import bson
import pymongo
import pytest
from bson import Decimal128, Int64, ObjectId, Regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncmongo import AsyncMongoClient, _core
from tests.conftest import LoopErrors, new_loop
from tests.reliability import Figures

# A fault row: it does not depend on the wake-up path or the loop kind; the default and sanitizer
# modes run it (scripts/test.sh).
pytestmark = pytest.mark.modes_inside

EXAMPLES = int(os.environ.get("ASYNCMONGO_FUZZ_EXAMPLES", "120"))
BOUND = 30.0
SEED_DOCS = [{"_id": i, "a": i % 3, "b": [i, i + 1], "s": f"s{i}", "d": {"x": i}} for i in range(8)]

# ---- strategies -----------------------------------------------------------------------------

_field = st.sampled_from(["a", "b", "s", "d", "d.x", "_id", "z", "b.0"])
_odd_keys = st.sampled_from(["", "$bad", "a.b", "a\x00b", "$where", "_id", "é", " "])
_keys = st.one_of(_field, _odd_keys, st.text(max_size=6))
_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**31), 2**31 - 1), st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False), st.text(max_size=8), st.binary(max_size=8),
    st.just(ObjectId("65a1b2c3d4e5f60718293a4b")), st.just(Int64(7)),
    st.just(Decimal128("1.5")), st.just(datetime.datetime(2024, 1, 2, 3, 4, 5)),
    st.just(Regex("^s", "i")),
    st.sampled_from([object(), {1, 2}, 1 + 2j, datetime.date(2024, 1, 1)]),  # not BSON
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_documents = st.dictionaries(_keys, _values, max_size=4)
_operators = st.sampled_from(["$eq", "$gt", "$lt", "$in", "$nin", "$exists", "$type", "$regex",
                              "$size", "$all", "$not", "$elemMatch", "$mod", "$bogus"])
_conditions = st.one_of(_values, st.dictionaries(_operators, _values, min_size=1, max_size=2))
_filters = st.one_of(
    st.dictionaries(_field, _conditions, max_size=3),
    st.builds(lambda op, fs: {op: fs}, st.sampled_from(["$and", "$or", "$nor"]),
              st.one_of(st.lists(st.dictionaries(_field, _conditions, max_size=2), max_size=3),
                        _values)),
    _values,  # not a mapping at all
)
_update_ops = st.sampled_from(["$set", "$unset", "$inc", "$push", "$pull", "$rename", "$min",
                               "$mul", "$currentDate", "$bogus", "set"])
_updates = st.one_of(
    st.dictionaries(_update_ops, st.dictionaries(_field, _values, max_size=2), max_size=2),
    _documents,  # a replacement where an update is due, or a mix
    st.lists(st.dictionaries(st.sampled_from(["$set", "$project", "$unset", "$bogus"]),
                             _values, min_size=1, max_size=1), max_size=2),  # pipeline updates
    _values,
)
_stages = st.one_of(
    st.builds(lambda f: {"$match": f}, _filters),
    st.builds(lambda p: {"$project": p}, st.dictionaries(_field, st.sampled_from([0, 1, True, "$a", {}]),
                                                         max_size=2)),
    st.builds(lambda n: {"$limit": n}, _scalars),
    st.builds(lambda n: {"$skip": n}, _scalars),
    st.builds(lambda s: {"$sort": s}, st.dictionaries(_field, st.sampled_from([1, -1, 0, "x"]), max_size=2)),
    st.builds(lambda k: {"$group": {"_id": k, "n": {"$sum": 1}}}, st.sampled_from(["$a", None, "$s", 3])),
    st.just({"$count": "n"}), st.just({"$unwind": "$b"}), st.just({"$bogus": 1}),
    _values,
)
_pipelines = st.one_of(st.lists(_stages, max_size=3), _values)
_ints = st.one_of(st.integers(-3, 10), st.just(2**40), st.none(), st.booleans(), st.floats(-1, 5),
                  st.text(max_size=2))
_sorts = st.one_of(st.none(), st.lists(st.tuples(_field, st.sampled_from([1, -1, 0, "up"])), max_size=2),
                   _field, _values)
_projections = st.one_of(st.none(), st.dictionaries(_field, st.sampled_from([0, 1, True, False, "x"]),
                                                    max_size=2), st.lists(_field, max_size=2), _values)

_operations = st.one_of(
    st.tuples(st.just("insert_one"), st.tuples(_documents), st.just({})),
    st.tuples(st.just("insert_many"), st.tuples(st.lists(_documents, max_size=3) | _values),
              st.fixed_dictionaries({}, optional={"ordered": _values})),
    st.tuples(st.just("find"), st.tuples(_filters),
              st.fixed_dictionaries({}, optional={"projection": _projections, "sort": _sorts,
                                                  "limit": _ints, "skip": _ints,
                                                  "batch_size": _ints})),
    st.tuples(st.just("find_one"), st.tuples(_filters), st.just({})),
    st.tuples(st.just("count_documents"), st.tuples(_filters),
              st.fixed_dictionaries({}, optional={"limit": _ints, "skip": _ints})),
    st.tuples(st.sampled_from(["update_one", "update_many"]), st.tuples(_filters, _updates),
              st.fixed_dictionaries({}, optional={"upsert": _values})),
    st.tuples(st.just("replace_one"), st.tuples(_filters, _documents | _values),
              st.fixed_dictionaries({}, optional={"upsert": _values})),
    st.tuples(st.sampled_from(["delete_one", "delete_many"]), st.tuples(_filters), st.just({})),
    st.tuples(st.just("aggregate"), st.tuples(_pipelines),
              st.fixed_dictionaries({}, optional={"batchSize": _ints})),
    st.tuples(st.just("distinct"), st.tuples(_keys | _values, _filters), st.just({})),
    st.tuples(st.just("find_one_and_update"), st.tuples(_filters, _updates),
              st.fixed_dictionaries({}, optional={"upsert": _values, "sort": _sorts})),
)

# ---- running one operation with either driver ------------------------------------------------------


def _plain(value):
    """A result, comparable across drivers and runs: ObjectIds made by a driver or the server
    stand for themselves only; results become plain data."""
    if isinstance(value, ObjectId) and value != ObjectId("65a1b2c3d4e5f60718293a4b"):
        return "<ObjectId>"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _key(doc):
    return bson.encode({"v": doc})


async def _run(coll, name, args, kwargs):
    method = getattr(coll, name)
    if name == "find":
        return [_plain(d) for d in await coll.find(*args, **kwargs).to_list(None)]
    if name == "aggregate":
        cursor = await coll.aggregate(*args, **kwargs)
        return [_plain(d) for d in await cursor.to_list(None)]
    res = await method(*args, **kwargs)
    if name == "distinct":
        return sorted((_plain(v) for v in res), key=_key)
    if isinstance(res, (dict, type(None), int)):
        return _plain(res)
    fields = ("acknowledged", "inserted_id", "inserted_ids", "matched_count", "modified_count",
              "upserted_id", "deleted_count")
    return {f: _plain(getattr(res, f)) for f in fields if hasattr(res, f)}


def _outcome(out):
    if out.ok:
        return ("ok", out.value)
    return ("raised", type(out.error).__name__)


@pytest.fixture(scope="module")
def fuzz_env(server, pytestconfig):
    """A loop of the suite's kind (--loop) for the whole test (PyMongo's async client keeps to
    one), both clients on it."""
    loop = new_loop(pytestconfig.getoption("--loop"))
    errors = LoopErrors()
    loop.set_exception_handler(errors)
    if os.environ.get("PYTHONASYNCIODEBUG"):
        loop.set_debug(True)
    ours = AsyncMongoClient(server.uri, serverSelectionTimeoutMS=10000)
    theirs = pymongo.AsyncMongoClient(server.uri, serverSelectionTimeoutMS=10000)
    sync = pymongo.MongoClient(server.uri)
    db = f"fuzz_{uuid.uuid4().hex[:8]}"
    fig = Figures("bad input, fuzzed", f"{EXAMPLES} examples", None)
    fig.notes["loop"] = type(loop).__module__.split(".")[0]
    yield loop, ours[db].items, theirs[db].items, sync[db], fig
    loop.run_until_complete(ours.close())
    loop.run_until_complete(theirs.close())
    loop.close()
    sync.drop_database(db)
    sync.close()
    assert not errors.contexts, errors.contexts


_PROFILE = dict(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize="ASYNCMONGO_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])


@settings(**_PROFILE)
@given(operation=_operations)
def test_fuzzed_input_same_as_pymongo(fuzz_env, operation):
    loop, ours, theirs, sync_db, fig = fuzz_env
    name, args, kwargs = operation
    for c in (sync_db.items, sync_db.items_b):
        c.delete_many({})
    sync_db.items.insert_many(copy.deepcopy(SEED_DOCS))
    theirs_coll = theirs.database.items_b

    async def both():
        submitted = _core.debug_counters()["jobs_submitted"]
        a = await fig.bounded(_run(ours, name, copy.deepcopy(args), copy.deepcopy(kwargs)), BOUND)
        sent = _core.debug_counters()["jobs_submitted"] - submitted
        b = await fig.bounded(_run(theirs_coll, name, copy.deepcopy(args), copy.deepcopy(kwargs)),
                              BOUND)
        return a, sent, b

    sync_db.items_b.insert_many(copy.deepcopy(SEED_DOCS))
    a, sent, b = loop.run_until_complete(both())
    fig.runs += 1
    fig.count(f"{name}.{_outcome(a)[0]}")
    stored_a = sorted((_plain(d) for d in sync_db.items.find({})), key=_key)
    stored_b = sorted((_plain(d) for d in sync_db.items_b.find({})), key=_key)
    assert not a.hung and not b.hung
    if _outcome(a) == _outcome(b) and stored_a == stored_b:
        return
    if not a.ok and not sent and stored_a == sorted(map(_plain, SEED_DOCS), key=_key):
        # Refused before anything was sent, where PyMongo passed the input on.
        arg = ",".join(sorted(kwargs)) or "args"
        key = (f"refused before sending ({_outcome(a)[1]}), PyMongo "
               f"{'wrote/answered' if b.ok else 'raised ' + _outcome(b)[1]}: {name}({arg})")
        fig.count(key)
        fig.notes.setdefault("refused examples", {}).setdefault(
            key, f"{name}{args!r} {kwargs!r}"[:300])
        return
    fig.notes.setdefault("differences", []).append(
        f"{name}{args!r} {kwargs!r}: asyncmongo {_outcome(a)}, PyMongo {_outcome(b)}")
    assert _outcome(a) == _outcome(b), (a.error, b.error)
    assert stored_a == stored_b


def test_fuzz_figures(fuzz_env):
    """The row's figures (after the examples above, which share the module's environment)."""
    loop, ours, _, _, fig = fuzz_env
    out = loop.run_until_complete(fig.bounded(ours.find_one({"_id": 1}), BOUND))
    fig.recovered = out.ok and out.value == SEED_DOCS[1]
    differences = fig.notes.pop("differences", [])
    fig.finish(differences)

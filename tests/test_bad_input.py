"""Bad input is refused before anything is sent, with the exception type PyMongo raises for the same
input, and the client stays usable afterwards. "Nothing was sent" is proven twice: the C core's
jobs_submitted counter does not move, and PyMongo's sync client (the witness) sees no new document."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import warnings

import bson
import pymongo
import pytest
from bson.errors import InvalidDocument
from bson.raw_bson import RawBSONDocument
from pymongo.errors import (
    ConfigurationError,
    DocumentTooLarge,
    InvalidName,
    InvalidOperation,
)
from pymongo.server_api import ServerApi

from asyncmongo import AsyncMongoClient, _core
from asyncmongo._common import MAX_BSON_SIZE

MIB = 1024 * 1024


# ---- helpers -------------------------------------------------------------------------------------


def counters() -> dict:
    return _core.debug_counters()


@contextlib.contextmanager
def nothing_submitted():
    """The block must not hand a single job to the C core (so nothing can reach the server)."""
    before = counters()["jobs_submitted"]
    yield
    after = counters()["jobs_submitted"]
    assert after == before, f"{after - before} job(s) were submitted for refused input"


def witness(sync_client, coll):
    return sync_client[coll.database.name][coll.name]


async def assert_usable(coll, sync_client, expected_count: int = 0):
    """The server holds exactly expected_count documents, and the client still works."""
    w = witness(sync_client, coll)
    assert w.count_documents({}) == expected_count, "refused input reached the server"
    doc = {"still": "usable", "n": expected_count}
    res = await coll.insert_one(doc)
    assert await coll.find_one(res.inserted_id) == doc
    assert w.find_one(res.inserted_id) == doc


def pymongo_raises(fn) -> BaseException:
    """What PyMongo raises for the same input (its validation also happens before any I/O)."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the type is what we compare
        return exc
    raise AssertionError("PyMongo accepted the input this test expects it to refuse")


def pymongo_client_outcome(*args, **kwargs):
    """(exception or None, warning categories) of pymongo.MongoClient(..., connect=False)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            client = pymongo.MongoClient(*args, connect=False, **kwargs)
        except Exception as exc:  # noqa: BLE001
            return exc, [w.category for w in caught]
        client.close()
    return None, [w.category for w in caught]


class Thing:
    """A plain class instance: not BSON-encodable."""


# ---- insert_one: what is not a document ----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [[("a", 1)], "a string", 42, None, b"bytes", (("a", 1),)],
    ids=["list", "str", "int", "None", "bytes", "tuple"],
)
async def test_insert_one_non_mapping_is_type_error(coll, sync_client, bad):
    expected = pymongo_raises(lambda: witness(sync_client, coll).insert_one(bad))
    assert type(expected) is TypeError
    with nothing_submitted(), pytest.raises(TypeError, match="document must be an instance of"):
        await coll.insert_one(bad)
    await assert_usable(coll, sync_client)


@pytest.mark.parametrize(
    "make_doc, expected_type",
    [
        (lambda: {"a": object()}, InvalidDocument),
        (lambda: {"a": {1, 2, 3}}, InvalidDocument),
        (lambda: {"a": Thing()}, InvalidDocument),
        (lambda: {"a": datetime.date(2024, 1, 1)}, InvalidDocument),
        (lambda: {"a": 1 + 2j}, InvalidDocument),
        (lambda: {"ok": 1, "deep": [1, {"x": [2, {"y": object()}]}]}, InvalidDocument),
        (lambda: {1: "non-str key"}, InvalidDocument),
        (lambda: {"a\x00b": "NUL in key"}, InvalidDocument),
        (lambda: {"a": "\ud800"}, UnicodeEncodeError),
        (lambda: {"a": 2**64}, OverflowError),
        (lambda: {"a": -(2**63) - 1}, OverflowError),
    ],
    ids=["object", "set", "class_instance", "date", "complex", "nested", "int_key", "nul_key",
         "lone_surrogate", "int_too_big", "int_too_small"],
)
async def test_insert_one_unencodable_value(coll, sync_client, make_doc, expected_type):
    expected = pymongo_raises(lambda: witness(sync_client, coll).insert_one(make_doc()))
    assert type(expected) is expected_type
    with nothing_submitted(), pytest.raises(Exception) as ours:
        await coll.insert_one(make_doc())
    assert type(ours.value) is expected_type, repr(ours.value)
    await assert_usable(coll, sync_client)


async def test_unencodable_comment_and_filter(coll, sync_client):
    with nothing_submitted():
        with pytest.raises(InvalidDocument):
            await coll.insert_one({"a": 1}, comment=object())
        with pytest.raises(InvalidDocument):
            await coll.insert_many([{"a": 1}], comment={1, 2})
        with pytest.raises(InvalidDocument):
            await coll.find_one({"a": object()})
        with pytest.raises(InvalidDocument):
            await coll.find_one({}, comment=Thing())
        with pytest.raises(InvalidDocument):
            await coll.database.command({"ping": 1, "x": object()})
    await assert_usable(coll, sync_client)


# ---- size limit ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload", [b"x" * (17 * MIB), "y" * (17 * MIB)], ids=["bytes_17MiB", "str_17MiB"]
)
async def test_document_over_16mib_is_document_too_large(coll, sync_client, payload):
    expected = pymongo_raises(lambda: witness(sync_client, coll).insert_one({"big": payload}))
    assert type(expected) is DocumentTooLarge
    with nothing_submitted(), pytest.raises(DocumentTooLarge):
        await coll.insert_one({"big": payload})
    with nothing_submitted(), pytest.raises(DocumentTooLarge):
        await coll.insert_one(RawBSONDocument(bson.encode({"_id": 1, "big": payload})))
    await assert_usable(coll, sync_client)


def _doc_of_size(size: int, _id: str) -> dict:
    doc = {"_id": _id, "pad": b""}
    doc["pad"] = b"p" * (size - len(bson.encode(doc)))
    assert len(bson.encode(doc)) == size
    return doc


async def test_document_size_boundary(coll, sync_client):
    with nothing_submitted(), pytest.raises(DocumentTooLarge):
        await coll.insert_one(_doc_of_size(MAX_BSON_SIZE + 1, "one-over"))
    # Exactly the limit, and a few KiB under it, are accepted and stored whole.
    for _id, size in (("at-limit", MAX_BSON_SIZE), ("just-under", MAX_BSON_SIZE - 4 * 1024)):
        res = await coll.insert_one(_doc_of_size(size, _id))
        assert res.inserted_id == _id
        stored = witness(sync_client, coll).find_one({"_id": _id})
        assert len(bson.encode(stored)) == size
        got = await coll.find_one(_id)
        assert got["pad"] == stored["pad"] and len(got["pad"]) == len(stored["pad"])
    await assert_usable(coll, sync_client, expected_count=2)


async def test_oversized_filter_and_command_are_document_too_large(coll, sync_client):
    """PyMongo refuses a find or command document over the limit before sending it."""
    big = "f" * (17 * MIB)
    w = witness(sync_client, coll)
    assert type(pymongo_raises(lambda: w.find_one({"a": big}))) is DocumentTooLarge
    assert type(pymongo_raises(lambda: w.database.command({"ping": 1, "pad": big}))) is DocumentTooLarge
    with nothing_submitted(), pytest.raises(DocumentTooLarge):
        await coll.find_one({"a": big})
    with nothing_submitted(), pytest.raises(DocumentTooLarge):
        await coll.database.command({"ping": 1, "pad": big})
    await assert_usable(coll, sync_client)


# ---- insert_many ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, expected_type",
    [({"bad": object()}, InvalidDocument), ("not a document", TypeError),
     ({"big": b"z" * (17 * MIB)}, DocumentTooLarge), ({"a": 2**70}, OverflowError)],
    ids=["unencodable", "non_mapping", "too_large", "int_overflow"],
)
async def test_insert_many_one_bad_document_sends_nothing(coll, sync_client, bad, expected_type):
    good = [{"i": i} for i in range(5)]
    for ordered in (True, False):
        for docs in (good[:2] + [bad] + good[2:], iter(good + [bad])):  # a list, a one-shot iterator
            with nothing_submitted(), pytest.raises(Exception) as ours:
                await coll.insert_many(docs, ordered=ordered)
            assert type(ours.value) is expected_type, (ordered, repr(ours.value))
    await assert_usable(coll, sync_client)


@pytest.mark.parametrize(
    "documents",
    [[], {"a": 1}, 5, None, "abc", [{"a": 1}, 5], iter([])],
    ids=["empty_list", "mapping", "int", "None", "str", "int_among_docs", "empty_iterator"],
)
async def test_insert_many_bad_argument_matches_pymongo(coll, sync_client, documents):
    expected = pymongo_raises(lambda: witness(sync_client, coll).insert_many(documents))
    if isinstance(documents, type(iter([]))):
        documents = iter([])  # PyMongo consumed the first one
    with nothing_submitted(), pytest.raises(Exception) as ours:
        await coll.insert_many(documents)
    assert isinstance(ours.value, type(expected)), f"PyMongo raises {expected!r}, asyncmongo {ours.value!r}"
    await assert_usable(coll, sync_client)


# ---- find_one and command arguments --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"skip": "x"},
        {"skip": 1.5},
        {"projection": 5},
        {"sort": 5},
        {"hint": 5},
        {"collation": 5},
        {"let": 5},
        {"allow_disk_use": "x"},
        {"filter": {"a": Thing()}},
        {"comment": object()},
        {"no_such_argument": 1},
    ],
    ids=lambda kw: "-".join(f"{k}={type(v).__name__}" for k, v in kw.items()),
)
async def test_find_one_bad_arguments_match_pymongo(coll, sync_client, kwargs):
    expected = pymongo_raises(lambda: witness(sync_client, coll).find_one(**kwargs))
    before = counters()["jobs_submitted"]
    with pytest.raises(Exception) as ours:
        await coll.find_one(**kwargs)
    assert isinstance(ours.value, type(expected)), f"PyMongo raises {expected!r}, asyncmongo {ours.value!r}"
    assert counters()["jobs_submitted"] == before, "the refused find was sent to the server"
    await assert_usable(coll, sync_client)


@pytest.mark.parametrize("command", [5, None, 1.5, [("ping", 1)]], ids=["int", "None", "float", "list"])
async def test_command_not_str_or_mapping_is_type_error(coll, sync_client, command):
    with nothing_submitted(), pytest.raises(TypeError):
        await coll.database.command(command)
    with nothing_submitted(), pytest.raises(TypeError):
        await coll.database.command("ping", codec_options="not codec options")
    assert (await coll.database.command("ping"))["ok"] == 1.0
    await assert_usable(coll, sync_client)


# ---- client construction -------------------------------------------------------------------------


@contextlib.contextmanager
def clean_failed_construction():
    """A refused client starts no worker thread and leaves no 'Unclosed AsyncMongoClient' behind."""
    workers = counters()["workers_live"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
        gc.collect()
    assert counters()["workers_live"] == workers
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]


_BAD_URIS = [
    "mongodb://",
    "mongodb://host:notaport",
    "notmongodb://x",
    "mongodb://a/?unknownOption=1",
    "mongodb://a/?maxPoolSize=-1",
    "mongodb://a:99999",
    "mongodb://%zz@a",
    "mongodb://u:p:q@a",
    "mongodb://a/bad db",
    "mongodb://a/?w=0&journal=true",
    "mongodb://a,b/?directConnection=true",
    "mongodb://a/?ssl=true&tls=false",
    "mongodb://a/?heartbeatFrequencyMS=10",
    "",
]


@pytest.mark.parametrize("uri", _BAD_URIS)
async def test_bad_uri_matches_pymongo(uri):
    """Where PyMongo raises, we raise the same class (or a subclass); where PyMongo only warns and
    ignores the option (the connection-string spec's rule for unknown keys and invalid values), so
    must we."""
    expected, pymongo_warnings = pymongo_client_outcome(uri)
    with clean_failed_construction() as caught:
        if expected is not None:
            with pytest.raises(Exception) as ours:
                AsyncMongoClient(uri, connect=False)
            assert isinstance(ours.value, type(expected)), (
                f"PyMongo raises {expected!r}, asyncmongo {ours.value!r}"
            )
        else:
            try:
                client = AsyncMongoClient(uri, connect=False)
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"PyMongo accepts {uri!r} (warning {pymongo_warnings}), asyncmongo raises {exc!r}")
            await client.close()
            ours_warned = [w.category for w in caught]
            for category in pymongo_warnings:
                assert any(issubclass(c, category) for c in ours_warned), (category, ours_warned)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"maxPoolSize": -1},
        {"maxPoolSize": "x"},
        {"serverSelectionTimeoutMS": "x"},
        {"serverSelectionTimeoutMS": -1},
        {"fooBar": 1},
        {"document_class": list},
        {"tz_aware": "yes"},
        {"tz_aware": 1},
        {"uuidRepresentation": "bogus"},
        {"tzinfo": datetime.timezone.utc},
        {"tzinfo": "UTC", "tz_aware": True},
        {"w": -1},
        {"w": "majority", "wTimeoutMS": -5},
        {"readPreference": "bogus"},
        {"replicaSet": 5},
        {"type_registry": 5},
        {"retryWrites": "maybe"},
        {"appname": "x" * 200},
        {"localThresholdMS": -1},
        {"heartbeatFrequencyMS": 10},
        {"minPoolSize": 10, "maxPoolSize": 5},
    ],
    ids=lambda kw: "-".join(f"{k}={str(v)[:10]}" for k, v in kw.items()),
)
async def test_bad_keyword_option_matches_pymongo(kwargs):
    expected, _ = pymongo_client_outcome("mongodb://localhost", **kwargs)
    assert expected is not None, "PyMongo accepts this option; the case is wrong"
    with clean_failed_construction():
        try:
            client = AsyncMongoClient("mongodb://localhost", connect=False, **kwargs)
        except Exception as exc:  # noqa: BLE001
            assert isinstance(exc, type(expected)), f"PyMongo raises {expected!r}, asyncmongo {exc!r}"
        else:
            await client.close()
            pytest.fail(f"PyMongo raises {expected!r}, asyncmongo accepts {kwargs}")


@pytest.mark.parametrize(
    "args",
    [("localhost", "27017"), ("localhost", 1.5), (["localhost", 5],), (5,)],
    ids=["port_str", "port_float", "host_list_with_int", "host_int"],
)
def test_bad_host_or_port_type_is_type_error(args):
    expected, _ = pymongo_client_outcome(*args)
    assert type(expected) is TypeError
    with clean_failed_construction(), pytest.raises(TypeError):
        AsyncMongoClient(*args, connect=False)


@pytest.mark.parametrize(
    "uri, kwargs, option",
    [
        ("mongodb://localhost", {"maxConnecting": 2}, "maxconnecting"),
        ("mongodb://localhost/?maxConnecting=2", {}, "maxconnecting"),
        ("mongodb://localhost", {"server_api": ServerApi("1")}, "server_api"),
        ("mongodb://localhost", {"serverMonitoringMode": "poll"}, "servermonitoringmode"),
    ],
    ids=["maxConnecting", "uri_maxConnecting", "server_api", "serverMonitoringMode"],
)
def test_option_pymongo_accepts_but_we_cannot_honour(uri, kwargs, option):
    expected, _ = pymongo_client_outcome(uri, **kwargs)
    assert expected is None, f"PyMongo refuses this option too: {expected!r}"
    with clean_failed_construction(), pytest.raises(ConfigurationError) as ours:
        AsyncMongoClient(uri, connect=False, **kwargs)
    assert option in str(ours.value).lower(), f"the message does not name the option: {ours.value}"


@pytest.mark.parametrize("wakeup", ["nope", 1, ""])
def test_bad_wakeup_is_configuration_error(wakeup):
    with clean_failed_construction(), pytest.raises(ConfigurationError, match="wakeup"):
        AsyncMongoClient("mongodb://localhost", connect=False, wakeup=wakeup)


def test_bad_wakeup_environment_is_configuration_error(monkeypatch):
    monkeypatch.setenv("ASYNCMONGO_WAKEUP", "carrier-pigeon")
    with clean_failed_construction(), pytest.raises(ConfigurationError, match="carrier-pigeon"):
        AsyncMongoClient("mongodb://localhost", connect=False)


@pytest.mark.parametrize("wakeup", ["eventfd", "threadsafe"])
async def test_valid_wakeup_values_work(make_client, wakeup):
    client = make_client(wakeup=wakeup)
    assert (await client.admin.command("ping"))["ok"] == 1.0


# ---- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", "a b", "a.b", "a$b", "a/b", "a\\b", 'a"b', "a\x00b", 5, b"bytes"],
    ids=["empty", "space", "dot", "dollar", "slash", "backslash", "quote", "nul", "int", "bytes"],
)
def test_bad_database_name_matches_pymongo(client, sync_client, name):
    expected = pymongo_raises(lambda: sync_client[name])
    assert type(expected) in (InvalidName, TypeError)
    with nothing_submitted():
        for get in (lambda: client[name], lambda: client.get_database(name)):
            with pytest.raises(Exception) as ours:
                get()
            assert type(ours.value) is type(expected), f"PyMongo raises {expected!r}, asyncmongo {ours.value!r}"


def test_no_default_database_matches_pymongo(client, sync_client):
    expected = pymongo_raises(lambda: sync_client.get_database())
    with pytest.raises(Exception) as ours:
        client.get_database()
    assert isinstance(ours.value, type(expected)) and isinstance(ours.value, ConfigurationError)


@pytest.mark.parametrize(
    "name", ["", "$x", "a$b", "a..b", ".a", "a.", "a\x00b", 5, None],
    ids=["empty", "dollar_start", "dollar_inside", "double_dot", "leading_dot", "trailing_dot", "nul",
         "int", "None"],
)
def test_bad_collection_name_matches_pymongo(client, db_name, sync_client, name):
    expected = pymongo_raises(lambda: sync_client[db_name][name])
    assert type(expected) in (InvalidName, TypeError)
    db = client[db_name]
    with nothing_submitted():
        for get in (lambda: db[name], lambda: db.get_collection(name)):
            with pytest.raises(Exception) as ours:
                get()
            assert type(ours.value) is type(expected), f"PyMongo raises {expected!r}, asyncmongo {ours.value!r}"
        # A sub-collection with a bad part is refused the same way.
        with pytest.raises(InvalidName):
            db["items"]["$bad"]


# ---- use after close -----------------------------------------------------------------------------


async def test_use_after_close_is_invalid_operation(make_client, db_name, sync_client):
    client = make_client()
    coll = client[db_name]["items"]
    await coll.insert_one({"before": "close"})
    await client.close()
    await client.close()  # a second close is fine
    operations = [
        lambda: coll.insert_one({"after": "close"}),
        lambda: coll.insert_many([{"after": "close"}]),
        lambda: coll.find_one({}),
        lambda: client[db_name].command("ping"),
        lambda: client.admin.command({"ping": 1}),
        lambda: coll.drop(),
        lambda: client.server_info(),
        lambda: client.list_database_names(),
    ]
    for op in operations:
        with pytest.raises(InvalidOperation):
            await op()
    # Objects made after close exist, but cannot be used either.
    with pytest.raises(InvalidOperation):
        await client[db_name]["other"].find_one()
    assert sync_client[db_name]["items"].count_documents({}) == 1  # the drop never ran
    assert sync_client[db_name]["items"].count_documents({"after": "close"}) == 0
    await client.close()
    sync_client.drop_database(db_name)


async def test_use_after_async_with_is_invalid_operation(server, db_name, sync_client):
    async with AsyncMongoClient(server.uri) as client:
        coll = client[db_name]["items"]
        await coll.insert_one({"inside": True})
    with pytest.raises(InvalidOperation):
        await coll.insert_one({"inside": False})
    with pytest.raises(InvalidOperation):
        await coll.find_one()
    with pytest.raises(InvalidOperation):
        await client.admin.command("ping")
    await client.close()
    assert sync_client[db_name]["items"].count_documents({}) == 1
    sync_client.drop_database(db_name)


# ---- explicit sessions ---------------------------------------------------------------------------


_SESSION_OPS = {
    "insert_one": lambda c, s: c.insert_one({"a": 1}, session=s),
    "insert_many": lambda c, s: c.insert_many([{"a": 1}, {"a": 2}], session=s),
    "find_one": lambda c, s: c.find_one({}, session=s),
    "find_one_positional_filter": lambda c, s: c.find_one({"a": 1}, None, session=s),
    "command": lambda c, s: c.database.command("ping", session=s),
    "drop": lambda c, s: c.drop(session=s),
    "server_info": lambda c, s: c.database.client.server_info(session=s),
    "list_database_names": lambda c, s: c.database.client.list_database_names(session=s),
}


@pytest.mark.parametrize("op", list(_SESSION_OPS))
async def test_foreign_session_is_refused_not_ignored(coll, sync_client, make_client, op):
    # Anything but a session of this client's: PyMongo's session of another client, any object,
    # or one of our sessions from another client.
    await coll.insert_one({"pre": "existing"})  # so that a drop would be visible
    other = make_client().start_session()
    with sync_client.start_session() as session:
        for s in (session, object()):
            with nothing_submitted(), pytest.raises(TypeError, match="session"):
                await _SESSION_OPS[op](coll, s)
        with nothing_submitted(), pytest.raises(InvalidOperation, match="session"):
            await _SESSION_OPS[op](coll, other)
    await assert_usable(coll, sync_client, expected_count=1)


@pytest.mark.parametrize(
    "kwargs",
    [{"codec_options": 1}, {"read_preference": "secondary"}, {"write_concern": {"w": 1}},
     {"read_concern": "majority"}],
)
def test_collection_options_are_type_checked_as_pymongo(server, kwargs):
    witness = pymongo.MongoClient(server.uri, connect=False)
    try:
        with pytest.raises(TypeError) as expected:
            witness.db.get_collection("c", **kwargs)
    finally:
        witness.close()
    client = AsyncMongoClient(server.uri, connect=False)
    try:
        with pytest.raises(TypeError) as got:
            client.db.get_collection("c", **kwargs)
        assert str(got.value) == str(expected.value)
    finally:
        asyncio.run(client.close())

"""Failures a user meets: an unreachable server, a server that crashes or a network that drops
connections while operations are in flight (every operation ends, with PyMongo's exception classes,
and the same client recovers), and the mapping of server errors to pymongo.errors.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pymongo
import pymongo.errors
import pytest
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DuplicateKeyError,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)
from pymongo.results import InsertOneResult

from asyncmongo import _core
from tests.proxy import DelayProxy
from tests.servers import ServerProcess

# Every wait on the driver is bounded: a hang fails the test instead of blocking the run.
HANG_LIMIT = 20


def _free_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def crash_server():
    """A server of this test's own, which it may SIGKILL and restart (same port, same data)."""
    srv = ServerProcess().start()
    yield srv
    srv.kill()  # faster than a graceful stop; its storage is discarded anyway
    srv.stop()


@pytest.fixture
def crash_proxy(crash_server):
    """A delaying, connection-dropping proxy in front of crash_server (starts with no delay)."""
    with DelayProxy(crash_server.host, crash_server.port, 0.0) as proxy:
        yield proxy


@pytest.fixture
def proxy(server):
    """A delaying, connection-dropping proxy in front of the session server (no delay at first)."""
    with DelayProxy(server.host, server.port, 0.0) as p:
        yield p


async def _timed(coro):
    start = time.monotonic()
    try:
        await asyncio.wait_for(coro, HANG_LIMIT)
    except BaseException as exc:  # noqa: BLE001 - returned to the test, which checks its type
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


async def _warm_up(proxy, coll, n: int) -> None:
    """Run n slow operations at once, so that n workers each hold an open connection."""
    proxy.set_delay(0.1)
    await asyncio.gather(*[coll.find_one({"_id": "warm"}) for _ in range(n)])
    assert coll.database.client._core.stats()["workers"] >= n


# -- unreachable server --------------------------------------------------------------------------


async def test_unreachable_server_times_out_server_selection(make_client):
    client = make_client(f"mongodb://127.0.0.1:{_free_port()}", serverSelectionTimeoutMS=500)
    coll = client.failures.items

    for op in (lambda: coll.find_one({"_id": 1}), lambda: coll.insert_one({"x": 1})):
        exc, elapsed = await _timed(op())
        assert type(exc) is ServerSelectionTimeoutError, repr(exc)
        # Same class hierarchy as PyMongo: catchable as AutoReconnect / ConnectionFailure.
        assert isinstance(exc, AutoReconnect) and isinstance(exc, ConnectionFailure)
        assert "127.0.0.1" in str(exc)
        assert 0.4 <= elapsed < 2.5, elapsed


async def test_many_concurrent_operations_on_unreachable_server_all_fail(make_client):
    client = make_client(f"mongodb://127.0.0.1:{_free_port()}", serverSelectionTimeoutMS=500)
    coll = client.failures.items
    ops = [coll.find_one({"_id": i}) if i % 2 else coll.insert_one({"_id": i}) for i in range(50)]
    start = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*ops, return_exceptions=True), HANG_LIMIT)
    elapsed = time.monotonic() - start
    assert [type(r) for r in results] == [ServerSelectionTimeoutError] * 50, results
    # They wait in parallel (one worker each), not one after the other.
    assert 0.4 <= elapsed < 5, elapsed


# -- crash and connection loss ---------------------------------------------------------------------


async def test_server_killed_mid_flight_then_restarted(crash_server, crash_proxy, make_client):
    client = make_client(crash_proxy.uri, serverSelectionTimeoutMS=1000)
    coll = client.failures.items
    await coll.insert_one({"_id": "before", "v": 1})
    await _warm_up(crash_proxy, coll, 32)

    # Replies now take 0.3 s to come back: the 32 operations below are surely in flight when
    # the server dies (each on its own worker, nothing queued).
    crash_proxy.set_delay(0.3)

    async def op(i):
        if i % 2:
            return await coll.find_one({"_id": "before"})
        return await coll.insert_one({"_id": f"crash-{i}"})

    tasks = [asyncio.ensure_future(op(i)) for i in range(32)]
    await asyncio.sleep(0.1)
    assert not any(t.done() for t in tasks)
    assert client._core.stats()["queued"] == 0
    # A crash as the client sees it: the process dies and the replies it had not yet delivered
    # never arrive (the proxy resets the connections it was holding them on).
    crash_server.kill()
    crash_proxy.drop_connections()
    start = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG_LIMIT)
    assert time.monotonic() - start < 10
    for r in results:
        # AutoReconnect for the ones whose connection broke; ServerSelectionTimeoutError (a
        # subclass) for a retry that found the server gone. Both are ConnectionFailure.
        assert isinstance(r, ConnectionFailure), repr(r)
        assert type(r) in (AutoReconnect, ServerSelectionTimeoutError), repr(r)

    # While it is down, a new operation fails the same way, promptly.
    exc, elapsed = await _timed(coll.find_one({"_id": "before"}))
    assert isinstance(exc, ConnectionFailure), repr(exc)
    assert elapsed < 5

    crash_proxy.set_delay(0.0)
    crash_server.restart()
    # The SAME client finds the server again (libmongoc rescans the topology).
    deadline = time.monotonic() + 10
    while True:
        try:
            doc = await asyncio.wait_for(coll.find_one({"_id": "before"}), HANG_LIMIT)
            break
        except ConnectionFailure:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    # Data written before the crash survived it.
    assert doc == {"_id": "before", "v": 1}
    res = await coll.insert_one({"_id": "after"})
    assert isinstance(res, InsertOneResult) and res.inserted_id == "after"
    assert await coll.find_one({"_id": "after"}) == {"_id": "after"}


async def test_dropped_connections_fail_in_flight_operations(proxy, make_client, db_name, sync_client):
    # Retries off: each operation in flight sees its own connection break.
    client = make_client(proxy.uri, serverSelectionTimeoutMS=2000, retryReads=False, retryWrites=False)
    coll = client[db_name].items
    try:
        await coll.insert_one({"_id": "before"})
        await _warm_up(proxy, coll, 16)
        proxy.set_delay(0.3)
        ops = [
            asyncio.ensure_future(
                coll.find_one({"_id": "before"}) if i % 2 else coll.insert_one({"_id": f"d{i}"})
            )
            for i in range(16)
        ]
        await asyncio.sleep(0.1)
        assert not any(t.done() for t in ops)
        proxy.drop_connections()
        results = await asyncio.wait_for(asyncio.gather(*ops, return_exceptions=True), HANG_LIMIT)
        for r in results:
            assert type(r) is AutoReconnect, repr(r)
            assert isinstance(r, ConnectionFailure)
        # The next operation succeeds: libmongoc opens new connections.
        proxy.set_delay(0.0)
        assert await asyncio.wait_for(coll.find_one({"_id": "before"}), HANG_LIMIT) == {"_id": "before"}
        assert (await coll.insert_one({"_id": "after"})).inserted_id == "after"
        assert sync_client[db_name].items.find_one({"_id": "after"}) == {"_id": "after"}
    finally:
        sync_client.drop_database(db_name)


async def test_retryable_operations_survive_one_dropped_connection(
    proxy, make_client, db_name, sync_client
):
    # With PyMongo's defaults (retryReads, retryWrites) one broken connection is retried away.
    client = make_client(proxy.uri, serverSelectionTimeoutMS=5000)
    coll = client[db_name].items
    try:
        await coll.insert_one({"_id": "before"})
        await _warm_up(proxy, coll, 16)
        proxy.set_delay(0.3)
        ops = [
            asyncio.ensure_future(
                coll.find_one({"_id": "before"}) if i % 2 else coll.insert_one({"_id": f"r{i}"})
            )
            for i in range(16)
        ]
        await asyncio.sleep(0.1)
        proxy.drop_connections()
        results = await asyncio.wait_for(asyncio.gather(*ops, return_exceptions=True), HANG_LIMIT)
        for i, r in enumerate(results):
            if i % 2:
                assert r == {"_id": "before"}
            else:
                assert isinstance(r, InsertOneResult) and r.inserted_id == f"r{i}", repr(r)
        # Each retried insert is on the server exactly once.
        assert sorted(d["_id"] for d in sync_client[db_name].items.find({"_id": {"$regex": "^r"}})) == (
            sorted(f"r{i}" for i in range(0, 16, 2))
        )
    finally:
        sync_client.drop_database(db_name)


async def test_socket_timeout_raises_network_timeout(proxy, make_client):
    # PyMongo raises NetworkTimeout (an AutoReconnect) when socketTimeoutMS expires; the design's
    # table says the same. Retries off, so that the first attempt's error is the one raised.
    client = make_client(proxy.uri, socketTimeoutMS=300, retryReads=False, retryWrites=False)
    coll = client.failures.items
    assert await coll.find_one({"_id": "nothing"}) is None
    proxy.set_delay(1.0)
    exc, elapsed = await _timed(coll.find_one({"_id": "nothing"}))
    assert isinstance(exc, AutoReconnect), repr(exc)
    assert elapsed < 0.9, elapsed  # the socket wait was bounded by socketTimeoutMS
    witness = pymongo.MongoClient(proxy.uri, socketTimeoutMS=300, retryReads=False)
    try:
        with pytest.raises(AutoReconnect) as pymongo_exc:
            witness.failures.items.find_one({"_id": "nothing"})
    finally:
        witness.close()
    assert type(pymongo_exc.value) is NetworkTimeout
    assert type(exc) is NetworkTimeout, f"asyncmongo raised {exc!r}; PyMongo raises NetworkTimeout"


# -- error mapping -------------------------------------------------------------------------------


async def test_duplicate_key_error_matches_pymongo(coll, sync_client):
    await coll.insert_one({"_id": 7, "name": "first"})
    with pytest.raises(DuplicateKeyError) as info:
        await coll.insert_one({"_id": 7, "name": "second"})
    exc = info.value
    assert exc.code == 11000
    assert exc.details["keyValue"] == {"_id": 7}
    assert "E11000" in exc.details["errmsg"]
    assert "duplicate key" in str(exc)
    # What PyMongo raises for the same insert on the same server.
    with pytest.raises(DuplicateKeyError) as witness:
        sync_client[coll.database.name][coll.name].insert_one({"_id": 7, "name": "second"})
    assert exc.code == witness.value.code
    assert exc.details == witness.value.details
    # The first document was not overwritten.
    assert await coll.find_one({"_id": 7}) == {"_id": 7, "name": "first"}


async def test_unknown_command_raises_operation_failure(client, sync_client):
    with pytest.raises(OperationFailure) as info:
        await client.admin.command("thisCommandDoesNotExist")
    exc = info.value
    assert type(exc) is OperationFailure
    assert exc.code == 59
    assert exc.details["ok"] == 0
    assert exc.details["code"] == 59
    assert "thisCommandDoesNotExist" in exc.details["errmsg"]
    with pytest.raises(OperationFailure) as witness:
        sync_client.admin.command("thisCommandDoesNotExist")
    assert exc.code == witness.value.code
    assert exc.details["codeName"] == witness.value.details["codeName"]
    # check=False returns the reply instead, as in PyMongo.
    reply = await client.admin.command("thisCommandDoesNotExist", check=False)
    assert reply["ok"] == 0 and reply["code"] == 59


def test_exception_classes_are_pymongos():
    classes = _core.exception_classes()
    expected = {
        "PyMongoError", "ConnectionFailure", "AutoReconnect", "NetworkTimeout",
        "ServerSelectionTimeoutError", "OperationFailure", "ExecutionTimeout", "CursorNotFound",
        "WriteError", "DuplicateKeyError", "BulkWriteError", "InvalidOperation",
        "ConfigurationError", "InvalidURI", "WriteConcernError",
    }
    assert expected <= set(classes), expected - set(classes)
    for name, cls in classes.items():
        # The very classes users catch with PyMongo, not look-alikes.
        assert cls is getattr(pymongo.errors, name), name


# ---- errors injected by the server (configureFailPoint; test commands are on) ---------------------


def _fail_next(sync_client, command: str, **data) -> None:
    sync_client.admin.command(
        "configureFailPoint", "failCommand", mode={"times": 1},
        data={"failCommands": [command], **data},
    )


async def test_injected_server_errors_raise_pymongos_classes(make_client, sync_client, db_name):
    from pymongo.errors import NotPrimaryError, OperationFailure, WriteConcernError

    sync_client[db_name]["items"].insert_one({"_id": 1})

    def coll():
        # A client per case: after a "not primary" or "shutting down" answer a driver marks the
        # server unknown, and this server takes long to be found again (PyMongo's client too).
        return make_client(retryReads=False, retryWrites=False)[db_name]["items"]

    try:
        # A command error in a write sent through libmongoc's bulk API: the server's code and
        # message in details, as PyMongo has them; the client goes on working.
        c = coll()
        _fail_next(sync_client, "insert", errorCode=8)
        with pytest.raises(OperationFailure) as info:
            await c.insert_one({"_id": 2})
        assert info.value.code == 8 and info.value.details["code"] == 8
        assert await c.find_one({"_id": 1}) == {"_id": 1}
        # A writeConcernError is a WriteConcernError whatever its code, even a "not primary" one.
        _fail_next(sync_client, "insert", writeConcernError={"code": 91, "errmsg": "shutting down"})
        with pytest.raises(WriteConcernError) as info:
            await coll().insert_one({"_id": 3})
        assert info.value.code == 91
        # "Not primary" codes: NotPrimaryError (an AutoReconnect), with the reply as details.
        _fail_next(sync_client, "find", errorCode=10107)
        with pytest.raises(NotPrimaryError) as info:
            await coll().find_one({})
        assert info.value.details["code"] == 10107
    finally:
        sync_client.admin.command("configureFailPoint", "failCommand", mode="off")
        sync_client.drop_database(db_name)

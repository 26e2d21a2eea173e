"""Command monitoring: PyMongo CommandListener objects get PyMongo's started/succeeded/failed events
(names, database, request and operation ids, durations, replies, failures) before the awaited call
returns, in the same sequence PyMongo's client publishes for the same calls; raising listeners do
not break operations; pool listeners are warned about (libmongoc has no pool events); pymongo.monitoring.register works."""

from __future__ import annotations

import asyncio
import logging

import pymongo
import pytest
from pymongo import monitoring
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure
from pymongo.monitoring import CommandFailedEvent, CommandStartedEvent, CommandSucceededEvent

from tests.proxy import DelayProxy


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.events: list = []

    def started(self, event):
        self.events.append(event)

    def succeeded(self, event):
        self.events.append(event)

    def failed(self, event):
        self.events.append(event)

    def take(self) -> list:
        out, self.events = self.events, []
        return out


class Raising(monitoring.CommandListener):
    def started(self, event):
        raise RuntimeError("listener bug in started")

    def succeeded(self, event):
        raise RuntimeError("listener bug in succeeded")

    def failed(self, event):
        raise RuntimeError("listener bug in failed")


def _shape(events) -> list[tuple[str, str, str]]:
    return [(type(e).__name__, e.command_name, e.database_name) for e in events]


def _check_pair(started, finished, address) -> None:
    """What a user checks on a started/finished pair."""
    assert isinstance(started, CommandStartedEvent)
    assert finished.request_id == started.request_id
    assert finished.operation_id == started.operation_id
    assert finished.command_name == started.command_name
    assert finished.database_name == started.database_name
    assert started.connection_id == finished.connection_id == address
    assert finished.duration_micros > 0


async def test_insert_find_command_events(make_client, db_name, server, sync_client):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    coll = client[db_name]["items"]
    address = (server.host, server.port)

    await coll.insert_one({"_id": 1, "x": 1})
    # Delivered before the awaited call returned: no sleep, the events are already here.
    started, succeeded = rec.take()
    _check_pair(started, succeeded, address)
    assert isinstance(succeeded, CommandSucceededEvent)
    assert started.command_name == "insert" and started.database_name == db_name
    assert started.command["insert"] == "items" and started.command["$db"] == db_name
    assert started.command["documents"] == [{"_id": 1, "x": 1}]
    assert succeeded.reply["ok"] == 1.0 and succeeded.reply["n"] == 1

    assert await coll.find_one({"x": 1}) == {"_id": 1, "x": 1}
    started, succeeded = rec.take()
    _check_pair(started, succeeded, address)
    assert started.command_name == "find" and started.command["filter"] == {"x": 1}
    assert succeeded.reply["cursor"]["firstBatch"] == [{"_id": 1, "x": 1}]

    await client[db_name].command("ping")
    started, succeeded = rec.take()
    _check_pair(started, succeeded, address)
    assert started.command_name == "ping" and succeeded.reply["ok"] == 1.0

    # Request ids are distinct per command on one connection (libmongoc counts them per pooled
    # client, so two workers' commands may share one).
    await coll.find_one({"x": 2})
    again, _ = rec.take()
    if again.server_connection_id == started.server_connection_id:
        assert again.request_id != started.request_id


async def test_failed_events(make_client, db_name, server):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    with pytest.raises(OperationFailure) as exc:
        await client[db_name].command("notacommand")
    started, failed = rec.take()
    _check_pair(started, failed, (server.host, server.port))
    assert isinstance(failed, CommandFailedEvent)
    assert failed.command_name == "notacommand"
    assert failed.failure["code"] == exc.value.code == 59  # CommandNotFound
    assert failed.failure["ok"] == 0

    # A write error is a successful command (ok: 1 with writeErrors), as PyMongo publishes it.
    coll = client[db_name]["items"]
    await coll.insert_one({"_id": 1})
    rec.take()
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"_id": 1})
    started, succeeded = rec.take()
    assert isinstance(succeeded, CommandSucceededEvent)
    assert succeeded.reply["writeErrors"][0]["code"] == 11000
    await client.drop_database(db_name)


async def test_same_sequence_as_pymongo(make_client, db_name, server):
    """The witness: PyMongo's own client, running the same calls with the same kind of listener,
    publishes the same events (type, command name, database)."""
    theirs = Recorder()
    sync = pymongo.MongoClient(server.uri, event_listeners=[theirs])
    ours = Recorder()
    client = make_client(event_listeners=[ours])
    try:
        for c in (sync, client):
            coll = c[db_name]["items"]
            calls = [
                lambda: coll.insert_one({"_id": 1}),
                lambda: coll.insert_one({"_id": 1}),
                lambda: coll.find_one({"_id": 1}),
                lambda: c[db_name].command("ping"),
                lambda: c[db_name].command("notacommand"),
                lambda: coll.create_index("x"),
                lambda: coll.index_information(),
                lambda: c.drop_database(db_name),
            ]
            for call in calls:
                try:
                    result = call()
                    if asyncio.iscoroutine(result):
                        await result
                except (OperationFailure, DuplicateKeyError):
                    pass
    finally:
        sync.close()
    theirs_shape = [s for s in _shape(theirs.events) if s[1] != "endSessions"]  # sent at close
    assert _shape(ours.events) == theirs_shape
    assert len(theirs_shape) == 16


async def test_cursor_getmore_events_carry_the_database(make_client, db_name):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    cursor = await client[db_name].aggregate([{"$documents": [{"a": i} for i in range(5)]}], batchSize=2)
    assert len(await cursor.to_list()) == 5
    names = [(type(e).__name__, e.command_name, e.database_name) for e in rec.events]
    assert names[:2] == [("CommandStartedEvent", "aggregate", db_name),
                         ("CommandSucceededEvent", "aggregate", db_name)]
    assert ("CommandSucceededEvent", "getMore", db_name) in names
    # Every started event is followed by its own outcome, with the same request id.
    for started, finished in zip(rec.events[::2], rec.events[1::2]):
        assert isinstance(started, CommandStartedEvent)
        assert finished.request_id == started.request_id


async def test_raising_listener_does_not_break_the_client(make_client, db_name, caplog):
    rec = Recorder()
    client = make_client(event_listeners=[Raising(), rec])
    coll = client[db_name]["items"]
    with caplog.at_level(logging.ERROR, logger="asyncmongo"):
        await coll.insert_one({"_id": 1})
        assert await coll.find_one({"_id": 1}) == {"_id": 1}
        with pytest.raises(OperationFailure):
            await client[db_name].command("notacommand")
    # The listener after the raising one still got everything.
    assert [type(e).__name__ for e in rec.events] == [
        "CommandStartedEvent", "CommandSucceededEvent"] * 2 + [
        "CommandStartedEvent", "CommandFailedEvent"]
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncmongo"]
    assert sum("raised in started()" in m for m in messages) == 3
    assert sum("raised in succeeded()" in m for m in messages) == 2
    assert sum("raised in failed()" in m for m in messages) == 1
    assert any("listener bug" in (r.exc_text or "") for r in caplog.records)
    await client.drop_database(db_name)


async def test_network_failure_event(make_client, server):
    with DelayProxy(server.host, server.port, 0.0) as proxy:
        rec = Recorder()
        client = make_client(proxy.uri, event_listeners=[rec])
        await client.admin.command("ping")
        rec.take()
        proxy.set_delay(1.0)
        task = asyncio.ensure_future(client.admin.command("ping"))
        await asyncio.sleep(0.3)
        proxy.drop_connections()
        with pytest.raises(AutoReconnect):
            await task
        started, failed = rec.take()[:2]
        assert isinstance(failed, CommandFailedEvent) and failed.command_name == "ping"
        assert failed.request_id == started.request_id
        assert failed.failure["errmsg"]  # no server reply: the network error's message
        assert failed.duration_micros >= 200_000


async def test_listener_validation(make_client):
    # PyMongo's own rules: a list or tuple of listener objects, TypeError otherwise.
    for bad in ("x", [object()]):
        with pytest.raises(TypeError):
            pymongo.MongoClient(event_listeners=bad, connect=False)
        with pytest.raises(TypeError):
            make_client(event_listeners=bad)

    class Pool(monitoring.ConnectionPoolListener):
        pass

    # A pool listener is accepted, with a warning: libmongoc 1.23 reports no pool events.
    pool = Pool()
    with pytest.warns(UserWarning, match="connection pool events"):
        client = make_client(event_listeners=[pool])
    assert client.options.event_listeners == [pool]
    rec = Recorder()
    client = make_client(event_listeners=(rec,))
    assert client.options.event_listeners == [rec]
    # No listener: no APM hook at all, and operations still work.
    plain = make_client(event_listeners=[])
    assert (await plain.admin.command("ping"))["ok"] == 1.0


async def test_globally_registered_listener(make_client, db_name):
    rec = Recorder()
    monitoring.register(rec)
    try:
        client = make_client()
    finally:
        monitoring._LISTENERS.command_listeners.remove(rec)
    await client[db_name].command("ping")
    assert _shape(rec.events) == [("CommandStartedEvent", "ping", db_name),
                                  ("CommandSucceededEvent", "ping", db_name)]
    # A client made after unregistering does not publish to it.
    later = make_client()
    await later[db_name].command("ping")
    assert len(rec.events) == 2

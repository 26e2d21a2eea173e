"""The deployment as the client sees it, and SDAM/heartbeat monitoring, from libmongoc.

Topology facts (``topology_description``, ``nodes``, ``address``, ``primary``, ``secondaries``,
``arbiters``, ``is_primary``, ``is_mongos``) are compared with PyMongo's AsyncMongoClient on the same
server: same values, same shapes (awaitable where PyMongo's are). SDAM listeners get PyMongo's event
classes, on the loop thread, in order; a server restart shows the server going Unknown and back,
with failed then succeeded heartbeats.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
import weakref

import pytest
from pymongo import AsyncMongoClient as PyMongoAsyncClient
from pymongo import monitoring
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError
from pymongo.server_type import SERVER_TYPE
from pymongo.topology_description import TOPOLOGY_TYPE, TopologyDescription

from asyncmongo import AsyncMongoClient, _core
from tests.servers import ServerProcess


class SdamRecorder(monitoring.ServerListener, monitoring.ServerHeartbeatListener,
                   monitoring.TopologyListener):
    """Every SDAM and heartbeat event, with the thread it was delivered on."""

    def __init__(self) -> None:
        self.events: list = []
        self.threads: set[int] = set()

    def _add(self, event) -> None:
        self.events.append(event)
        self.threads.add(threading.get_ident())

    opened = closed = description_changed = _add
    started = succeeded = failed = _add

    def of(self, cls) -> list:
        return [e for e in self.events if isinstance(e, cls)]


async def _until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _changes(rec: SdamRecorder) -> list[tuple[int, int]]:
    return [(e.previous_description.server_type, e.new_description.server_type)
            for e in rec.of(monitoring.ServerDescriptionChangedEvent)]


async def test_topology_facts_match_pymongo(make_client, server):
    ours = make_client(connect=False)
    address = (server.host, server.port)
    # Before discovery: the seeds, Unknown, as PyMongo's unconnected client says.
    td = ours.topology_description
    assert isinstance(td, TopologyDescription)
    assert td.topology_type == TOPOLOGY_TYPE.Unknown
    assert [sd.address for sd in td.server_descriptions().values()] == [address]
    assert ours.nodes == frozenset()

    theirs = PyMongoAsyncClient(server.uri, serverSelectionTimeoutMS=10000)
    try:
        for client in (ours, theirs):
            # Awaitable, and waiting for a writable server.
            assert await client.address == address
            assert await client.is_primary is True
            assert await client.is_mongos is False
        assert await ours.primary == await theirs.primary
        assert await ours.secondaries == await theirs.secondaries == set()
        assert await ours.arbiters == await theirs.arbiters == set()
        assert ours.nodes == theirs.nodes == frozenset({address})
        mine, pymongos = ours.topology_description, theirs.topology_description
        assert mine.topology_type_name == pymongos.topology_type_name
        sd, their_sd = mine.server_descriptions()[address], pymongos.server_descriptions()[address]
        assert sd.server_type_name == their_sd.server_type_name
        assert sd.replica_set_name == their_sd.replica_set_name
        assert sd.max_wire_version == their_sd.max_wire_version
        assert sd.is_writable and sd.round_trip_time is not None and sd.round_trip_time >= 0
        assert mine.has_writable_server() and mine.has_readable_server()
        # What PyMongo's selection helpers find in it.
        assert [s.address for s in mine.apply_selector(lambda servers: servers)] == [address]
    finally:
        await theirs.close()


async def test_cursor_address_is_its_server(client, coll):
    await coll.insert_many([{"i": i} for i in range(5)])
    cursor = coll.find(batch_size=2)
    await cursor.next()
    assert cursor.address == await client.address
    agg = await coll.aggregate([{"$match": {}}], batchSize=2)
    assert agg.address == await client.address
    await cursor.close()
    await agg.close()


async def test_server_properties_time_out_without_a_server(make_client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=300)
    for prop in ("address", "is_primary", "is_mongos"):
        with pytest.raises(ServerSelectionTimeoutError):
            await getattr(client, prop)
    assert await client.primary is None
    assert client.nodes == frozenset()
    td = client.topology_description
    assert [sd.server_type for sd in td.server_descriptions().values()] == [SERVER_TYPE.Unknown]


async def test_sdam_events_on_connect(make_client, server):
    rec = SdamRecorder()
    client = make_client(event_listeners=[rec], heartbeatFrequencyMS=500)
    # Made in a running loop: events come with no operation at all.
    await _until(lambda: (SERVER_TYPE.Unknown, SERVER_TYPE.RSPrimary) in _changes(rec))
    assert rec.threads == {threading.get_ident()}
    kinds = [type(e).__name__ for e in rec.events]
    assert kinds[0] == "TopologyOpenedEvent"
    assert kinds.index("ServerOpeningEvent") < kinds.index("ServerHeartbeatStartedEvent")
    assert kinds.index("ServerHeartbeatSucceededEvent") < kinds.index("ServerDescriptionChangedEvent")
    opened = rec.of(monitoring.TopologyOpenedEvent)[0]
    assert all(e.topology_id == opened.topology_id
               for e in rec.events if hasattr(e, "topology_id"))
    ok = rec.of(monitoring.ServerHeartbeatSucceededEvent)[0]
    assert ok.connection_id == (server.host, server.port)
    assert ok.reply.max_wire_version >= 0 and ok.duration > 0
    changed = rec.of(monitoring.TopologyDescriptionChangedEvent)[-1]
    assert changed.new_description.topology_type == TOPOLOGY_TYPE.ReplicaSetWithPrimary
    assert client.topology_description.topology_type == TOPOLOGY_TYPE.ReplicaSetWithPrimary
    # Heartbeats go on, every 500 ms (streaming: awaited hellos).
    n = len(rec.of(monitoring.ServerHeartbeatSucceededEvent))
    await _until(lambda: len(rec.of(monitoring.ServerHeartbeatSucceededEvent)) >= n + 2)


@pytest.fixture
def own_server():
    srv = ServerProcess().start()
    yield srv
    srv.kill()
    srv.stop()


@pytest.mark.parametrize("wakeup", ["eventfd", "threadsafe"])
async def test_server_restart_events_in_order_on_the_loop_thread(make_client, own_server, wakeup):
    rec = SdamRecorder()
    client = make_client(own_server.uri, event_listeners=[rec], heartbeatFrequencyMS=500,
                         serverSelectionTimeoutMS=20000, wakeup=wakeup)
    await client.admin.command("ping")
    await _until(lambda: (SERVER_TYPE.Unknown, SERVER_TYPE.RSPrimary) in _changes(rec))
    up = len(rec.events)

    own_server.kill()
    await _until(lambda: (SERVER_TYPE.RSPrimary, SERVER_TYPE.Unknown) in _changes(rec))
    assert [sd.server_type for sd in client.topology_description.server_descriptions().values()] \
        == [SERVER_TYPE.Unknown]
    assert await client.primary is None
    down = len(rec.events)

    own_server.restart()
    await _until(lambda: _changes(rec)[-1] == (SERVER_TYPE.Unknown, SERVER_TYPE.RSPrimary)
                 and len(rec.events) > down)
    assert (await client.admin.command("ping"))["ok"] == 1.0

    # In order: a failed heartbeat, the server Unknown (and the topology without a primary), then
    # a succeeded heartbeat and the server back.
    after = rec.events[up:]
    def first(pred, start=0):
        return next(i for i, e in enumerate(after) if i >= start and pred(e))
    failed = first(lambda e: isinstance(e, monitoring.ServerHeartbeatFailedEvent))
    unknown = first(lambda e: isinstance(e, monitoring.ServerDescriptionChangedEvent)
                    and e.new_description.server_type == SERVER_TYPE.Unknown)
    no_primary = first(lambda e: isinstance(e, monitoring.TopologyDescriptionChangedEvent)
                       and not e.new_description.has_writable_server(), unknown)
    succeeded = first(lambda e: isinstance(e, monitoring.ServerHeartbeatSucceededEvent), unknown)
    back = first(lambda e: isinstance(e, monitoring.ServerDescriptionChangedEvent)
                 and e.new_description.server_type == SERVER_TYPE.RSPrimary, unknown)
    assert failed < unknown < no_primary < back and unknown < succeeded < back
    assert isinstance(after[failed].reply, AutoReconnect)
    assert after[failed].connection_id == (own_server.host, own_server.port)
    assert after[unknown].previous_description.server_type == SERVER_TYPE.RSPrimary
    assert rec.threads == {threading.get_ident()}


async def test_pool_listener_gets_nothing_and_is_told(make_client):
    class Pool(monitoring.ConnectionPoolListener):
        def __getattribute__(self, name):
            if not name.startswith("_"):
                raise AssertionError(f"asyncmongo invented a pool event: {name}")
            return super().__getattribute__(name)

    with pytest.warns(UserWarning, match="no connection pool monitoring"):
        client = make_client(event_listeners=[Pool()])
    assert (await client.admin.command("ping"))["ok"] == 1.0


async def test_client_with_sdam_listeners_is_collected(server):
    class Holding(SdamRecorder):
        pass

    rec = Holding()
    client = AsyncMongoClient(server.uri, event_listeners=[rec], heartbeatFrequencyMS=500)
    rec.client = client  # a cycle through the listener
    await client.admin.command("ping")
    await _until(lambda: len(rec.events) > 3)
    ref = weakref.ref(client)
    del client, rec
    with pytest.warns(ResourceWarning):
        for _ in range(3):
            gc.collect()
    assert ref() is None
    await _until(lambda: _core.debug_counters()["jobs_live"] == 0)


async def test_events_after_close_are_not_delivered(make_client):
    rec = SdamRecorder()
    client = make_client(event_listeners=[rec], heartbeatFrequencyMS=500)
    await _until(lambda: rec.of(monitoring.ServerHeartbeatSucceededEvent))
    await client.close()
    n = len(rec.events)
    await asyncio.sleep(1.2)
    assert len(rec.events) == n


async def test_latency_window_reaches_libmongoc_in_milliseconds():
    # PyMongo validates localThresholdMS in milliseconds, unlike the other *MS options (seconds).
    client = AsyncMongoClient("mongodb://localhost", localThresholdMS=20, heartbeatFrequencyMS=600,
                              connect=False)
    assert "localThresholdMS=20&" in client.options.mongoc_uri + "&"
    assert "heartbeatFrequencyMS=600" in client.options.mongoc_uri
    settings = client.topology_description._topology_settings
    assert settings.local_threshold_ms == 20 and settings.heartbeat_frequency == 0.6
    await client.close()

"""Tests for the test-support helpers themselves (asyncmongo.testing._server, tests/proxy.py).

They use pymongo's sync client only, so a failure here points at the
scaffolding, not at the asyncmongo driver the rest of the suite exercises.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pymongo
import pytest
from pymongo import WriteConcern
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError

from asyncmongo.testing import _server as servers
from tests.proxy import DelayProxy
from tests.servers import ExternalServer, ServerProcess, server_from_env

DELAY = 0.3


def _client(uri: str, **kwargs: object) -> pymongo.MongoClient:
    kwargs.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(uri, **kwargs)


def _timed_ping(client: pymongo.MongoClient) -> float:
    start = time.monotonic()
    client.admin.command("ping")
    return time.monotonic() - start


@pytest.fixture(scope="module")
def server():
    # Through server_from_env so the proxy tests also run against an external
    # MONGODB_URI server.
    srv = server_from_env()
    try:
        if "MONGODB_URI" not in os.environ:
            assert isinstance(srv, ServerProcess) and srv.running
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def proxy(server):
    with DelayProxy(server.host, server.port) as p:
        yield p


# -- ServerProcess -----------------------------------------------------------


def test_kill_and_restart_keep_data():
    srv = ServerProcess().start()
    client = _client(srv.uri)
    try:
        port, first_pid, storage = srv.port, srv.pid, srv.storage_path
        assert srv.running and srv.uri == f"mongodb://127.0.0.1:{port}"
        # j=True: an unjournaled ack can still be in WiredTiger's log buffer
        # when the SIGKILL lands (mongod behaves the same way).
        docs = client.support.get_collection("docs", write_concern=WriteConcern(j=True))
        docs.insert_one({"_id": 1, "name": "survivor"})
        assert client.support.docs.find_one({"_id": 1})["name"] == "survivor"

        srv.kill()
        assert not srv.running
        with _client(srv.uri, serverSelectionTimeoutMS=300) as probe:
            with pytest.raises(ServerSelectionTimeoutError):
                probe.support.docs.find_one({"_id": 1})

        srv.restart()
        assert srv.running and srv.port == port and srv.pid != first_pid
        # The same client must find the server again on its old address.
        assert client.support.docs.find_one({"_id": 1})["name"] == "survivor"

        # restart() of a running server goes through a graceful stop.
        srv.restart()
        assert client.support.docs.find_one({"_id": 1})["name"] == "survivor"
    finally:
        client.close()
        srv.stop()
    assert not srv.running and not os.path.exists(storage)
    srv.stop()  # idempotent


def test_start_failure_reports_server_output():
    srv = ServerProcess(extra_args=("--no-such-flag",))
    with pytest.raises(RuntimeError, match="no-such-flag"):
        srv.start()
    srv.stop()


def test_version_pin_is_enforced(monkeypatch):
    monkeypatch.setattr(servers.importlib.metadata, "version", lambda name: "0.0.1")
    with pytest.raises(RuntimeError, match=r"pip install SecantusDB==0\.7\.0b3"):
        ServerProcess().start()


def test_server_from_env_uses_external_uri(monkeypatch):
    monkeypatch.setenv("MONGODB_URI", "mongodb://u:p%40w@db.example:27018,other:1/?replicaSet=rs")
    srv = server_from_env()
    assert isinstance(srv, ExternalServer) and srv.external
    assert (srv.host, srv.port) == ("db.example", 27018)
    assert srv.uri == os.environ["MONGODB_URI"]
    srv.stop()


# -- DelayProxy --------------------------------------------------------------


def test_proxy_delay_adds_latency(proxy):
    assert proxy.uri == f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
    with _client(proxy.uri) as client:
        _timed_ping(client)  # connection setup, not measured
        proxy.set_delay(DELAY)
        assert _timed_ping(client) >= DELAY
        proxy.set_delay(0)
        assert _timed_ping(client) < 0.1


def test_proxy_delays_connections_independently(proxy):
    n = 8
    clients = [_client(proxy.uri) for _ in range(n)]
    try:
        for c in clients:
            _timed_ping(c)  # establish every connection before adding latency
        proxy.set_delay(DELAY)
        barrier = threading.Barrier(n)
        durations: list[float] = []

        def run(c: pymongo.MongoClient) -> None:
            barrier.wait()
            durations.append(_timed_ping(c))

        threads = [threading.Thread(target=run, args=(c,)) for c in clients]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = time.monotonic() - start
    finally:
        # close() sends endSessions; with the delay on, 8 closes cost 2.4 s.
        proxy.set_delay(0)
        for c in clients:
            c.close()
    assert len(durations) == n and min(durations) >= DELAY
    assert total < 1.5, f"{n} delayed pings took {total:.2f}s: delays are being serialised"


def test_proxy_delays_chunks_without_cutting_throughput():
    # An echo target makes chunk boundaries and timing fully predictable.
    listener = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except ConnectionResetError:
                pass  # the client side may end with a reset; the echo job is done

    threading.Thread(target=echo, daemon=True).start()
    messages = [f"msg{i};".encode() for i in range(5)]
    expected = b"".join(messages)
    try:
        with DelayProxy("127.0.0.1", listener.getsockname()[1], delay=DELAY) as p:
            with socket.create_connection((p.host, p.port), timeout=5) as sock:
                start = time.monotonic()
                for m in messages:
                    sock.sendall(m)
                    time.sleep(0.05)
                received = b""
                first_at = None
                while len(received) < len(expected):
                    chunk = sock.recv(65536)
                    assert chunk, "proxy closed the connection early"
                    first_at = first_at or time.monotonic() - start
                    received += chunk
                total = time.monotonic() - start
    finally:
        listener.close()
    assert received == expected
    assert first_at is not None and first_at >= DELAY
    # Last message left at ~0.2 s, so it is due at ~0.5 s; serialised
    # delays would need 5 * 0.3 = 1.5 s.
    assert total < 0.9, f"chunks took {total:.2f}s: per-chunk delays are cumulative"


def test_drop_connections_breaks_in_flight_op_then_reconnects(proxy):
    # No retries, so the dropped operation has to surface the failure.
    with _client(proxy.uri, retryReads=False, retryWrites=False) as client:
        _timed_ping(client)
        proxy.set_delay(1.0)
        outcome: list[BaseException | None] = []

        def op() -> None:
            try:
                client.support.dropped.insert_one({"x": 1})
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome.append(exc)

        t = threading.Thread(target=op)
        t.start()
        time.sleep(0.3)  # the reply is now held in the proxy
        proxy.drop_connections()
        t.join(5)
        assert outcome and isinstance(outcome[0], ConnectionFailure), outcome

        proxy.set_delay(0)
        assert _timed_ping(client) < 2  # the client reconnects through the proxy


def test_refuse_blocks_new_connections(proxy):
    proxy.refuse(True)
    with _client(proxy.uri, serverSelectionTimeoutMS=500) as client:
        with pytest.raises(ServerSelectionTimeoutError):
            client.admin.command("ping")
    proxy.refuse(False)
    with _client(proxy.uri) as client:
        assert client.admin.command("ping")["ok"] == 1


def test_proxy_stop_is_idempotent(server):
    p = DelayProxy(server.host, server.port).start()
    assert p.running
    p.stop()
    p.stop()
    assert not p.running
    with pytest.raises(RuntimeError):
        p.set_delay(1)

"""Tests for the test-support helpers themselves (asyncmongo.testing._server, tests/proxy.py).

They use pymongo's sync client only, so a failure here points at the
scaffolding, not at the asyncmongo driver the rest of the suite exercises.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time

import pymongo
import pytest
from pymongo import WriteConcern
from pymongo.errors import AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError

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


def _survivor(client: pymongo.MongoClient, srv: ServerProcess, when: str) -> str:
    """The document's name, read through ``client``; a failure names the step, the exception and
    the server's log (the only trace of a restart that went wrong)."""
    try:
        doc = client.support.docs.find_one({"_id": 1})
    except pymongo.errors.PyMongoError as exc:
        pytest.fail(f"find_one {when} raised {exc!r}\n--- server log tail ---\n{srv.log_tail()}")
    assert doc is not None, f"the document is gone {when}\n--- server log tail ---\n{srv.log_tail()}"
    return doc["name"]


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
        assert _survivor(client, srv, "before the kill") == "survivor"

        srv.kill()
        assert not srv.running
        with _client(srv.uri, serverSelectionTimeoutMS=300) as probe:
            with pytest.raises(ServerSelectionTimeoutError):
                probe.support.docs.find_one({"_id": 1})

        srv.restart()
        assert srv.running and srv.port == port and srv.pid != first_pid
        # The same client must find the server again on its old address.
        assert _survivor(client, srv, "after the kill and restart") == "survivor"

        # restart() of a running server goes through a graceful stop.
        second_pid = srv.pid
        start = time.monotonic()
        srv.restart()
        stop_and_start = time.monotonic() - start
        assert srv.running and srv.pid != second_pid
        assert _survivor(client, srv, f"after a graceful restart ({stop_and_start:.1f} s)") == (
            "survivor")
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


# -- DelayProxy faults ---------------------------------------------------------
# A wire-framed echo target: each request comes back as the "reply", so the exact bytes and their
# timing are known. The requests are OP_MSG "ping" messages, so the proxy treats their replies as
# an operation's (not a handshake's) and faults them.


class _EchoTarget:
    """Echoes every connection's bytes back and counts the bytes it received (what reached the
    "server")."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    with self._lock:
                        self.received += len(data)
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


def _op_msg(size: int, command: str = "ping") -> bytes:
    """A well-framed OP_MSG of exactly ``size`` bytes whose body's first key is ``command``."""
    import bson

    body = bson.encode({command: 1, "pad": ""})
    pad = size - 21 - len(body)
    assert pad >= 0
    body = bson.encode({command: 1, "pad": "x" * pad})
    msg = struct.pack("<iiii", size, 1, 0, 2013) + struct.pack("<i", 0) + b"\0" + body
    assert len(msg) == size
    return msg


def _recv_until_end(sock: socket.socket) -> tuple[bytes, str]:
    """Everything the socket gives, and how it ended: "fin", "reset" or "timeout"."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        except socket.timeout:
            return data, "timeout"
        if not chunk:
            return data, "fin"
        data += chunk


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(data)} of {n} bytes"
        data += chunk
    return data


@pytest.fixture
def echo_proxy():
    target = _EchoTarget()
    try:
        with DelayProxy("127.0.0.1", target.port) as p:
            yield p, target
    finally:
        target.close()


@pytest.mark.parametrize("mode, ending", [("reset", "reset"), ("fin", "fin")])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_proxy_cuts_the_next_reply_after_n_bytes(echo_proxy, mode, ending, seed):
    proxy, _ = echo_proxy
    rng = random.Random(seed)
    size = rng.randrange(100, 5000)
    after = rng.randrange(0, size)
    msg = _op_msg(size)
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(msg)  # a whole reply before the fault is armed: untouched
        assert _recv_exactly(sock, size) == msg
        proxy.fault(mode, after=after)
        sock.sendall(msg)
        data, how = _recv_until_end(sock)
    assert (data, how) == (msg[:after], ending)
    assert proxy.stats()["triggered"] == 1
    # "next" is used up: a new connection gets whole replies.
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(msg)
        assert _recv_exactly(sock, size) == msg


def test_proxy_cut_never_delivers_a_whole_reply(echo_proxy):
    proxy, _ = echo_proxy
    msg = _op_msg(300)
    proxy.fault("fin", after=10_000)
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(msg)
        assert _recv_until_end(sock) == (msg[:299], "fin")


def test_proxy_scope_all_and_new(echo_proxy):
    proxy, _ = echo_proxy
    msg = _op_msg(200)
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as old:
        old.sendall(msg)
        assert _recv_exactly(old, 200) == msg
        proxy.fault("reset", scope="new", after=50)
        old.sendall(msg)  # opened before the fault: spared
        assert _recv_exactly(old, 200) == msg
        for _ in range(2):  # every new connection, every time
            with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
                sock.sendall(msg)
                assert _recv_until_end(sock) == (msg[:50], "reset")
        proxy.fault("fin", scope="all", after=20)
        old.sendall(msg)  # "all" takes the old connection too
        assert _recv_until_end(old) == (msg[:20], "fin")
    proxy.clear_fault()
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(msg)
        assert _recv_exactly(sock, 200) == msg
    assert proxy.stats()["triggered"] == 3


def test_proxy_black_hole_reads_and_never_answers(echo_proxy):
    proxy, target = echo_proxy
    msg = _op_msg(120)
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(msg)
        assert _recv_exactly(sock, 120) == msg
        # "next": the next reply is swallowed, and from then on nothing passes either way.
        proxy.fault("blackhole")
        sock.sendall(msg)
        time.sleep(0.2)
        forwarded = target.received
        assert forwarded == 240  # the request that met the black hole had reached the target
        sock.sendall(msg)
        sock.settimeout(0.5)
        assert _recv_until_end(sock) == (b"", "timeout")  # open, silent: no FIN, no RST
        assert target.received == forwarded  # the later request was read and dropped
        assert proxy.stats()["blackholed"] == 1
    # scope "new": connections opened from now on are accepted and read, the target never hears
    # of them; an open connection goes on working.
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as old:
        old.sendall(msg)  # a round trip: the proxy has taken the connection in
        assert _recv_exactly(old, 120) == msg
        proxy.fault("blackhole", scope="new")
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
            sock.sendall(msg)
            sock.settimeout(0.5)
            assert _recv_until_end(sock) == (b"", "timeout")
        old.sendall(msg)
        assert _recv_exactly(old, 120) == msg
        assert target.received == forwarded + 240
        # scope "all": the open connection goes silent at once.
        proxy.fault("blackhole", scope="all")
        old.sendall(msg)
        old.settimeout(0.5)
        assert _recv_until_end(old) == (b"", "timeout")
        assert target.received == forwarded + 240


def test_proxy_trickles_a_reply(echo_proxy):
    proxy, _ = echo_proxy
    msg = _op_msg(1000)
    proxy.fault("trickle", chunk=10, rate=2500.0)  # 1000 bytes at 2500 B/s: 0.4 s
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(msg)
        data, pieces = b"", 0
        while len(data) < len(msg):
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
            pieces += 1
        elapsed = time.monotonic() - start
        assert data == msg
        assert elapsed >= 0.35, elapsed
        assert pieces >= 10, pieces  # in small pieces, not one read
        # Only that reply: the next one comes at once.
        start = time.monotonic()
        sock.sendall(msg)
        assert _recv_exactly(sock, 1000) == msg
        assert time.monotonic() - start < 0.2


def test_proxy_delays_one_reply(echo_proxy):
    proxy, _ = echo_proxy
    msg = _op_msg(100)
    proxy.fault("delay", seconds=0.5)
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(msg)
        assert _recv_exactly(sock, 100) == msg
        assert time.monotonic() - start >= 0.5
        start = time.monotonic()
        sock.sendall(msg)
        assert _recv_exactly(sock, 100) == msg
        assert time.monotonic() - start < 0.2


def test_proxy_faults_operations_not_handshakes(proxy):
    # A fault on every reply still lets PyMongo connect (hello is never faulted): each operation
    # fails on its own reply, and PyMongo retries a read once, so the fault triggers twice.
    proxy.fault("reset", scope="all", after=30)
    with _client(proxy.uri, retryReads=False) as client:
        with pytest.raises(AutoReconnect) as info:
            client.admin.command("ping")
        assert not isinstance(info.value, ServerSelectionTimeoutError)
        assert proxy.stats()["triggered"] == 1
    with _client(proxy.uri) as client:
        with pytest.raises(AutoReconnect):
            client.support.docs.find_one({})
        assert proxy.stats()["triggered"] == 3  # the find and its one retry
        proxy.clear_fault()
        assert client.support.docs.find_one({"_id": "nothing"}) is None


def test_proxy_black_hole_before_selection(proxy):
    proxy.fault("blackhole", scope="new")
    with _client(proxy.uri, serverSelectionTimeoutMS=800, connectTimeoutMS=300) as client:
        with pytest.raises(ServerSelectionTimeoutError):
            client.admin.command("ping")
        # "triggered" counts every connection black-holed; "blackholed" only those still open,
        # and the monitor closes its silent one at connectTimeoutMS.
        assert proxy.stats()["accepted"] >= 1 and proxy.stats()["triggered"] >= 1
        proxy.clear_fault()
        proxy.drop_connections()  # the monitor's silent connection, at once
        # The monitor finds the server again within a few of its checks.
        deadline = time.monotonic() + 15
        while True:
            try:
                assert client.admin.command("ping")["ok"] == 1
                break
            except ServerSelectionTimeoutError:
                assert time.monotonic() < deadline

"""The core's half of Client Side Operations Timeout, at the boundary: a job's deadline (submit's
``deadline``, a ``time.monotonic()`` time) keeps a late job from being sent, ``FLAG_MAX_TIME`` puts
the time left less the round trip in the command as ``maxTimeMS``, and ``FLAG_TXN_NUMBER`` numbers
a write in the worker's own session, so that the server applies it at most once however often it
is sent. The API's half (timeoutMS, pymongo.timeout()) is tested in test_timeouts.py.
"""

from __future__ import annotations

import socket
import struct
import time

import bson
import pytest
from bson.int64 import Int64
from pymongo.errors import ExecutionTimeout, NetworkTimeout
from pymongo.monitoring import CommandListener

from asyncmongo import _core


class Started(CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict] = []

    def started(self, event) -> None:
        self.commands.append(dict(event.command))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


@pytest.fixture
def listener():
    return Started()


def _find(coll: str) -> bytes:
    return bson.encode({"find": coll, "filter": {}, "limit": 1})


async def test_max_time_is_the_time_left(make_client, db_name, listener):
    client = make_client(event_listeners=[listener])
    core = client._core
    deadline = time.monotonic() + 2.0
    await core.submit(_core.OP_READ, _core.RES_FIRST, db_name, None, _find("c"), None, None,
                      _core.FLAG_MAX_TIME, 0, None, None, deadline)
    sent = [c for c in listener.commands if "find" in c][-1]
    assert 1000 < sent["maxTimeMS"] <= 2000
    # A maxTimeMS of the caller's is replaced, not sent twice.
    cmd = bson.encode({"find": "c", "filter": {}, "maxTimeMS": 99999})
    await core.submit(_core.OP_READ, _core.RES_FIRST, db_name, None, cmd, None, None,
                      _core.FLAG_MAX_TIME, 0, None, None, time.monotonic() + 1.0)
    sent = [c for c in listener.commands if "find" in c][-1]
    assert sent["maxTimeMS"] <= 1000
    # Without the flag the deadline bounds the job, and the command is sent as it is.
    await core.submit(_core.OP_READ, _core.RES_FIRST, db_name, None, _find("c"), None, None, 0, 0,
                      None, None, time.monotonic() + 1.0)
    assert "maxTimeMS" not in [c for c in listener.commands if "find" in c][-1]


async def test_a_job_past_its_deadline_is_never_sent(make_client, db_name, listener):
    client = make_client(event_listeners=[listener])
    with pytest.raises(ExecutionTimeout) as info:
        await client._core.submit(_core.OP_WRITE, _core.RES_WRITE, db_name, None,
                                  bson.encode({"insert": "late", "documents": [{"x": 1}]}), None,
                                  None, _core.FLAG_MAX_TIME, 0, None, None, time.monotonic() - 0.01)
    assert info.value.timeout and info.value.code == 50
    assert not [c for c in listener.commands if "insert" in c]
    assert await client[db_name].late.count_documents({}) == 0


async def test_numbered_writes_are_applied_once(make_client, db_name, listener, sync_client,
                                                server):
    # One worker: each worker numbers in a session of its own, and the check below reads one.
    client = make_client(event_listeners=[listener], maxPoolSize=1)
    flags = _core.FLAG_MAX_TIME | _core.FLAG_RETRY | _core.FLAG_TXN_NUMBER
    for i in range(3):
        cmd = bson.encode({"update": "n", "updates": [
            {"q": {"_id": 1}, "u": {"$inc": {"v": 1}}, "upsert": True}]})
        await client._core.submit(_core.OP_WRITE, _core.RES_WRITE, db_name, None, cmd, None, None,
                                  flags, 0, None, None, time.monotonic() + 5)
    sent = [c for c in listener.commands if "update" in c]
    numbers = [c["txnNumber"] for c in sent]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3
    assert len({bson.encode(c["lsid"]) for c in sent}) == 1  # the worker's own session
    # The same session and number again is the same write (a retry): the server answers it
    # without applying it twice. Sent on a raw connection (drivers add sessions of their own), as
    # it was sent: SecantusDB 0.7.0b3 recognises a retry only when the whole command is the same
    # (a retry with another maxTimeMS is applied again, unlike MongoDB's, which keys on the
    # session and txnNumber alone).
    again = dict(sent[-1])
    again["txnNumber"] = Int64(again["txnNumber"])
    again.pop("$clusterTime", None)
    reply = _op_msg(server.host, server.port, again)
    assert reply["ok"] == 1 and reply["n"] == 1, reply
    assert sync_client[db_name].n.find_one({"_id": 1})["v"] == 3, (sent, reply)


def _op_msg(host: str, port: int, body: dict) -> dict:
    """One OP_MSG command on a new connection, and its reply."""
    payload = struct.pack("<I", 0) + b"\x00" + bson.encode(body)
    header = struct.pack("<iiii", 16 + len(payload), 1, 0, 2013)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(header + payload)
        data = b""
        while len(data) < 4 or len(data) < struct.unpack("<i", data[:4])[0]:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            data += chunk
    return bson.decode(data[16 + 4 + 1:])


class Events(CommandListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def started(self, event) -> None:
        self.events.append(("started", event.command_name))

    def succeeded(self, event) -> None:
        self.events.append(("succeeded", event.command_name))

    def failed(self, event) -> None:
        self.events.append(("failed", event.command_name))


async def test_a_running_job_ends_at_its_deadline(make_client, db_name, sync_client):
    """The worker's socket waits end at the job's deadline (stream.c): the job itself fails as a
    network timeout then, not when the server answers, and the command is reported failed."""
    events = Events()
    client = make_client(event_listeners=[events], maxPoolSize=1)
    await client[db_name].command("ping")
    sync_client.admin.command("configureFailPoint", "failCommand", mode={"times": 1},
                              data={"failCommands": ["find"], "blockConnection": True,
                                    "blockTimeMS": 1000})
    try:
        start = time.monotonic()
        with pytest.raises(NetworkTimeout) as info:
            await client._core.submit(_core.OP_READ, _core.RES_FIRST, db_name, None, _find("c"),
                                      None, None, _core.FLAG_MAX_TIME | _core.FLAG_RETRY, 0, None,
                                      None, start + 0.2)
        elapsed = time.monotonic() - start
    finally:
        sync_client.admin.command("configureFailPoint", "failCommand", mode="off")
    assert info.value.timeout
    assert elapsed < 0.2 + 0.3, elapsed  # the deadline, not the server's 1 s
    # One attempt (no time was left for a retry), reported failed; the one worker is free.
    assert [e for e in events.events if e[1] == "find"] == [("started", "find"), ("failed", "find")]
    assert await client[db_name].c.find_one() is None

"""Fault matrix, row "network faults": the test proxy in front of the server resets a reply after N
bytes (N from ``random.Random(seed)``), cuts it short with a clean close, delays it past
``socketTimeoutMS``, black-holes the connection, or trickles the reply a few bytes at a time; once
(the next reply) or for every reply. Each operation (a retryable read, a retryable write, a write
that is not retryable, a cursor's getMore) runs through asyncmongo and then through PyMongo's own
async client, the witness, against the same fault:

- it ends within its bound, in the exception class PyMongo raises (``AutoReconnect`` for a broken
  connection, ``NetworkTimeout`` for a reply that did not come in time), or succeeds where PyMongo
  succeeds: a retryable read or write is retried once, which the proxy counts (the fault met
  twice), as PyMongo's is;
- a retryable write that succeeded is on the server exactly once;
- the same client goes on working once the fault is gone.
A black hole met before server selection (new connections never answered) ends in
``ServerSelectionTimeoutError`` for both.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pymongo
import pytest
from pymongo.errors import AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError

from asyncmongo import AsyncMongoClient
from tests.proxy import DelayProxy
from tests.reliability import Figures

# A fault row: it does not depend on the wake-up path or the loop kind; the default and sanitizer
# modes run it (scripts/test.sh).
pytestmark = pytest.mark.modes_inside

SOCKET_TIMEOUT_MS = 400
BOUND = 20.0
OPTS = dict(socketTimeoutMS=SOCKET_TIMEOUT_MS, connectTimeoutMS=SOCKET_TIMEOUT_MS,
            serverSelectionTimeoutMS=3000)
DOC = {"_id": "doc", "pad": "x" * 300}


def faults(rng: random.Random) -> dict[str, dict]:
    """The faults, by name: proxy.fault() arguments (byte offsets drawn from the seed)."""
    return {
        "reset-next": dict(mode="reset", scope="next", after=rng.randrange(0, 120)),
        "reset-all": dict(mode="reset", scope="all", after=rng.randrange(0, 120)),
        "fin-next": dict(mode="fin", scope="next", after=rng.randrange(0, 120)),
        "fin-all": dict(mode="fin", scope="all", after=rng.randrange(0, 120)),
        "delay-next": dict(mode="delay", scope="next", seconds=SOCKET_TIMEOUT_MS / 1000 * 3),
        "delay-all": dict(mode="delay", scope="all", seconds=SOCKET_TIMEOUT_MS / 1000 * 3),
        "blackhole-next": dict(mode="blackhole", scope="next"),
        "blackhole-all": dict(mode="blackhole", scope="all"),
        # 64 bytes every 3 ms: a reply of a few hundred bytes comes well within the timeout.
        "trickle-fast": dict(mode="trickle", scope="next", chunk=64, rate=20000.0),
        # 16 bytes every 0.2 s: each piece within socketTimeoutMS, the reply not (both drivers
        # bound the whole read of a message by it).
        "trickle-slow": dict(mode="trickle", scope="next", chunk=16, rate=80.0),
    }


# What a user meets, by fault and by whether the operation is retryable: "ok" (served, after one
# retry), or the exception class. The fault is met (proxy-counted) once, or twice when retried.
_BROKEN = {"next": ("ok", AutoReconnect), "all": (AutoReconnect, AutoReconnect)}
_LATE = {"next": ("ok", NetworkTimeout), "all": (NetworkTimeout, NetworkTimeout)}
EXPECTED = {
    "reset-next": _BROKEN["next"], "reset-all": _BROKEN["all"],
    "fin-next": _BROKEN["next"], "fin-all": _BROKEN["all"],
    "delay-next": _LATE["next"], "delay-all": _LATE["all"],
    "blackhole-next": _LATE["next"], "blackhole-all": _LATE["all"],
    "trickle-fast": ("ok", "ok"), "trickle-slow": _LATE["next"],
}


class Ops:
    """The operations, each on a client of either driver: (name, retryable, coroutine function)."""

    def __init__(self, db_name: str) -> None:
        self.db_name = db_name

    def all(self):
        return [("find_one", True, self.find_one), ("insert_one", True, self.insert_one),
                ("update_many", False, self.update_many), ("getMore", False, self.get_more)]

    async def find_one(self, client, token, arm):
        arm()
        doc = await client[self.db_name].items.find_one({"_id": "doc"})
        assert doc == DOC, doc

    async def insert_one(self, client, token, arm):
        arm()
        await client[self.db_name].writes.insert_one({"_id": token})

    async def update_many(self, client, token, arm):
        arm()
        await client[self.db_name].items.update_many({"_id": "doc"}, {"$set": {"pad": DOC["pad"]}})

    async def get_more(self, client, token, arm):
        """A cursor read on with the fault armed between batches. PyMongo sends its next getMore
        when next() needs it; asyncmongo's cursor fetches one batch ahead, and that one may have
        come before the fault (served, as it should be: nothing failed). So the cursor is read to
        its end: the first getMore sent after the fault meets it, in both drivers; the documents
        that came before it come in order, none skipped."""
        cursor = client[self.db_name].batches.find({}, batch_size=2).sort("_id", 1)
        seen = []
        try:
            seen += [(await cursor.next())["_id"] for _ in range(2)]
            arm()
            async for doc in cursor:
                seen.append(doc["_id"])
        finally:
            await cursor.close()
            # Checked on the way out of a failure too (an assert in finally would hide it).
            if seen != list(range(len(seen))):
                raise AssertionError(f"documents out of order or skipped: {seen}")
        assert seen == list(range(10)), seen


def outcome_of(out) -> object:
    if out.ok:
        return "ok"
    return type(out.error)


@pytest.fixture
def fault_proxy(server):
    with DelayProxy(server.host, server.port) as p:
        yield p


@pytest.fixture
def fault_db(sync_client):
    name = f"netfault_{uuid.uuid4().hex[:8]}"
    db = sync_client[name]
    db.items.insert_one(DOC)
    db.batches.insert_many([{"_id": i} for i in range(10)])
    yield name
    sync_client.drop_database(name)


def new_client(driver: str, uri: str, **opts):
    cls = AsyncMongoClient if driver == "asyncmongo" else pymongo.AsyncMongoClient
    return cls(uri, **{**OPTS, **opts})


async def _run_case(fig, proxy, driver, ops, op, fault, token):
    """One operation under one fault, on a client of its own (connected, pooled and monitored
    before the fault): (outcome, faults met, recovered). The fault is then lifted and the proxy's
    connections dropped (a black-holed one stays silent until closed), and the same client must
    serve a read. A client per case: a pooled connection that another case's drop reset would
    fail the next operation sent on it for a reason of its own."""
    client = new_client(driver, proxy.uri)
    try:
        warm = await fig.bounded(ops.find_one(client, token, lambda: None), BOUND)
        assert warm.ok, warm.error
        before = proxy.stats()["triggered"]
        out = await fig.bounded(op(client, token, lambda: proxy.fault(**fault)), BOUND)
        met = proxy.stats()["triggered"] - before
        proxy.clear_fault()
        if fault["mode"] == "blackhole":
            proxy.drop_connections()
        again = await fig.bounded(ops.find_one(client, token, lambda: None), BOUND)
        return out, met, again.ok
    finally:
        proxy.clear_fault()
        closed = await fig.bounded(client.close(), BOUND)
        assert closed.ok, closed.error


@pytest.mark.parametrize("fault_name", list(EXPECTED))
async def test_network_fault(fault_name, fault_proxy, sync_client, fault_db):
    seed = sorted(EXPECTED).index(fault_name) + 1
    fault = faults(random.Random(seed))[fault_name]
    fig = Figures("network faults (proxy)", fault_name, seed)
    fig.notes["fault"] = fault
    ops = Ops(fault_db)
    problems = []
    recovered = True
    for name, retryable, op in ops.all():
        expected = EXPECTED[fault_name][0 if retryable else 1]
        seen = {}
        for driver in ("asyncmongo", "pymongo"):
            token = f"{driver}-{name}-{uuid.uuid4().hex[:6]}"
            out, met, ok_after = await _run_case(fig, fault_proxy, driver, ops, op, fault, token)
            fig.runs += 1
            recovered = recovered and ok_after
            seen[driver] = (outcome_of(out), met)
            fig.notes[f"{name}.{driver}"] = (f"{getattr(outcome_of(out), '__name__', 'ok')}, "
                                             f"met {met}, {out.elapsed:.2f} s"
                                             + ("" if out.ok else f": {str(out.error)[:150]}"))
            if name == "insert_one":
                stored = sync_client[fault_db].writes.count_documents({"_id": token})
                if out.ok:
                    fig.writes_acked += 1
                    fig.writes_lost += stored == 0
                if stored > 1:
                    problems.append(f"{driver} {name}: written {stored} times")
        got, (witness_got, witness_met) = seen["asyncmongo"], seen["pymongo"]
        if got[0] != expected:
            problems.append(f"{name}: asyncmongo {got[0]} where {expected} is due")
        if got[0] != witness_got:
            problems.append(f"{name}: asyncmongo {got[0]}, PyMongo {witness_got}")
        # The same number of attempts as PyMongo (a retry meets a persistent fault again); a
        # black hole of every connection also takes the drivers' monitors, which differ.
        if fault_name != "blackhole-all" and got[1] != witness_met:
            problems.append(f"{name}: fault met {got[1]} times, PyMongo's {witness_met}")
    fig.recovered = recovered
    fig.finish(problems)


async def test_black_hole_before_server_selection(fault_proxy, fault_db):
    """New connections black-holed: no handshake is ever answered, so no server is selectable."""
    fig = Figures("network faults (proxy)", "blackhole-new (before selection)", None)
    fault_proxy.fault("blackhole", scope="new")
    ours = new_client("asyncmongo", fault_proxy.uri, serverSelectionTimeoutMS=1000)
    witness = new_client("pymongo", fault_proxy.uri, serverSelectionTimeoutMS=1000)
    try:
        outcomes = []
        for client in (ours, witness):
            out = await fig.bounded(client[fault_db].items.find_one({}), BOUND)
            fig.runs += 1
            outcomes.append(outcome_of(out))
            assert out.elapsed < 10, out.elapsed
        assert outcomes == [ServerSelectionTimeoutError] * 2, outcomes
        fault_proxy.clear_fault()
        fault_proxy.drop_connections()  # the monitors' silent connections, at once
        recovered = []
        for client in (ours, witness):
            # Each client's monitor finds the server again within a few of its checks.
            deadline = time.monotonic() + BOUND
            while True:
                out = await fig.bounded(client[fault_db].items.find_one({}), BOUND)
                if out.ok or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            recovered.append(out.ok and out.value == DOC)
        fig.recovered = all(recovered)
    finally:
        fault_proxy.clear_fault()
        await ours.close()
        await witness.close()
    fig.finish()


TXN_LABELS = {"TransientTransactionError", "UnknownTransactionCommitResult"}


async def _transaction_under_fault(fig, proxy, driver, db_name, fault, at):
    """A transaction whose operation (``at="operation"``) or commit (``at="commit"``) meets the
    fault: the error class and its labels; then the same client commits a transaction."""
    client = new_client(driver, proxy.uri)
    coll = client[db_name].txn
    try:
        await coll.insert_one({"_id": f"{driver}-{at}-warm"})
        outcome = None
        async with client.start_session() as s:
            await s.start_transaction()
            try:
                if at == "operation":
                    proxy.fault(**fault)
                out = await fig.bounded(coll.insert_one({"_id": f"{driver}-{at}"}, session=s), BOUND)
                if out.ok and at == "commit":
                    proxy.fault(**fault)
                    out = await fig.bounded(s.commit_transaction(), BOUND)
                # The transactions specification's labels (PyMongo adds RetryableWriteError to a
                # commit's network error too; asyncmongo does not: not compared).
                labels = getattr(out.error, "_error_labels", set()) & TXN_LABELS
                outcome = (outcome_of(out), sorted(labels))
            finally:
                proxy.clear_fault()
                if s.in_transaction:
                    await fig.bounded(s.abort_transaction(), BOUND)
        async with client.start_session() as s:
            await s.start_transaction()
            await coll.insert_one({"_id": f"{driver}-{at}-after"}, session=s)
            after = await fig.bounded(s.commit_transaction(), BOUND)
        return outcome, after.ok
    finally:
        await client.close()


@pytest.mark.parametrize("at, label", [("operation", "TransientTransactionError"),
                                       ("commit", "UnknownTransactionCommitResult")])
async def test_network_fault_in_a_transaction(at, label, fault_proxy, sync_client, fault_db):
    """The transactions specification's labels: a network error of an operation inside a
    transaction is a TransientTransactionError, one of the commit an
    UnknownTransactionCommitResult (the commit is retried once first), as PyMongo labels them."""
    fig = Figures("network faults (proxy)", f"reset in a transaction's {at}", None)
    fault = dict(mode="reset", scope="all", after=20)
    seen = {}
    for driver in ("asyncmongo", "pymongo"):
        seen[driver], ok_after = await _transaction_under_fault(fig, fault_proxy, driver, fault_db,
                                                                fault, at)
        fig.runs += 1
        fig.recovered = ok_after if fig.recovered is None else fig.recovered and ok_after
        fig.notes[driver] = f"{seen[driver][0].__name__} {seen[driver][1]}"
    fig.finish()
    assert seen["asyncmongo"][0] is AutoReconnect
    assert label in seen["asyncmongo"][1], seen
    assert seen["asyncmongo"] == seen["pymongo"], seen
    # A transaction whose operation failed left nothing; the next one of each client committed.
    stored = {d["_id"] for d in sync_client[fault_db].txn.find({})}
    assert {"asyncmongo-operation", "pymongo-operation"}.isdisjoint(stored)
    assert {f"{d}-{at}-after" for d in ("asyncmongo", "pymongo")} <= stored

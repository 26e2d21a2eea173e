"""Fault matrix, row "server killed": a server of the test's own (on-disk storage) is SIGKILLed and
restarted while one client runs, all at once, ordered and unordered ``insert_many``, ``bulk_write``,
transactions (their operations and their commits), cursors being iterated, a change stream and
GridFS uploads, each in a loop. The kill lands at a random point (``random.Random(seed)``) of each.

After the restart, the same client must go on (every workload succeeds again), and the server is
read back with PyMongo's sync client:
- every write acknowledged with ``j=True`` is there (counted: acknowledged vs found);
- an ordered ``insert_many`` that failed left a prefix of its documents, never a gap;
- a transaction is all or nothing: committed ones are whole, and one whose commit raised carried
  ``UnknownTransactionCommitResult`` or ``TransientTransactionError`` (an operation's error inside
  it, ``TransientTransactionError``), never an unlabelled error; one that raised
  ``TransientTransactionError`` alone left nothing;
- a cursor gives its documents in order, then either ends or raises a ``PyMongoError``;
- the change stream resumes by itself across the restart and reports exactly the inserts the server
  has (no change missed or doubled): SecantusDB keeps its oplog on disk, and resume tokens name an
  oplog position, so a stream resumes after a restart as it would on mongod;
- a GridFS file whose files document exists is complete (the files document is written last).
Every await is bounded (``BOUND`` seconds); one that does not end counts as hung.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest
from pymongo import DeleteOne, InsertOne, UpdateOne, WriteConcern
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError

from asyncmongo.gridfs import AsyncGridFSBucket
from tests.reliability import Figures
from tests.servers import ServerProcess

# A fault row: it does not depend on the wake-up path or the loop kind; the default and sanitizer
# modes run it (scripts/test.sh).
pytestmark = pytest.mark.modes_inside

# Bound on any single await of the driver (an operation waits out the server's downtime within
# serverSelectionTimeoutMS, far below this).
BOUND = 45.0
RUNS = int(os.environ.get("ASYNCMONGO_KILL_RUNS", "4"))
J = WriteConcern(w=1, j=True)
CURSOR_DOCS = 200


@pytest.fixture(scope="module")
def crash_server():
    """A server of this module's own, killed and restarted by its tests (same port and storage).

    ``--sync-on-commit``: SecantusDB 0.7.0b3 honours ``j: true`` for plain writes but not for
    ``commitTransaction``, whose commit reaches the journal only with the next synced write (a
    commit acknowledged with ``{w: 1, j: true}`` and followed at once by a SIGKILL was lost 20 runs
    of 20, with PyMongo alone: tests/RELIABILITY.md). This option makes every commit durable, so
    that a lost acknowledged write can only be the driver's."""
    srv = ServerProcess(extra_args=("--sync-on-commit",)).start()
    yield srv
    srv.kill()
    srv.stop()


class Load:
    """The workloads of one run, and what each saw: ids acknowledged, attempted, outcomes."""

    def __init__(self, client, db_name: str, fig: Figures, rng: random.Random) -> None:
        self.db = client[db_name]
        self.fig = fig
        self.rng = rng
        self.stop = asyncio.Event()
        self.killed = asyncio.Event()  # set once the server is back
        self.killed_at = float("inf")
        self.ok_after: dict[str, int] = {}  # successes after the restart, per workload
        self.acked: set[str] = set()  # ids of acknowledged inserts
        self.acked_pushes: set[tuple[str, str]] = set()  # (counter _id, token) of acked $push
        self.acked_deletes: set[str] = set()
        self.failed_ordered: list[list[str]] = []  # ids of ordered insert_many that raised
        # (outcome, ids, error labels, error code, whether it spanned the kill)
        self.txns: list[tuple[str, list[str], str, int | None, bool]] = []
        self.cursor_results: list[tuple[list, str | None]] = []
        self.stream_seen: list[str] = []
        self.stream_inserted: set[str] = set()
        self.uploads: dict[str, bytes] = {}  # file _id -> content attempted
        self.uploads_acked: set[str] = set()
        self.errors: dict[str, int] = {}

    def coll(self, name: str):
        return self.db.get_collection(name, write_concern=J)

    def note(self, kind: str, out) -> None:
        """Tally an outcome; count successes after the restart (the client recovered)."""
        if out.ok:
            self.fig.count(f"{kind}.ok")
            if self.killed.is_set():
                self.ok_after[kind] = self.ok_after.get(kind, 0) + 1
        elif not out.hung:
            self.fig.count(f"{kind}.{type(out.error).__name__}")

    def done(self) -> bool:
        return all(self.ok_after.get(k, 0) >= 1 for k in KINDS)

    async def pause(self) -> None:
        await asyncio.sleep(self.rng.random() * 0.01)

    # ---- workloads ------------------------------------------------------------------------

    async def insert_many(self, ordered: bool) -> None:
        kind = "insert_many_ordered" if ordered else "insert_many_unordered"
        coll = self.coll("inserts")
        n = 0
        while not self.stop.is_set():
            n += 1
            ids = [f"{kind}-{n}-{k}" for k in range(self.rng.randrange(5, 60))]
            out = await self.fig.bounded(coll.insert_many([{"_id": i} for i in ids], ordered=ordered),
                                         BOUND)
            self.note(kind, out)
            if out.ok:
                self.acked.update(ids)
            elif isinstance(out.error, BulkWriteError):
                # Acknowledged: the first nInserted of an ordered bulk; of an unordered one, every
                # id without a write error, if the bulk ran to its end (nInserted says so).
                details = out.error.details
                failed = {e["index"] for e in details.get("writeErrors", ())}
                if ordered:
                    self.acked.update(ids[: details["nInserted"]])
                elif details["nInserted"] + len(failed) == len(ids):
                    self.acked.update(i for k, i in enumerate(ids) if k not in failed)
            if not out.ok and ordered:
                self.failed_ordered.append(ids)
            await self.pause()

    async def bulk_write(self) -> None:
        coll = self.coll("bulk")
        n = 0
        while not self.stop.is_set():
            n += 1
            ins = [f"bulk-{n}-{k}" for k in range(self.rng.randrange(1, 10))]
            counter, token = f"counter-{self.rng.randrange(4)}", f"t{n}"
            victim = f"victim-{n}"
            ops = [InsertOne({"_id": i}) for i in ins]
            ops.insert(self.rng.randrange(len(ops) + 1),
                       UpdateOne({"_id": counter}, {"$push": {"log": token}}, upsert=True))
            ops.append(DeleteOne({"_id": victim}))
            out = await self.fig.bounded(coll.bulk_write(ops, ordered=self.rng.random() < 0.5), BOUND)
            self.note("bulk_write", out)
            if out.ok:
                self.acked.update(ins)
                self.acked_pushes.add((counter, token))
                self.acked_deletes.add(victim)
            await self.pause()

    async def transaction(self, client) -> None:
        coll = self.coll("txn")
        n = 0
        while not self.stop.is_set():
            n += 1
            ids = [f"txn-{n}-{k}" for k in range(self.rng.randrange(1, 4))]
            started = time.monotonic()
            out = await self.fig.bounded(self._one_transaction(client, coll, ids), BOUND)
            # Begun before the kill, ended after it (its retry met the restarted server).
            spanned = started < self.killed_at < time.monotonic()
            self.note("transaction", out)
            if out.ok:
                self.txns.append((out.value, ids, "", None, spanned))
            else:
                labels = getattr(out.error, "_error_labels", set())
                where = getattr(out.error, "_where", "start")
                self.txns.append((f"{where}:{type(out.error).__name__}", ids,
                                  ",".join(sorted(labels)), getattr(out.error, "code", None),
                                  spanned))
            await self.pause()

    async def _one_transaction(self, client, coll, ids):
        """Returns "committed", or raises the error seen, marked with where it happened."""
        async with client.start_session() as s:
            await s.start_transaction(write_concern=J)  # raises before the transaction: "start"
            try:
                for i in ids:
                    await coll.insert_one({"_id": i}, session=s)
                await coll.update_one({"_id": "txn-counter"}, {"$inc": {"n": 1}}, upsert=True,
                                      session=s)
            except PyMongoError as exc:
                exc._where = "operation"
                await s.abort_transaction()
                raise
            try:
                await s.commit_transaction()
            except PyMongoError as exc:
                exc._where = "commit"
                raise
        return "committed"

    async def cursor(self) -> None:
        coll = self.db.cursor_docs
        while not self.stop.is_set():
            got: list = []

            async def read():
                async for doc in coll.find({}, batch_size=7).sort("_id", 1):
                    got.append(doc["_id"])
                    if len(got) % 7 == 0:
                        await asyncio.sleep(0.002)

            out = await self.fig.bounded(read(), BOUND)
            self.note("cursor", out)
            self.cursor_results.append((got, None if out.ok else type(out.error).__name__))
            await self.pause()

    async def stream_writer(self) -> None:
        coll = self.coll("stream")
        n = 0
        while not self.stop.is_set():
            n += 1
            i = f"s-{n}"
            out = await self.fig.bounded(coll.insert_one({"_id": i}), BOUND)
            self.note("stream_write", out)
            self.stream_inserted.add(i)
            if out.ok:
                self.acked.add(i)
            await asyncio.sleep(0.01)

    async def stream_reader(self, stream, until: str) -> None:
        """Reads changes until the ``until`` insert; a ConnectionFailure out of next() (the one
        resume the stream makes found the server still down) is counted and next() called again,
        as a user would."""
        while True:
            out = await self.fig.bounded(stream.next(), BOUND)
            if out.ok:
                key = out.value["documentKey"]["_id"]
                if key == until:
                    return
                self.stream_seen.append(key)
            elif isinstance(out.error, ConnectionFailure) and stream.alive:
                self.fig.count(f"stream.next.{type(out.error).__name__}")
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the change stream ended: {out.error!r}")

    async def gridfs(self) -> None:
        bucket = AsyncGridFSBucket(self.db, chunk_size_bytes=8 * 1024, write_concern=J)
        n = 0
        while not self.stop.is_set():
            n += 1
            fid = f"file-{n}"
            data = self.rng.randbytes(self.rng.randrange(1, 200_000))
            self.uploads[fid] = data
            out = await self.fig.bounded(bucket.upload_from_stream_with_id(fid, fid, data), BOUND)
            self.note("gridfs", out)
            if out.ok:
                self.uploads_acked.add(fid)
            await self.pause()

    async def reads(self) -> None:
        coll = self.db.cursor_docs
        while not self.stop.is_set():
            out = await self.fig.bounded(coll.find_one({"_id": self.rng.randrange(CURSOR_DOCS)}),
                                         BOUND)
            self.note("find_one", out)
            await self.pause()


KINDS = ("insert_many_ordered", "insert_many_unordered", "bulk_write", "transaction", "cursor",
         "stream_write", "gridfs", "find_one")


def _check(load: Load, fig: Figures, sync_db) -> list[str]:
    """Read the restarted server; count lost acknowledged writes; return what else is wrong."""
    problems: list[str] = []
    found = {d["_id"] for name in ("inserts", "bulk", "txn", "stream")
             for d in sync_db[name].find({}, {"_id": 1})}
    lost = load.acked - found
    lost_pushes = {(c, t) for c, t in load.acked_pushes
                   if t not in (sync_db.bulk.find_one({"_id": c}) or {}).get("log", [])}
    back = {d["_id"] for d in sync_db.bulk.find({"_id": {"$in": sorted(load.acked_deletes)}})}
    files = {d["_id"]: d for d in sync_db.fs.files.find({})}
    lost_files = load.uploads_acked - set(files)
    committed = [t[1] for t in load.txns if t[0] == "committed"]
    lost_txn = [i for ids in committed for i in ids if i not in found]
    fig.writes_acked += (len(load.acked) + len(load.acked_pushes) + len(load.acked_deletes)
                         + len(load.uploads_acked) + sum(map(len, committed)))
    fig.writes_lost += len(lost) + len(lost_pushes) + len(back) + len(lost_files) + len(lost_txn)
    if fig.writes_lost:
        problems.append(f"lost: {sorted(lost)[:5]} pushes {sorted(lost_pushes)[:5]} deletes undone "
                        f"{sorted(back)[:5]} files {sorted(lost_files)[:5]} txn {lost_txn[:5]}")

    for ids in load.failed_ordered:
        present = [i in found for i in ids]
        if present != sorted(present, reverse=True):
            problems.append(f"ordered insert_many left a gap: {present}")

    for outcome, ids, labels, code, spanned in load.txns:
        present = [i in found for i in ids]
        if any(present) and not all(present):
            problems.append(f"transaction half applied: {outcome} {ids} {present}")
        if outcome == "committed":
            continue
        label_set = set(labels.split(",")) - {""}
        if not label_set & {"UnknownTransactionCommitResult", "TransientTransactionError"}:
            # An error starting the session is before any transaction: no label is due.
            if not outcome.startswith("start:"):
                problems.append(f"transaction error without a label: {outcome} {labels!r}")
        if label_set == {"TransientTransactionError"} and any(present):
            if outcome == "commit:OperationFailure" and code == 251 and spanned:
                # The commit reached the server, which committed it durably and died before
                # answering; libmongoc's one retry of the commit met the restarted server, whose
                # transaction table is in memory only (SecantusDB; mongod keeps it in
                # config.transactions and would answer "committed"): NoSuchTransaction. PyMongo
                # raises the same (commit_transaction re-raises code 251 as it is).
                fig.count("server: committed transaction answered NoSuchTransaction on retry")
            else:
                problems.append(f"transaction reported aborted but applied: {outcome} {ids}")
        fig.count(f"txn.{outcome}.{labels or 'nolabel'}")

    expected = list(range(CURSOR_DOCS))
    for got, error in load.cursor_results:
        if got != expected[: len(got)] or (error is None and len(got) != CURSOR_DOCS):
            problems.append(f"cursor gave {got[:10]}... ({len(got)}) then {error}")

    seen = load.stream_seen
    stored = {d["_id"] for d in sync_db.stream.find({"_id": {"$ne": "the-end"}})}
    if len(seen) != len(set(seen)):
        problems.append(f"change stream doubled changes: {len(seen) - len(set(seen))}")
    if set(seen) != stored:
        problems.append(f"change stream missed {sorted(stored - set(seen))[:5]}, "
                        f"reported absent {sorted(set(seen) - stored)[:5]}")

    for fid, doc in files.items():
        chunks = sync_db.fs.chunks.find({"files_id": fid}).sort("n", 1)
        data = b"".join(c["data"] for c in chunks)
        if data != load.uploads[fid] or doc["length"] != len(data):
            problems.append(f"GridFS file {fid} incomplete: {len(data)} of {len(load.uploads[fid])}")
    fig.notes["stream_changes"] = len(seen)
    fig.notes["files"] = len(files)
    return problems


@pytest.mark.parametrize("seed", range(1, RUNS + 1))
async def test_server_killed_and_restarted_under_load(crash_server, make_client, sync_client,
                                                      seed):
    import pymongo

    rng = random.Random(seed)
    fig = Figures("server killed (SIGKILL) and restarted", "all workloads at once", seed)
    db_name = f"kill_{seed}_{rng.randrange(10**6)}"
    witness = pymongo.MongoClient(crash_server.uri, serverSelectionTimeoutMS=30000)
    sync_db = witness[db_name]
    try:
        sync_db.get_collection("cursor_docs", write_concern=J).insert_many(
            [{"_id": i} for i in range(CURSOR_DOCS)])
        sync_db.get_collection("bulk", write_concern=J).insert_many(
            [{"_id": f"victim-{n}"} for n in range(1, 5000)])
        client = make_client(crash_server.uri, serverSelectionTimeoutMS=15000, maxPoolSize=32)
        load = Load(client, db_name, fig, rng)
        stream = await load.coll("stream").watch(max_await_time_ms=200)
        tasks = [asyncio.ensure_future(c) for c in (
            load.insert_many(True), load.insert_many(False), load.bulk_write(),
            load.transaction(client), load.cursor(), load.stream_writer(), load.gridfs(),
            load.reads())]
        reader = asyncio.ensure_future(load.stream_reader(stream, "the-end"))

        await asyncio.sleep(rng.uniform(0.3, 1.5))
        if not crash_server.running:
            fig.crashes += 1
        load.killed_at = time.monotonic()
        crash_server.kill()
        fig.runs += 1
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        await asyncio.to_thread(crash_server.restart)
        load.killed.set()
        # The same client recovers: every workload succeeds again (within the bound).
        deadline = time.monotonic() + BOUND
        while not load.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        fig.recovered = load.done()
        load.stop.set()
        out = await fig.bounded(asyncio.gather(*tasks), BOUND + 5)
        assert out.ok or out.hung, out.error
        out = await fig.bounded(load.coll("stream").insert_one({"_id": "the-end"}), BOUND)
        assert out.ok, out.error
        out = await fig.bounded(reader, BOUND)
        assert out.ok or out.hung, out.error
        await stream.close()
        if not crash_server.running:
            fig.crashes += 1
        problems = _check(load, fig, sync_db)
        fig.notes["not_recovered"] = [k for k in KINDS if not load.ok_after.get(k)]
        fig.finish(problems)
    finally:
        # No drop: the server and its storage go with the module (a drop costs SecantusDB ~15 s).
        witness.close()

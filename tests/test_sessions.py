"""Explicit sessions and transactions against the real server: what commits is visible, what aborts
is not (checked with PyMongo's client, the witness), write conflicts carry PyMongo's labels,
with_transaction retries, a cancelled operation aborts its transaction, misuse raises PyMongo's
exceptions before anything is sent, and every command of a session carries its lsid."""

from __future__ import annotations

import asyncio

import pytest
from pymongo import InsertOne, UpdateOne, monitoring
from pymongo.errors import ConfigurationError, InvalidOperation, OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from asyncmongo import _core
from asyncmongo.client_session import AsyncClientSession


class Started(monitoring.CommandListener):
    def __init__(self) -> None:
        self.events: list = []

    def started(self, event):
        self.events.append(event)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def named(self, name: str) -> list:
        return [e.command for e in self.events if e.command_name == name]


@pytest.fixture
def witness(sync_client, coll):
    return sync_client[coll.database.name][coll.name]


async def test_commit_is_visible_and_abort_is_not(client, coll, witness):
    await coll.insert_one({"_id": 0})
    async with client.start_session() as s:
        assert isinstance(s, AsyncClientSession) and s.client is client and not s.has_ended
        async with await s.start_transaction():
            assert s.in_transaction
            await coll.insert_one({"_id": 1}, session=s)
            await coll.update_one({"_id": 0}, {"$set": {"t": 1}}, session=s)
            # Inside: the transaction's own writes; outside: nothing yet.
            assert await coll.count_documents({}, session=s) == 2
            assert witness.count_documents({}) == 1
            assert witness.find_one({"_id": 0}) == {"_id": 0}
        assert not s.in_transaction
        assert sorted(d["_id"] for d in witness.find()) == [0, 1]
        assert witness.find_one({"_id": 0}) == {"_id": 0, "t": 1}

        await s.start_transaction()
        await coll.insert_many([{"_id": 2}, {"_id": 3}], session=s)
        await coll.bulk_write([InsertOne({"_id": 4}), UpdateOne({"_id": 0}, {"$set": {"t": 2}})],
                              session=s)
        await coll.delete_one({"_id": 1}, session=s)
        assert await coll.find({}, session=s).sort("_id").to_list() == [
            {"_id": 0, "t": 2}, {"_id": 2}, {"_id": 3}, {"_id": 4}]
        await s.abort_transaction()
        assert sorted(d["_id"] for d in witness.find()) == [0, 1]
        assert witness.find_one({"_id": 0}) == {"_id": 0, "t": 1}
    assert s.has_ended


async def test_block_aborts_on_exception(client, coll, witness):
    async with client.start_session() as s:
        with pytest.raises(RuntimeError):
            async with await s.start_transaction():
                await coll.insert_one({"_id": "x"}, session=s)
                raise RuntimeError("application error")
        assert not s.in_transaction
    assert witness.count_documents({}) == 0


async def test_write_conflict_between_two_transactions(client, coll, witness):
    await coll.insert_one({"_id": 1, "v": 0})
    async with client.start_session() as a, client.start_session() as b:
        await a.start_transaction()
        await b.start_transaction()
        await coll.update_one({"_id": 1}, {"$set": {"v": "a"}}, session=a)
        with pytest.raises(OperationFailure) as info:
            await coll.update_one({"_id": 1}, {"$set": {"v": "b"}}, session=b)
        assert info.value.code == 112  # WriteConflict
        assert info.value.has_error_label("TransientTransactionError")
        await b.abort_transaction()
        await a.commit_transaction()
    assert witness.find_one({"_id": 1}) == {"_id": 1, "v": "a"}


async def test_with_transaction_retries_the_callback(client, coll, witness):
    await coll.insert_one({"_id": 1, "v": 0})
    attempts = 0
    async with client.start_session() as blocker, client.start_session() as s:
        await blocker.start_transaction()
        await coll.update_one({"_id": 1}, {"$inc": {"v": 100}}, session=blocker)

        async def callback(session):
            nonlocal attempts
            attempts += 1
            await coll.insert_one({"_id": 10 + attempts}, session=session)
            try:
                await coll.update_one({"_id": 1}, {"$inc": {"v": 1}}, session=session)
            except OperationFailure:
                # The first attempt conflicts with the open transaction: let that one commit,
                # then let with_transaction see the transient error and run us again.
                await blocker.commit_transaction()
                raise
            return "done"

        assert await s.with_transaction(callback) == "done"
    assert attempts == 2
    # The failed attempt left nothing behind; the retried one committed once.
    assert witness.find_one({"_id": 1}) == {"_id": 1, "v": 101}
    assert sorted(d["_id"] for d in witness.find({"_id": {"$gte": 10}})) == [12]


async def test_with_transaction_does_not_retry_other_errors(client, coll, witness):
    calls = 0

    async def callback(session):
        nonlocal calls
        calls += 1
        await coll.insert_one({"_id": 1}, session=session)
        raise ValueError("not transient")

    async with client.start_session() as s:
        with pytest.raises(ValueError):
            await s.with_transaction(callback)
        assert not s.in_transaction
    assert calls == 1 and witness.count_documents({}) == 0


async def test_cancelled_operation_aborts_the_transaction(client, coll, witness):
    async with client.start_session() as s:
        await s.start_transaction()
        await coll.insert_one({"_id": 1}, session=s)
        task = asyncio.ensure_future(coll.insert_one({"_id": 2}, session=s))
        await asyncio.sleep(0)  # submitted: queued or running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not s.in_transaction
        with pytest.raises(InvalidOperation, match="after calling abortTransaction"):
            await s.commit_transaction()
        # The session goes on working: the abort ran before this, in the session's order.
        async with await s.start_transaction():
            await coll.insert_one({"_id": 3}, session=s)
    assert sorted(d["_id"] for d in witness.find()) == [3]


async def test_a_session_runs_one_operation_at_a_time(client, coll):
    async with client.start_session() as s:
        await coll.insert_one({"_id": 0}, session=s)  # started
        first = asyncio.ensure_future(coll.find_one({}, session=s))
        await asyncio.sleep(0)
        with pytest.raises(InvalidOperation, match="in use by another operation"):
            await coll.find_one({}, session=s)
        assert await first == {"_id": 0}
        assert await coll.find_one({}, session=s) == {"_id": 0}  # free again


async def test_misuse_is_refused_before_sending(make_client, client, coll):
    other = make_client()
    before = _core.debug_counters()["jobs_submitted"]
    s = client.start_session()
    with pytest.raises(InvalidOperation, match="AsyncMongoClient that started it"):
        await other[coll.database.name][coll.name].find_one({}, session=s)
    with pytest.raises(TypeError):
        await coll.find_one({}, session=object())
    with pytest.raises(ConfigurationError, match="unacknowledged"):
        await coll.with_options(write_concern=WriteConcern(w=0)).insert_one({}, session=s)
    with pytest.raises(InvalidOperation, match="No transaction started"):
        await s.commit_transaction()
    with pytest.raises(InvalidOperation, match="No transaction started"):
        await s.abort_transaction()
    with pytest.raises(ConfigurationError, match="unacknowledged"):
        await s.start_transaction(write_concern=WriteConcern(w=0))
    assert _core.debug_counters()["jobs_submitted"] == before
    await s.end_session()
    with pytest.raises(InvalidOperation, match="ended session"):
        await coll.insert_one({}, session=s)
    with pytest.raises(InvalidOperation, match="ended session"):
        await s.start_transaction()
    snap = client.start_session(snapshot=True)
    with pytest.raises(InvalidOperation, match="snapshot"):
        await snap.start_transaction()
    await snap.end_session()


async def test_transaction_state_rules(client, coll, witness):
    async with client.start_session() as s:
        await s.start_transaction()
        with pytest.raises(InvalidOperation, match="already in progress"):
            await s.start_transaction()
        await s.commit_transaction()  # empty: nothing is sent
        with pytest.raises(InvalidOperation, match="after calling commitTransaction"):
            await s.abort_transaction()
        await s.start_transaction()
        await coll.insert_one({"_id": 1}, session=s)
        await s.commit_transaction()
        await s.commit_transaction()  # retrying a commit is allowed
        await s.start_transaction()
        await s.abort_transaction()
        with pytest.raises(InvalidOperation, match="twice"):
            await s.abort_transaction()
    assert witness.count_documents({}) == 1


async def test_commands_of_a_session_carry_its_lsid(make_client, db_name):
    listener = Started()
    client = make_client(event_listeners=[listener])
    coll = client[db_name]["c"]
    await coll.insert_many([{"_id": i} for i in range(5)])
    async with client.start_session() as s:
        docs = await coll.find({}, batch_size=2, session=s).to_list()
        assert len(docs) == 5
        await coll.insert_one({"_id": 10}, session=s)
        # Causal consistency: a read after a write in the session waits for it (afterClusterTime).
        assert await coll.find_one({"_id": 10}, session=s) == {"_id": 10}
    session_cmds = listener.named("find") + listener.named("getMore") + [
        c for c in listener.named("insert") if c["documents"][0]["_id"] == 10]
    assert len(listener.named("getMore")) == 2 and len(session_cmds) == 5
    assert len({c["lsid"]["id"] for c in session_cmds}) == 1
    last_find = listener.named("find")[-1]
    assert "afterClusterTime" in last_find.get("readConcern", {})
    await client.drop_database(db_name)


async def test_transaction_ignores_collection_concerns(client, coll, witness):
    # Inside a transaction the transaction's concerns rule, as PyMongo: a collection's own read and
    # write concerns are left out instead of failing the operation.
    other = coll.with_options(write_concern=WriteConcern(w=1, j=True),
                              read_concern=ReadConcern("local"))
    async with client.start_session() as s:
        async with await s.start_transaction(write_concern=WriteConcern(w="majority")):
            await other.insert_one({"_id": 1}, session=s)
            await other.update_many({}, {"$set": {"a": 1}}, session=s)
            assert await other.find({}, session=s).to_list() == [{"_id": 1, "a": 1}]
            assert await other.find_one_and_update({"_id": 1}, {"$set": {"b": 2}}, session=s) == {
                "_id": 1, "a": 1}
    assert witness.find_one() == {"_id": 1, "a": 1, "b": 2}


async def test_close_ends_open_sessions_and_aborts_their_transactions(make_client, coll, witness):
    client = make_client()
    c = client[coll.database.name][coll.name]
    s = client.start_session()
    await s.start_transaction()
    await c.insert_one({"_id": 1}, session=s)
    await client.close()
    assert s.has_ended
    assert witness.count_documents({}) == 0


async def test_many_sessions_at_once(client, coll, witness):
    # Concurrent transactions may conflict (the server answers WriteConflict, a transient error):
    # with_transaction runs them again until each commits once.
    await coll.insert_one({"_id": "seed"})
    calls = 0

    async def one(i: int) -> None:
        async def txn(s):
            nonlocal calls
            calls += 1
            await coll.insert_one({"_id": i}, session=s)
            await coll.update_one({"_id": i}, {"$set": {"n": i}}, session=s)

        async with client.start_session() as s:
            await s.with_transaction(txn)

    await asyncio.gather(*(one(i) for i in range(40)))
    assert witness.count_documents({"n": {"$exists": True}}) == 40
    assert calls >= 40

"""Client Side Operations Timeout, as users meet it: timeoutMS and ``pymongo.timeout()`` against the
real server, slowed by its own fail points (blockConnection) or by the delaying proxy. The bound
checked is "it ends within the deadline plus a margin" (never "it takes at least", never a speed);
the margin is generous because the machine is shared. The specification's own tests run in
tests/spec/test_csot_unified.py.
"""

from __future__ import annotations

import asyncio
import time
import warnings

import pymongo
import pytest
from pymongo.errors import (
    ConfigurationError,
    ExecutionTimeout,
    InvalidOperation,
    NetworkTimeout,
    PyMongoError,
    WaitQueueTimeoutError,
)
from pymongo.monitoring import CommandListener

from asyncmongo import AsyncMongoClient
from tests.proxy import DelayProxy

# How late past its deadline an operation may end: the loop's timer fires at the deadline; the
# rest is scheduling on a loaded machine.
MARGIN = 0.35


class Commands(CommandListener):
    """Every command started, with its document."""

    def __init__(self) -> None:
        self.starts: list[dict] = []
        self.failures: list[str] = []

    def started(self, event) -> None:
        self.starts.append(dict(event.command))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        self.failures.append(event.command_name)

    def named(self, name: str) -> list[dict]:
        return [c for c in self.starts if name in c]

    async def failure_of(self, name: str, since: float, within: float) -> None:
        """Wait for the failed event of a command that timed out: the worker delivers its command
        events when it hands the job back, a moment after the caller got its timeout. The bound
        ``within`` (seconds since ``since``) must come well before the server's answer: a worker
        that waited for the answer fails it."""
        while name not in self.failures and time.monotonic() - since < within:
            await asyncio.sleep(0.01)
        assert name in self.failures, f"no failed {name} event {time.monotonic() - since:.2f} s in"


def block(sync_client, commands, ms, times=1, **data):
    sync_client.admin.command(
        "configureFailPoint", "failCommand", mode={"times": times},
        data={"failCommands": commands, "blockConnection": True, "blockTimeMS": ms, **data},
    )


@pytest.fixture
def fail_points(sync_client):
    yield
    sync_client.admin.command("configureFailPoint", "failCommand", mode="off")


class Ticker:
    """Counts the loop's turns while an operation waits: the loop must stay free."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1

    def __enter__(self) -> "Ticker":
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()


async def timed(coro):
    """(exception raised, seconds taken) of an awaitable that must fail."""
    start = time.monotonic()
    try:
        await coro
    except PyMongoError as exc:
        return exc, time.monotonic() - start
    raise AssertionError("the operation did not fail")


# ---- the deadline, against a server that answers in 1 s ----------------------------------------


async def test_timeout_ms_bounds_an_operation_the_server_holds(make_client, db_name, sync_client,
                                                                fail_points):
    commands = Commands()
    client = make_client(timeoutMS=200, event_listeners=[commands])
    coll = client[db_name].items
    await coll.insert_one({"_id": 1})
    block(sync_client, ["find"], 1000)
    started = time.monotonic()
    with Ticker() as ticker:
        exc, took = await timed(coll.find_one({"_id": 1}))
    assert isinstance(exc, NetworkTimeout) and exc.timeout, repr(exc)
    assert 0.2 - 0.005 <= took < 0.2 + MARGIN, took
    assert ticker.ticks >= 8, ticker.ticks  # the loop ran its other tasks meanwhile
    # The worker gave up at the deadline too, not when the server answers (at 1 s): its command
    # events, delivered when it hands the job back, come well before that.
    await commands.failure_of("find", started, 0.8)
    # The server was told the time it had: maxTimeMS = the time left less the round trip.
    find = commands.named("find")[-1]
    assert 0 < find["maxTimeMS"] <= 200
    # The client is usable at once (the fail point blocked one find).
    assert await coll.find_one({"_id": 1}) == {"_id": 1}


async def test_pymongo_timeout_block_through_a_slow_network(make_client, server, db_name):
    """A server that answers in 1 s (the proxy delays every reply): ``with pymongo.timeout()``
    bounds the operation; the loop stays free; the client recovers once the network does."""
    with DelayProxy(server.host, server.port) as proxy:
        commands = Commands()
        client = make_client(proxy.uri, event_listeners=[commands])
        coll = client[db_name].items
        await coll.insert_one({"_id": 1})
        proxy.set_delay(1.0)
        started = time.monotonic()
        with Ticker() as ticker, pymongo.timeout(0.2):
            exc, took = await timed(coll.find_one({"_id": 1}))
        assert exc.timeout and isinstance(exc, (NetworkTimeout, ExecutionTimeout)), repr(exc)
        assert took < 0.2 + MARGIN, took
        assert ticker.ticks >= 8, ticker.ticks
        # Its events come when the worker hands the job back (it gave up at the deadline too).
        await commands.failure_of("find", started, 0.8)
        assert 0 < commands.named("find")[-1]["maxTimeMS"] <= 200
        proxy.set_delay(0.0)
        with pymongo.timeout(10):
            assert await coll.find_one({"_id": 1}) == {"_id": 1}
        await client[db_name].command("dropDatabase")


async def test_one_deadline_for_every_operation_of_a_block(make_client, db_name, sync_client,
                                                           fail_points):
    """pymongo.timeout() nests as PyMongo's: the block's deadline covers all its operations, an
    inner block cannot extend it, and the time is counted from the block's start."""
    client = make_client()
    coll = client[db_name].items
    await coll.insert_one({"_id": 1})
    with pymongo.timeout(0.3):
        await coll.find_one()  # well within
        await asyncio.sleep(0.35)  # the block's time runs out outside any operation
        exc, took = await timed(coll.find_one())
        assert isinstance(exc, ExecutionTimeout) and exc.timeout and exc.code == 50
        assert took < 0.05  # never sent: it was late before it began
    with pymongo.timeout(0.2):
        with pymongo.timeout(5):  # cannot extend the outer block
            block(sync_client, ["find"], 1000)
            exc, took = await timed(coll.find_one())
    assert exc.timeout and took < 0.2 + MARGIN, took


async def test_precedence_operation_collection_database_client(make_client, db_name, sync_client,
                                                               fail_points):
    client = make_client(timeoutMS=10000)
    assert client.options.timeout == 10.0
    db = client.get_database(db_name, timeout=0.2)
    coll = db.items  # inherits the database's
    await coll.insert_one({"_id": 1})
    block(sync_client, ["find"], 1000)
    exc, took = await timed(coll.find_one())
    assert exc.timeout and took < 0.2 + MARGIN, took
    # The operation's block wins over the collection's; the collection's over the database's.
    long = db.get_collection("items", timeout=5)
    block(sync_client, ["find"], 300)
    assert await long.find_one() == {"_id": 1}
    block(sync_client, ["find"], 300)
    with pymongo.timeout(5):
        assert await coll.find_one() == {"_id": 1}
    # 0 means no limit (not "unset": the deprecated options stay ignored).
    block(sync_client, ["find"], 300)
    assert await coll.with_options(timeout=0).find_one() == {"_id": 1}


# ---- the queue: a job whose deadline passes before a worker is free is never sent -------------


async def test_a_queued_write_past_its_deadline_is_never_sent(make_client, db_name, sync_client,
                                                              fail_points):
    commands = Commands()
    client = make_client(maxPoolSize=1, event_listeners=[commands])
    coll = client[db_name].items
    await coll.insert_one({"_id": "warm"})
    block(sync_client, ["insert"], 1000)
    blocker = asyncio.ensure_future(coll.insert_one({"_id": "blocker"}))
    await asyncio.sleep(0.1)  # the one worker is held by the blocked insert
    with pymongo.timeout(0.2):
        exc, took = await timed(coll.insert_one({"_id": "late"}))
    assert isinstance(exc, WaitQueueTimeoutError) and exc.timeout, repr(exc)
    assert took < 0.2 + MARGIN, took
    await blocker
    await asyncio.sleep(0.3)  # anything still on its way would have arrived
    assert sync_client[db_name].items.find_one({"_id": "late"}) is None
    assert not [c for c in commands.named("insert") if c["documents"][0]["_id"] == "late"]
    assert await coll.insert_one({"_id": "after"})  # and the client goes on


async def test_wait_queue_timeout_ms_still_bounds_the_queue(make_client, db_name, sync_client,
                                                            fail_points):
    """The deprecated waitQueueTimeoutMS, without timeoutMS: the wait for a worker alone."""
    client = make_client(maxPoolSize=1, waitQueueTimeoutMS=200)
    coll = client[db_name].items
    await coll.insert_one({"_id": 0})
    block(sync_client, ["find"], 1000)
    blocker = asyncio.ensure_future(coll.find_one())
    await asyncio.sleep(0.1)
    exc, took = await timed(coll.insert_one({"_id": 1}))
    assert isinstance(exc, WaitQueueTimeoutError), repr(exc)
    assert took < 0.2 + MARGIN, took
    assert await blocker == {"_id": 0}  # a running operation is not bounded by it


# ---- retries and deprecated options ------------------------------------------------------------


async def test_retried_while_time_is_left(make_client, db_name, sync_client, fail_points):
    commands = Commands()
    # ShutdownInProgress marks the server unknown: the next attempt waits for its monitor, whose
    # awaitable hello a real primary would answer at once on shutting down (its topologyVersion
    # changes); the fail point changes nothing, so the monitor checks at the heartbeat.
    client = make_client(timeoutMS=5000, heartbeatFrequencyMS=500, event_listeners=[commands])
    coll = client[db_name].items
    await coll.insert_one({"_id": 1})
    sync_client.admin.command("configureFailPoint", "failCommand", mode={"times": 3},
                              data={"failCommands": ["find"], "errorCode": 91})
    assert await coll.find_one() == {"_id": 1}
    assert len(commands.named("find")) >= 4  # more than the one retry of PyMongo's legacy rule
    sync_client.admin.command("configureFailPoint", "failCommand", mode={"times": 3},
                              data={"failCommands": ["insert"], "errorCode": 91,
                                    "errorLabels": ["RetryableWriteError"]})
    await coll.insert_one({"_id": 2})
    inserts = [c for c in commands.named("insert") if c["documents"][0]["_id"] == 2]
    assert len(inserts) == 4 and len({c["txnNumber"] for c in inserts}) == 1  # one write
    assert sync_client[db_name].items.count_documents({"_id": 2}) == 1


async def test_deprecated_options_give_way_to_timeout_ms(make_client, db_name, sync_client,
                                                         fail_points):
    commands = Commands()
    client = make_client(timeoutMS=5000, socketTimeoutMS=50, wTimeoutMS=1000,
                         event_listeners=[commands])
    coll = client[db_name].items
    block(sync_client, ["insert"], 300)  # longer than socketTimeoutMS: ignored
    await coll.insert_one({"_id": 1})
    insert = commands.named("insert")[-1]
    assert "wtimeout" not in insert.get("writeConcern", {})
    assert 4000 < insert["maxTimeMS"] <= 5000
    # maxTimeMS of the operation: replaced by the time left.
    await coll.find_one({}, max_time_ms=99999)
    assert commands.named("find")[-1]["maxTimeMS"] <= 5000
    # Without timeoutMS they keep working.
    legacy = make_client(wTimeoutMS=1000, event_listeners=[commands])
    await legacy[db_name].items.insert_one({"_id": 2})
    assert commands.named("insert")[-1]["writeConcern"]["wtimeout"] == 1000
    assert "maxTimeMS" not in commands.named("insert")[-1]


# ---- bad configurations: PyMongo's errors, before anything is sent ----------------------------


@pytest.mark.parametrize("value", [-1, "abc", -0.5])
def test_bad_timeout_ms_is_refused_as_pymongo_refuses_it(value):
    with pytest.raises(Exception) as theirs:
        pymongo.MongoClient("mongodb://localhost", timeoutMS=value, connect=False)
    with pytest.raises(type(theirs.value)) as ours:
        AsyncMongoClient("mongodb://localhost", timeoutMS=value, connect=False)
    assert str(ours.value) == str(theirs.value)


def test_bad_timeout_ms_in_the_uri_is_warned_and_ignored_as_by_pymongo():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = AsyncMongoClient("mongodb://localhost/?timeoutMS=-1", connect=False)
    assert client.options.timeout is None
    assert any("timeoutms" in str(w.message).lower() for w in caught)


@pytest.mark.parametrize("value", [-1, "1", True])
def test_bad_timeout_argument(value, make_client):
    client = make_client(connect=False)
    with pytest.raises((TypeError, ValueError)):
        client.get_database("db", timeout=value)


async def test_forbidden_combinations_fail_before_anything_is_sent(make_client, db_name):
    commands = Commands()
    client = make_client(event_listeners=[commands])
    coll = client[db_name].items
    with pytest.raises(ConfigurationError):  # timeout_mode needs a timeout
        coll.find({}, timeout_mode="iteration")
    with pymongo.timeout(1):
        with pytest.raises(ConfigurationError):  # a tailable cursor lives by ITERATION
            coll.find({}, cursor_type=pymongo.CursorType.TAILABLE_AWAIT,
                      timeout_mode="cursor_lifetime")
        with pytest.raises(ConfigurationError):  # $out cannot be iterated by ITERATION
            await coll.aggregate([{"$out": "other"}], timeout_mode="iteration")
        with pytest.raises(ConfigurationError):  # maxAwaitTimeMS must be below timeoutMS
            await coll.watch(max_await_time_ms=1000)
    async with client.start_session() as session:

        async def callback(s):
            with pymongo.timeout(0.5):  # may not override with_transaction's deadline
                await coll.insert_one({"_id": 1}, session=s)

        with pymongo.timeout(5):
            with pytest.raises(InvalidOperation):
                await session.with_transaction(callback)
    assert not commands.named("insert") and not commands.named("aggregate")


# ---- asyncio's own timeouts ------------------------------------------------------------------


async def test_asyncio_timeout_cancels(make_client, db_name, sync_client, fail_points):
    """asyncio.timeout()'s deadline cannot be read by the driver (design.md): it cancels the
    operation (the design's cancellation rule), no maxTimeMS is sent, the client goes on."""
    commands = Commands()
    client = make_client(event_listeners=[commands])
    coll = client[db_name].items
    await coll.insert_one({"_id": 1})
    block(sync_client, ["find"], 1000)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await coll.find_one()
    assert time.monotonic() - start < 0.2 + MARGIN
    assert await coll.find_one() == {"_id": 1}
    assert all("maxTimeMS" not in c for c in commands.named("find"))

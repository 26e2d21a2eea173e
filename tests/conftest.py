"""Fixtures for the suite: the server (SecantusDB in its own process, or MONGODB_URI), clients, and the
way coroutine tests run: each in a fresh event loop of the kind chosen with --loop (asyncio or
uvloop), failing on any call of the loop's exception handler ("Future exception was never
retrieved", exceptions in callbacks) and on C debug counters left unbalanced.

Run the suite the ways users run it: plain; ASYNCMONGO_WAKEUP=threadsafe (the other wake-up path);
--loop=uvloop; PYTHONASYNCIODEBUG=1; and with the sanitizer build (see README.rst).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import time
import uuid

import pytest

from asyncmongo import AsyncMongoClient, _core

# The server comes from asyncmongo's own pytest plugin (mongodb_server), as in users' projects.
# Installed, the package registers the plugin under this name too, and pytest loads it once.
pytest_plugins = ["asyncmongo.testing.plugin", "pytester"]


def pytest_addoption(parser):
    parser.addoption(
        "--loop",
        default=os.environ.get("ASYNCMONGO_TEST_LOOP", "asyncio"),
        choices=("asyncio", "uvloop"),
        help="event loop implementation the coroutine tests run on",
    )


def pytest_report_header(config):
    return (
        f"asyncmongo: loop={config.getoption('--loop')} "
        f"wakeup={os.environ.get('ASYNCMONGO_WAKEUP', 'eventfd')} libmongoc={_core.MONGOC_VERSION} "
        f"server={os.environ.get('MONGODB_URI', 'SecantusDB (own process)')}"
    )


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class LoopErrors:
    """Collects calls of a loop's exception handler; a test fails if any happened."""

    def __init__(self) -> None:
        self.contexts: list[dict] = []

    def __call__(self, loop, context) -> None:
        self.contexts.append(context)


def run_in_new_loop(kind: str, coro_fn, kwargs):
    loop = new_loop(kind)
    errors = LoopErrors()
    loop.set_exception_handler(errors)
    if os.environ.get("PYTHONASYNCIODEBUG"):
        loop.set_debug(True)
    try:
        asyncio.set_event_loop(loop)
        result = loop.run_until_complete(coro_fn(**kwargs))
        # Let callbacks scheduled by the test's last operations run before the loop goes away.
        loop.run_until_complete(asyncio.sleep(0))
        return result, errors
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            # "Future exception was never retrieved" is reported when the future is collected.
            gc.collect()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kind = pyfuncitem.config.getoption("--loop")
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    _, errors = run_in_new_loop(kind, pyfuncitem.obj, kwargs)
    if errors.contexts:
        msgs = "; ".join(
            f"{c.get('message')}: {c.get('exception')!r}" for c in errors.contexts
        )
        pytest.fail(f"the event loop's exception handler was called: {msgs}")
    return True


@pytest.fixture
def loop_kind(pytestconfig) -> str:
    return pytestconfig.getoption("--loop")


@pytest.fixture(scope="session")
def mongodb_server_args() -> tuple[str, ...]:
    # Test commands (configureFailPoint) on, as drivers' conformance suites run mongod: the CRUD
    # specification tests inject failures with them. The server listens on loopback only.
    return ("--enable-test-commands",)


@pytest.fixture(scope="session")
def server(mongodb_server):
    """The server every test talks to: the plugin's mongodb_server (SecantusDB started once in its
    own process, or MONGODB_URI)."""
    return mongodb_server


@pytest.fixture(autouse=True)
def core_counters():
    """The C core's debug counters must balance after each test: every job submitted was completed
    (resolved, discarded or unqueued), no job and no reply is left alive."""
    yield
    deadline = time.monotonic() + 10
    while True:
        gc.collect()
        c = _core.debug_counters()
        balanced = (
            c["jobs_submitted"] == c["jobs_completed"]
            and c["jobs_live"] == 0
            and c["replies_live"] == 0
        )
        if balanced or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert balanced, f"C core counters unbalanced after the test: {c}"


class ClientFactory:
    """Makes clients for a test and closes them all at teardown (each close on its own loop)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.clients: list[AsyncMongoClient] = []

    def __call__(self, uri: str | None = None, **kwargs) -> AsyncMongoClient:
        kwargs.setdefault("serverSelectionTimeoutMS", 10000)
        client = AsyncMongoClient(uri or self.uri, **kwargs)
        self.clients.append(client)
        return client

    def close_all(self, kind: str) -> None:
        async def close():
            for c in self.clients:
                await c.close()

        run_in_new_loop(kind, close, {})
        self.clients.clear()


@pytest.fixture
def make_client(server, loop_kind):
    factory = ClientFactory(server.uri)
    yield factory
    factory.close_all(loop_kind)


@pytest.fixture
def client(make_client) -> AsyncMongoClient:
    return make_client()


@pytest.fixture
def db_name() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sync_client(server):
    """PyMongo's synchronous client on the same server: the independent witness of what was sent."""
    import pymongo

    c = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10000)
    yield c
    c.close()


@pytest.fixture
def coll(client, db_name, sync_client):
    """A fresh collection, dropped after the test."""
    yield client[db_name]["items"]
    sync_client.drop_database(db_name)

"""The pytest plugin of asyncmongo (entry point ``pytest11``): a real MongoDB-compatible server for a
project's tests, and clients over it.

Fixtures:

- ``mongodb_server`` (session): SecantusDB started once, in its own process, on a free loopback
  port with temporary storage, stopped (and its storage removed) at the end of the session; or,
  when ``MONGODB_URI`` is set, that server, and nothing is started. ``.uri``, ``.host``,
  ``.port``, ``.external``.
- ``mongodb_server_args`` (session): extra command-line arguments for SecantusDB, ``()`` by
  default; override it in a ``conftest.py`` (e.g. ``("--enable-test-commands",)`` for fail points).
- ``async_mongo_client`` (function): an ``AsyncMongoClient`` over ``mongodb_server``, closed after
  the test. It is a plain (synchronous) fixture, so it works under pytest-asyncio, anyio's plugin
  (asyncio backend) or no async plugin at all: the client is bound to no event loop; each
  operation belongs to the loop that awaits it.

Without an async plugin, ``async def`` tests that no other plugin claims (no ``asyncio``, ``anyio``
or ``trio`` mark) are run here, each in a fresh asyncio event loop. This module imports neither
asyncmongo's C core nor any server code until a fixture is used.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from asyncmongo import AsyncMongoClient
    from asyncmongo.testing._server import Server

# Marks by which another plugin claims a coroutine test; such a test is left to that plugin.
_OTHER_RUNNERS = ("asyncio", "anyio", "trio")


@pytest.fixture(scope="session")
def mongodb_server_args() -> tuple[str, ...]:
    """Extra command-line arguments for the SecantusDB server (override in a conftest.py)."""
    return ()


@pytest.fixture(scope="session")
def mongodb_server(mongodb_server_args: tuple[str, ...]) -> Iterator[Server]:
    """SecantusDB in its own process for the whole session, or ``MONGODB_URI``'s server."""
    from asyncmongo.testing._server import server_from_env

    server = server_from_env(extra_args=tuple(mongodb_server_args))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def async_mongo_client(mongodb_server: Server) -> Iterator[AsyncMongoClient]:
    """An AsyncMongoClient over ``mongodb_server``, closed after the test."""
    from asyncmongo import AsyncMongoClient

    client = AsyncMongoClient(mongodb_server.uri, serverSelectionTimeoutMS=10000)
    try:
        yield client
    finally:
        _close(client)


def _close(client: AsyncMongoClient) -> None:
    """Closes a client from synchronous teardown code: in a private event loop, so the loop of the
    test (or of an async plugin, which may still be set for this thread) is left as it is; from a
    thread of its own if a loop is running in this one."""

    def run() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(client.close())
        finally:
            loop.close()

    if asyncio._get_running_loop() is None:
        run()
        return
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            run()
        except BaseException as exc:  # reported in the caller's thread
            errors.append(exc)

    t = threading.Thread(target=in_thread, name="asyncmongo-close")
    t.start()
    t.join()
    if errors:
        raise errors[0]


def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Runs an ``async def`` test that no async plugin claimed, in a fresh asyncio event loop.
    (An ordinary hook implementation: plugins registered after pytest's own, as this one is, are
    called before it, and pytest's fails coroutine tests.)"""
    func: Any = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    if any(pyfuncitem.get_closest_marker(name) for name in _OTHER_RUNNERS):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(func(**kwargs))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    return True

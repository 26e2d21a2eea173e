"""The pytest plugin (asyncmongo.testing.plugin) as a user's project meets it: a sample project of one
test file, no conftest.py, run by pytester in its own pytest process, using only the plugin's
fixtures. It passes with plain pytest (the plugin runs its ``async def`` tests), with pytest-asyncio
and with anyio's plugin; its server runs in a process of its own with temporary storage, shared by
the session and gone after it; with MONGODB_URI set, that server is used and nothing is started.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import uuid

import pytest

import asyncmongo

# The plugin's tests run sample projects in pytest subprocesses of their own: the default and
# sanitizer modes run them (scripts/test.sh).
pytestmark = pytest.mark.modes_inside

PLUGIN = "asyncmongo.testing.plugin"
# Where the asyncmongo under test is imported from: the source tree, or an installed wheel.
IMPORT_ROOT = str(pathlib.Path(asyncmongo.__file__).resolve().parent.parent)

# The sample's tests write what a user would look at (the server's pid, storage, URI) to REPORT, one
# JSON line per test, for the outer test to check after the sample's session has ended.
SAMPLE = '''
import asyncio
import json
import os

import pytest
from pymongo.results import InsertOneResult

from asyncmongo import AsyncMongoClient

MARK = os.environ["SAMPLE_MARK"]


def report(name, server, **extra):
    line = dict(test=name, pid=server.pid, external=server.external, uri=server.uri,
                storage=getattr(server, "storage_path", None), test_pid=os.getpid(), **extra)
    with open(os.environ["SAMPLE_REPORT"], "a") as f:
        f.write(json.dumps(line) + "\\n")


async def test_plain_async(mongodb_server, async_mongo_client):
    assert isinstance(async_mongo_client, AsyncMongoClient)
    coll = async_mongo_client["sample"]["plain"]
    res = await coll.insert_one({"mark": MARK, "by": "plain"})
    assert isinstance(res, InsertOneResult)
    assert (await coll.find_one({"_id": res.inserted_id}))["mark"] == MARK
    report("plain_async", mongodb_server)


def test_sync_with_asyncio_run(mongodb_server, async_mongo_client):
    async def main():
        await async_mongo_client["sample"]["sync"].insert_one({"mark": MARK, "by": "sync"})
        return await async_mongo_client["sample"]["sync"].count_documents({"mark": MARK})

    assert asyncio.run(main()) == 1
    report("sync_with_asyncio_run", mongodb_server)
'''

SAMPLE_WITH_RUNNERS = SAMPLE + '''

@pytest.mark.asyncio
async def test_pytest_asyncio(mongodb_server, async_mongo_client):
    coll = async_mongo_client["sample"]["pytest_asyncio"]
    await coll.insert_many([{"mark": MARK, "i": i} for i in range(3)])
    assert await coll.count_documents({"mark": MARK}) == 3
    report("pytest_asyncio", mongodb_server)


@pytest.fixture
def anyio_backend():
    return "asyncio"   # asyncmongo runs on asyncio loops (trio has none)


@pytest.mark.anyio
async def test_anyio(mongodb_server, async_mongo_client):
    coll = async_mongo_client["sample"]["anyio"]
    await coll.insert_one({"mark": MARK})
    assert [d["mark"] async for d in coll.find({"mark": MARK})] == [MARK]
    report("anyio", mongodb_server)
'''


def plugin_args() -> list[str]:
    """Installed (a wheel), the package registers the plugin with an entry point and pytest loads
    it by itself, as in a user's project; run from the source tree it must be named with -p."""
    eps = importlib.metadata.entry_points(group="pytest11")
    if any(ep.value == PLUGIN for ep in eps):
        return []
    return ["-p", PLUGIN]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def sample(pytester, monkeypatch, tmp_path):
    """Makes the sample project (one test file, no conftest.py) and runs it in its own pytest
    process; answers the outcome, the report lines and the sample's mark."""
    report = tmp_path / "report.jsonl"
    mark = uuid.uuid4().hex

    def run(source: str, *args: str, env: dict[str, str] | None = None,
            path_first: pathlib.Path | None = None):
        monkeypatch.setenv("SAMPLE_REPORT", str(report))
        monkeypatch.setenv("SAMPLE_MARK", mark)
        monkeypatch.delenv("MONGODB_URI", raising=False)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        # The sample imports asyncmongo from where this run does (source tree or installed wheel).
        path = [str(path_first)] if path_first else []
        path += [IMPORT_ROOT] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
        pytester.makepyfile(test_sample=source)
        assert not list(pytester.path.glob("conftest.py"))
        result = pytester.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider", *args,
                                               timeout=120)
        lines = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
        return result, lines, mark

    return run


def test_sample_project_passes_with_its_own_server(sample):
    result, lines, _ = sample(SAMPLE_WITH_RUNNERS)
    result.assert_outcomes(passed=4)
    assert {line["test"] for line in lines} == {"plain_async", "sync_with_asyncio_run",
                                                "pytest_asyncio", "anyio"}
    # One server for the whole session, in a process of its own, with temporary storage...
    assert len({line["pid"] for line in lines}) == 1 and len({line["uri"] for line in lines}) == 1
    first = lines[0]
    assert not first["external"] and first["pid"] not in (None, first["test_pid"], os.getpid())
    assert first["uri"].startswith("mongodb://127.0.0.1:")
    assert first["storage"] and "asyncmongo-secantus-" in first["storage"]
    # ... stopped, and its storage removed, when the session ended.
    assert not pid_alive(first["pid"])
    assert not os.path.exists(first["storage"])


def test_sample_project_passes_without_async_plugins(sample):
    # Plain pytest: neither pytest-asyncio nor anyio's plugin loaded; the plugin runs async tests.
    result, lines, _ = sample(SAMPLE, "-p", "no:asyncio", "-p", "no:anyio")
    result.assert_outcomes(passed=2)
    assert [line["test"] for line in lines] == ["plain_async", "sync_with_asyncio_run"]


def test_mongodb_uri_is_used_and_nothing_started(sample, server, sync_client, tmp_path):
    # A "secantus" module first on the path records any attempt to start a server.
    started = tmp_path / "started"
    fake = tmp_path / "fake" / "secantus"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(f"open({str(started)!r}, 'w').close()\n")

    result, lines, mark = sample(SAMPLE, env={"MONGODB_URI": server.uri}, path_first=fake.parent)
    result.assert_outcomes(passed=2)
    assert {line["uri"] for line in lines} == {server.uri}
    assert all(line["external"] and line["pid"] is None for line in lines)
    assert not started.exists(), "a server was started although MONGODB_URI was set"
    # What the sample wrote is on MONGODB_URI's server.
    assert sync_client["sample"]["plain"].count_documents({"mark": mark}) == 1
    assert sync_client["sample"]["sync"].count_documents({"mark": mark}) == 1
    sync_client.drop_database("sample")

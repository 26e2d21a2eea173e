"""The example FastAPI services (examples/fastapi_beanie.py on asyncmongo.AsyncMongoClient,
examples/fastapi_odmantic.py on asyncmongo.motor_asyncio) driven over HTTP with httpx's ASGI
transport, on asyncio and on uvloop (each test makes its own loop), the ODMantic one also with
gc.collect() forced between requests; and Beanie's migration runner forward and backward on
asyncmongo. PyMongo's synchronous client is the witness of what reached the server.
"""

from __future__ import annotations

import asyncio
import gc
import textwrap

import httpx
import pytest
import uvloop
from beanie.migrations.database import DBHandler
from beanie.migrations.models import RunningDirections, RunningMode
from beanie.migrations.runner import MigrationNode

from asyncmongo import AsyncMongoClient
from examples import fastapi_beanie, fastapi_odmantic

# App-level tests: each runs its own loop (asyncio and uvloop, parametrized), so the default
# and sanitizer modes run them (scripts/test.sh).
pytestmark = pytest.mark.modes_inside

APPS = {"beanie": fastapi_beanie.make_app, "odmantic": fastapi_odmantic.make_app}


def run(loop_kind: str, coro_fn, *args):
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    errors: list = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        result = loop.run_until_complete(coro_fn(*args))
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
        gc.collect()
    assert not errors, errors
    return result


async def scenario(make_app, uri: str, db_name: str, collect: bool) -> None:
    app = make_app(uri, db_name)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://library") as http:

            async def call(method: str, path: str, **kwargs):
                if collect:
                    gc.collect()
                return await http.request(method, path, **kwargs)

            books = [
                {"isbn": "1", "title": "Dune", "author": "Herbert", "year": 1965, "copies": 2},
                {"isbn": "2", "title": "Emma", "author": "Austen", "year": 1815},
                {"isbn": "3", "title": "Persuasion", "author": "Austen", "year": 1817},
                {"isbn": "4", "title": "Children of Dune", "author": "Herbert", "year": 1976},
            ]
            ids = {}
            for book in books:
                r = await call("POST", "/books", json=book)
                assert r.status_code == 201, r.text
                ids[book["isbn"]] = r.json()["_id"]
                assert r.json()["title"] == book["title"]
            # The unique index on isbn: 409.
            r = await call("POST", "/books", json=dict(books[0], title="Dune again"))
            assert r.status_code == 409 and "isbn" in r.json()["detail"]

            # Filters and sort.
            r = await call("GET", "/books", params={"author": "Austen", "sort": "-year"})
            assert [b["title"] for b in r.json()] == ["Persuasion", "Emma"]
            r = await call("GET", "/books", params={"min_year": 1900, "sort": "year"})
            assert [b["title"] for b in r.json()] == ["Dune", "Children of Dune"]
            r = await call("GET", "/books", params={"sort": "title", "limit": 2})
            assert [b["title"] for b in r.json()] == ["Children of Dune", "Dune"]

            # Read, update, 404s.
            r = await call("GET", f"/books/{ids['2']}")
            assert r.status_code == 200 and r.json()["author"] == "Austen"
            r = await call("PATCH", f"/books/{ids['2']}", json={"year": 1816})
            assert r.status_code == 200 and r.json()["year"] == 1816
            assert (await call("GET", f"/books/{ids['2']}")).json()["year"] == 1816
            missing = "0" * 24
            assert (await call("GET", f"/books/{missing}")).status_code == 404
            assert (await call("PATCH", f"/books/{missing}", json={"year": 1})).status_code == 404

            # A transaction: a loan takes a copy; with none left, 409 and nothing written.
            for member in ("ann", "bob"):
                r = await call("POST", f"/books/{ids['1']}/loans", json={"member": member})
                assert r.status_code == 201, r.text
                assert r.json()["member"] == member
            r = await call("POST", f"/books/{ids['1']}/loans", json={"member": "cy"})
            assert r.status_code == 409
            assert (await call("GET", f"/books/{ids['1']}")).json()["copies"] == 0

            # Delete.
            assert (await call("DELETE", f"/books/{ids['3']}")).status_code == 204
            assert (await call("GET", f"/books/{ids['3']}")).status_code == 404
            assert (await call("DELETE", f"/books/{ids['3']}")).status_code == 404


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
@pytest.mark.parametrize("kind, collect", [("beanie", False), ("odmantic", False),
                                           ("odmantic", True)],
                         ids=["beanie", "odmantic", "odmantic-gc"])
def test_example_service(server, sync_client, db_name, kind, collect, loop_kind):
    try:
        run(loop_kind, scenario, APPS[kind], server.uri, db_name, collect)
        db = sync_client[db_name]
        # What the user sees in the database: the books left, the loans, the unique index.
        assert sorted(b["isbn"] for b in db.books.find()) == ["1", "2", "4"]
        assert sorted(loan["member"] for loan in db.loans.find()) == ["ann", "bob"]
        assert db.books.find_one({"isbn": "1"})["copies"] == 0
        unique = [i for i in db.books.list_indexes() if i.get("unique")]
        assert [list(i["key"]) for i in unique] == [["isbn"]]
    finally:
        sync_client.drop_database(db_name)


MIGRATION = textwrap.dedent(
    """
    from beanie import Document, iterative_migration


    class OldNote(Document):
        title: str

        class Settings:
            name = "notes"


    class Note(Document):
        name: str

        class Settings:
            name = "notes"


    class Forward:
        @iterative_migration()
        async def title_to_name(self, input_document: OldNote, output_document: Note):
            output_document.name = input_document.title


    class Backward:
        @iterative_migration()
        async def name_to_title(self, input_document: Note, output_document: OldNote):
            output_document.title = input_document.name
    """
)


@pytest.mark.parametrize("use_transaction", [False, True], ids=["plain", "transaction"])
async def test_beanie_migrations_forward_and_backward(server, sync_client, db_name, tmp_path,
                                                      use_transaction):
    (tmp_path / "20260101000000_title_to_name.py").write_text(MIGRATION)
    sync_client[db_name].notes.insert_many([{"title": f"n{i}"} for i in range(5)])
    client = AsyncMongoClient(server.uri)
    # The runner's client (its CLI makes a PyMongo one from a URI): asyncmongo's here.
    DBHandler.client, DBHandler.database = client, client[db_name]
    try:
        assert await client.is_mongos is False  # what Beanie's migration tests ask first
        for direction, field, current in (
            (RunningDirections.FORWARD, "name", "20260101000000_title_to_name.py"),
            (RunningDirections.BACKWARD, "title", "root"),
        ):
            root = await MigrationNode.build(tmp_path)
            await root.run(mode=RunningMode(direction=direction, distance=1),
                           allow_index_dropping=False, use_transaction=use_transaction)
            docs = list(sync_client[db_name].notes.find({}, {"_id": 0}))
            assert sorted(d[field] for d in docs) == [f"n{i}" for i in range(5)], docs
            assert all(set(d) == {field} for d in docs)
            log = sync_client[db_name].migrations_log.find({"is_current": True})
            assert [entry["name"] for entry in log] == [current]
    finally:
        del DBHandler.client, DBHandler.database
        await client.close()
        sync_client.drop_database(db_name)

"""The example Tornado app (examples/tornado_app.py) driven over HTTP by Tornado's HTTP client against
the real server: the notes API's answers (201/200/204, 400, 404, 409), pagination, concurrent
requests, and ``python -m examples.tornado_app`` run as the README says. PyMongo is the witness.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from bson import ObjectId
from tornado import gen
from tornado.testing import AsyncHTTPTestCase, gen_test

from examples.tornado_app import create_indexes, make_app
from tests.test_tornado import TIMEOUT, CheckedLoop, loop_policy  # noqa: F401 - the fixture applies here too

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TestNotesApp(CheckedLoop, AsyncHTTPTestCase):
    def get_app(self):
        self.client = self.make_client()
        self.io_loop.run_sync(lambda: create_indexes(self.client, self.db_name), timeout=TIMEOUT)
        return make_app(self.client, self.db_name)

    @property
    def witness(self):
        return self.sync_client[self.db_name]["notes"]

    async def call(self, method, path, body=None):
        """(status, decoded JSON body or None) of one request."""
        if body is not None and not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        if body is None and method in ("POST", "PATCH"):
            body = ""
        response = await self.http_client.fetch(
            self.get_url(path), method=method, body=body, raise_error=False,
            request_timeout=TIMEOUT,
        )
        data = json.loads(response.body) if response.body else None
        return response, data

    async def create(self, slug, title=None, body=None):
        note = {"slug": slug, "title": title or slug.title()}
        if body is not None:
            note["body"] = body
        return await self.call("POST", "/notes", note)

    def assert_error(self, response, data, status, message_part):
        assert response.code == status, (response.code, data)
        assert response.headers["Content-Type"].startswith("application/json")
        assert data["error"]["status"] == status
        assert message_part in data["error"]["message"]

    @gen_test(timeout=TIMEOUT)
    async def test_create_get_update_delete(self):
        response, note = await self.create("groceries", "Groceries", "tea, milk")
        assert response.code == 201
        assert response.headers["Location"] == f"/notes/{note['id']}"
        assert note["slug"] == "groceries" and note["body"] == "tea, milk"
        assert note["created"] == note["updated"] and note["created"].endswith("Z")
        stored = self.witness.find_one({"_id": ObjectId(note["id"])})
        assert stored["title"] == "Groceries" and stored["body"] == "tea, milk"

        response, got = await self.call("GET", response.headers["Location"])
        assert response.code == 200 and got == note

        response, updated = await self.call("PATCH", f"/notes/{note['id']}", {"body": "tea"})
        assert response.code == 200
        assert updated["body"] == "tea" and updated["title"] == "Groceries"
        assert updated["updated"] >= note["updated"] and updated["created"] == note["created"]
        assert self.witness.find_one({"_id": ObjectId(note["id"])})["body"] == "tea"

        response, _ = await self.call("DELETE", f"/notes/{note['id']}")
        assert response.code == 204 and response.body == b""
        assert self.witness.count_documents({}) == 0
        response, data = await self.call("GET", f"/notes/{note['id']}")
        self.assert_error(response, data, 404, "no such note")

    @gen_test(timeout=TIMEOUT)
    async def test_pagination_walks_every_note_once_in_order(self):
        responses = await gen.multi([self.create(f"note-{i}") for i in range(25)])
        assert [r.code for r, _ in responses] == [201] * 25
        created = sorted(note["id"] for _, note in responses)

        pages, after = [], None
        while True:
            path = "/notes?limit=10" + (f"&after={after}" if after else "")
            response, page = await self.call("GET", path)
            assert response.code == 200
            pages.append([n["id"] for n in page["notes"]])
            after = page["next"]
            if after is None:
                break
            assert after == pages[-1][-1]
        assert [len(p) for p in pages] == [10, 10, 5]
        walked = [i for page in pages for i in page]
        assert walked == created  # the server orders ObjectIds as their hex strings sort

        response, page = await self.call("GET", "/notes")
        assert len(page["notes"]) == 20 and page["next"] == page["notes"][-1]["id"]
        response, page = await self.call("GET", f"/notes?after={created[-1]}")
        assert response.code == 200 and page == {"notes": [], "next": None}

    @gen_test(timeout=TIMEOUT)
    async def test_bad_requests_are_400(self):
        await self.create("kept")
        cases = [
            ("POST", "/notes", "{not json", "not valid JSON"),
            ("POST", "/notes", "[1, 2]", "JSON object"),
            ("POST", "/notes", {"title": "No slug"}, "slug is required"),
            ("POST", "/notes", {"slug": "x"}, "title is required"),
            ("POST", "/notes", {"slug": "x", "title": 5}, "title must be a string"),
            ("POST", "/notes", {"slug": "x", "title": "   "}, "title must be 1 to 200"),
            ("POST", "/notes", {"slug": "Not A Slug", "title": "t"}, "slug must be lowercase"),
            ("POST", "/notes", {"slug": "x", "title": "t", "owner": "me"}, "unknown fields: owner"),
            ("POST", "/notes", {"slug": "x", "title": "t" * 201}, "title must be 1 to 200"),
            ("GET", "/notes/not-an-id", None, "not a note id"),
            ("PATCH", "/notes/123", {"title": "t"}, "not a note id"),
            ("DELETE", "/notes/zz", None, "not a note id"),
            ("PATCH", f"/notes/{ObjectId()}", {}, "nothing to update"),
            ("GET", "/notes?limit=0", None, "limit must be between 1 and 100"),
            ("GET", "/notes?limit=101", None, "limit must be between 1 and 100"),
            ("GET", "/notes?limit=ten", None, "limit must be an integer"),
            ("GET", "/notes?after=nope", None, "not a note id"),
        ]
        for method, path, body, message in cases:
            response, data = await self.call(method, path, body)
            self.assert_error(response, data, 400, message)
        assert [d["slug"] for d in self.witness.find()] == ["kept"]

    @gen_test(timeout=TIMEOUT)
    async def test_missing_notes_are_404(self):
        missing = ObjectId()
        for method, body in (("GET", None), ("PATCH", {"title": "t"}), ("DELETE", None)):
            response, data = await self.call(method, f"/notes/{missing}", body)
            self.assert_error(response, data, 404, "no such note")
        response, data = await self.call("PUT", "/notes", "{}")
        self.assert_error(response, data, 405, "Method Not Allowed")

    @gen_test(timeout=TIMEOUT)
    async def test_duplicate_slug_is_409(self):
        _, first = await self.create("shared")
        response, data = await self.create("shared", "Another")
        self.assert_error(response, data, 409, "'shared' exists")
        _, second = await self.create("other")
        response, data = await self.call("PATCH", f"/notes/{second['id']}", {"slug": "shared"})
        self.assert_error(response, data, 409, "'shared' exists")
        # Neither conflict changed anything.
        assert self.witness.find_one({"_id": ObjectId(second["id"])})["slug"] == "other"
        assert self.witness.count_documents({"slug": "shared"}) == 1
        info = self.witness.index_information()["slug_unique"]
        assert info["unique"] is True and info["key"] == [("slug", 1)]

    @gen_test(timeout=TIMEOUT)
    async def test_concurrent_requests(self):
        distinct = [self.create(f"n-{i}", body=f"body {i}") for i in range(40)]
        # Ten creates racing for one slug: the unique index lets exactly one through.
        racing = [self.create("contested", f"Contender {i}") for i in range(10)]
        results = await gen.multi(distinct + racing)
        assert [r.code for r, _ in results[:40]] == [201] * 40
        racing_codes = sorted(r.code for r, _ in results[40:])
        assert racing_codes == [201] + [409] * 9
        notes = [note for _, note in results[:40]]

        reads = await gen.multi([self.call("GET", f"/notes/{n['id']}") for n in notes])
        assert [data for _, data in reads] == notes
        updates = await gen.multi(
            [self.call("PATCH", f"/notes/{n['id']}", {"title": f"T{i}"}) for i, n in enumerate(notes)]
        )
        assert all(r.code == 200 for r, _ in updates)
        deletes = await gen.multi([self.call("DELETE", f"/notes/{n['id']}") for n in notes[:20]])
        assert all(r.code == 204 for r, _ in deletes)

        assert self.witness.count_documents({}) == 21
        assert {d["title"] for d in self.witness.find({"slug": {"$ne": "contested"}})} == {
            f"T{i}" for i in range(20, 40)
        }


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def _post(url, note):
    request = urllib.request.Request(url, data=json.dumps(note).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_main_with_its_embedded_server():
    """``python -m examples.tornado_app`` with no URI starts SecantusDB, serves, and on SIGTERM
    closes the client and stops the server it started."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.tornado_app", "--port", str(port), "--db", "notes_main"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = []
    try:
        server_pid = None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            started = re.search(r"started SecantusDB \(pid (\d+)\)", line)
            if started:
                server_pid = int(started.group(1))
            if "notes API on" in line:
                break
        assert server_pid is not None and "notes API on" in output[-1], "".join(output)

        base = f"http://127.0.0.1:{port}/notes"
        status, note = _post(base, {"slug": "from-main", "title": "Hello"})
        assert status == 201 and note["slug"] == "from-main"
        status, page = _get(base)
        assert status == 200 and [n["id"] for n in page["notes"]] == [note["id"]]

        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=TIMEOUT)
        output.append(rest)
        assert proc.returncode == 0, "".join(output)
        # The embedded server went with it.
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            pass
        else:
            raise AssertionError(f"SecantusDB (pid {server_pid}) still running")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

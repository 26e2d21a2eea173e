"""A small JSON API for notes on Tornado and asyncmongo.tornado: create, list (paginated with a
cursor), get by id, update, delete; a unique index on ``slug``; 400, 404 and 409 answers in JSON.

    python -m examples.tornado_app [--uri MONGODB_URI] [--port 8888] [--db notes]

Without --uri (or MONGODB_URI in the environment) it starts SecantusDB in its own process
(asyncmongo.testing) and stops it on exit. The API:

    POST   /notes                 {"slug": "groceries", "title": "Groceries", "body": "tea"}  -> 201
    GET    /notes?limit=20&after=<id>                       -> {"notes": [...], "next": <id> | null}
    GET    /notes/<id>                                                                        -> 200
    PATCH  /notes/<id>            {"title": "...", "body": "...", "slug": "..."}              -> 200
    DELETE /notes/<id>                                                                        -> 204
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import re
import signal
from typing import Any

import tornado.web
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from asyncmongo.tornado import TornadoCollection, TornadoMongoClient

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# field -> (required on create, longest length); every field is a string.
FIELDS = {"slug": (True, 64), "title": (True, 200), "body": (False, 10_000)}


class ApiError(tornado.web.HTTPError):
    """An error answered as ``{"error": {"status": ..., "message": ...}}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


def now() -> datetime.datetime:
    # BSON dates keep milliseconds: round here so that what is answered is what is stored.
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def iso(t: datetime.datetime) -> str:
    if t.tzinfo is None:  # a client without tz_aware=True: BSON dates are UTC
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def note_json(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(doc["_id"]),
        "slug": doc["slug"],
        "title": doc["title"],
        "body": doc.get("body", ""),
        "created": iso(doc["created"]),
        "updated": iso(doc["updated"]),
    }


def parse_id(text: str) -> ObjectId:
    try:
        return ObjectId(text)
    except (InvalidId, TypeError):
        raise ApiError(400, f"not a note id: {text!r}") from None


def check_fields(data: Any, creating: bool) -> dict[str, str]:
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ApiError(400, f"unknown fields: {', '.join(unknown)}")
    if not creating and not data:
        raise ApiError(400, "nothing to update")
    for name, (required, longest) in FIELDS.items():
        if name not in data:
            if creating and required:
                raise ApiError(400, f"{name} is required")
            continue
        value = data[name]
        if not isinstance(value, str):
            raise ApiError(400, f"{name} must be a string")
        if len(value) > longest or (required and not value.strip()):
            raise ApiError(400, f"{name} must be 1 to {longest} characters")
        if name == "slug" and not SLUG.fullmatch(value):
            raise ApiError(400, "slug must be lowercase letters and digits separated by hyphens")
    return data


class BaseHandler(tornado.web.RequestHandler):
    @property
    def notes(self) -> TornadoCollection:
        notes: TornadoCollection = self.settings["notes"]  # the settings dict holds Any
        return notes

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")

    def json_body(self) -> Any:
        try:
            return json.loads(self.request.body or b"")
        except ValueError:
            raise ApiError(400, "the body is not valid JSON") from None

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.message if isinstance(exc, ApiError) else self._reason
        self.finish(json.dumps({"error": {"status": status_code, "message": message}}))


class NotesHandler(BaseHandler):
    async def get(self) -> None:
        """A page of notes in creation order: ``limit`` of them after the id ``after``."""
        try:
            limit = int(self.get_query_argument("limit", str(DEFAULT_LIMIT)))
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, f"limit must be between 1 and {MAX_LIMIT}")
        after = self.get_query_argument("after", None)
        query = {"_id": {"$gt": parse_id(after)}} if after else {}
        # One more than the page tells whether there is a next page, in the same query.
        cursor = self.notes.find(query).sort("_id", 1).limit(limit + 1)
        page = [note_json(doc) async for doc in cursor]
        more = len(page) > limit
        page = page[:limit]
        self.write_json({"notes": page, "next": page[-1]["id"] if more else None})

    async def post(self) -> None:
        data = check_fields(self.json_body(), creating=True)
        t = now()
        doc = {"slug": data["slug"], "title": data["title"], "body": data.get("body", ""),
               "created": t, "updated": t}
        try:
            await self.notes.insert_one(doc)
        except DuplicateKeyError:
            raise ApiError(409, f"a note with slug {data['slug']!r} exists") from None
        self.set_header("Location", f"/notes/{doc['_id']}")
        self.write_json(note_json(doc), 201)


class NoteHandler(BaseHandler):
    async def get(self, note_id: str) -> None:
        doc = await self.notes.find_one({"_id": parse_id(note_id)})
        if doc is None:
            raise ApiError(404, "no such note")
        self.write_json(note_json(doc))

    async def patch(self, note_id: str) -> None:
        oid = parse_id(note_id)
        changes = check_fields(self.json_body(), creating=False)
        try:
            doc = await self.notes.find_one_and_update(
                {"_id": oid}, {"$set": {**changes, "updated": now()}},
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            raise ApiError(409, f"a note with slug {changes['slug']!r} exists") from None
        if doc is None:
            raise ApiError(404, "no such note")
        self.write_json(note_json(doc))

    async def delete(self, note_id: str) -> None:
        result = await self.notes.delete_one({"_id": parse_id(note_id)})
        if not result.deleted_count:
            raise ApiError(404, "no such note")
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


def make_app(client: TornadoMongoClient, db_name: str = "notes") -> tornado.web.Application:
    """The application over ``client[db_name].notes`` (call ``create_indexes`` once first)."""
    return tornado.web.Application(
        [(r"/notes", NotesHandler), (r"/notes/([^/]+)", NoteHandler)],
        notes=client[db_name]["notes"],
    )


async def create_indexes(client: TornadoMongoClient, db_name: str = "notes") -> None:
    """The unique index on ``slug`` that turns a duplicate into a 409."""
    await client[db_name]["notes"].create_index("slug", unique=True, name="slug_unique")


async def serve(uri: str, db_name: str, host: str, port: int) -> None:
    client = TornadoMongoClient(uri, tz_aware=True)
    try:
        await create_indexes(client, db_name)
        http_server = make_app(client, db_name).listen(port, host)
        print(f"notes API on http://{host}:{port}/notes (database {db_name!r} at {uri}); Ctrl-C stops",
              flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()  # Ctrl-C cancels this instead
        finally:
            http_server.stop()
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", default=os.environ.get("MONGODB_URI"),
                        help="MongoDB URI (default: start SecantusDB in its own process)")
    parser.add_argument("--db", default="notes", help="database name (default: notes)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    embedded = None
    uri = args.uri
    if not uri:
        from asyncmongo.testing import ServerProcess

        embedded = ServerProcess().start()
        uri = embedded.uri
        print(f"started SecantusDB (pid {embedded.pid}) at {uri}", flush=True)
    try:
        asyncio.run(serve(uri, args.db, args.host, args.port))
    except KeyboardInterrupt:
        pass
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()

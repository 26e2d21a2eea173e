"""A short tour of asyncmongo: the API a PyMongo Async or Motor user already knows, on a real server.

    python -m examples.tour [MONGODB_URI]

Without a URI (and without MONGODB_URI in the environment) it starts SecantusDB in its own process.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
import time
import uuid
from decimal import Decimal

from bson import Decimal128, Int64, ObjectId
from pymongo.errors import DuplicateKeyError, OperationFailure, ServerSelectionTimeoutError

from asyncmongo import AsyncMongoClient, _core


def say(title: str) -> None:
    print(f"\n== {title}")


async def tour(uri: str) -> None:
    async with AsyncMongoClient(uri, maxPoolSize=50, uuidRepresentation="standard") as client:
        say("connect: the server's buildInfo")
        info = await client.server_info()
        print(f"server version {info.get('version')}; libmongoc {_core.MONGOC_VERSION}")

        coll = client["asyncmongo_tour"]["orders"]
        await coll.drop()

        say("insert_one adds an _id, as PyMongo does")
        doc = {"item": "tea", "qty": 3, "price": Decimal128(Decimal("4.50")),
               "at": datetime.datetime(2026, 11, 25, 12, 0), "ref": uuid.uuid4(), "big": Int64(2**40)}
        res = await coll.insert_one(doc)
        print(res, "->", doc["_id"])

        say("find_one by _id returns bson types")
        print(await coll.find_one({"_id": res.inserted_id}))
        print("projection:", await coll.find_one(res.inserted_id, projection={"item": 1, "_id": 0}))

        say("10,000 concurrent find_one tasks, each with its own answer")
        await coll.insert_many([{"_id": i, "sq": i * i} for i in range(1000)])
        start = time.perf_counter()
        docs = await asyncio.gather(*(coll.find_one({"_id": i % 1000}) for i in range(10_000)))
        elapsed = time.perf_counter() - start
        assert all(d["sq"] == (i % 1000) ** 2 for i, d in enumerate(docs))
        print(f"{len(docs)} answers, all correct, in {elapsed:.2f}s "
              f"({len(docs) / elapsed:,.0f} ops/s on this server)")

        say("errors are pymongo.errors classes")
        try:
            await coll.insert_one({"_id": ObjectId(res.inserted_id)})
        except DuplicateKeyError as exc:
            print(f"DuplicateKeyError code={exc.code}")
        try:
            await client.admin.command("noSuchCommand")
        except OperationFailure as exc:
            print(f"OperationFailure code={exc.code}: {(exc.details or {}).get('errmsg')}")

        say("cancellation: a cancelled task's operation is dropped, the client carries on")
        task = asyncio.ensure_future(coll.find_one({"_id": 1}))
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            print("cancelled; next find_one:", await coll.find_one({"_id": 2}))

        await coll.drop()

    say("an unreachable server fails within serverSelectionTimeoutMS")
    async with AsyncMongoClient("mongodb://127.0.0.1:1", serverSelectionTimeoutMS=300) as dead:
        start = time.perf_counter()
        try:
            await dead.admin.command("ping")
        except ServerSelectionTimeoutError:
            print(f"ServerSelectionTimeoutError after {time.perf_counter() - start:.2f}s")


def main() -> None:
    uri = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MONGODB_URI")
    server = None
    if not uri:
        from asyncmongo.testing import ServerProcess

        server = ServerProcess().start()
        uri = server.uri
        print(f"started SecantusDB in its own process at {uri}")
    try:
        asyncio.run(tour(uri))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()

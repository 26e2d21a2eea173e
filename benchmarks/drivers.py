"""Uniform adapters over each driver under test: connect, the benchmark's operations, close.

Adapters import their driver lazily so one missing or broken driver never hides the others.
"""
from __future__ import annotations

import importlib.metadata
from typing import Any, Awaitable, Callable

from benchmarks.spec_tasks import GRIDFS_FILENAME

DB_NAME = "asyncmongo_bench"

# Order here is the column order of the results table.
DRIVERS = (
    "asyncmongo-eventfd",
    "asyncmongo-threadsafe",
    "pymongo",
    "motor",
    "mongojet",
)
# The ceiling (benchmarks/ceiling.c: native threads calling libmongoc) is a column like a driver,
# but runs through benchmarks.native, not through an adapter.
CEILING = "ceiling"
COLUMNS = DRIVERS + (CEILING,)
ALIASES = {"asyncmongo": ("asyncmongo-eventfd", "asyncmongo-threadsafe")}
HELLO = {"hello": True}
# The spec's upload task starts from a bucket holding one 1-byte file (its collections and indexes
# exist before the timed upload).
ONE_BYTE_FILENAME = "one-byte"


def _dist_version(dist: str, module: Any = None) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        # An in-tree build (PYTHONPATH / build dir) has no dist-info.
        return str(getattr(module, "__version__", "unknown (not installed)"))


def _uri_with_option(uri: str, key: str, value: object) -> str:
    if key.lower() in uri.lower():
        return uri  # the caller's URI wins
    if "?" in uri:
        return f"{uri}&{key}={value}"
    rest = uri.split("://", 1)[-1]
    return f"{uri}{'' if '/' in rest else '/'}?{key}={value}"


def bench_uri(uri: str) -> str:
    """The URI every driver and the seeding client actually use.

    retryWrites=false: SecantusDB keeps every retryable-write reply and re-scans
    (past 10,000 of them, re-sorts) that table on each write, so with retryable
    writes on, insert throughput collapses ~10x partway through a run and later
    drivers would be penalised. Applied to all drivers alike; a URI that already
    says retryWrites keeps its own setting.
    """
    return _uri_with_option(uri, "retryWrites", "false")


class Adapter:
    """One connected client bound to one collection, plus the operations under test.

    The op attributes return the driver's own awaitable where the driver has one: a wrapper
    coroutine would add harness overhead to every op's CPU figure.
    """

    find_one: Callable[[Any], Awaitable[Any]]
    insert_one: Callable[[dict], Awaitable[Any]]
    insert_many: Callable[[list], Awaitable[Any]]
    command_hello: Callable[[], Awaitable[Any]]
    find_all: Callable[[], Awaitable[list]]

    async def reset(self) -> None:
        """Drop and re-create the collection (the spec's "before task" for inserts)."""
        raise NotImplementedError

    # GridFS: the collection name is the bucket's. Each driver's own bucket API, the call the
    # spec calls most natural: one upload from bytes in memory, one download into bytes.
    async def gridfs_upload(self, data: bytes) -> Any:
        """Upload ``data`` as a new file named GRIDFS_FILENAME; returns its _id."""
        raise NotImplementedError

    async def gridfs_download(self, file_id: Any) -> bytes:
        raise NotImplementedError

    async def gridfs_reset(self) -> None:
        """The spec's "before task" of the upload: drop the bucket, store a 1-byte file, then
        construct the bucket object the timed upload uses."""
        raise NotImplementedError

    async def gridfs_file_id(self, filename: str) -> Any:
        """The _id of the bucket's file of that name (None if there is none)."""
        raise NotImplementedError

    async def ping(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _PymongoStyle(Adapter):
    """Drivers whose client mirrors PyMongo: client[db][coll], db.command, async close; GridFS
    through the driver's bucket class (PyMongo's GridFSBucket API)."""

    def __init__(self, client: Any, collection: str,
                 bucket_factory: Callable[[Any, str], Any]) -> None:
        self.client = client
        self._db = db = client[DB_NAME]
        self._name = collection
        self._bucket_factory = bucket_factory
        self._bucket: Any = None
        coll = db[collection]
        self.find_one = lambda _id, f=coll.find_one: f({"_id": _id})
        self.insert_one = coll.insert_one
        self.insert_many = coll.insert_many
        self.command_hello = lambda c=db.command: c(HELLO)
        # find() is synchronous in all three; to_list() drains every batch (getMores included).
        self.find_all = lambda f=coll.find: f({}).to_list(None)

    async def reset(self) -> None:
        await self._db.drop_collection(self._name)
        await self._db.create_collection(self._name)

    def _fresh_bucket(self) -> Any:
        self._bucket = self._bucket_factory(self._db, self._name)
        return self._bucket

    @property
    def bucket(self) -> Any:
        return self._fresh_bucket() if self._bucket is None else self._bucket

    async def gridfs_upload(self, data: bytes) -> Any:
        return await self.bucket.upload_from_stream(GRIDFS_FILENAME, data)

    async def gridfs_download(self, file_id: Any) -> bytes:
        grid_out = await self.bucket.open_download_stream(file_id)
        return await grid_out.read()

    async def gridfs_reset(self) -> None:
        await self._db.drop_collection(f"{self._name}.files")
        await self._db.drop_collection(f"{self._name}.chunks")
        await self._fresh_bucket().upload_from_stream(ONE_BYTE_FILENAME, b"\0")
        # The timed upload gets a bucket object of its own, built now: untimed, in the spec's order.
        self._fresh_bucket()

    async def gridfs_file_id(self, filename: str) -> Any:
        doc = await self._db[f"{self._name}.files"].find_one({"filename": filename})
        return None if doc is None else doc["_id"]

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    async def close(self) -> None:
        res = self.client.close()
        if res is not None:  # Motor's close() is synchronous, the others return a coroutine
            await res


class _Mongojet(Adapter):
    def __init__(self, client: Any, collection: str) -> None:
        self.client = client
        self._db = db = client.get_database(DB_NAME)
        self._name = collection
        self._coll = coll = db.get_collection(collection)
        self._bucket: Any = None
        self.find_one = lambda _id, f=coll.find_one: f({"_id": _id})
        self.insert_one = coll.insert_one
        self.insert_many = coll.insert_many
        # mongojet has no Database.command(); run_command is its spelling.
        self.command_hello = lambda c=db.run_command: c(HELLO)

    async def find_all(self) -> list:
        # find() is a coroutine here (it opens the cursor); to_list() drains it in Rust.
        return await (await self._coll.find({})).to_list()

    async def reset(self) -> None:
        await self._coll.drop()
        await self._db.create_collection(self._name)

    # mongojet's GridfsBucket takes and returns whole files: put(bytes) and get_by_id() -> bytes.
    def _fresh_bucket(self) -> Any:
        self._bucket = self._db.gridfs_bucket(bucket_name=self._name)
        return self._bucket

    @property
    def bucket(self) -> Any:
        return self._fresh_bucket() if self._bucket is None else self._bucket

    async def gridfs_upload(self, data: bytes) -> Any:
        return (await self.bucket.put(data, filename=GRIDFS_FILENAME))["file_id"]

    async def gridfs_download(self, file_id: Any) -> bytes:
        return await self.bucket.get_by_id(file_id)

    async def gridfs_reset(self) -> None:
        await self._db.get_collection(f"{self._name}.files").drop()
        await self._db.get_collection(f"{self._name}.chunks").drop()
        await self._fresh_bucket().put(b"\0", filename=ONE_BYTE_FILENAME)
        self._fresh_bucket()

    async def gridfs_file_id(self, filename: str) -> Any:
        doc = await self._db.get_collection(f"{self._name}.files").find_one({"filename": filename})
        return None if doc is None else doc["_id"]

    async def ping(self) -> None:
        await self.client.get_database("admin").run_command({"ping": 1})

    async def close(self) -> None:
        await self.client.close()


def inserted_count(result: Any) -> int:
    """How many ids an insert_many result reports (mongojet returns a dict, the others an object)."""
    ids = result["inserted_ids"] if isinstance(result, dict) else result.inserted_ids
    return len(ids)


def probe(name: str) -> dict:
    """Import the driver and report {available, version, error} without connecting."""
    try:
        if name.startswith("asyncmongo"):
            import asyncmongo

            getattr(asyncmongo, "AsyncMongoClient")
            version = _dist_version("asyncmongo", asyncmongo)
        elif name == "pymongo":
            import pymongo

            getattr(pymongo, "AsyncMongoClient")
            version = pymongo.version
        elif name == "motor":
            import motor
            import motor.motor_asyncio  # noqa: F401

            version = motor.version
        elif name == "mongojet":
            import mongojet

            version = _dist_version("mongojet", mongojet)
        else:
            return {"available": False, "version": None, "error": f"unknown driver {name!r}"}
    except Exception as e:  # noqa: BLE001 - ImportError or a half-built extension alike
        return {"available": False, "version": None, "error": f"{type(e).__name__}: {e}"}
    return {"available": True, "version": version, "error": None}


# Bucket classes are imported on first use: a task without GridFS never loads a gridfs module.
def _asyncmongo_bucket(db: Any, name: str) -> Any:
    from asyncmongo.gridfs import AsyncGridFSBucket

    return AsyncGridFSBucket(db, bucket_name=name)


def _pymongo_bucket(db: Any, name: str) -> Any:
    from gridfs.asynchronous import AsyncGridFSBucket

    return AsyncGridFSBucket(db, bucket_name=name)


def _motor_bucket(db: Any, name: str) -> Any:
    from motor.motor_asyncio import AsyncIOMotorGridFSBucket

    return AsyncIOMotorGridFSBucket(db, bucket_name=name)


async def connect(name: str, uri: str, collection: str, pool_size: int) -> Adapter:
    """Build the client inside the running loop (Motor and PyMongo bind to it)."""
    # A pool size already in the URI wins for every driver alike.
    kw = {} if "maxpoolsize" in uri.lower() else {"maxPoolSize": pool_size}
    if name.startswith("asyncmongo"):
        from asyncmongo import AsyncMongoClient

        wakeup = name.split("-", 1)[1]
        return _PymongoStyle(AsyncMongoClient(uri, wakeup=wakeup, **kw), collection,
                             _asyncmongo_bucket)
    if name == "pymongo":
        from pymongo import AsyncMongoClient

        return _PymongoStyle(AsyncMongoClient(uri, **kw), collection, _pymongo_bucket)
    if name == "motor":
        from motor.motor_asyncio import AsyncIOMotorClient

        return _PymongoStyle(AsyncIOMotorClient(uri, **kw), collection, _motor_bucket)
    if name == "mongojet":
        import mongojet

        # create_client() takes only a URI; pool size must travel in it. Its default
        # (the Rust driver's, 10) would otherwise make 64/1024-task rows unfair.
        client = await mongojet.create_client(_uri_with_option(uri, "maxPoolSize", pool_size))
        return _Mongojet(client, collection)
    raise ValueError(f"unknown driver {name!r}")


def expand(names: str | None) -> list[str]:
    """Columns named on the command line (drivers and "ceiling"), in canonical order."""
    if not names:
        return list(COLUMNS)
    out: list[str] = []
    for raw in names.split(","):
        n = raw.strip()
        if not n:
            continue
        for m in ALIASES.get(n, (n,)):
            if m not in COLUMNS:
                raise SystemExit(f"unknown driver {m!r}; choose from {', '.join(COLUMNS)} or asyncmongo")
            if m not in out:
                out.append(m)
    # Canonical order, so tables from different invocations line up column for column.
    return sorted(out, key=COLUMNS.index)

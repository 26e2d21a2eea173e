"""Motor 3.7's shapes over the adapter (asyncmongo._adapter): the bases of asyncmongo.motor_asyncio
and asyncmongo.motor_tornado, so that Motor code moves by changing ``motor`` to ``asyncmongo`` in its
imports.

Where Motor's shape differs from PyMongo's async API, Motor's wins here: ``close()`` is synchronous,
``start_session()`` is awaited, ``start_transaction()`` is synchronous (``async with
s.start_transaction():``), ``aggregate()``/``list_indexes()``/``watch()`` give a cursor at once (no
await), the topology facts are plain properties (``client.is_primary``), cursors have ``each()``,
and every object has ``get_io_loop()``. Framework-agnostic: the concrete classes give the loop.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from pymongo.errors import InvalidOperation, ServerSelectionTimeoutError
from pymongo.server_type import SERVER_TYPE
from pymongo.topology_description import TOPOLOGY_TYPE

from asyncmongo import _adapter
from asyncmongo._adapter import returns, run_now
from asyncmongo._topology import members, primary
from asyncmongo.client import AsyncMongoClient
from asyncmongo.gridfs import AsyncGridFSBucket, AsyncGridIn, AsyncGridOut, AsyncGridOutCursor
from asyncmongo.gridfs._common import DEFAULT_CHUNK_SIZE


class MotorObject:
    """What every Motor object has: its client's loop, and ``wrap``."""

    def get_io_loop(self: Any) -> Any:
        return self._client.io_loop

    @returns("sync")
    def wrap(self: Any, obj: Any) -> Any:
        """The Motor object for an asyncio API object (Motor's ``wrap`` took PyMongo's)."""
        return self._wrap(obj)


def _each(obj: Any, callback: Callable[[Any, Any], Any]) -> None:
    """Motor's ``each``: ``callback(document, None)`` for each document, then ``callback(None,
    None)``; ``callback(None, error)`` on an error. Returning False from it stops the iteration."""
    if not callable(callback):
        raise TypeError("callback must be callable")

    async def run() -> None:
        try:
            async for doc in obj:
                if callback(doc, None) is False:
                    return
        except Exception as exc:  # handed to the callback, as Motor does
            callback(None, exc)
            return
        callback(None, None)

    loop = obj._adapter_client._loop_for_call() if isinstance(obj, asyncio.Future) else \
        obj._client._loop_for_call()
    loop.create_task(run())


# ---- cursors ---------------------------------------------------------------------------------


class Cursor(MotorObject, _adapter.Cursor):
    """The cursor of ``find``: Motor's (chainable modifiers, ``rewind()`` and ``add_option()``
    synchronous, ``to_list()``/``next()``/``close()`` awaited, ``each()``, ``fetch_next``)."""

    _async_methods = tuple(n for n in _adapter.Cursor._async_methods
                           if n not in ("add_option", "rewind"))

    @returns("sync")
    def add_option(self, mask: int) -> "Cursor":
        run_now(self._delegate.add_option(mask))  # only checks and sets flags: no I/O
        return self

    @returns("sync")
    def rewind(self) -> "Cursor":
        """Reset to the unevaluated state (the server cursor, if open, is killed in the
        background); iterating again runs the query again."""
        self._delegate._kill_soon()
        self._delegate._reset()
        return self

    def each(self, callback: Callable[[Any, Any], Any]) -> None:
        _each(self, callback)


class CommandCursor(MotorObject, _adapter.CommandCursor):
    def each(self, callback: Callable[[Any, Any], Any]) -> None:
        _each(self, callback)


class LatentCommandCursor(_adapter.CursorFuture):
    """What ``aggregate()``, ``list_indexes()`` and ``watch()`` return: usable at once as the cursor
    (``async for``, ``to_list()``, ``next()``...), as Motor's latent cursors are; also a future of
    the command cursor (``await``), as the asyncio API's."""

    @property
    def alive(self) -> bool:
        cursor = self._now()
        return cursor.alive if cursor is not None else not self.done()

    @property
    def cursor_id(self) -> Any:
        cursor = self._now()
        return cursor.cursor_id if cursor is not None else None

    @property
    def address(self) -> Any:
        cursor = self._now()
        return cursor.address if cursor is not None else None

    @property
    def session(self) -> Any:
        cursor = self._now()
        return cursor.session if cursor is not None else None

    @returns("sync")
    def batch_size(self, batch_size: int) -> "LatentCommandCursor":
        """The size of the batches the getMores ask for (from the next one on)."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0:
            raise TypeError("batch_size must be a non-negative integer")
        self.add_done_callback(lambda f: f._now() is not None and f._now().batch_size(batch_size))
        return self

    def each(self, callback: Callable[[Any, Any], Any]) -> None:
        _each(self, callback)

    def get_io_loop(self) -> Any:
        return self._adapter_client.get_io_loop()


class ChangeStream(MotorObject, _adapter.ChangeStream):
    def __enter__(self) -> Any:
        raise RuntimeError('Use a change stream in "async with", not "with"')

    def __exit__(self, *exc: Any) -> None:
        pass


# ---- sessions --------------------------------------------------------------------------------


class _TransactionStart:
    """What Motor's synchronous ``start_transaction()`` returns: ``async with`` it to commit at the
    end of the block (abort on an exception). The transaction starts at once; the block waits for
    the start to have reached the core."""

    def __init__(self, session: "ClientSession", started: "asyncio.Future[Any]") -> None:
        self._session = session
        self._started = started

    async def __aenter__(self) -> "_TransactionStart":
        await self._started
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        session = self._session._delegate
        if session.in_transaction:
            if exc is None:
                await session.commit_transaction()
            else:
                await session.abort_transaction()


class ClientSession(MotorObject, _adapter.ClientSession):
    """A session (``await client.start_session()``): Motor's, with a synchronous
    ``start_transaction()``."""

    _async_methods = tuple(n for n in _adapter.ClientSession._async_methods
                           if n != "start_transaction")

    @returns("sync")
    def start_transaction(self, read_concern: Any = None, write_concern: Any = None,
                          read_preference: Any = None, max_commit_time_ms: Any = None) -> Any:
        """Start a transaction; ``async with session.start_transaction():`` commits it at the end
        of the block. Operations given this session wait for the start."""
        session = self._delegate
        # The asyncio method's checks, raised here and now as Motor raises them.
        session._check_ended()
        if session.options.snapshot:
            raise InvalidOperation("Transactions are not supported in snapshot sessions")
        if session.in_transaction or getattr(session, "_adapter_start", None) is not None:
            raise InvalidOperation("Transaction already in progress")
        loop = self._client._loop_for_call()
        started = loop.create_task(session.start_transaction(
            read_concern, write_concern, read_preference, max_commit_time_ms))
        session._adapter_start = started
        started.add_done_callback(lambda _f: setattr(session, "_adapter_start", None))
        return _TransactionStart(self, started)

    def __enter__(self) -> Any:
        raise AttributeError("use a session as 'async with await client.start_session()', not "
                             "'with'")

    def __exit__(self, *exc: Any) -> None:
        pass


# ---- databases and collections ---------------------------------------------------------------


class Collection(MotorObject, _adapter.Collection):
    pass


class Database(MotorObject, _adapter.Database):
    pass


# ---- the client ------------------------------------------------------------------------------


class Client(MotorObject, _adapter.Client):
    """Motor's client: synchronous ``close()``, awaited ``start_session()``, the topology facts as
    plain properties."""

    _async_methods = tuple(n for n in _adapter.Client._async_methods if n != "close")
    _sync_methods = tuple(n for n in _adapter.Client._sync_methods if n != "start_session")
    _awaitable_properties = ()

    @property
    def HOST(self) -> str:
        return AsyncMongoClient.HOST

    @property
    def PORT(self) -> int:
        return AsyncMongoClient.PORT

    @returns("future")
    def start_session(self, causal_consistency: Any = None, default_transaction_options: Any = None,
                      snapshot: Any = False) -> "asyncio.Future[Any]":
        """A future of a new session, as Motor's: ``async with await client.start_session() as
        s:`` (nothing is sent: it resolves at once)."""
        session = self._delegate.start_session(causal_consistency, default_transaction_options,
                                               snapshot)
        return _adapter.done_future(self._loop_for_call(), self._wrap(session))

    @returns("sync")
    def close(self) -> None:
        """Close the client, now (Motor's is synchronous): no operation is taken after it, the
        queued ones fail with InvalidOperation, the running ones finish in the background."""
        self._delegate._close_now()

    # Motor's topology properties are plain values. Those that need a writable server wait for one
    # (up to serverSelectionTimeoutMS) as Motor's do: they block the calling thread, GIL released,
    # only until libmongoc has discovered the deployment.
    def _writable(self) -> Any:
        delegate = self._delegate
        td = delegate.topology_description
        if not td.has_writable_server():
            timeout = delegate.options.options.get("serverselectiontimeoutms", 30)
            delegate._core.wait_writable(int(timeout * 1000))
            td = delegate.topology_description
        servers = [sd for sd in td.known_servers if sd.is_writable]
        if not servers:
            raise ServerSelectionTimeoutError("No writable server is available")
        if td.topology_type == TOPOLOGY_TYPE.Sharded and len(td.server_descriptions()) > 1:
            raise InvalidOperation(
                'Cannot use "address" property when load balancing among mongoses, use "nodes" '
                "instead."
            )
        return servers[0]

    @property
    def address(self) -> Any:
        """(host, port) of the current standalone, primary or mongos."""
        return self._writable().address

    @property
    def is_primary(self) -> bool:
        """True if connected to a server that accepts writes."""
        return self._writable().is_writable

    @property
    def is_mongos(self) -> bool:
        """True if connected to a mongos."""
        return self._writable().server_type == SERVER_TYPE.Mongos

    @property
    def primary(self) -> Any:
        """(host, port) of the replica set's primary, or None."""
        return primary(self._delegate._description())

    @property
    def secondaries(self) -> set[Any]:
        return members(self._delegate._description(), SERVER_TYPE.RSSecondary)

    @property
    def arbiters(self) -> set[Any]:
        return members(self._delegate._description(), SERVER_TYPE.RSArbiter)


# ---- GridFS ----------------------------------------------------------------------------------


class GridIn(MotorObject, _adapter.Wrapper):
    """A file being uploaded (``open_upload_stream``): ``write``/``writelines``/``close``/``abort``/
    ``set`` awaited, the file's fields as properties, ``async with`` closes it."""

    _delegate_class = AsyncGridIn
    _async_methods = ("abort", "close", "set", "write", "writelines")
    _sync_methods = ("read", "readable", "seekable", "writeable")
    _properties = ("chunk_size", "closed", "content_type", "filename", "length", "name",
                   "upload_date", "_id")

    def __init__(self, root_collection: Any, session: Any = None, **kwargs: Any) -> None:
        self._client = root_collection._client
        self._delegate = AsyncGridIn(root_collection._delegate, _adapter.unwrap(session), **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._delegate, name)

    async def __aenter__(self) -> "GridIn":
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._delegate.__aexit__(*exc)


class GridOut(MotorObject, _adapter.Wrapper):
    """A file being downloaded (``open_download_stream``): ``read``/``readchunk``/``readline``
    awaited, ``seek``/``tell``/``close`` synchronous as Motor's, the file's fields as properties."""

    _delegate_class = AsyncGridOut
    _async_methods = ("open", "read", "readchunk", "readline")
    _sync_methods = ("readable", "seekable", "tell", "write")
    _properties = ("aliases", "chunk_size", "content_type", "filename", "length", "metadata",
                   "name", "upload_date", "_id")

    def __init__(self, root_collection: Any, file_id: Any = None, file_document: Any = None,
                 session: Any = None) -> None:
        self._client = root_collection._client
        self._delegate = AsyncGridOut(root_collection._delegate, file_id, file_document,
                                      _adapter.unwrap(session))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._delegate, name)

    @returns("sync")
    def seek(self, pos: int, whence: int = 0) -> int:
        return run_now(self._delegate.seek(pos, whence))

    @property
    def close(self) -> Callable[[], None]:
        """Motor's ``close`` (a property giving the method, as Motor's): drops the buffered
        chunks."""
        return lambda: run_now(self._delegate.close())

    def __aiter__(self) -> "GridOut":
        return self

    @returns("future")
    def __anext__(self) -> Any:
        return self._delegate.__anext__()

    async def stream_to_handler(self, request_handler: Any) -> None:
        """Write the file to a Tornado RequestHandler, a chunk at a time (each flushed before the
        next is read)."""
        while True:
            chunk = await self._delegate.readchunk()
            if not chunk:
                return
            request_handler.write(chunk)
            await request_handler.flush()


class GridOutCursor(Cursor):
    """The cursor of ``bucket.find()``: its documents are GridOut files."""

    _delegate_class = AsyncGridOutCursor

    async def __anext__(self) -> Any:
        return self._wrap(await self._delegate.__anext__())


class GridFSBucket(MotorObject, _adapter.Wrapper):
    """Motor's GridFS bucket: ``AsyncIOMotorGridFSBucket(db, bucket_name="fs", ...)``."""

    _delegate_class = AsyncGridFSBucket
    _async_methods = (
        "delete", "delete_by_name", "download_to_stream", "download_to_stream_by_name",
        "open_download_stream", "open_download_stream_by_name", "rename", "rename_by_name",
        "upload_from_stream", "upload_from_stream_with_id",
    )
    _sync_methods = ("find", "open_upload_stream", "open_upload_stream_with_id")

    def __init__(self, database: Any, bucket_name: str = "fs",
                 chunk_size_bytes: int = DEFAULT_CHUNK_SIZE, write_concern: Any = None,
                 read_preference: Any = None, collection: Any = None) -> None:
        if collection is not None:  # Motor's old spelling of the bucket name
            bucket_name = collection
        self._client = database._client
        self._delegate = AsyncGridFSBucket(database._delegate, bucket_name, chunk_size_bytes,
                                           write_concern, read_preference)


__all__ = ["Client", "Database", "Collection", "Cursor", "CommandCursor", "LatentCommandCursor",
           "ChangeStream", "ClientSession", "GridFSBucket", "GridIn", "GridOut", "GridOutCursor"]

"""The Tornado adapter: ``TornadoMongoClient`` and the database, collection, cursor and session objects
it hands out, with the asyncio API's methods, each returning a future Tornado code can await, yield in
a ``gen.coroutine``, pass to ``IOLoop.add_future`` or combine with ``gen.multi``/``WaitIterator``.

Thin wrappers over the asyncio classes: every operation is the asyncio method run as a task of the
caller's loop. Nothing here talks to the core directly, and nothing here may block the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from typing import Any, Callable

from tornado.ioloop import IOLoop

from asyncmongo.cursor import AsyncCursor
from asyncmongo.change_stream import AsyncChangeStream
from asyncmongo.client import AsyncMongoClient
from asyncmongo.client_session import AsyncClientSession
from asyncmongo.collection import AsyncCollection
from asyncmongo.command_cursor import AsyncCommandCursor
from asyncmongo.database import AsyncDatabase

__all__ = [
    "TornadoMongoClient",
    "TornadoDatabase",
    "TornadoCollection",
    "TornadoCursor",
    "TornadoCommandCursor",
    "TornadoClientSession",
    "TornadoChangeStream",
    "CursorFuture",
    "GridFSHandler",
]


# ---- how a call finds its loop ---------------------------------------------------------------


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _done_future(loop: asyncio.AbstractEventLoop, value: Any) -> "asyncio.Future[Any]":
    future = loop.create_future()
    future.set_result(value)
    return future


# ---- wrapping and unwrapping -----------------------------------------------------------------

# asyncio class -> Tornado class, filled in as the classes are defined below.
_WRAPPER_FOR: dict[type, type] = {}


def _unwrap(value: Any) -> Any:
    # A wrapper passed as an argument (session=, drop_database(db), drop_collection(coll)) goes to
    # the asyncio API as the object it wraps.
    return value._delegate if isinstance(value, _Wrapper) else value


class _Wrapper:
    """Base of the adapter's classes: ``_delegate`` is the asyncio object, ``_client`` the
    TornadoMongoClient that decides which loop each operation runs on.

    A subclass lists the asyncio class's members it exposes; ``__init_subclass__`` generates them:
    ``_async_methods`` return a future on the caller's loop (those in ``_cursor_methods`` a
    ``CursorFuture``), ``_sync_methods`` are called at once, ``_properties`` are read at once.
    Results that are asyncio API objects come back wrapped; a method returning its own object
    (the cursor's chainable modifiers) returns the wrapper."""

    _delegate_class: type = object
    _async_methods: tuple[str, ...] = ()
    _cursor_methods: tuple[str, ...] = ()
    _sync_methods: tuple[str, ...] = ()
    _properties: tuple[str, ...] = ()
    _awaitable_properties: tuple[str, ...] = ()

    _delegate: Any
    _client: "TornadoMongoClient"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        target = cls._delegate_class
        own = cls.__dict__
        for name in cls._async_methods:
            if name not in own:
                setattr(cls, name, _async_method(cls, target, name, name in cls._cursor_methods))
        for name in cls._sync_methods:
            if name not in own:
                setattr(cls, name, _sync_method(cls, target, name))
        for name in cls._properties:
            if name not in own:
                setattr(cls, name, _property(target, name))
        for name in cls._awaitable_properties:
            if name not in own:
                setattr(cls, name, _awaitable_property(target, name))
        if target is not object:
            _WRAPPER_FOR[target] = cls

    @classmethod
    def _wrap_delegate(cls, delegate: Any, client: "TornadoMongoClient") -> Any:
        self = cls.__new__(cls)
        self._delegate = delegate
        self._client = client
        return self

    @property
    def delegate(self) -> Any:
        """The asyncio API object this one wraps (usable directly from asyncio code)."""
        return self._delegate

    def _wrap(self, value: Any) -> Any:
        if value is self._delegate:
            return self
        # By the class or its nearest base (the change streams' subclasses, a cursor's).
        for klass in type(value).__mro__[:-1]:
            wrapper = _WRAPPER_FOR.get(klass)
            if wrapper is not None:
                if wrapper is TornadoMongoClient:
                    return self._client
                return wrapper._wrap_delegate(value, self._client)
        return value

    def _schedule(self, bound: Callable[..., Any], args: tuple, kwargs: dict,
                  cursor_future: bool = False) -> "asyncio.Future[Any]":
        loop = self._client._loop_for_call()
        coro = self._call(bound, tuple(map(_unwrap, args)),
                          {k: _unwrap(v) for k, v in kwargs.items()})
        if cursor_future:
            return CursorFuture(coro, loop=loop)
        return loop.create_task(coro)

    async def _call(self, bound: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        return self._wrap(await bound(*args, **kwargs))


_ASYNC_NAMES = re.compile(r"\bAsync(MongoClient|Database|Collection|Cursor|CommandCursor|ClientSession)\b")
_ASYNC_STREAMS = re.compile(r"\bAsync(Cluster|Database|Collection)?ChangeStream\b")


def _tornado_names(text: str) -> str:
    # The docs and reprs of the asyncio API, naming the classes a Tornado user gets.
    return _ASYNC_STREAMS.sub("TornadoChangeStream", _ASYNC_NAMES.sub(r"Tornado\1", text))


def _signature(impl: Callable[..., Any], returns_future: bool) -> inspect.Signature | None:
    try:
        sig = inspect.signature(impl)
    except (TypeError, ValueError):
        return None
    ret = sig.return_annotation
    ret = "Any" if ret is inspect.Signature.empty else _tornado_names(str(ret).strip("'\""))
    return sig.replace(return_annotation=f"asyncio.Future[{ret}]" if returns_future else ret)


def _async_method(cls: type, target: type, name: str, cursor_future: bool) -> Callable[..., Any]:
    impl = getattr(target, name)
    if not inspect.iscoroutinefunction(impl):
        raise TypeError(f"{target.__name__}.{name} is not a coroutine function")

    def method(self: _Wrapper, *args: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        return self._schedule(getattr(self._delegate, name), args, kwargs, cursor_future)

    _describe(method, cls, impl, name, returns_future=True)
    return method


def _sync_method(cls: type, target: type, name: str) -> Callable[..., Any]:
    impl = getattr(target, name)

    def method(self: _Wrapper, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(getattr(self._delegate, name)(
            *map(_unwrap, args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    _describe(method, cls, impl, name, returns_future=False)
    return method


def _describe(method: Any, cls: type, impl: Any, name: str, returns_future: bool) -> None:
    # Name, docs and parameters of the asyncio method, so help() and IDEs show the real API.
    method.__name__ = name
    method.__qualname__ = f"{cls.__name__}.{name}"
    method.__module__ = cls.__module__
    doc = impl.__doc__ or ""
    if returns_future:
        doc = (doc + "\n\n" if doc else "") + (
            "Returns a future on the caller's loop (see TornadoMongoClient)."
        )
    method.__doc__ = _tornado_names(doc) or None
    sig = _signature(impl, returns_future)
    if sig is not None:
        method.__signature__ = sig


def _property(target: type, name: str) -> property:
    impl = inspect.getattr_static(target, name)

    def get(self: _Wrapper) -> Any:
        return self._wrap(getattr(self._delegate, name))

    return property(get, doc=_tornado_names(getattr(impl, "__doc__", None) or "") or None)


def _awaitable_property(target: type, name: str) -> property:
    # PyMongo's awaitable properties (an async def under @property): a future on the caller's loop.
    impl = inspect.getattr_static(target, name)

    def get(self: _Wrapper) -> "asyncio.Future[Any]":
        return self._client._loop_for_call().create_task(getattr(self._delegate, name))

    doc = _tornado_names(getattr(impl, "__doc__", None) or "")
    return property(get, doc=(doc + "\n\nA future on the caller's loop.") if doc else None)


# ---- cursors ---------------------------------------------------------------------------------


class _CursorBase(_Wrapper):
    """``async for``, ``async with``, and Motor's ``fetch_next``/``next_object`` on top of the
    generated methods."""

    def __aiter__(self) -> "_CursorBase":
        return self

    def __anext__(self) -> Any:
        # ``async for`` runs in a coroutine of the caller's loop: the asyncio cursor's own coroutine
        # serves it directly, with no task in between.
        return self._delegate.__anext__()

    async def __aenter__(self) -> "_CursorBase":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._delegate.close()

    @property
    def fetch_next(self) -> "asyncio.Future[bool]":
        """A future resolving to True when a document is ready for ``next_object()`` (fetching the
        next batch from the server if none is buffered), False when the cursor is exhausted (or, for
        a tailable cursor, when a fetch brought nothing)::

            while (yield cursor.fetch_next):
                doc = cursor.next_object()

        Motor's pattern, kept so that Motor code ports unchanged; ``async for`` does the same."""
        loop = self._client._loop_for_call()
        cursor = self._delegate
        if getattr(cursor, "_empty", False):
            return _done_future(loop, False)
        # The asyncio cursors keep the current batch in ``_data`` (a deque) and fetch the next one
        # with ``_refresh()`` (it returns the number of buffered documents).
        if cursor._data:
            return _done_future(loop, True)
        if not cursor.alive:
            return _done_future(loop, False)
        return loop.create_task(self._prefetch())

    async def _prefetch(self) -> bool:
        return bool(await self._delegate._refresh())

    def next_object(self) -> Any:
        """The next document of the batch ``fetch_next`` fetched, or None if none is buffered."""
        data = self._delegate._data
        return data.popleft() if data and not getattr(self._delegate, "_empty", False) else None


class TornadoCursor(_CursorBase):
    """The cursor of ``TornadoCollection.find``: AsyncCursor's API (chainable modifiers return this
    cursor; ``next``, ``to_list``, ``close``... return futures), ``async for`` and Motor's
    ``fetch_next``/``next_object``."""

    _delegate_class = AsyncCursor
    _async_methods = (
        "add_option", "close", "distinct", "explain", "next", "rewind", "to_list", "try_next",
    )
    _sync_methods = (
        "allow_disk_use", "batch_size", "clone", "collation", "comment", "hint", "limit", "max",
        "max_await_time_ms", "max_scan", "max_time_ms", "min", "remove_option", "skip", "sort",
        "where",
    )
    _properties = ("address", "alive", "collection", "cursor_id", "retrieved", "session")

    def __init__(self, collection: "TornadoCollection", *args: Any, **kwargs: Any) -> None:
        self._client = collection._client
        self._delegate = AsyncCursor(collection._delegate, *args, **kwargs)

    def __getitem__(self, index: Any) -> Any:
        return self._delegate[index]

    def __copy__(self) -> "TornadoCursor":
        return self._wrap_delegate(self._delegate.__copy__(), self._client)

    def __deepcopy__(self, memo: Any) -> "TornadoCursor":
        return self._wrap_delegate(self._delegate.__deepcopy__(memo), self._client)


class TornadoCommandCursor(_CursorBase):
    """A cursor over a command's results (aggregate, list_indexes, list_collections...): the
    AsyncCommandCursor API with futures, ``async for`` and ``fetch_next``/``next_object``."""

    _delegate_class = AsyncCommandCursor
    _async_methods = ("close", "next", "to_list", "try_next")
    _sync_methods = ("batch_size",)
    _properties = ("address", "alive", "cursor_id", "session")


class TornadoChangeStream(_Wrapper):
    """A change stream (``watch()`` on a collection, a database or the client): ``async for``,
    ``async with``, and AsyncChangeStream's ``next``, ``try_next``, ``close`` returning futures."""

    _delegate_class = AsyncChangeStream
    _async_methods = ("close", "next", "try_next")
    _properties = ("alive", "resume_token")

    def __aiter__(self) -> "TornadoChangeStream":
        return self

    def __anext__(self) -> Any:
        return self._delegate.__anext__()

    async def __aenter__(self) -> "TornadoChangeStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._delegate.close()


class CursorFuture(asyncio.Task):
    """What the methods that open a server cursor return (``aggregate``, ``list_indexes``,
    ``list_collections``, ``list_databases``, ``watch``): a future of the TornadoCommandCursor or
    TornadoChangeStream, as in the asyncio API (``cursor = await coll.aggregate(p)``), that can
    also be used as the object itself, as Motor's were: ``async for doc in coll.aggregate(p)``,
    ``async with coll.watch() as stream``, ``fetch_next``/``next_object``, ``next()``,
    ``try_next()``, ``to_list()`` and ``close()``."""

    def __aiter__(self) -> "CursorFuture":
        return self

    async def __anext__(self) -> Any:
        return await (await self).__anext__()

    async def __aenter__(self) -> Any:
        return await self

    async def __aexit__(self, *exc: Any) -> None:
        await (await self).close()

    def _now(self) -> Any:
        if self.done() and not self.cancelled() and self.exception() is None:
            return self.result()
        return None

    @property
    def fetch_next(self) -> "asyncio.Future[bool]":
        """As ``TornadoCommandCursor.fetch_next``, once the command has opened the cursor."""
        cursor = self._now()
        if cursor is not None:
            return cursor.fetch_next
        return self._then(lambda c: c.fetch_next)

    def next_object(self) -> Any:
        """As ``TornadoCommandCursor.next_object``; None until the command has opened the cursor."""
        cursor = self._now()
        return cursor.next_object() if cursor is not None else None

    def next(self) -> "asyncio.Future[Any]":
        return self._then(lambda c: c.next())

    def try_next(self) -> "asyncio.Future[Any]":
        return self._then(lambda c: c.try_next())

    def to_list(self, length: int | None = None) -> "asyncio.Future[list[Any]]":
        return self._then(lambda c: c.to_list(length))

    def close(self) -> "asyncio.Future[None]":
        return self._then(lambda c: c.close())

    def _then(self, then: Callable[[Any], Any]) -> "asyncio.Future[Any]":
        async def after() -> Any:
            return await then(await self)

        return self.get_loop().create_task(after())


# ---- sessions --------------------------------------------------------------------------------


class TornadoClientSession(_Wrapper):
    """An explicit session (``client.start_session()``): pass it as ``session=``; ``async with``
    ends it. ``await client.start_session()`` (Motor's spelling) gives the same session."""

    _delegate_class = AsyncClientSession
    _async_methods = (
        "abort_transaction", "commit_transaction", "end_session", "start_transaction",
        "with_transaction",
    )
    _sync_methods = ("advance_cluster_time", "advance_operation_time", "bind")
    _properties = (
        "client", "cluster_time", "has_ended", "in_transaction", "operation_time", "options",
        "session_id",
    )

    def with_transaction(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``callback(session)`` in a transaction and commit it, with the convenient API's
        retries; ``callback`` receives this TornadoClientSession and may return any awaitable
        (a coroutine or a future of this adapter). Returns a future of its result."""
        return self._schedule(self._delegate.with_transaction, (lambda _s: callback(self),) + args,
                              kwargs)

    async def __aenter__(self) -> "TornadoClientSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._delegate.end_session()

    def __await__(self) -> Any:
        # Motor's start_session was a coroutine: ``await client.start_session()`` still works.
        yield from ()
        return self


# ---- databases and collections ---------------------------------------------------------------


class TornadoCollection(_Wrapper):
    """A collection: AsyncCollection's API, each operation returning a future on the caller's
    loop. ``find()`` returns a TornadoCursor at once; ``coll.sub``/``coll["sub"]`` a
    sub-collection."""

    _delegate_class = AsyncCollection
    _async_methods = (
        "aggregate", "bulk_write", "count_documents", "create_index", "create_indexes",
        "delete_many", "delete_one", "distinct", "drop", "drop_index", "drop_indexes",
        "estimated_document_count", "find_one", "find_one_and_delete", "find_one_and_replace",
        "find_one_and_update", "index_information", "insert_many", "insert_one", "list_indexes",
        "options", "rename", "replace_one", "update_many", "update_one", "watch",
        "aggregate_raw_batches", "create_search_index", "create_search_indexes",
        "drop_search_index", "list_search_indexes", "update_search_index",
    )
    _cursor_methods = (
        "aggregate", "aggregate_raw_batches", "list_indexes", "list_search_indexes", "watch",
    )
    _sync_methods = ("find", "find_raw_batches", "with_options")
    _properties = (
        "codec_options", "database", "full_name", "name", "read_concern", "read_preference",
        "write_concern",
    )

    def __init__(self, database: "TornadoDatabase", name: str, *args: Any, **kwargs: Any) -> None:
        self._client = database._client
        self._delegate = AsyncCollection(database._delegate, name, *args, **kwargs)

    def __getattr__(self, name: str) -> "TornadoCollection":
        if name.startswith("_"):
            raise AttributeError(
                f"TornadoCollection has no attribute {name!r}. To access the {self.name}.{name} "
                f"collection, use database['{self.name}.{name}']."
            )
        return self[name]

    def __getitem__(self, name: str) -> "TornadoCollection":
        return self._wrap(self._delegate[name])

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self._delegate(*args, **kwargs)  # raises PyMongo's TypeError for a misspelt method

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, TornadoCollection):
            return self._delegate == other._delegate
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._delegate)

    def __bool__(self) -> bool:
        return bool(self._delegate)  # raises NotImplementedError, as PyMongo's

    def __iter__(self) -> Any:
        raise TypeError("'TornadoCollection' object is not iterable")

    def next(self) -> Any:
        raise TypeError("'TornadoCollection' object is not iterable")

    __next__ = next

    def __repr__(self) -> str:
        return _tornado_names(repr(self._delegate))


class TornadoDatabase(_Wrapper):
    """A database: AsyncDatabase's API, each operation returning a future on the caller's loop;
    ``db.coll``/``db["coll"]`` a TornadoCollection."""

    _delegate_class = AsyncDatabase
    _async_methods = (
        "aggregate", "command", "create_collection", "drop_collection", "list_collection_names",
        "list_collections", "watch", "cursor_command", "dereference", "validate_collection",
    )
    _cursor_methods = ("aggregate", "cursor_command", "list_collections", "watch")
    _sync_methods = ("get_collection", "with_options")
    _properties = (
        "client", "codec_options", "name", "read_concern", "read_preference", "write_concern",
    )

    def __init__(self, client: "TornadoMongoClient", name: str, *args: Any, **kwargs: Any) -> None:
        self._client = client
        self._delegate = AsyncDatabase(client._delegate, name, *args, **kwargs)

    def __getattr__(self, name: str) -> TornadoCollection:
        if name.startswith("_"):
            raise AttributeError(
                f"TornadoDatabase has no attribute {name!r}. To access the {name} collection, use "
                f"database[{name!r}]."
            )
        return self.get_collection(name)

    def __getitem__(self, name: str) -> TornadoCollection:
        return self.get_collection(name)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, TornadoDatabase):
            return self._delegate == other._delegate
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._delegate)

    def __bool__(self) -> bool:
        return bool(self._delegate)  # raises NotImplementedError, as PyMongo's

    def __iter__(self) -> Any:
        raise TypeError("'TornadoDatabase' object is not iterable")

    def next(self) -> Any:
        raise TypeError("'TornadoDatabase' object is not iterable")

    __next__ = next

    def __repr__(self) -> str:
        return _tornado_names(repr(self._delegate))


# ---- the client ------------------------------------------------------------------------------


class TornadoMongoClient(_Wrapper):
    """A MongoDB client for Tornado: ``TornadoMongoClient(host=None, port=None, ..., io_loop=None,
    **kwargs)`` takes what AsyncMongoClient takes (a URI or host names, PyMongo's options) and has
    its API; each operation returns a future (an asyncio future, which is Tornado's): ``await`` it
    in a native coroutine, ``yield`` it in a ``gen.coroutine``, pass it to ``IOLoop.add_future``,
    ``gen.multi`` or ``gen.WaitIterator``.

    Which loop an operation's future belongs to:

    - started from a running loop (a coroutine, a callback, a request handler): that loop, always.
      One client can serve several IOLoops, in several threads, at once;
    - started while no loop is running in the thread (set-up code before ``run_sync`` or
      ``start()``): the client's IOLoop, ``io_loop=`` if given, else the thread's current IOLoop
      when the client is first used. The operation runs once that loop runs. If that IOLoop is
      running in another thread, or closed, the call raises RuntimeError: from another thread, start
      operations from a coroutine of that thread's IOLoop (``io_loop.add_callback``).
    """

    _delegate_class = AsyncMongoClient
    _async_methods = (
        "aclose", "aconnect", "bulk_write", "close", "drop_database", "list_database_names",
        "list_databases", "server_info", "watch",
    )
    _cursor_methods = ("list_databases", "watch")
    _sync_methods = (
        "append_metadata", "eq_props", "get_database", "get_default_database", "start_session",
    )
    _properties = (
        "codec_options", "nodes", "options", "read_concern", "read_preference",
        "topology_description", "write_concern",
    )
    _awaitable_properties = (
        "address", "arbiters", "is_mongos", "is_primary", "primary", "secondaries",
    )

    HOST = AsyncMongoClient.HOST
    PORT = AsyncMongoClient.PORT

    def __init__(self, *args: Any, io_loop: IOLoop | None = None, **kwargs: Any) -> None:
        if io_loop is not None and not isinstance(io_loop, IOLoop):
            raise TypeError(f"io_loop must be a tornado.ioloop.IOLoop, not {type(io_loop)}")
        self._io_loop = io_loop
        self._client = self
        self._delegate = AsyncMongoClient(*args, **kwargs)

    # ---- the loop ----------------------------------------------------------------------------

    @property
    def io_loop(self) -> IOLoop:
        """The client's IOLoop: ``io_loop=``, else the IOLoop current when the client was first
        used (bound now if it has not been used yet)."""
        if self._io_loop is None:
            self._io_loop = IOLoop.current()
        return self._io_loop

    def get_io_loop(self) -> IOLoop:
        """The client's IOLoop (Motor's name for ``io_loop``)."""
        return self.io_loop

    def _loop_for_call(self) -> asyncio.AbstractEventLoop:
        running = _running_loop()
        if running is not None:
            if self._io_loop is None:
                self._io_loop = IOLoop.current()
            return running
        loop = self.io_loop.asyncio_loop  # type: ignore[attr-defined]
        if loop.is_closed():
            raise RuntimeError(
                "the TornadoMongoClient's IOLoop is closed: start operations from a running IOLoop "
                "or give the client a live one with io_loop="
            )
        if loop.is_running():
            raise RuntimeError(
                "the TornadoMongoClient's IOLoop is running in another thread: start operations "
                "from a coroutine or callback of a running IOLoop (io_loop.add_callback)"
            )
        return loop

    # ---- databases ---------------------------------------------------------------------------

    def __getattr__(self, name: str) -> TornadoDatabase:
        if name.startswith("_"):
            raise AttributeError(
                f"TornadoMongoClient has no attribute {name!r}. To access the {name} database, use "
                f"client[{name!r}]."
            )
        return self.get_database(name)

    def __getitem__(self, name: str) -> TornadoDatabase:
        return self.get_database(name)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> "TornadoMongoClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._delegate.close()

    def __eq__(self, other: Any) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __iter__(self) -> Any:
        raise TypeError("'TornadoMongoClient' object is not iterable")

    def next(self) -> Any:
        raise TypeError("'TornadoMongoClient' object is not iterable")

    __next__ = next

    def __repr__(self) -> str:
        return _tornado_names(repr(self._delegate))


# ---- GridFS over HTTP --------------------------------------------------------------------------


def __getattr__(name: str) -> Any:
    # GridFSHandler is imported on first use: serving files is optional, the client is not.
    if name == "GridFSHandler":
        from asyncmongo._tornado_gridfs import GridFSHandler as _Handler

        class GridFSHandler(_Handler):
            __doc__ = _Handler.__doc__

            def initialize(self, database: Any, root_collection: str = "fs") -> None:
                """``database``: a TornadoDatabase (or an AsyncDatabase); ``root_collection``: the
                bucket name."""
                super().initialize(_unwrap(database), root_collection)

        GridFSHandler.__module__ = __name__
        GridFSHandler.__qualname__ = "GridFSHandler"
        globals()["GridFSHandler"] = GridFSHandler
        return GridFSHandler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

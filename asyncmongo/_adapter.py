"""The adapter machinery shared by asyncmongo.tornado and the Motor-named modules (motor_asyncio,
motor_tornado): wrappers over the asyncio API whose operations return futures on the caller's loop.

A *family* is one set of wrapper classes (Tornado's, Motor's for asyncio, Motor's for Tornado): it
says which wrapper stands for which asyncio class, and which names its documentation uses. The
classes here are the families' common bases; each family's concrete classes say ``family=`` and
get their members generated from the lists below. Nothing here imports Tornado, talks to the core,
or may block the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import types
from typing import Any, Callable

from asyncmongo.change_stream import AsyncChangeStream
from asyncmongo.client import AsyncMongoClient
from asyncmongo.client_session import AsyncClientSession
from asyncmongo.collection import AsyncCollection
from asyncmongo.command_cursor import AsyncCommandCursor
from asyncmongo.cursor import AsyncCursor
from asyncmongo.database import AsyncDatabase

# ---- loops -----------------------------------------------------------------------------------


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def done_future(loop: asyncio.AbstractEventLoop, value: Any) -> "asyncio.Future[Any]":
    future = loop.create_future()
    future.set_result(value)
    return future


def run_now(coro: Any) -> Any:
    """The result of a coroutine that never suspends (an asyncio method that does no I/O in the
    case at hand), run to its end here: for APIs that are synchronous in Motor."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("asyncmongo: this call needs I/O here; use the asyncio API's coroutine")


# ---- families --------------------------------------------------------------------------------

_ASYNC_CLIENT = re.compile(r"\bAsyncMongoClient\b")
_ASYNC_NAMES = re.compile(r"\bAsync(Database|Collection|Cursor|CommandCursor|ClientSession)\b")
_ASYNC_STREAMS = re.compile(r"\bAsync(Cluster|Database|Collection)?ChangeStream\b")


class Family:
    """The wrapper classes of one adapter: ``wrappers`` maps an asyncio class to its wrapper;
    ``rename`` turns the asyncio API's docs and reprs into this family's names."""

    def __init__(self, prefix: str, client_name: str) -> None:
        self.prefix = prefix
        self.client_name = client_name
        self.wrappers: dict[type, type] = {}
        self.cursor_future: type = CursorFuture

    def rename(self, text: str) -> str:
        text = _ASYNC_CLIENT.sub(self.client_name, text)
        text = _ASYNC_NAMES.sub(rf"{self.prefix}\1", text)
        return _ASYNC_STREAMS.sub(f"{self.prefix}ChangeStream", text)


def unwrap(value: Any) -> Any:
    # A wrapper passed as an argument (session=, drop_database(db), drop_collection(coll)) goes to
    # the asyncio API as the object it wraps.
    return value._delegate if isinstance(value, Wrapper) else value


def returns(kind: str) -> Callable[[Any], Any]:
    """Marks a hand-written member with what calling it gives: "future" (an awaitable), "cursor"
    (a cursor usable at once, and awaitable), or "sync" (a value). Generated members are marked
    the same way; tests compare these kinds with Motor's."""

    def mark(func: Any) -> Any:
        func._adapter_kind = kind
        return func

    return mark


def _free(cls: type, name: str) -> bool:
    """May `name` be generated on `cls`: nothing hand-written defines it (a generated member of a
    base, for another family, may be replaced)."""
    attr = inspect.getattr_static(cls, name, None)
    if attr is None:
        return True
    attr = getattr(attr, "fget", attr)
    return getattr(attr, "_adapter_generated", False)


def _own_copy(cls: type, name: str) -> None:
    """A hand-written method of a common base, copied onto a family's class so that its name
    reads as that class's (help(), reprs), as the generated ones do."""
    func = inspect.getattr_static(cls, name, None)
    if not isinstance(func, types.FunctionType) or name in cls.__dict__:
        return
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__, func.__defaults__,
                              func.__closure__)
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__dict__.update(func.__dict__)
    copy.__doc__ = func.__doc__
    copy.__annotations__ = func.__annotations__
    copy.__qualname__ = f"{cls.__name__}.{name}"
    copy.__module__ = cls.__module__
    setattr(cls, name, copy)


class Wrapper:
    """Base of the adapter's classes: ``_delegate`` is the asyncio object, ``_client`` the client
    wrapper that decides which loop each operation runs on.

    A subclass lists the asyncio class's members it exposes; a family's concrete class
    (``class X(Base, family=F)``) gets them generated: ``_async_methods`` return a future on the
    caller's loop (those in ``_cursor_methods`` a cursor future), ``_sync_methods`` are called at
    once, ``_properties`` are read at once, ``_awaitable_properties`` (PyMongo's ``async`` properties)
    give a future. Results that are asyncio API objects come back wrapped; a method returning its
    own object (the cursor's chainable modifiers) returns the wrapper."""

    _delegate_class: type = object
    _async_methods: tuple[str, ...] = ()
    _cursor_methods: tuple[str, ...] = ()
    _sync_methods: tuple[str, ...] = ()
    _properties: tuple[str, ...] = ()
    _awaitable_properties: tuple[str, ...] = ()

    _family: Family
    _delegate: Any
    _client: Any

    def __init_subclass__(cls, family: Family | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if family is None:
            return
        cls._family = family
        target = cls._delegate_class
        for name in cls._async_methods:
            if _free(cls, name):
                setattr(cls, name, _async_method(cls, target, name, name in cls._cursor_methods))
            else:
                _own_copy(cls, name)
        for name in cls._sync_methods:
            if _free(cls, name):
                setattr(cls, name, _sync_method(cls, target, name))
            else:
                _own_copy(cls, name)
        for name in cls._properties:
            if _free(cls, name):
                setattr(cls, name, _property(cls, target, name))
        for name in cls._awaitable_properties:
            if _free(cls, name):
                setattr(cls, name, _awaitable_property(cls, target, name))
        if target is not object:
            family.wrappers[target] = cls

    @classmethod
    def _wrap_delegate(cls, delegate: Any, client: Any) -> Any:
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
        wrappers = self._family.wrappers
        for klass in type(value).__mro__[:-1]:
            wrapper = wrappers.get(klass)
            if wrapper is not None:
                if issubclass(wrapper, Client):
                    return self._client
                return wrapper._wrap_delegate(value, self._client)
        return value

    def _schedule(self, bound: Callable[..., Any], args: tuple, kwargs: dict,
                  cursor_future: bool = False) -> "asyncio.Future[Any]":
        loop = self._client._loop_for_call()
        coro = self._call(bound, tuple(map(unwrap, args)),
                          {k: unwrap(v) for k, v in kwargs.items()})
        if cursor_future:
            future = self._family.cursor_future(coro, loop=loop)
            future._adapter_client = self._client
            return future
        return loop.create_task(coro)

    async def _call(self, bound: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        # A transaction started by Motor's synchronous start_transaction: its start goes first.
        start = getattr(kwargs.get("session"), "_adapter_start", None)
        if start is not None:
            await start
        return self._wrap(await bound(*args, **kwargs))


def _signature(cls: type, impl: Callable[..., Any], returns_future: bool) -> inspect.Signature | None:
    try:
        sig = inspect.signature(impl)
    except (TypeError, ValueError):
        return None
    ret = sig.return_annotation
    ret = "Any" if ret is inspect.Signature.empty else cls._family.rename(str(ret).strip("'\""))
    return sig.replace(return_annotation=f"asyncio.Future[{ret}]" if returns_future else ret)


def _async_method(cls: type, target: type, name: str, cursor_future: bool) -> Callable[..., Any]:
    impl = getattr(target, name)
    if not inspect.iscoroutinefunction(impl):
        raise TypeError(f"{target.__name__}.{name} is not a coroutine function")

    def method(self: Wrapper, *args: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        return self._schedule(getattr(self._delegate, name), args, kwargs, cursor_future)

    _describe(method, cls, impl, name, returns_future=True)
    method._adapter_kind = "cursor" if cursor_future else "future"  # type: ignore[attr-defined]
    return method


def _sync_method(cls: type, target: type, name: str) -> Callable[..., Any]:
    impl = getattr(target, name)

    def method(self: Wrapper, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(getattr(self._delegate, name)(
            *map(unwrap, args), **{k: unwrap(v) for k, v in kwargs.items()}))

    _describe(method, cls, impl, name, returns_future=False)
    method._adapter_kind = "sync"  # type: ignore[attr-defined]
    return method


def _describe(method: Any, cls: type, impl: Any, name: str, returns_future: bool) -> None:
    # Name, docs and parameters of the asyncio method, so help() and IDEs show the real API.
    method.__name__ = name
    method.__qualname__ = f"{cls.__name__}.{name}"
    method.__module__ = cls.__module__
    method._adapter_generated = True
    doc = impl.__doc__ or ""
    if returns_future:
        doc = (doc + "\n\n" if doc else "") + "Returns a future on the caller's loop."
    method.__doc__ = cls._family.rename(doc) or None
    sig = _signature(cls, impl, returns_future)
    if sig is not None:
        method.__signature__ = sig


def _property(cls: type, target: type, name: str) -> property:
    impl = inspect.getattr_static(target, name)

    def get(self: Wrapper) -> Any:
        return self._wrap(getattr(self._delegate, name))

    get._adapter_generated = True  # type: ignore[attr-defined]
    return property(get, doc=cls._family.rename(getattr(impl, "__doc__", None) or "") or None)


def _awaitable_property(cls: type, target: type, name: str) -> property:
    # PyMongo's awaitable properties (an async def under @property): a future on the caller's loop.
    impl = inspect.getattr_static(target, name)

    def get(self: Wrapper) -> "asyncio.Future[Any]":
        return self._client._loop_for_call().create_task(getattr(self._delegate, name))

    get._adapter_generated = True  # type: ignore[attr-defined]
    get._adapter_kind = "future"  # type: ignore[attr-defined]
    doc = cls._family.rename(getattr(impl, "__doc__", None) or "")
    return property(get, doc=(doc + "\n\nA future on the caller's loop.") if doc else None)


# ---- cursors ---------------------------------------------------------------------------------


class CursorBase(Wrapper):
    """``async for``, ``async with``, and Motor's ``fetch_next``/``next_object`` on top of the
    generated methods."""

    def __aiter__(self) -> "CursorBase":
        return self

    @returns("future")
    def __anext__(self) -> Any:
        # ``async for`` runs in a coroutine of the caller's loop: the asyncio cursor's own coroutine
        # serves it directly, with no task in between.
        return self._delegate.__anext__()

    async def __aenter__(self) -> "CursorBase":
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
            return done_future(loop, False)
        # The asyncio cursors keep the current batch in ``_data`` (a deque) and fetch the next one
        # with ``_refresh()`` (it returns the number of buffered documents).
        if cursor._data:
            return done_future(loop, True)
        if not cursor.alive:
            return done_future(loop, False)
        return loop.create_task(self._prefetch())

    async def _prefetch(self) -> bool:
        return bool(await self._delegate._refresh())

    def next_object(self) -> Any:
        """The next document of the batch ``fetch_next`` fetched, or None if none is buffered."""
        data = self._delegate._data
        value = data.popleft() if data and not getattr(self._delegate, "_empty", False) else None
        return self._wrap(value) if value is not None else None


class Cursor(CursorBase):
    """The cursor of ``find``: AsyncCursor's API (chainable modifiers return this cursor; ``next``,
    ``to_list``, ``close``... return futures), ``async for`` and Motor's ``fetch_next``/
    ``next_object``."""

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

    def __init__(self, collection: Any, *args: Any, **kwargs: Any) -> None:
        self._client = collection._client
        self._delegate = AsyncCursor(collection._delegate, *args, **kwargs)

    def __getitem__(self, index: Any) -> Any:
        return self._delegate[index]

    def __copy__(self) -> "Cursor":
        return self._wrap_delegate(self._delegate.__copy__(), self._client)

    def __deepcopy__(self, memo: Any) -> "Cursor":
        return self._wrap_delegate(self._delegate.__deepcopy__(memo), self._client)


class CommandCursor(CursorBase):
    """A cursor over a command's results (aggregate, list_indexes, list_collections...): the
    AsyncCommandCursor API with futures, ``async for`` and ``fetch_next``/``next_object``."""

    _delegate_class = AsyncCommandCursor
    _async_methods = ("close", "next", "to_list", "try_next")
    _sync_methods = ("batch_size",)
    _properties = ("address", "alive", "cursor_id", "session")


class ChangeStream(Wrapper):
    """A change stream (``watch()`` on a collection, a database or the client): ``async for``,
    ``async with``, and AsyncChangeStream's ``next``, ``try_next``, ``close`` returning futures."""

    _delegate_class = AsyncChangeStream
    _async_methods = ("close", "next", "try_next")
    _properties = ("alive", "resume_token")

    def __aiter__(self) -> "ChangeStream":
        return self

    @returns("future")
    def __anext__(self) -> Any:
        return self._delegate.__anext__()

    async def __aenter__(self) -> "ChangeStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._delegate.close()


class CursorFuture(asyncio.Task):
    """What the methods that open a server cursor return (``aggregate``, ``list_indexes``,
    ``list_collections``, ``list_databases``, ``watch``): a future of the command cursor or change
    stream, as in the asyncio API (``cursor = await coll.aggregate(p)``), that can also be used as
    the object itself, as Motor's were: ``async for doc in coll.aggregate(p)``, ``async with
    coll.watch() as stream``, ``fetch_next``/``next_object``, ``next()``, ``try_next()``,
    ``to_list()`` and ``close()``."""

    _adapter_client: Any = None

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
        """As the command cursor's ``fetch_next``, once the command has opened the cursor."""
        cursor = self._now()
        if cursor is not None:
            return cursor.fetch_next
        return self._then(lambda c: c.fetch_next)

    def next_object(self) -> Any:
        """As the command cursor's ``next_object``; None until the command has opened the cursor."""
        cursor = self._now()
        return cursor.next_object() if cursor is not None else None

    @returns("future")
    def next(self) -> "asyncio.Future[Any]":
        return self._then(lambda c: c.next())

    @returns("future")
    def try_next(self) -> "asyncio.Future[Any]":
        return self._then(lambda c: c.try_next())

    @returns("future")
    def to_list(self, length: int | None = None) -> "asyncio.Future[list[Any]]":
        return self._then(lambda c: c.to_list(length))

    @returns("future")
    def close(self) -> "asyncio.Future[None]":
        return self._then(lambda c: c.close())

    def _then(self, then: Callable[[Any], Any]) -> "asyncio.Future[Any]":
        async def after() -> Any:
            return await then(await self)

        return self.get_loop().create_task(after())


# ---- sessions --------------------------------------------------------------------------------


class ClientSession(Wrapper):
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

    @returns("future")
    def with_transaction(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``callback(session)`` in a transaction and commit it, with the convenient API's
        retries; ``callback`` receives this session and may return any awaitable (a coroutine or a
        future of this adapter). Returns a future of its result."""
        return self._schedule(self._delegate.with_transaction, (lambda _s: callback(self),) + args,
                              kwargs)

    async def __aenter__(self) -> "ClientSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._delegate.end_session()

    def __await__(self) -> Any:
        # Motor's start_session was a coroutine: ``await client.start_session()`` still works.
        yield from ()
        return self


# ---- databases and collections ---------------------------------------------------------------


class Collection(Wrapper):
    """A collection: AsyncCollection's API, each operation returning a future on the caller's
    loop. ``find()`` returns a cursor at once; ``coll.sub``/``coll["sub"]`` a sub-collection."""

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

    def __init__(self, database: Any, name: str, *args: Any, **kwargs: Any) -> None:
        self._client = database._client
        self._delegate = AsyncCollection(database._delegate, name, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r}. To access the "
                f"{self.name}.{name} collection, use database['{self.name}.{name}']."
            )
        return self[name]

    def __getitem__(self, name: str) -> Any:
        return self._wrap(self._delegate[name])

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self._delegate(*args, **kwargs)  # raises PyMongo's TypeError for a misspelt method

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, Collection):
            return self._delegate == other._delegate
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._delegate)

    def __bool__(self) -> bool:
        return bool(self._delegate)  # raises NotImplementedError, as PyMongo's

    def __iter__(self) -> Any:
        raise TypeError(f"'{type(self).__name__}' object is not iterable")

    def next(self) -> Any:
        raise TypeError(f"'{type(self).__name__}' object is not iterable")

    __next__ = next

    def __repr__(self) -> str:
        return self._family.rename(repr(self._delegate))


class Database(Wrapper):
    """A database: AsyncDatabase's API, each operation returning a future on the caller's loop;
    ``db.coll``/``db["coll"]`` a collection."""

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

    def __init__(self, client: Any, name: str, *args: Any, **kwargs: Any) -> None:
        self._client = client
        self._delegate = AsyncDatabase(client._delegate, name, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r}. To access the {name} "
                f"collection, use database[{name!r}]."
            )
        return self.get_collection(name)

    def __getitem__(self, name: str) -> Any:
        return self.get_collection(name)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, Database):
            return self._delegate == other._delegate
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._delegate)

    def __bool__(self) -> bool:
        return bool(self._delegate)  # raises NotImplementedError, as PyMongo's

    def __iter__(self) -> Any:
        raise TypeError(f"'{type(self).__name__}' object is not iterable")

    def next(self) -> Any:
        raise TypeError(f"'{type(self).__name__}' object is not iterable")

    __next__ = next

    def __repr__(self) -> str:
        return self._family.rename(repr(self._delegate))


# ---- the client ------------------------------------------------------------------------------


class Client(Wrapper):
    """The client: AsyncMongoClient's API with futures. A family's client gives the loop rules:
    ``_check_io_loop(io_loop)``, ``_default_io_loop()`` and ``_asyncio_loop(io_loop)``.

    Which loop an operation's future belongs to: started from a running loop, that loop, always
    (one client serves several loops in several threads at once); started while no loop runs in
    the thread, the client's loop (``io_loop=`` if given, else the thread's current one when the
    client is first used), where it runs once that loop runs. If that loop is running in another
    thread, or closed, the call raises RuntimeError; but close(), which closes at once where its
    loop has closed."""

    _delegate_class = AsyncMongoClient
    _async_methods = (
        "aclose", "aconnect", "bulk_write", "close", "drop_database", "list_database_names",
        "list_databases", "server_info", "watch",
    )
    _cursor_methods = ("list_databases", "watch")
    _sync_methods = (
        "append_metadata", "eq_props", "get_database", "get_default_database", "start_session",
        "stats",
    )
    _properties = (
        "codec_options", "nodes", "options", "read_concern", "read_preference",
        "topology_description", "write_concern",
    )
    _awaitable_properties = (
        "address", "arbiters", "is_mongos", "is_primary", "primary", "secondaries",
    )

    def __init__(self, *args: Any, io_loop: Any = None, **kwargs: Any) -> None:
        if io_loop is not None:
            self._check_io_loop(io_loop)
        self._io_loop = io_loop
        self._client = self
        self._delegate = AsyncMongoClient(*args, **kwargs)

    # ---- the loop ----------------------------------------------------------------------------

    def _check_io_loop(self, io_loop: Any) -> None:
        raise NotImplementedError

    def _default_io_loop(self) -> Any:
        raise NotImplementedError

    def _asyncio_loop(self, io_loop: Any) -> asyncio.AbstractEventLoop:
        raise NotImplementedError

    @property
    def io_loop(self) -> Any:
        """The client's loop: ``io_loop=``, else the loop current when the client was first used
        (bound now if it has not been used yet)."""
        if self._io_loop is None:
            self._io_loop = self._default_io_loop()
        return self._io_loop

    def get_io_loop(self) -> Any:
        """The client's loop (Motor's name for ``io_loop``)."""
        return self.io_loop

    def _loop_for_call(self) -> asyncio.AbstractEventLoop:
        running = running_loop()
        if running is not None:
            if self._io_loop is None:
                self._io_loop = self._default_io_loop()
            return running
        loop = self._asyncio_loop(self.io_loop)
        if loop.is_closed():
            raise RuntimeError(
                f"the {type(self).__name__}'s loop is closed: start operations from a running loop "
                "or give the client a live one with io_loop="
            )
        if loop.is_running():
            raise RuntimeError(
                f"the {type(self).__name__}'s loop is running in another thread: start operations "
                "from a coroutine or callback of a running loop"
            )
        return loop

    # ---- databases ---------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r}. To access the {name} database, "
                f"use client[{name!r}]."
            )
        return self.get_database(name)

    def __getitem__(self, name: str) -> Any:
        return self.get_database(name)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._delegate.close()

    @returns("future")
    def close(self) -> "asyncio.Future[None]":
        if running_loop() is None and self._io_loop is not None:
            loop = self._asyncio_loop(self._io_loop)
            if loop.is_closed():
                self._delegate._close_now()
                done = loop.create_future()
                done.set_result(None)
                return done
        return self._schedule(self._delegate.close, (), {})

    close.__doc__ = (
        f"{AsyncMongoClient.close.__doc__}\n\nReturns a future on the caller's loop. Called where no "
        "loop can run it any more (none running in this thread, and the client's loop closed: "
        "tear-down code after the loop has gone, as in a test fixture), the client closes now, as "
        "Motor's synchronous close() does, and the future returned is already done."
    )

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, Client):
            return self._delegate == other._delegate
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._delegate)

    def __iter__(self) -> Any:
        raise TypeError(f"'{type(self).__name__}' object is not iterable")

    def next(self) -> Any:
        raise TypeError(f"'{type(self).__name__}' object is not iterable")

    __next__ = next

    def __repr__(self) -> str:
        return self._family.rename(repr(self._delegate))


__all__ = [
    "Family", "Wrapper", "CursorBase", "Cursor", "CommandCursor", "ChangeStream", "CursorFuture",
    "ClientSession", "Collection", "Database", "Client", "returns", "run_now", "unwrap",
    "running_loop", "done_future",
]

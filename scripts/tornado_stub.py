"""Writes asyncmongo/tornado.pyi, the types of the Tornado adapter, whose methods are generated at
import from the asyncio API's (so a type checker cannot read them from tornado.py).

    python scripts/tornado_stub.py            # rewrite the stub
    python scripts/tornado_stub.py --check    # fail if the stub is not what the runtime gives

The template below is the stub with one ``@@name -> Result`` line per generated method: the result
type (a future of the asyncio method's result, its objects wrapped in the Tornado classes) is
written by hand; the parameters are the asyncio method's, with its annotations (the asyncio class
names turned into the Tornado ones, as the adapter's docs do). A name used by an annotation is
imported from where the asyncio method's module got it.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import typing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import asyncmongo.tornado as adapter  # noqa: E402

STUB = os.path.join(os.path.dirname(adapter.__file__), "tornado.pyi")
BUILTIN = {"None", "bool", "int", "str", "bytes", "float", "list", "dict", "tuple", "set", "object", "type"}

TEMPLATE = """\
# Types of asyncmongo.tornado, whose methods are generated from the asyncio API's at import (so a
# type checker cannot read them from tornado.py). Each operation's parameters are the asyncio
# method's (help() and IDEs show them from the runtime signatures); the stub gives every method's
# result: a future of the asyncio method's result with its objects wrapped in the Tornado classes.
# Written by scripts/tornado_stub.py (the parameters come from the asyncio methods): edit the
# template there and run it; the wheel job checks the stub with mypy's stubtest.
import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable, Generator, Mapping, TypeVar

from bson.codec_options import CodecOptions
# pymongo 4.20 lists SessionOptions in pymongo.client_session.__all__ but defines it in a module the
# star import there does not cover: a gap in its types, not ours.
from pymongo.client_session import SessionOptions  # type: ignore[attr-defined]
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _ServerMode
from pymongo.results import (
    BulkWriteResult,
    ClientBulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)
from pymongo.write_concern import WriteConcern
from tornado.ioloop import IOLoop

from asyncmongo._options import ClientOptions
from asyncmongo._tornado_gridfs import GridFSHandler as _GridFSHandler
from asyncmongo.client_session import _TransactionContext

__all__ = ['TornadoMongoClient', 'TornadoDatabase', 'TornadoCollection', 'TornadoCursor', 'TornadoCommandCursor', 'TornadoClientSession', 'TornadoChangeStream', 'CursorFuture', 'GridFSHandler']

_T = TypeVar("_T")
_C = TypeVar("_C", "TornadoCommandCursor", "TornadoChangeStream")

class _Wrapper:
    @property
    def delegate(self) -> Any: ...

class _CursorBase(_Wrapper):
    def __aiter__(self) -> "_CursorBase": ...
    def __anext__(self) -> Awaitable[Any]: ...
    async def __aenter__(self) -> "_CursorBase": ...
    async def __aexit__(self, *exc: object) -> None: ...
    @property
    def fetch_next(self) -> asyncio.Future[bool]: ...
    def next_object(self) -> Any: ...

class TornadoCursor(_CursorBase):
    def __init__(self, collection: TornadoCollection, *args: Any, **kwargs: Any) -> None: ...
    def __aiter__(self) -> TornadoCursor: ...
    async def __aenter__(self) -> TornadoCursor: ...
    def __getitem__(self, index: Any) -> Any: ...
    def __copy__(self) -> TornadoCursor: ...
    def __deepcopy__(self, memo: Any) -> TornadoCursor: ...
    @@add_option -> asyncio.Future[TornadoCursor]
    @@close -> asyncio.Future[None]
    @@distinct -> asyncio.Future[list[Any]]
    @@explain -> asyncio.Future[Any]
    @@next -> asyncio.Future[Any]
    @@rewind -> asyncio.Future[TornadoCursor]
    @@to_list -> asyncio.Future[list[Any]]
    @@try_next -> asyncio.Future[Any]
    @@allow_disk_use -> TornadoCursor
    @@batch_size -> TornadoCursor
    @@clone -> TornadoCursor
    @@collation -> TornadoCursor
    @@comment -> TornadoCursor
    @@hint -> TornadoCursor
    @@limit -> TornadoCursor
    @@max -> TornadoCursor
    @@max_await_time_ms -> TornadoCursor
    @@max_scan -> TornadoCursor
    @@max_time_ms -> TornadoCursor
    @@min -> TornadoCursor
    @@remove_option -> TornadoCursor
    @@skip -> TornadoCursor
    @@sort -> TornadoCursor
    @@where -> TornadoCursor
    @property
    def address(self) -> tuple[str, int] | None: ...
    @property
    def alive(self) -> bool: ...
    @property
    def collection(self) -> TornadoCollection: ...
    @property
    def cursor_id(self) -> int | None: ...
    @property
    def retrieved(self) -> int: ...
    @property
    def session(self) -> TornadoClientSession | None: ...

class TornadoCommandCursor(_CursorBase):
    def __aiter__(self) -> TornadoCommandCursor: ...
    async def __aenter__(self) -> TornadoCommandCursor: ...
    @@close -> asyncio.Future[None]
    @@next -> asyncio.Future[Any]
    @@to_list -> asyncio.Future[list[Any]]
    @@try_next -> asyncio.Future[Any]
    @@batch_size -> TornadoCommandCursor
    @property
    def address(self) -> tuple[str, int] | None: ...
    @property
    def alive(self) -> bool: ...
    @property
    def cursor_id(self) -> int | None: ...
    @property
    def session(self) -> TornadoClientSession | None: ...

class TornadoChangeStream(_Wrapper):
    def __aiter__(self) -> TornadoChangeStream: ...
    def __anext__(self) -> Awaitable[Any]: ...
    async def __aenter__(self) -> TornadoChangeStream: ...
    async def __aexit__(self, *exc: object) -> None: ...
    @@close -> asyncio.Future[None]
    @@next -> asyncio.Future[Any]
    @@try_next -> asyncio.Future[Any]
    @property
    def alive(self) -> bool: ...
    @property
    def resume_token(self) -> Mapping[str, Any] | None: ...

class CursorFuture(asyncio.Task[_C]):
    # A future of a cursor or change stream that can also be used as the object itself.
    def __aiter__(self) -> CursorFuture[_C]: ...
    async def __anext__(self) -> Any: ...
    async def __aenter__(self) -> _C: ...
    async def __aexit__(self, *exc: object) -> None: ...
    @property
    def fetch_next(self) -> asyncio.Future[bool]: ...
    def next_object(self) -> Any: ...
    def next(self) -> asyncio.Future[Any]: ...
    def try_next(self) -> asyncio.Future[Any]: ...
    def to_list(self, length: int | None = None) -> asyncio.Future[list[Any]]: ...
    def close(self) -> asyncio.Future[None]: ...

class TornadoClientSession(_Wrapper):
    @@abort_transaction -> asyncio.Future[None]
    @@commit_transaction -> asyncio.Future[None]
    @@end_session -> asyncio.Future[None]
    @@start_transaction -> asyncio.Future[_TransactionContext]
    @@advance_cluster_time -> None
    @@advance_operation_time -> None
    @@bind -> Any
    def with_transaction(
        self, callback: Callable[[TornadoClientSession], Awaitable[_T]], *args: Any, **kwargs: Any
    ) -> asyncio.Future[_T]: ...
    async def __aenter__(self) -> TornadoClientSession: ...
    async def __aexit__(self, *exc: object) -> None: ...
    def __await__(self) -> Generator[Any, None, TornadoClientSession]: ...
    @property
    def client(self) -> TornadoMongoClient: ...
    @property
    def has_ended(self) -> bool: ...
    @property
    def in_transaction(self) -> bool: ...
    @property
    def options(self) -> SessionOptions: ...
    @property
    def session_id(self) -> Any: ...
    @property
    def cluster_time(self) -> Any: ...
    @property
    def operation_time(self) -> Any: ...

class TornadoCollection(_Wrapper):
    def __init__(self, database: TornadoDatabase, name: str, *args: Any, **kwargs: Any) -> None: ...
    def __getattr__(self, name: str) -> TornadoCollection: ...
    def __getitem__(self, name: str) -> TornadoCollection: ...
    def __call__(self, *args: Any, **kwargs: Any) -> None: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __iter__(self) -> Any: ...
    @@aggregate -> CursorFuture[TornadoCommandCursor]
    @@aggregate_raw_batches -> CursorFuture[Any]
    @@bulk_write -> asyncio.Future[BulkWriteResult]
    @@count_documents -> asyncio.Future[int]
    @@create_index -> asyncio.Future[str]
    @@create_indexes -> asyncio.Future[list[str]]
    @@create_search_index -> asyncio.Future[str]
    @@create_search_indexes -> asyncio.Future[list[str]]
    @@drop_search_index -> asyncio.Future[None]
    @@list_search_indexes -> asyncio.Future[Any]
    @@update_search_index -> asyncio.Future[None]
    @@delete_many -> asyncio.Future[DeleteResult]
    @@delete_one -> asyncio.Future[DeleteResult]
    @@distinct -> asyncio.Future[list[Any]]
    @@drop -> asyncio.Future[None]
    @@drop_index -> asyncio.Future[None]
    @@drop_indexes -> asyncio.Future[None]
    @@estimated_document_count -> asyncio.Future[int]
    @@find_one -> asyncio.Future[Any]
    @@find_one_and_delete -> asyncio.Future[Any]
    @@find_one_and_replace -> asyncio.Future[Any]
    @@find_one_and_update -> asyncio.Future[Any]
    @@index_information -> asyncio.Future[dict[str, Any]]
    @@insert_many -> asyncio.Future[InsertManyResult]
    @@insert_one -> asyncio.Future[InsertOneResult]
    @@list_indexes -> CursorFuture[TornadoCommandCursor]
    @@options -> asyncio.Future[dict[str, Any]]
    @@rename -> asyncio.Future[Any]
    @@replace_one -> asyncio.Future[UpdateResult]
    @@update_many -> asyncio.Future[UpdateResult]
    @@update_one -> asyncio.Future[UpdateResult]
    @@watch -> CursorFuture[TornadoChangeStream]
    @@find -> TornadoCursor
    @@find_raw_batches -> Any
    @@with_options -> TornadoCollection
    @property
    def codec_options(self) -> CodecOptions[Any]: ...
    @property
    def read_concern(self) -> ReadConcern: ...
    @property
    def read_preference(self) -> _ServerMode: ...
    @property
    def write_concern(self) -> WriteConcern: ...
    @property
    def database(self) -> TornadoDatabase: ...
    @property
    def full_name(self) -> str: ...
    @property
    def name(self) -> str: ...

class TornadoDatabase(_Wrapper):
    def __init__(self, client: TornadoMongoClient, name: str, *args: Any, **kwargs: Any) -> None: ...
    def __getattr__(self, name: str) -> TornadoCollection: ...
    def __getitem__(self, name: str) -> TornadoCollection: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __iter__(self) -> Any: ...
    @@aggregate -> CursorFuture[TornadoCommandCursor]
    @@command -> asyncio.Future[dict[str, Any]]
    @@create_collection -> asyncio.Future[TornadoCollection]
    @@cursor_command -> asyncio.Future[TornadoCommandCursor]
    @@dereference -> asyncio.Future[Any]
    @@validate_collection -> asyncio.Future[dict[str, Any]]
    @@drop_collection -> asyncio.Future[dict[str, Any]]
    @@list_collection_names -> asyncio.Future[list[str]]
    @@list_collections -> CursorFuture[TornadoCommandCursor]
    @@watch -> CursorFuture[TornadoChangeStream]
    @@get_collection -> TornadoCollection
    @@with_options -> TornadoDatabase
    @property
    def codec_options(self) -> CodecOptions[Any]: ...
    @property
    def read_concern(self) -> ReadConcern: ...
    @property
    def read_preference(self) -> _ServerMode: ...
    @property
    def write_concern(self) -> WriteConcern: ...
    @property
    def client(self) -> TornadoMongoClient: ...
    @property
    def name(self) -> str: ...

class TornadoMongoClient(_Wrapper):
    HOST: str
    PORT: int
    def __init__(self, *args: Any, io_loop: IOLoop | None = None, **kwargs: Any) -> None: ...
    @property
    def io_loop(self) -> IOLoop: ...
    def get_io_loop(self) -> IOLoop: ...
    def __getattr__(self, name: str) -> TornadoDatabase: ...
    def __getitem__(self, name: str) -> TornadoDatabase: ...
    async def __aenter__(self) -> TornadoMongoClient: ...
    async def __aexit__(self, *exc: object) -> None: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def __iter__(self) -> Any: ...
    @@aclose -> asyncio.Future[None]
    @@aconnect -> asyncio.Future[None]
    @@bulk_write -> asyncio.Future[ClientBulkWriteResult]
    @@close -> asyncio.Future[None]
    @@drop_database -> asyncio.Future[None]
    @@list_database_names -> asyncio.Future[list[str]]
    @@list_databases -> CursorFuture[TornadoCommandCursor]
    @@server_info -> asyncio.Future[dict[str, Any]]
    @@watch -> CursorFuture[TornadoChangeStream]
    @@get_database -> TornadoDatabase
    @@get_default_database -> TornadoDatabase
    @@start_session -> TornadoClientSession
    @@stats -> dict[str, Any]
    @@append_metadata -> None
    @@eq_props -> tuple[tuple[tuple[str, int], ...], str | None, str | None, str]
    @property
    def topology_description(self) -> Any: ...
    @property
    def nodes(self) -> frozenset[tuple[str, int]]: ...
    @property
    def primary(self) -> asyncio.Future[tuple[str, int] | None]: ...
    @property
    def secondaries(self) -> asyncio.Future[set[tuple[str, int]]]: ...
    @property
    def arbiters(self) -> asyncio.Future[set[tuple[str, int]]]: ...
    @property
    def is_primary(self) -> asyncio.Future[bool]: ...
    @property
    def is_mongos(self) -> asyncio.Future[bool]: ...
    @property
    def codec_options(self) -> CodecOptions[Any]: ...
    @property
    def read_concern(self) -> ReadConcern: ...
    @property
    def read_preference(self) -> _ServerMode: ...
    @property
    def write_concern(self) -> WriteConcern: ...
    @property
    def address(self) -> asyncio.Future[tuple[str, int] | None]: ...
    @property
    def options(self) -> ClientOptions: ...

class GridFSHandler(_GridFSHandler):
    def initialize(self, database: Any, root_collection: str = "fs") -> None: ...
"""


HEADER = TEMPLATE.split("_T = TypeVar", 1)[0]


def annotation(text: str) -> str:
    text = adapter.TORNADO.rename(text.strip("'\""))
    return re.sub(r"\bCodecOptions\b(?!\[)", "CodecOptions[Any]", text)  # generic in bson's types


def render_params(sig: inspect.Signature, annotations: list[str]) -> str:
    parts: list[str] = []
    star = False
    params = list(sig.parameters.values())[1:]  # self
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = p.name
        if p.kind is p.VAR_POSITIONAL:
            text, star = "*" + p.name, True
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + p.name
        ann = "Any" if p.annotation is p.empty else annotation(str(p.annotation))
        annotations.append(ann)
        text += f": {ann}"
        if p.default is not p.empty:
            text += " = ..."
        parts.append(text)
        if p.kind is p.POSITIONAL_ONLY and (i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY):
            parts.append("/")
    return ", ".join(["self"] + parts)


def imports_for(text: str, module_globals: dict, wanted: dict[str, set[str]]) -> None:
    for name in re.findall(r"[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*", text):
        head = name.split(".")[0]
        if head in BUILTIN or head.startswith("Tornado") or head in ("CursorFuture", "Any"):
            continue
        if head in module_globals:
            obj = module_globals[head]
        elif hasattr(typing, head):
            obj = getattr(typing, head)
        else:
            raise SystemExit(f"error: cannot tell where the annotation name {head!r} comes from")
        if inspect.ismodule(obj):
            wanted.setdefault("", set()).add(obj.__name__)
            continue
        module = "typing" if obj is getattr(typing, head, None) else getattr(obj, "__module__", None)
        if not module:
            raise SystemExit(f"error: {head!r} has no module to import it from")
        if module == "asyncmongo.tornado" or re.search(rf"\b{head}\b", HEADER):
            continue  # defined or imported by the template
        wanted.setdefault(module, set()).add(head)


def render() -> str:
    out: list[str] = []
    wanted: dict[str, set[str]] = {}
    klass = None
    for line in TEMPLATE.splitlines():
        m = re.match(r"class (\w+)\(", line)
        if m:
            klass = getattr(adapter, m.group(1), None)
        m = re.match(r"    @@(\w+) -> (.+)$", line)
        if not m:
            out.append(line)
            continue
        name, result = m.groups()
        impl = getattr(klass._delegate_class, name)
        sig = inspect.signature(impl)
        annotations: list[str] = []
        params = render_params(sig, annotations)
        for ann in annotations:
            # The names of the module that defines the method (under any functools.wraps
            # decorator, such as the timeout block's).
            imports_for(ann, inspect.unwrap(impl).__globals__, wanted)
        out.append(f"    def {name}({params}) -> {result}: ...")
    text = "\n".join(out) + "\n"
    extra = []
    for module in sorted(wanted):
        if module == "":
            extra += [f"import {m}" for m in sorted(wanted[module])]
        else:
            extra.append(f"from {module} import {', '.join(sorted(wanted[module]))}  # noqa: F401")
    marker = "_T = TypeVar"
    return text.replace(marker, "# Names the asyncio methods' parameters use.\n" + "\n".join(extra) + "\n\n" + marker, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        with open(STUB) as f:
            if f.read() != text:
                raise SystemExit(f"error: {STUB} is out of date: run python scripts/tornado_stub.py")
        print(f"{STUB} is up to date")
        return
    with open(STUB, "w") as f:
        f.write(text)
    print(f"wrote {STUB}")


if __name__ == "__main__":
    main()

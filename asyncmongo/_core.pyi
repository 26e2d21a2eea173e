# Types of asyncmongo._core, the C core (csrc/).
import asyncio
from typing import Any

# The protocol between the package and the core: each name is defined once in csrc/asyncmongo.h.
# Operation kinds (which libmongoc entry point a worker calls).
OP_COMMAND: int
OP_READ: int
OP_WRITE: int
OP_READ_WRITE: int
OP_INSERT: int
OP_BULK: int
OP_SESSION_START: int
OP_TXN_START: int
OP_TXN_COMMIT: int
OP_TXN_ABORT: int
OP_SESSION_END: int
# Result kinds (what the loop thread makes of a finished job).
RES_DOC: int
RES_FIRST: int
RES_CURSOR: int
RES_WRITE: int
RES_BULK: int
RES_NONE: int
RES_STREAM: int
RES_SESSION: int
# The operations of an OP_BULK job: documents {op, d, u, o}.
BULK_INSERT: int
BULK_UPDATE_ONE: int
BULK_UPDATE_MANY: int
BULK_REPLACE_ONE: int
BULK_DELETE_ONE: int
BULK_DELETE_MANY: int
# Job flags.
FLAG_PIN: int
FLAG_BYPASS: int
FLAG_QUIET: int
FLAG_MAX_TIME: int
FLAG_RETRY: int
FLAG_TXN_NUMBER: int
MONGOC_VERSION: str
BSON_VERSION: str

class CursorBatch(tuple[Any, ...]):
    """One batch of a server cursor (RES_CURSOR, RES_STREAM)."""
    def __new__(cls, fields: tuple[Any, ...]) -> "CursorBatch": ...
    @property
    def cursor_id(self) -> int: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def documents(self) -> list[Any]: ...
    @property
    def server_id(self) -> int: ...
    @property
    def session(self) -> Any: ...
    @property
    def post_batch_resume_token(self) -> Any: ...
    @property
    def operation_time(self) -> Any: ...

class CompletionQueue:
    mode: str
    loop: asyncio.AbstractEventLoop | None
    jobs: int
    def drain(self) -> None: ...

class Client:
    closed: bool
    def __init__(
        self,
        uri: str,
        max_workers: int = 100,
        wakeup: str = "eventfd",
        connect: bool = True,
        apm_sink: Any = None,
    ) -> None: ...
    def submit(
        self,
        op: int,
        result_kind: int,
        db: str,
        coll: str | None,
        cmd: bytes,
        opts: bytes | None,
        codec_options: Any,
        flags: int = 0,
        server_id: int = 0,
        session: Any = None,
        read_preference: bytes | None = None,
        deadline: float | None = None,
        /,
    ) -> asyncio.Future[Any]: ...
    def cancel(self, future: asyncio.Future[Any], session: Any = None, /) -> bool: ...
    def close(self) -> asyncio.Future[None] | None: ...
    def destroy(self) -> None: ...
    def abandon(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def queue(self) -> CompletionQueue: ...

def debug_counters() -> dict[str, int]: ...
def flush_logs() -> None: ...
def exception_classes() -> dict[str, type[BaseException]]: ...
def _set_finalizing() -> None: ...
def exiting() -> bool: ...
def _mongoc_log(level: int, domain: str, message: str) -> None: ...

# The native BSON codec (csrc/codec.h): exactly bson.decode / bson.decode_all / bson.encode.
# data: any bytes-like object, read in place. codec_options: a bson CodecOptions, None for
# bson.DEFAULT_CODEC_OPTIONS. bson_encode writes "_id" first, as bson.encode does.
def bson_decode(data: Any, codec_options: Any = None) -> Any: ...
def bson_decode_all(data: Any, codec_options: Any = None) -> list[Any]: ...
def bson_encode(document: Any, check_keys: bool = False, codec_options: Any = None) -> bytes: ...

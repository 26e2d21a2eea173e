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
OP_SELECT_SERVER: int
# Result kinds (what the loop thread makes of a finished job).
RES_DOC: int
RES_FIRST: int
RES_CURSOR: int
RES_WRITE: int
RES_BULK: int
RES_NONE: int
RES_STREAM: int
RES_SESSION: int
RES_SERVER: int
# The operations of an OP_BULK job: documents {op, d, u, o}.
BULK_INSERT: int
BULK_UPDATE_ONE: int
BULK_UPDATE_MANY: int
BULK_REPLACE_ONE: int
BULK_DELETE_ONE: int
BULK_DELETE_MANY: int
# SDAM event kinds (the kind of an SdamEvent).
SDAM_SERVER_OPENING: int
SDAM_SERVER_CLOSED: int
SDAM_SERVER_CHANGED: int
SDAM_TOPOLOGY_OPENING: int
SDAM_TOPOLOGY_CLOSED: int
SDAM_TOPOLOGY_CHANGED: int
SDAM_HEARTBEAT_STARTED: int
SDAM_HEARTBEAT_SUCCEEDED: int
SDAM_HEARTBEAT_FAILED: int
# Job flags.
FLAG_PIN: int
FLAG_BYPASS: int
FLAG_QUIET: int
FLAG_MAX_TIME: int
FLAG_RETRY: int
FLAG_TXN_NUMBER: int
FLAG_MAX_AWAIT: int
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

class ServerFacts(tuple[Any, ...]):
    """One server as libmongoc describes it (csrc/topology.c)."""
    @property
    def address(self) -> tuple[str, int]: ...
    @property
    def server_id(self) -> int: ...
    @property
    def server_type(self) -> str: ...
    @property
    def round_trip_time_ms(self) -> int: ...
    @property
    def last_update_us(self) -> int: ...
    @property
    def hello(self) -> dict[str, Any]: ...

class TopologyFacts(tuple[Any, ...]):
    """The deployment as libmongoc describes it."""
    @property
    def topology_type(self) -> str: ...
    @property
    def servers(self) -> tuple[ServerFacts, ...]: ...

class SdamEvent(tuple[Any, ...]):
    """One SDAM or heartbeat event as libmongoc reported it (csrc/sdam.c)."""
    @property
    def kind(self) -> int: ...
    @property
    def topology_id(self) -> Any: ...
    @property
    def address(self) -> tuple[str, int] | None: ...
    @property
    def awaited(self) -> bool: ...
    @property
    def duration_us(self) -> int: ...
    @property
    def reply(self) -> dict[str, Any] | None: ...
    @property
    def error(self) -> BaseException | None: ...
    @property
    def previous(self) -> ServerFacts | TopologyFacts | None: ...
    @property
    def new(self) -> ServerFacts | TopologyFacts | None: ...

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
        sdam_sink: Any = None,
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
    def close(self, wait: bool = True, /) -> asyncio.Future[None] | None: ...
    def destroy(self) -> None: ...
    def abandon(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def queue(self) -> CompletionQueue: ...
    def topology(self, start: bool = False, /) -> TopologyFacts | None: ...
    def wait_writable(self, timeout_ms: int, /) -> bool: ...

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

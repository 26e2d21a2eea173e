# Types of asyncmongo._core, the C core (csrc/).
import asyncio
from typing import Any

OP_COMMAND: int
OP_READ: int
OP_WRITE: int
OP_READ_WRITE: int
OP_INSERT: int
OP_BULK: int
OP_SESSION: int
RES_DOC: int
RES_FIRST: int
RES_CURSOR: int
RES_WRITE: int
RES_BULK: int
RES_NONE: int
RES_STREAM: int
RES_SESSION: int
FLAG_PIN: int
FLAG_ORDERED: int
FLAG_BYPASS: int
FLAG_QUIET: int
MONGOC_VERSION: str
BSON_VERSION: str

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
    ) -> asyncio.Future[Any]: ...
    def cancel(self, future: asyncio.Future[Any]) -> bool: ...
    def close(self) -> asyncio.Future[None] | None: ...
    def destroy(self) -> None: ...
    def abandon(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def queue(self) -> CompletionQueue: ...

def debug_counters() -> dict[str, int]: ...
def flush_logs() -> None: ...
def exception_classes() -> dict[str, type[BaseException]]: ...
def _set_finalizing() -> None: ...
def _mongoc_log(level: int, domain: str, message: str) -> None: ...

# The native BSON codec (csrc/codec.h): exactly bson.decode / bson.decode_all / bson.encode.
# data: any bytes-like object, read in place. codec_options: a bson CodecOptions, None for
# bson.DEFAULT_CODEC_OPTIONS. bson_encode writes "_id" first, as bson.encode does.
def bson_decode(data: Any, codec_options: Any = None) -> Any: ...
def bson_decode_all(data: Any, codec_options: Any = None) -> list[Any]: ...
def bson_encode(document: Any, check_keys: bool = False, codec_options: Any = None) -> bytes: ...

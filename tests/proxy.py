"""Test-support: a latency-adding, fault-injecting TCP proxy in a child process.

Run as a script this file is the proxy itself (an asyncio program driven by
commands on stdin); imported, it provides DelayProxy, which launches and
controls that child. A separate process keeps the proxy's work off the GIL of
the test process, so it cannot skew what the driver under test experiences.

Besides a delay on every reply (``set_delay``), it injects faults into server
replies (``DelayProxy.fault``): a reset or a clean close (FIN) after N bytes of
a reply, a black hole (requests read and dropped, nothing ever answered), a
trickle (a reply delivered a few bytes at a time) and a one-off delay. It
follows the MongoDB wire framing in both directions (each message starts with
its int32 length), so a fault lands on a chosen byte of a chosen reply; replies
to the handshake and heartbeat commands (hello, isMaster) are never faulted, so
a fault hits an operation, not a driver's monitor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time

__all__ = ["DelayProxy", "FAULT_MODES", "FAULT_SCOPES"]

_START_TIMEOUT = 10.0
_COMMAND_TIMEOUT = 10.0
_CHUNK = 64 * 1024
# Bounds how far the proxy reads ahead of a slow client (chunks, not bytes).
_MAX_QUEUED_CHUNKS = 1024
# Replies to these are handshakes and heartbeats: faults never touch them.
_HANDSHAKE_COMMANDS = frozenset({"hello", "ismaster", "isMaster"})
# Of each request the proxy keeps this many leading bytes: enough for the command's name.
_REQUEST_HEAD = 512
_OP_QUERY, _OP_MSG = 2004, 2013

FAULT_MODES = ("reset", "fin", "blackhole", "trickle", "delay")
# "next": the next reply of any connection, once. "all": every reply of every connection (a black
# hole: every connection at once, and new ones from their first byte). "new": every reply of the
# connections opened from now on (a black hole: those connections from their first byte).
FAULT_SCOPES = ("next", "all", "new")


# ---------------------------------------------------------------------------
# Child: the proxy program
# ---------------------------------------------------------------------------


def _reset_and_close(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER 0 makes close() send RST instead of FIN, so the peer sees the
    # abrupt "connection reset" a crashed server or a broken network causes.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class _Frames:
    """Where a byte stream is in its wire messages. ``split`` cuts a chunk where messages start,
    so that each piece lies within one message, and says which pieces start one; ``msg_len`` is the
    current message's length once its 4-byte prefix is in, ``head`` its first _REQUEST_HEAD bytes.
    A length under 16 (not the wire protocol: a test's echo target) makes the rest of the stream
    one message, which is harmless: framing only matters to faults."""

    def __init__(self) -> None:
        self.pos = 0  # bytes of the current message seen
        self.msg_len: int | None = None
        self.head = b""

    def split(self, data: bytes) -> list[tuple[bool, bytes]]:
        pieces: list[tuple[bool, bytes]] = []
        i = 0
        while i < len(data):
            first, starts = i, self.pos == 0
            if starts:
                self.head, self.msg_len = b"", None
            if self.msg_len is None:
                take = min(4 - self.pos, len(data) - i)
                self.head += data[i : i + take]
                self.pos += take
                i += take
                if self.pos == 4:
                    n = struct.unpack("<i", self.head)[0]
                    self.msg_len = n if n >= 16 else 1 << 62
            if self.msg_len is not None:
                take = min(self.msg_len - self.pos, len(data) - i)
                if len(self.head) < _REQUEST_HEAD:
                    self.head += data[i : i + min(take, _REQUEST_HEAD - len(self.head))]
                self.pos += take
                i += take
                if self.pos == self.msg_len:
                    self.pos = 0
            pieces.append((starts, data[first:i]))
        return pieces


def _first_key(doc: bytes, at: int) -> tuple[str | None, int]:
    """Name of the first element of the BSON document at ``at``, and where its value starts."""
    if len(doc) < at + 6 or doc[at + 4] == 0:
        return None, -1
    end = doc.find(b"\0", at + 5)
    if end < 0:
        return None, -1
    return doc[at + 5 : end].decode("utf-8", "replace"), end + 1


def _command_name(head: bytes) -> str | None:
    """The command a request carries (OP_MSG body, or OP_QUERY query, perhaps in ``$query``)."""
    if len(head) < 21:
        return None
    op = struct.unpack_from("<i", head, 12)[0]
    if op == _OP_MSG and head[20] == 0:
        return _first_key(head, 21)[0]
    if op == _OP_QUERY:
        name_end = head.find(b"\0", 20)
        if name_end < 0:
            return None
        key, value_at = _first_key(head, name_end + 9)
        if key == "$query" and value_at > 0:
            key = _first_key(head, value_at)[0]
        return key
    return None


class _Fault:
    """What to do to a reply. ``serial``: connections with a lower serial were open when the fault
    was set (scope "new" spares them)."""

    def __init__(self, mode: str, scope: str, after: int, rate: float, chunk: int,
                 seconds: float, serial: int) -> None:
        self.mode, self.scope, self.after = mode, scope, after
        self.rate, self.chunk, self.seconds, self.serial = rate, chunk, seconds, serial

    @classmethod
    def parse(cls, args: list[str], serial: int) -> "_Fault":
        mode, scope, after, rate, chunk, seconds = args
        if mode not in FAULT_MODES or scope not in FAULT_SCOPES:
            raise ValueError(f"bad mode or scope {mode!r} {scope!r}")
        fault = cls(mode, scope, int(after), float(rate), int(chunk), float(seconds), serial)
        if fault.after < 0 or fault.rate <= 0 or fault.chunk <= 0 or fault.seconds < 0:
            raise ValueError("after >= 0, rate > 0, chunk > 0, seconds >= 0")
        return fault


class _Connection:
    def __init__(
        self,
        proxy: "_Proxy",
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        serial: int,
    ) -> None:
        self.proxy = proxy
        self.client_r = client_r
        self.client_w = client_w
        self.serial = serial
        self.server_w: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        # A black-holed connection forwards nothing either way, until it is closed.
        self.blackholed = False
        # Name of the command of the request last received from the client.
        self.last_request: str | None = None

    async def run(self) -> None:
        if self.blackholed:
            # Black-holed from its first byte: the server never hears of it.
            await self._swallow_requests()
            return
        try:
            server_r, self.server_w = await asyncio.open_connection(
                self.proxy.target_host, self.proxy.target_port
            )
        except OSError:
            # Target down: the client should see what it would see talking to
            # a dead server directly, a reset.
            _reset_and_close(self.client_w)
            return
        # Each chunk from the server is stamped with its own delivery time
        # on arrival and queued; a separate writer delivers in order. This adds
        # latency per chunk without serialising the delays (no throughput cut).
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_MAX_QUEUED_CHUNKS)
        self.tasks = [
            asyncio.create_task(self._client_to_server()),
            asyncio.create_task(self._server_to_queue(server_r, queue)),
            asyncio.create_task(self._queue_to_client(queue)),
        ]
        try:
            # Client gone or delivery to the client finished/failed: the
            # connection is over either way.
            await asyncio.wait(
                [self.tasks[0], self.tasks[2]], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self.close()

    async def _swallow_requests(self) -> None:
        try:
            while await self.client_r.read(_CHUNK):
                pass
        except OSError:
            pass
        finally:
            self.close()

    async def _client_to_server(self) -> None:
        assert self.server_w is not None
        frames = _Frames()
        try:
            while data := await self.client_r.read(_CHUNK):
                if self.blackholed:
                    continue
                frames.split(data)
                # The head of the latest request (complete or not yet): drivers send one request
                # at a time on a connection, so its reply is the next one.
                self.last_request = _command_name(frames.head)
                self.server_w.write(data)
                await self.server_w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass

    async def _server_to_queue(
        self, server_r: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await server_r.read(_CHUNK):
                await queue.put((loop.time() + self.proxy.delay, data))
        except OSError:
            pass
        # Empty chunk marks end of stream, delivered after the data before it.
        await queue.put((loop.time() + self.proxy.delay, b""))

    async def _queue_to_client(self, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        loop = asyncio.get_running_loop()
        frames = _Frames()
        fault: _Fault | None = None  # the current reply's
        sent = 0  # bytes of the current reply delivered
        try:
            while True:
                deliver_at, data = await queue.get()
                wait = deliver_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    return
                for starts, piece in frames.split(data):
                    if starts:
                        fault, sent = self.proxy.fault_for_reply(self), 0
                        if fault is not None and fault.mode == "blackhole":
                            self.blackholed = True
                        elif fault is not None and fault.mode == "delay":
                            await asyncio.sleep(fault.seconds)
                    if self.blackholed:
                        continue
                    if fault is not None and fault.mode in ("reset", "fin"):
                        # Cut inside the reply, whatever N: never the whole of it.
                        limit = fault.after
                        if frames.msg_len is not None:
                            limit = min(limit, frames.msg_len - 1)
                        if sent + len(piece) > limit:
                            await self._write(piece[: limit - sent])
                            self._cut(fault.mode)
                            return
                    if fault is not None and fault.mode == "trickle":
                        for i in range(0, len(piece), fault.chunk):
                            await self._write(piece[i : i + fault.chunk])
                            await asyncio.sleep(fault.chunk / fault.rate)
                    else:
                        await self._write(piece)
                    sent += len(piece)
        except OSError:
            pass

    async def _write(self, data: bytes) -> None:
        if data:
            self.client_w.write(data)
            await self.client_w.drain()

    def _cut(self, mode: str) -> None:
        if mode == "reset":
            self.reset()
            return
        # FIN: what the client has been sent is delivered, then end of stream.
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.client_w.close()
        if self.server_w is not None:
            _reset_and_close(self.server_w)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for w in (self.client_w, self.server_w):
            if w is not None and not w.is_closing():
                w.close()

    def reset(self) -> None:
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for w in (self.client_w, self.server_w):
            if w is not None:
                _reset_and_close(w)


class _Proxy:
    def __init__(self, target_host: str, target_port: int, delay: float) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay
        self.refusing = False
        self.connections: set[_Connection] = set()
        self.fault: _Fault | None = None
        self.serial = 0  # connections accepted so far
        self.triggered = 0  # faults applied (replies faulted, connections black-holed)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            _reset_and_close(writer)
            return
        self.serial += 1
        conn = _Connection(self, reader, writer, self.serial)
        fault = self.fault
        if fault is not None and fault.mode == "blackhole" and fault.scope in ("all", "new"):
            conn.blackholed = True
            self.triggered += 1
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    def fault_for_reply(self, conn: _Connection) -> _Fault | None:
        """The fault a reply starting now on ``conn`` suffers, if any (a "next" fault is used up)."""
        fault = self.fault
        if fault is None or conn.last_request in _HANDSHAKE_COMMANDS:
            return None
        if fault.scope == "new" and conn.serial <= fault.serial:
            return None
        if fault.scope == "next":
            self.fault = None
        self.triggered += 1
        return fault

    def set_fault(self, args: list[str]) -> None:
        fault = _Fault.parse(args, self.serial)
        self.fault = fault
        if fault.mode == "blackhole" and fault.scope == "all":
            for conn in self.connections:
                if not conn.blackholed:
                    conn.blackholed = True
                    self.triggered += 1

    def drop_all(self) -> None:
        for conn in list(self.connections):
            conn.reset()
        self.connections.clear()

    def command(self, line: str) -> tuple[str, bool]:
        """Apply one control command; return (reply, keep_running)."""
        parts = line.split()
        if not parts:
            return "ERR empty command", True
        cmd, args = parts[0], parts[1:]
        if cmd == "delay" and len(args) == 1:
            try:
                value = float(args[0])
            except ValueError:
                return f"ERR bad delay {args[0]!r}", True
            if value < 0:
                return "ERR delay must be >= 0", True
            self.delay = value
            return "OK", True
        if cmd == "fault" and args == ["off"]:
            self.fault = None
            return "OK", True
        if cmd == "fault" and len(args) == 6:
            try:
                self.set_fault(args)
            except ValueError as exc:
                return f"ERR {exc}", True
            return "OK", True
        if cmd == "stats" and not args:
            blackholed = sum(1 for c in self.connections if c.blackholed)
            return (f"OK triggered={self.triggered} connections={len(self.connections)} "
                    f"blackholed={blackholed} accepted={self.serial}"), True
        if cmd == "drop" and not args:
            self.drop_all()
            return "OK", True
        if cmd == "refuse" and len(args) == 1 and args[0] in ("on", "off"):
            self.refusing = args[0] == "on"
            return "OK", True
        if cmd == "quit" and not args:
            return "OK", False
        return f"ERR unknown command {line!r}", True


async def _child_main(args: argparse.Namespace) -> None:
    proxy = _Proxy(args.target_host, args.target_port, args.delay)
    server = await asyncio.start_server(proxy.handle, args.listen_host, 0)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        # stdin EOF means the parent is gone: exit rather than linger.
        while line := await stdin.readline():
            reply, keep_running = proxy.command(line.decode().strip())
            print(reply, flush=True)
            if not keep_running:
                break
    finally:
        server.close()
        for conn in list(proxy.connections):
            conn.close()
        # Exit now: waiting for the pumps of still-open client connections to wind down would make
        # every test that stops a proxy under a live client pay for it.
        sys.stdout.flush()
        os._exit(0)


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Delaying, fault-injecting TCP proxy.")
    parser.add_argument("--target-host", required=True)
    parser.add_argument("--target-port", required=True, type=int)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--listen-host", default="127.0.0.1")
    asyncio.run(_child_main(parser.parse_args(argv)))


# ---------------------------------------------------------------------------
# Parent: the launcher/controller used by tests
# ---------------------------------------------------------------------------


class DelayProxy:
    """Controls a proxy child process in front of ``target_host:target_port``.

    Responses (server->client) are delivered ``delay`` seconds late; requests
    pass straight through. ``fault()`` injects one fault into replies.
    """

    def __init__(self, target_host: str, target_port: int, delay: float = 0.0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._initial_delay = float(delay)
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._buf = b""
        self._stderr_file = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("proxy is not started")
        return self._port

    @property
    def uri(self) -> str:
        # The server advertises its real address in hello; without
        # directConnection a driver would discover and bypass the proxy.
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "DelayProxy":
        if self.running:
            raise RuntimeError("proxy already running")
        self._stderr_file = tempfile.TemporaryFile()
        self._buf = b""
        self._proc = subprocess.Popen(
            [
                sys.executable,
                # -I: stdlib only, and keeps tests/ (the script's dir) off
                # sys.path so a test module can never shadow a stdlib one.
                "-I",
                os.path.abspath(__file__),
                "--target-host",
                self.target_host,
                "--target-port",
                str(self.target_port),
                "--delay",
                repr(self._initial_delay),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            bufsize=0,
            # Its own session keeps a terminal Ctrl-C from killing it mid-test;
            # it cannot be orphaned anyway, as it exits on stdin EOF.
            start_new_session=True,
        )
        try:
            line = self._readline(_START_TIMEOUT)
            if not line.startswith("PORT "):
                raise RuntimeError(f"unexpected first line from proxy: {line!r}")
            self._port = int(line.split()[1])
        except BaseException:
            self._kill()
            raise
        return self

    def set_delay(self, seconds: float) -> None:
        self._command(f"delay {float(seconds)!r}")

    def drop_connections(self) -> None:
        """Reset every connection currently open through the proxy."""
        self._command("drop")

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are reset as soon as they are accepted."""
        self._command(f"refuse {'on' if on else 'off'}")

    def fault(
        self,
        mode: str,
        *,
        scope: str = "next",
        after: int = 0,
        rate: float = 1000.0,
        chunk: int = 8,
        seconds: float = 1.0,
    ) -> None:
        """Fault server replies (never those to hello/isMaster) until ``clear_fault()``.

        ``mode``:
          - ``"reset"``: deliver ``after`` bytes of the reply, then reset the connection (RST);
          - ``"fin"``: deliver ``after`` bytes, then close it cleanly (FIN): a reply cut short;
            for both, a reply is always cut (at most its length - 1 bytes get through);
          - ``"blackhole"``: from the reply on, the connection forwards nothing either way (requests
            are read and dropped, nothing is ever answered) until it is closed;
          - ``"trickle"``: the reply comes ``chunk`` bytes at a time, at ``rate`` bytes/s;
          - ``"delay"``: the reply comes ``seconds`` late (on top of ``set_delay``).

        ``scope``: ``"next"`` faults the next reply of any connection, once; ``"all"`` every reply of
        every connection; ``"new"`` every reply of connections opened from now on. A black hole of
        scope ``"all"`` takes every open connection at once, and with ``"all"`` or ``"new"`` new
        connections are black-holed from their first byte (the server never sees them).
        """
        if mode not in FAULT_MODES or scope not in FAULT_SCOPES:
            raise ValueError(f"mode must be one of {FAULT_MODES}, scope one of {FAULT_SCOPES}")
        self._command(f"fault {mode} {scope} {int(after)} {float(rate)!r} {int(chunk)} {float(seconds)!r}")

    def clear_fault(self) -> None:
        """No more faults; connections already black-holed stay so (drop_connections ends them)."""
        self._command("fault off")

    def stats(self) -> dict[str, int]:
        """``triggered`` (faults applied so far: replies faulted, connections black-holed),
        ``connections`` (open now), ``blackholed`` (of those), ``accepted`` (since start)."""
        reply = self._command("stats")
        return {k: int(v) for k, v in (item.split("=") for item in reply.split()[1:])}

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                self._command("quit")
                self._proc.wait(timeout=5)
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def __enter__(self) -> "DelayProxy":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port}" if self.running else "stopped"
        return f"<DelayProxy -> {self.target_host}:{self.target_port} {state}>"

    def _kill(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe is not None:
                    pipe.close()
            self._proc = None
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None

    def _stderr_tail(self) -> str:
        if self._stderr_file is None:
            return ""
        self._stderr_file.seek(0)
        return self._stderr_file.read()[-4000:].decode("utf-8", "replace")

    def _command(self, line: str) -> str:
        if not self.running:
            raise RuntimeError(f"proxy is not running; stderr:\n{self._stderr_tail()}")
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(line.encode() + b"\n")
        self._proc.stdin.flush()
        reply = self._readline(_COMMAND_TIMEOUT)
        if reply != "OK" and not reply.startswith("OK "):
            raise RuntimeError(f"proxy rejected {line!r}: {reply}")
        return reply

    def _readline(self, timeout: float) -> str:
        # Raw reads with select, so a hung child cannot hang the test run.
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"proxy did not answer within {timeout}s; stderr:\n{self._stderr_tail()}"
                )
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(
                        f"proxy exited (code {self._proc.poll()}); stderr:\n{self._stderr_tail()}"
                    )
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode().strip()


if __name__ == "__main__":
    _child(sys.argv[1:])

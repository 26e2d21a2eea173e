"""Test-support: a latency-adding, fault-injecting TCP proxy in a child process.

Run as a script this file is the proxy itself (an asyncio program driven by
commands on stdin); imported, it provides DelayProxy, which launches and
controls that child. A separate process keeps the proxy's work off the GIL of
the test process, so it cannot skew what the driver under test experiences.
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

__all__ = ["DelayProxy"]

_START_TIMEOUT = 10.0
_COMMAND_TIMEOUT = 10.0
_CHUNK = 64 * 1024
# Bounds how far the proxy reads ahead of a slow client (chunks, not bytes).
_MAX_QUEUED_CHUNKS = 1024


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


class _Connection:
    def __init__(
        self,
        proxy: "_Proxy",
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.client_r = client_r
        self.client_w = client_w
        self.server_w: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
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

    async def _client_to_server(self) -> None:
        assert self.server_w is not None
        try:
            while data := await self.client_r.read(_CHUNK):
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
        try:
            while True:
                deliver_at, data = await queue.get()
                wait = deliver_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    return
                self.client_w.write(data)
                await self.client_w.drain()
        except OSError:
            pass

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for w in (self.client_w, self.server_w):
            if w is not None and not w.is_closing():
                w.close()

    def reset(self) -> None:
        for task in self.tasks:
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

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            _reset_and_close(writer)
            return
        conn = _Connection(self, reader, writer)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

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
    pass straight through.
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

    def _command(self, line: str) -> None:
        if not self.running:
            raise RuntimeError(f"proxy is not running; stderr:\n{self._stderr_tail()}")
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(line.encode() + b"\n")
        self._proc.stdin.flush()
        reply = self._readline(_COMMAND_TIMEOUT)
        if reply != "OK":
            raise RuntimeError(f"proxy rejected {line!r}: {reply}")

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

"""A SecantusDB (MongoDB-wire-compatible) server for tests: the pytest plugin's, the project's suite's
and the examples'.

The server always runs in its own subprocess: SecantusDB is pure Python, and
hosting it in the test process would make it share the GIL with the driver
under test, distorting every timing- and concurrency-sensitive test. This module
imports neither asyncmongo's C core nor pytest.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Union
from urllib.parse import unquote

__all__ = [
    "SECANTUS_VERSION",
    "Server",
    "ExternalServer",
    "ServerProcess",
    "server_from_env",
]

# Pinned because SecantusDB is a beta whose wire behaviour still shifts between
# releases; tests written against one version should fail loudly on another.
SECANTUS_VERSION = "0.7.0b3"

_READY_TIMEOUT = 30.0
# SecantusDB's own graceful stop waits up to 2 s for its accept thread and 5 s for its connection
# handlers to drain before it closes storage: a SIGKILL sooner than that cuts a clean shutdown short.
_STOP_GRACE = 15.0
# After a kill the old socket may linger briefly; restarting on the same port
# retries the bind for this long before giving up.
_BIND_RETRY_WINDOW = 5.0
_LOG_TAIL_BYTES = 4000

# Servers not stopped by interpreter exit are stopped then, so an aborted test
# run leaves no daemons or temp dirs behind. Strong refs: a server dropped
# without stop() must still be found here.
_live: "set[ServerProcess]" = set()


@atexit.register
def _stop_all_live() -> None:
    for server in list(_live):
        server.stop()


def _check_secantus_version() -> None:
    hint = f"install it with: pip install SecantusDB=={SECANTUS_VERSION}"
    try:
        installed = importlib.metadata.version("SecantusDB")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"SecantusDB is not installed in {sys.executable}; {hint}") from None
    if installed != SECANTUS_VERSION:
        raise RuntimeError(
            f"SecantusDB {installed} is installed but the tests are pinned to "
            f"{SECANTUS_VERSION}; {hint}"
        )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """A SecantusDB server in a child process, with on-disk storage so that
    ``kill()`` + ``restart()`` simulates a crash and recovery.

    Like mongod, SecantusDB acknowledges a default (j:false) write before its
    journal record reaches the OS, so a write acked in the last few tens of
    milliseconds before ``kill()`` can be lost. Tests that need a write to
    survive a crash must use ``j=True`` (or pass ``--sync-on-commit`` in
    ``extra_args``, at a large throughput cost).

    A graceful ``stop()`` usually takes well under a second; the server's own
    shutdown may wait up to 2 s on its accept thread and 5 s for its connections
    to drain, so the SIGKILL fallback comes after 15 s, not sooner.
    """

    external = False

    def __init__(
        self,
        port: int | None = None,
        storage_path: str | os.PathLike[str] | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
    ) -> None:
        self._host = "127.0.0.1"
        self._port_was_given = port is not None
        self._port = port
        self._extra_args = tuple(extra_args)
        self._given_storage = os.fspath(storage_path) if storage_path is not None else None
        self._workdir: str | None = None
        self._storage_path: str | None = None
        self._log_path: str | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False

    # -- properties ---------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server has not been started yet; the port is chosen by start()")
        return self._port

    @property
    def uri(self) -> str:
        return f"mongodb://{self._host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def storage_path(self) -> str | None:
        return self._storage_path

    @property
    def log_path(self) -> str | None:
        """File receiving the server's stdout/stderr (appended across restarts)."""
        return self._log_path

    def log_tail(self, nbytes: int = _LOG_TAIL_BYTES) -> str:
        if self._log_path is None or not os.path.exists(self._log_path):
            return ""
        with open(self._log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - nbytes))
            return f.read().decode("utf-8", "replace")

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> "ServerProcess":
        if self.running:
            raise RuntimeError(f"server already running (pid {self.pid})")
        _check_secantus_version()
        self._prepare_workdir()
        if self._port is None:
            self._port = _free_port(self._host)

        deadline = time.monotonic() + _READY_TIMEOUT
        bind_deadline = time.monotonic() + _BIND_RETRY_WINDOW
        while True:
            self._launch()
            failure = self._wait_ready(deadline)
            if failure is None:
                self._started_once = True
                _live.add(self)
                return self
            output = self._log_since_launch()
            self.kill()  # it may still be alive but unresponsive
            if "Address already in use" in output and time.monotonic() < min(
                bind_deadline, deadline
            ):
                if not self._port_was_given and not self._started_once:
                    # Lost the race for a port we picked ourselves: pick another.
                    self._port = _free_port(self._host)
                time.sleep(0.1)
                continue
            message = (
                f"SecantusDB failed to start on {self._host}:{self._port}: {failure}\n"
                f"--- server log tail ({self._log_path}) ---\n{output}"
            )
            if not self._started_once:
                # Nothing worth keeping yet and the caller holds no handle
                # to clean up with; the log tail is in the message.
                self.stop()
            raise RuntimeError(message)

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM, SIGKILL after 15 s); removes a temporary
        storage directory. Safe to call repeatedly."""
        self._terminate()
        _live.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._log_path = None
            if self._given_storage is None:
                self._storage_path = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; storage is kept for restart()."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
        self._reap()

    def restart(self) -> "ServerProcess":
        """Start again on the same port with the same storage (stopping the
        current process gracefully first if it is still running)."""
        if self._workdir is None and self._started_once and self._given_storage is None:
            # After stop() the temporary storage is gone; a restart would
            # silently come up empty, which is never what a caller means.
            raise RuntimeError("restart() after stop(): the temporary storage was removed")
        self._terminate()
        return self.start()

    def __enter__(self) -> "ServerProcess":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<ServerProcess {self._host}:{self._port} {state}>"

    # -- internals ----------------------------------------------------------

    def _prepare_workdir(self) -> None:
        if self._workdir is not None:
            return
        self._workdir = tempfile.mkdtemp(prefix="asyncmongo-secantus-")
        self._storage_path = self._given_storage or os.path.join(self._workdir, "data")
        os.makedirs(self._storage_path, exist_ok=True)
        self._log_path = os.path.join(self._workdir, "server.log")
        # An explicit (empty) config file switches off SecantusDB's config
        # auto-discovery (./secantusd.toml, ~/.secantus/, /etc/secantus/), so a
        # stray file on the machine cannot change how the tests' server runs.
        with open(os.path.join(self._workdir, "secantusd.toml"), "w") as f:
            f.write("# intentionally empty: disables config auto-discovery\n")

    def _launch(self) -> None:
        assert self._workdir is not None and self._storage_path is not None
        assert self._log_path is not None
        if self._log_file is None:
            self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - lives across restarts
        self._log_file.flush()
        self._log_offset = self._log_file.tell()
        cmd = [
            sys.executable,
            "-m",
            "secantus",
            "--config",
            os.path.join(self._workdir, "secantusd.toml"),
            "--host",
            self._host,
            "--port",
            str(self._port),
            "--storage-path",
            self._storage_path,
            # INFO is quiet in SecantusDB (just the "listening" line) and that
            # line is what makes the log useful when startup goes wrong.
            "--log-level",
            "INFO",
            *self._extra_args,
        ]
        self._log_file.write(f"=== launch: {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self._workdir,
            # Deliberately left in the caller's process group: when the test
            # run is killed (Ctrl-C, `timeout`, CI cancellation) atexit may
            # never run, and the group-wide signal is what stops the server.
        )

    def _log_since_launch(self) -> str:
        if self._log_path is None:
            return ""
        with open(self._log_path, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        if len(data) > _LOG_TAIL_BYTES:
            data = b"...\n" + data[-_LOG_TAIL_BYTES:]
        return data.decode("utf-8", "replace")

    def _wait_ready(self, deadline: float) -> str | None:
        """Poll until the server answers ``hello`` as a writable primary (SecantusDB runs as a
        one-node replica set, and a client that discovers it reads from its primary); return None
        when ready or a description of why it never became ready."""
        import pymongo
        from pymongo.errors import PyMongoError

        assert self._proc is not None
        last_error = "timed out"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return f"process exited with code {self._proc.returncode}"
            try:
                with socket.create_connection((self._host, self._port), timeout=0.5):
                    pass
            except OSError as exc:
                last_error = f"port not accepting connections: {exc}"
                time.sleep(0.05)
                continue
            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                self._host,
                self._port,
                directConnection=True,
                serverSelectionTimeoutMS=2000,
                connectTimeoutMS=2000,
            )
            try:
                hello = client.admin.command("hello")
                if hello.get("isWritablePrimary"):
                    return None
                last_error = f"not a writable primary yet: {hello!r}"
                time.sleep(0.1)
            except PyMongoError as exc:
                last_error = f"hello failed: {exc!r}"
                time.sleep(0.1)
            finally:
                client.close()
        return f"not ready after {_READY_TIMEOUT:.0f}s ({last_error})"

    def _terminate(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap()

    def _reap(self) -> None:
        # Waiting for the exit is what guarantees the kernel has closed the
        # listening socket, so the port is reusable once this returns.
        if self._proc is not None:
            self._proc.wait()
            self._proc = None


class ExternalServer:
    """A server the test run does not own (from ``MONGODB_URI``): same
    ``uri``/``host``/``port`` surface as ServerProcess, lifecycle calls are
    no-ops. Tests that need kill/restart should skip when ``external``."""

    external = True
    pid = None
    running = True

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.host, self.port = _first_host_port(uri)

    def start(self) -> "ExternalServer":
        return self

    def stop(self) -> None:
        pass

    def __enter__(self) -> "ExternalServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def __repr__(self) -> str:
        return f"<ExternalServer {self.uri}>"


Server = Union[ServerProcess, ExternalServer]


def _first_host_port(uri: str) -> tuple[str, int]:
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ValueError(f"not a MongoDB URI: {uri!r}")
    hosts = rest.split("/", 1)[0].split("?", 1)[0]
    hosts = hosts.rsplit("@", 1)[-1]
    first = unquote(hosts.split(",", 1)[0])
    default_port = 27017
    if first.startswith("["):
        host, _, tail = first[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else default_port
    elif first.count(":") == 1:
        host, port_s = first.split(":")
        port = int(port_s)
    else:
        host, port = first, default_port
    return host, port


def server_from_env(
    extra_args: tuple[str, ...] | list[str] = (),
) -> ServerProcess | ExternalServer:
    """The server tests should use: ``MONGODB_URI`` if set (nothing is started),
    else a freshly started SecantusDB subprocess on a free loopback port with
    temporary storage, given ``extra_args`` (the caller must stop() it)."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        return ExternalServer(uri)
    return ServerProcess(extra_args=extra_args).start()

"""Tiny SecantusDB launcher for the benchmarks: one server process per run.

Deliberately independent of tests/ so the benchmark harness can evolve on its own.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pymongo


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_argv() -> list[str]:
    exe = shutil.which("secantusd-py")
    if exe:
        return [exe]
    # Console script missing from PATH (e.g. odd venv): the package is still importable.
    return [sys.executable, "-c", "import sys; from secantus.cli import main; sys.exit(main())"]


class SecantusServer:
    """Start ``secantusd-py`` on a free port with in-memory storage; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", startup_timeout: float = 60.0,
                 extra_args: list[str] | None = None) -> None:
        self.host = host
        self.extra_args = list(extra_args or [])
        self.port: int | None = None
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    def start(self) -> "SecantusServer":
        # The port is only reserved until we close the probe socket, so retry on a lost race.
        last_err = ""
        for _ in range(3):
            self.port = _free_port()
            self._log = tempfile.TemporaryFile(mode="w+b")
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.proc = subprocess.Popen(
                _server_argv()
                + ["--host", self.host, "--port", str(self.port),
                   "--storage-path", ":memory:", "--log-level", "WARNING"] + self.extra_args,
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                # Own session: a Ctrl-C aimed at the runner must not kill the server before
                # the runner's cleanup has a chance to stop it in order.
                start_new_session=True,
            )
            try:
                self._wait_ready()
                return self
            except RuntimeError as e:
                last_err = str(e)
                self.stop()
        raise RuntimeError(f"SecantusDB failed to start: {last_err}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500,
                                         connectTimeoutMS=500) as c:
                    c.admin.command("ping")
                return
            except pymongo.errors.PyMongoError:
                time.sleep(0.2)
        raise RuntimeError(f"no ping within {self.startup_timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT first: lets the server clean up its ':memory:' temp directory.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "SecantusServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def server_version(uri: str) -> str:
    """Best-effort description of whatever answers at ``uri`` (for the results header)."""
    try:
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000) as c:
            info = c.admin.command("buildInfo")
        return str(info.get("version", "?"))
    except Exception as e:  # noqa: BLE001 - metadata only, never fatal
        return f"unknown ({type(e).__name__})"

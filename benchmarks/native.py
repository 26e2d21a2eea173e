"""The benchmarks' native measuring instruments: the C bench server and the libmongoc ceiling.

build() compiles both (gcc, pkg-config) into benchmarks/.build/ when their sources changed;
BenchServer runs the server in its own process; run_ceiling() runs one ceiling measurement.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / ".build"
CC = os.environ.get("CC", "gcc")
CFLAGS = ["-O2", "-g", "-Wall", "-Wextra", "-std=gnu11", "-pthread"]

# name -> (C sources, every file the binary depends on, pkg-config package, binary name)
_PROGRAMS = {
    "server": (lambda: sorted((HERE / "server").glob("*.c")),
               lambda: sorted((HERE / "server").glob("*.[ch]")), "libbson-1.0", "benchserver"),
    "ceiling": (lambda: [HERE / "ceiling.c"], lambda: [HERE / "ceiling.c"], "libmongoc-1.0", "ceiling"),
}


def _pkg_config(package: str) -> list[str]:
    try:
        p = subprocess.run(["pkg-config", "--cflags", "--libs", package],
                           capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise RuntimeError("pkg-config is not installed") from e
    if p.returncode != 0:
        raise RuntimeError(f"pkg-config {package} failed: {p.stderr.strip()}")
    return p.stdout.split()


def compile_program(name: str, out: Path) -> str:
    """Compile one program ("server" or "ceiling") to ``out``; returns the compiler's output
    (warnings), raises RuntimeError with it on failure."""
    sources, _, package, _ = _PROGRAMS[name]
    argv = [CC, *CFLAGS, "-o", str(out), *map(str, sources()), *_pkg_config(package)]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise RuntimeError(f"{CC} is not installed") from e
    output = (p.stdout + p.stderr).strip()
    if p.returncode != 0:
        raise RuntimeError(f"compiling {name} failed:\n{' '.join(argv)}\n{output}")
    return output


def build(force: bool = False) -> dict[str, Path]:
    """Compile what is out of date; returns {"server": path, "ceiling": path}."""
    BUILD_DIR.mkdir(exist_ok=True)
    paths: dict[str, Path] = {}
    for name, (_, deps, _, binary) in _PROGRAMS.items():
        out = BUILD_DIR / binary
        newest = max(f.stat().st_mtime for f in deps())
        if force or not out.exists() or out.stat().st_mtime < newest:
            # Compile beside the target and rename: a concurrent run never sees half a binary.
            fd, tmp = tempfile.mkstemp(dir=BUILD_DIR, prefix=f".{binary}.")
            os.close(fd)
            try:
                warnings = compile_program(name, Path(tmp))
                os.chmod(tmp, 0o755)
                os.replace(tmp, out)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            if warnings:
                print(f"benchmarks.native: {name} compiled with warnings:\n{warnings}", file=sys.stderr)
        paths[name] = out
    return paths


class BenchServer:
    """The C bench server in its own process on a free port; use as a context manager."""

    def __init__(self, binary: Path | str | None = None, startup_timeout: float = 10.0) -> None:
        self.binary = Path(binary) if binary else None
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self._stderr = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> "BenchServer":
        binary = self.binary or build()["server"]
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([str(binary), "--port", "0"], stdout=subprocess.PIPE,
                                     stderr=self._stderr, stdin=subprocess.DEVNULL)
        line = self._read_line()
        parts = line.split()
        if len(parts) != 2 or parts[0] != "ready" or not parts[1].isdigit():
            err = self._stderr_text()
            self.stop()
            raise RuntimeError(f"bench server did not start (said {line!r}): {err}")
        self.port = int(parts[1])
        return self

    def _read_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        buf = b""
        deadline = time.monotonic() + self.startup_timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    break  # exited
                buf += chunk
        return buf.decode(errors="replace").strip()

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.returncode = proc.returncode
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> "BenchServer":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_ceiling(uri: str, op: str, concurrency: int, ops: int, warmup: int | None = None,
                pool: int = 100, doc_path: str | Path | None = None, batch: int | None = None,
                seed_docs: int = 1000, db: str = "asyncmongo_bench", coll: str | None = None,
                file_bytes: int | None = None, *, timeout: float | None = None,
                binary: Path | str | None = None) -> dict:
    """One ceiling measurement; returns its JSON line as a dict.

    warmup None: max(ops // 10, concurrency), as worker.py. coll None: "ceiling_<op>". The GridFS
    ops (gridfs_upload, gridfs_download; concurrency 1) take doc_path as the file to move, coll as
    the bucket's name, and file_bytes to move only the file's first bytes.
    """
    argv = [str(binary or build()["ceiling"]), "--uri", uri, "--op", op,
            "--concurrency", str(concurrency), "--ops", str(ops), "--pool", str(pool),
            "--seed-docs", str(seed_docs), "--db", db]
    if warmup is not None:
        argv += ["--warmup", str(warmup)]
    if doc_path is not None:
        argv += ["--doc", str(doc_path)]
    if batch is not None:
        argv += ["--batch", str(batch)]
    if coll is not None:
        argv += ["--coll", coll]
    if file_bytes is not None:
        argv += ["--bytes", str(file_bytes)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"ceiling {op} failed (exit {p.returncode}): {p.stderr.strip()}")
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        raise RuntimeError(f"ceiling {op} printed {len(lines)} lines, expected one JSON line:\n{p.stdout}")
    return json.loads(lines[0])

"""The benchmark tasks: the single- and multi-document tasks (GridFS upload and download included) of
MongoDB's Driver Performance Benchmarking specification, and the concurrency sweep; where their data
comes from and how big they are.

The spec's data ships as tarballs in ../shared/data/driver-benchmark (or ASYNCMONGO_BENCH_DATA); the
three documents and gridfs_large.bin are unpacked lazily into benchmarks/.data/, which ignores itself
in git: never commit unpacked files.
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import bson

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "ASYNCMONGO_BENCH_DATA"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "driver-benchmark"
SCRATCH = Path(__file__).resolve().parent / ".data"
TARBALL = "single_and_multi_document.tgz"
DATASETS = ("tweet", "small_doc", "large_doc")
# The GridFS tasks' file: 52,428,800 bytes, all zero. Its size is read from the file, never assumed.
GRIDFS_FILE = "gridfs_large.bin"
DATA_FILES = tuple(f"{n}.json" for n in DATASETS) + (GRIDFS_FILE,)
# The name the download task's file is stored under (the spec's).
GRIDFS_FILENAME = "gridfstest"
# Quick and demo runs move a slice of gridfs_large.bin, never less than this: four whole 255 KiB
# chunks and a short last one, so a sliced file still takes several chunks and a partial one.
GRIDFS_MIN_BYTES = 1024 * 1024

# Worker operations. A "doc" op moves many documents in one call, and counts documents as its ops
# (the spec sizes those tasks as documents x document size).
OPS = ("command", "find_one", "insert_one", "find_many", "bulk_insert", "gridfs_upload",
       "gridfs_download")
MULTI_DOC_OPS = ("find_many", "bulk_insert")
WRITE_OPS = ("insert_one", "bulk_insert")
# A GridFS op moves one whole file (an upload from memory, or a download into memory).
GRIDFS_OPS = ("gridfs_upload", "gridfs_download")
# Every timed iteration of these starts from an emptied collection or bucket (the spec's "before task").
RESET_OPS = WRITE_OPS + ("gridfs_upload",)

# {hello: true}: the spec's run-command task sizes each op as this command's BSON (13 bytes).
HELLO = {"hello": True}

# The sweep's documents: small and fixed, so the ceiling (which reads its insert document from a JSON
# file) inserts exactly what the drivers insert.
SWEEP_DOC = {"name": "asyncmongo-bench", "n": 12345, "tags": ["a", "b"], "ok": True}


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    op: str
    dataset: str | None  # None: the sweep's SWEEP_DOC (or no document: run command)
    spec_scale: int  # ops per iteration in the specification (documents, for the multi-doc tasks)
    kind: str  # "spec" or "sweep"

    @property
    def seeded(self) -> bool:
        """Read tasks query a collection (or a bucket) filled before any driver runs."""
        return self.op in ("find_one", "find_many", "gridfs_download")

    @property
    def multi_doc(self) -> bool:
        return self.op in MULTI_DOC_OPS

    @property
    def gridfs(self) -> bool:
        return self.op in GRIDFS_OPS

    @property
    def unit(self) -> str:
        """What one op counts: a document (multi-doc tasks), a file (GridFS) or a call."""
        return "doc" if self.multi_doc else "file" if self.gridfs else "op"


SPEC_TASKS = (
    Task("run_command", "Run command ({hello: true})", "command", None, 10_000, "spec"),
    Task("find_one_by_id", "Find one by _id", "find_one", "tweet", 10_000, "spec"),
    Task("small_insert_one", "Small doc insertOne", "insert_one", "small_doc", 10_000, "spec"),
    Task("large_insert_one", "Large doc insertOne", "insert_one", "large_doc", 10, "spec"),
    Task("find_many", "Find many and empty the cursor", "find_many", "tweet", 10_000, "spec"),
    Task("small_bulk_insert", "Small doc bulk insert", "bulk_insert", "small_doc", 10_000, "spec"),
    Task("large_bulk_insert", "Large doc bulk insert", "bulk_insert", "large_doc", 10, "spec"),
    Task("gridfs_upload", "GridFS upload", "gridfs_upload", "gridfs_large", 1, "spec"),
    Task("gridfs_download", "GridFS download", "gridfs_download", "gridfs_large", 1, "spec"),
)
# spec_scale of the sweep is the default timed op count of a full run (all tasks together).
SWEEP_TASKS = (
    Task("sweep_find_one", "Sweep: find_one by _id", "find_one", None, 10_000, "sweep"),
    Task("sweep_insert_one", "Sweep: insert_one", "insert_one", None, 10_000, "sweep"),
)
TASKS = {t.name: t for t in SPEC_TASKS + SWEEP_TASKS}
SWEEP_CONCURRENCY = (1, 8, 64, 256, 1024)


def task_names(spec: str | None) -> list[str]:
    """Expand a comma list of task names and the groups 'spec', 'sweep', 'all' (canonical order)."""
    if not spec:
        return list(TASKS)
    out: set[str] = set()
    for raw in spec.split(","):
        n = raw.strip()
        if not n:
            continue
        if n == "all":
            out.update(TASKS)
        elif n == "spec":
            out.update(t.name for t in SPEC_TASKS)
        elif n == "sweep":
            out.update(t.name for t in SWEEP_TASKS)
        elif n in TASKS:
            out.add(n)
        else:
            raise ValueError(f"unknown task {n!r}; choose from {', '.join(TASKS)}, spec, sweep, all")
    return [n for n in TASKS if n in out]


def scaled(task: Task, fraction: float) -> int:
    """The spec's count scaled down for quick and demo runs; at least 2, so a bulk is still a bulk.
    A GridFS task always moves one file an iteration: its file shrinks instead (file_bytes)."""
    if fraction >= 1 or task.gridfs:
        return task.spec_scale
    return max(2, round(task.spec_scale * fraction))


def file_bytes(fraction: float, full: int) -> int:
    """Bytes of gridfs_large.bin a GridFS task moves: the whole file at full scale; its first
    fraction in quick and demo runs, at least GRIDFS_MIN_BYTES."""
    if fraction >= 1:
        return full
    return min(full, max(GRIDFS_MIN_BYTES, round(full * fraction)))


# --- data --------------------------------------------------------------------------------------------

class DataMissing(RuntimeError):
    """The spec's data set is not where we looked; the message names the path and the variable."""


def data_source() -> Path:
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)


def _unpacked_in(folder: Path) -> Path | None:
    for d in (folder, folder / "single_and_multi_document"):
        if all((d / n).is_file() for n in DATA_FILES):
            return d
    return None


def data_dir(scratch: Path = SCRATCH) -> Path:
    """A folder holding tweet.json, small_doc.json, large_doc.json and gridfs_large.bin, unpacking
    them if needed.

    ASYNCMONGO_BENCH_DATA may name a folder with the tarballs or with the files already unpacked.
    """
    src = data_source()
    ready = _unpacked_in(src)
    if ready is not None:
        return ready
    tgz = src / TARBALL
    if not tgz.is_file():
        raise DataMissing(
            f"the Driver Performance Benchmarking data is not at {src} (looked for {TARBALL} or "
            f"unpacked {', '.join(DATA_FILES)}); set {DATA_ENV} to the folder "
            "holding them")
    st = tgz.stat()
    # Keyed by the tarball's identity, so a different data set never meets stale files.
    dest = scratch / f"sm-{st.st_size}-{int(st.st_mtime)}"
    if _unpacked_in(dest) is not None:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    _ignore_self(scratch)
    wanted = set(DATA_FILES)
    with tarfile.open(tgz, "r:gz") as tf:
        for m in tf:
            base = m.name.rsplit("/", 1)[-1]
            if base not in wanted or not m.isfile():
                continue
            # Copy the bytes ourselves instead of tf.extract(): no path from the archive is trusted.
            tmp = dest / f".{base}.{os.getpid()}.tmp"
            with tf.extractfile(m) as src_f, open(tmp, "wb") as out:
                shutil.copyfileobj(src_f, out, 1 << 20)
            os.replace(tmp, dest / base)  # concurrent unpackers each land a whole file
    if _unpacked_in(dest) is None:
        raise DataMissing(f"{tgz} does not hold {', '.join(sorted(wanted))}")
    return dest


def _ignore_self(scratch: Path) -> None:
    # The scratch folder keeps itself out of git whatever the repository's .gitignore says.
    gi = scratch / ".gitignore"
    if not gi.exists():
        gi.write_text("*\n")


def data_available() -> tuple[bool, str]:
    try:
        data_dir()
    except DataMissing as e:
        return False, str(e)
    return True, ""


def load_doc(dataset: str | None, folder: Path | None = None) -> dict:
    """The task's document as a dict (the spec's files are strict JSON, no extended types)."""
    if dataset is None:
        return dict(SWEEP_DOC)
    folder = folder or data_dir()
    with open(folder / f"{dataset}.json", encoding="utf-8") as f:
        return json.load(f)


def gridfs_size(folder: Path | None = None) -> int:
    """The size of gridfs_large.bin as unpacked (the spec's GridFS task size at full scale)."""
    return ((folder or data_dir()) / GRIDFS_FILE).stat().st_size


def load_file(folder: Path | None = None, nbytes: int | None = None) -> bytes:
    """The GridFS tasks' data: gridfs_large.bin, or its first nbytes."""
    with open((folder or data_dir()) / GRIDFS_FILE, "rb") as f:
        data = f.read(-1 if nbytes is None else nbytes)
    if nbytes is not None and len(data) != nbytes:
        raise DataMissing(f"{GRIDFS_FILE} holds {len(data)} bytes, fewer than the {nbytes} asked for")
    return data


def load_data(task: Task, folder: Path | None = None, nbytes: int | None = None) -> dict | bytes:
    """What one op of the task sends: no document for run command, the file's bytes for GridFS
    (its first nbytes if given), the task's document otherwise."""
    if task.op == "command":
        return {}
    if task.gridfs:
        return load_file(folder, nbytes)
    return load_doc(task.dataset, folder)


def doc_path(task: Task, folder: Path | None, scratch: Path = SCRATCH) -> Path | None:
    """A JSON file holding the task's document, for the ceiling (None for run command; for GridFS,
    gridfs_large.bin itself)."""
    if task.op == "command":
        return None
    if task.gridfs:
        return (folder or data_dir()) / GRIDFS_FILE
    if task.dataset is not None:
        return (folder or data_dir()) / f"{task.dataset}.json"
    scratch.mkdir(parents=True, exist_ok=True)
    _ignore_self(scratch)
    p = scratch / "sweep_doc.json"
    text = json.dumps(SWEEP_DOC)
    if not p.exists() or p.read_text() != text:
        tmp = scratch / f".sweep_doc.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, p)
    return p


def op_bytes(task: Task, doc: dict | bytes | None) -> int:
    """Bytes moved by one op, for the MB/s score: the BSON size of one document or of the hello
    command; for GridFS, the file's size (its data, not its chunk documents)."""
    if task.op == "command":
        return len(bson.encode(HELLO))
    if task.gridfs:
        return len(doc) if doc is not None else gridfs_size()
    return len(bson.encode(doc if doc is not None else load_doc(task.dataset)))


def seed_docs(task: Task, doc: dict, count: int) -> list[dict]:
    """What a read task's collection holds: find_one's docs carry _id 0..count-1, as the spec's
    sequential ids; find_many's copies let the server assign ids."""
    if task.op == "find_one":
        return [{**doc, "_id": i} for i in range(count)]
    return [dict(doc) for _ in range(count)]


def collection_name(task: Task, driver: str) -> str:
    """Read tasks share one seeded collection per task; writes get one per driver. For GridFS the
    name is the bucket's: its collections are <name>.files and <name>.chunks."""
    if task.seeded:
        return f"corpus_{task.name}"
    return f"{task.name}_{driver}".replace("-", "_")

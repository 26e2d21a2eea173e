"""Runner: every server x task x concurrency x driver, plus the C ceiling, each measured in its own process.

Servers run one after the other, each in its own process (SecantusDB; benchmarks/server, the C
in-memory wire server; or MONGODB_URI). Tasks: the single- and multi-document tasks of MongoDB's
Driver Performance Benchmarking spec (GridFS upload and download included; not on the C server) and
a find_one/insert_one concurrency sweep. Prints one markdown table on stdout and progress on stderr;
writes --json, --markdown and a --plot PNG.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import drivers, spec_tasks
from benchmarks.progress import Progress
from benchmarks.spec_tasks import SWEEP_CONCURRENCY, TASKS, Task

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "asyncmongo-eventfd"
SERVERS = ("secantus", "cbench")
SERVER_TITLES = {"secantus": "SecantusDB", "cbench": "C bench server", "uri": "MONGODB_URI"}
SERVER_LABELS = {"secantus": "SecantusDB", "cbench": "C bench", "uri": "URI"}  # table column
# Tasks a server cannot run, with the reason the table's notes give. The C server answers only what
# the other tasks send and refuses anything else rather than approximating it.
_CBENCH_NO_GRIDFS = (
    "the C bench server has no GridFS: GridFS reads chunks with a range filter on n ($gte/$lt) "
    "sorted by n and checks indexes with a projected find, listIndexes and createIndexes, where the "
    "bench server answers only equality filters and refuses sort and projection")
UNSUPPORTED = {"cbench": {t.name: _CBENCH_NO_GRIDFS for t in TASKS.values() if t.gridfs}}


@dataclass(frozen=True)
class Mode:
    """Counts for one kind of run. ``scale`` multiplies the spec's per-iteration counts, and the
    GridFS tasks' file size (spec_tasks.file_bytes: quick 1 MiB, demo 5 MiB of the 50 MiB file)."""

    scale: float
    iterations: int
    sweep_ops: int
    seed_docs: int
    server: str
    plot: Path | None


MODES = {
    # Spec counts, five iterations a cell (the spec asks for a minute or 100 iterations per task;
    # 2 drivers' worth of that alone would take hours on SecantusDB).
    "full": Mode(1.0, 5, 10_000, 1000, "both", REPO_ROOT / "benchmarks" / "results.png"),
    # The README's main job: a few minutes on 2 cores, on the embedded server (SecantusDB, the
    # realistic one) and on the C server, where the drivers are the bottleneck.
    "demo": Mode(0.1, 3, 2000, 1000, "both", spec_tasks.SCRATCH / "results-demo.png"),
    # Smoke: every cell runs, counts tiny; the figures mean nothing.
    "quick": Mode(0.002, 2, 100, 100, "both", None),
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _child_env() -> dict[str, str]:
    # Workers must import `benchmarks` (and an in-tree `asyncmongo`) whatever the caller's cwd.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _worker_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.worker", *args]


def _last_json(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _tail(text: str, n: int = 600) -> str:
    text = (text or "").strip()
    return text[-n:].replace("\n", " | ")


def probe(name: str) -> dict:
    """Import check in a child (a half-built extension may crash rather than raise); the ceiling
    is probed by building it."""
    if name == drivers.CEILING:
        try:
            from benchmarks import native

            paths = native.build()
        except Exception as e:  # noqa: BLE001 - compiler missing, libmongoc headers missing, ...
            return {"available": False, "version": None, "error": f"{type(e).__name__}: {e}"}
        return {"available": True, "version": "libmongoc (C, native threads)",
                "error": None, "path": str(paths["ceiling"])}
    try:
        p = subprocess.run(_worker_cmd("--driver", name, "--probe"), capture_output=True,
                           text=True, timeout=120, cwd=REPO_ROOT, env=_child_env())
    except subprocess.TimeoutExpired:
        return {"available": False, "version": None, "error": "probe timed out"}
    parsed = _last_json(p.stdout)
    if parsed is None:
        return {"available": False, "version": None,
                "error": f"probe exited {p.returncode}: {_tail(p.stderr)}"}
    return {k: parsed.get(k) for k in ("available", "version", "error")}


# --- one measurement ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    server: str
    task: Task
    concurrency: int
    driver: str


def cell_counts(task: Task, args, concurrency: int = 1) -> tuple[int, int, int]:
    """(ops per iteration, iterations, docs seeded) for a task in this run (GridFS: one file an
    iteration, and the download's bucket holds one)."""
    if task.kind == "sweep":
        # At least one op per task, so "concurrency C" really means C requests in flight.
        return max(args.ops, concurrency), 1, args.seed_docs
    n = spec_tasks.scaled(task, args.scale)
    return n, args.iterations, n


def gridfs_bytes(args) -> int:
    """Bytes of gridfs_large.bin each GridFS op of this run moves."""
    return spec_tasks.file_bytes(args.scale, spec_tasks.gridfs_size(args.data_dir))


def measure_driver(cell: Cell, uri: str, args) -> dict:
    ops, iterations, seeded = cell_counts(cell.task, args, cell.concurrency)
    cmd = _worker_cmd("--driver", cell.driver, "--task", cell.task.name,
                      "--concurrency", str(cell.concurrency), "--ops", str(ops),
                      "--iterations", str(iterations), "--uri", uri, "--loop", args.loop,
                      "--pool-size", str(args.pool_size), "--seed-docs", str(seeded))
    if cell.task.seeded:
        cmd.append("--no-seed")  # the runner seeded it once for every driver
    if args.data_dir is not None:
        cmd += ["--data-dir", str(args.data_dir)]
    if cell.task.gridfs:
        cmd += ["--file-bytes", str(gridfs_bytes(args))]
    base = {"driver": cell.driver, "task": cell.task.name, "concurrency": cell.concurrency}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                           cwd=REPO_ROOT, env=_child_env())
    except subprocess.TimeoutExpired:
        return {**base, "error": f"worker timed out after {args.timeout}s"}
    res = _last_json(p.stdout)
    if res is None:
        return {**base, "error": f"worker exited {p.returncode} without a result: {_tail(p.stderr)}"}
    if p.returncode != 0 and "error" not in res:
        res["error"] = f"worker exited {p.returncode}: {_tail(p.stderr)}"
    return res


def measure_ceiling(cell: Cell, uri: str, args) -> dict:
    """The same task through benchmarks/ceiling.c, in its own process, in the workers' terms."""
    from benchmarks import native

    task = cell.task
    ops, iterations, seeded = cell_counts(task, args, cell.concurrency)
    base = {"driver": drivers.CEILING, "task": task.name, "op": task.op, "kind": task.kind,
            "concurrency": cell.concurrency, "pool_size": args.pool_size}
    # Its own collection: it seeds read tasks itself (the same documents, _id 0..S-1).
    coll = f"{task.name}_ceiling"
    doc_file = spec_tasks.doc_path(task, args.data_dir)
    # The ceiling has no iterations: one timed phase of them all, so its score is MB over the mean
    # iteration time rather than the median. Multi-doc ops are calls there (one find drained, one
    # insert_many of `batch` documents); a GridFS op is one file, timed alone between untimed resets.
    calls = iterations if task.multi_doc else ops * iterations
    warmup = 1 if task.multi_doc or task.gridfs else max(ops // 10, cell.concurrency)
    nbytes = gridfs_bytes(args) if task.gridfs else None
    # The ceiling is the best libmongoc does here: with as many threads as tasks in flight, and with
    # fewer (few threads going from operation to operation without sleeping often do more on a
    # fast server); the best of them is the cell's ceiling, its thread count recorded.
    top = min(cell.concurrency, args.pool_size)
    counts = [top]
    if not (task.multi_doc or task.gridfs) and getattr(args, "ceiling_threads", "best") == "best":
        counts = sorted({n for n in (1, 2, 4, 8, 16, 32, 64) if n < top} | {top})
    best = None
    for threads in counts:
        try:
            r = native.run_ceiling(
                uri, task.op, threads, calls, warmup=warmup, pool=args.pool_size,
                doc_path=doc_file, batch=ops if task.op == "bulk_insert" else None,
                seed_docs=seeded, db=drivers.DB_NAME, coll=coll, file_bytes=nbytes,
                timeout=args.timeout)
        except Exception as e:  # noqa: BLE001 - a failed cell, the run goes on
            return {**base, "error": f"{type(e).__name__}: {e}"}
        r["threads"] = threads
        if best is None or r["ops"] / max(r["wall_s"], 1e-9) > best["ops"] / max(best["wall_s"], 1e-9):
            best = r
    res = best
    out = {**base, **res, **{k: base[k] for k in ("driver", "task", "kind", "concurrency")},
           "collection": coll,
           "version": f"libmongoc {res.get('version', '?')}", "calls": res["ops"]}
    if task.gridfs:
        per_op = nbytes
    else:
        doc = spec_tasks.load_doc(task.dataset, args.data_dir) if task.op != "command" else None
        per_op = spec_tasks.op_bytes(task, doc)
    if task.multi_doc:
        docs = res["ops"] * ops
        out.update({"ops": docs, "warmup_ops": res["warmup_ops"] * ops,
                    "ops_per_s": docs / res["wall_s"] if res["wall_s"] > 0 else 0.0,
                    "cpu_us_per_op": res["cpu_s"] / docs * 1e6})
    per_iter_s = res["wall_s"] / iterations
    out.update({
        "iterations": iterations, "ops_per_iteration": ops,
        "unit": task.unit, "op_bytes": per_op,
        "iteration_bytes": per_op * ops, "iteration_median_s": per_iter_s,
        "mb_per_s": per_op * ops / 1e6 / per_iter_s if per_iter_s > 0 else 0.0,
    })
    if task.op in spec_tasks.WRITE_OPS:
        # Warm-up and timed inserts all land in one collection there.
        out["expected_docs"] = out["warmup_ops"] + out["ops"]
    return out


# --- the run ------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _redact(uri: str) -> str:
    return re.sub(r"//[^@/]+@", "//***@", uri)


def _ok(r: dict | None) -> bool:
    return bool(r) and "error" not in r and r.get("ops", 0) > 0


def start_server(name: str):
    """(handle with .stop(), uri, description) for one server of the run."""
    if name == "uri":
        from benchmarks._server import server_version

        uri = os.environ["MONGODB_URI"]
        return None, uri, f"external MONGODB_URI (version {server_version(uri)})"
    if name == "secantus":
        from benchmarks._server import SecantusServer

        # The oplog is pruned only past its cap (default 100k entries), so with the default the
        # drivers run last would pay pruning costs the first ones did not: a small cap makes every
        # driver's inserts pay the same amortised pruning.
        # A cache big enough for the GridFS tasks' 50 MB files (the default 1 GB in-memory cache
        # fills up over a run and the server answers InternalError to every driver after).
        srv = SecantusServer(extra_args=["--oplog-max-entries", "5000", "--cache-size", "6G"]).start()
        return srv, srv.uri, (f"SecantusDB {importlib.metadata.version('SecantusDB')} (secantusd-py "
                              "--storage-path :memory: --oplog-max-entries 5000 --cache-size 6G, own process)")
    from benchmarks import native

    srv = native.BenchServer().start()
    return srv, srv.uri, "benchmarks/server (C, in-memory, own process)"


def plan_cells(server: str, names: list[str], task_list: list[str], conc: list[int]) -> list[Cell]:
    # Task-major: every driver meets a read task's collection in the same state, and drift in
    # machine load spreads over drivers rather than landing on whichever ran during a busy spell.
    cells = []
    for tn in task_list:
        if tn in UNSUPPORTED.get(server, {}):
            continue
        t = TASKS[tn]
        for c in (conc if t.kind == "sweep" else (1,)):
            cells += [Cell(server, t, c, n) for n in names]
    return cells


def run_server(server: str, cells: list[Cell], args, progress: Progress, meta: dict) -> list[dict]:
    runs: list[dict] = []
    title = SERVER_TITLES[server]
    progress.start(f"{title}: starting")
    try:
        handle, uri, desc = start_server(server)
    except Exception as e:  # noqa: BLE001 - the other server's cells still run
        msg = f"{type(e).__name__}: {e}"
        progress.note(f"{title}: failed to start: {msg}")
        for cell in cells:
            runs.append({"server": server, "driver": cell.driver, "task": cell.task.name,
                         "concurrency": cell.concurrency, "error": f"server failed to start: {msg}"})
            progress.advance()
        meta["servers"][server] = {"description": f"failed to start: {msg}", "uri": None}
        return runs
    import pymongo

    from benchmarks import worker

    uri = drivers.bench_uri(uri)
    meta["servers"][server] = {"description": desc, "uri": _redact(uri)}
    try:
        # The witness: seeds read tasks, counts what writes left, drops; never measured.
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000) as witness:
            seeded_for = None
            for i, cell in enumerate(cells):
                t = cell.task
                if t.seeded and seeded_for != t.name:
                    progress.start(f"{title} · {t.name}: seeding")
                    _ops, _it, count = cell_counts(t, args)
                    doc = spec_tasks.load_data(t, args.data_dir,
                                               gridfs_bytes(args) if t.gridfs else None)
                    worker.seed(witness, t, spec_tasks.collection_name(t, ""), doc, count)
                    del doc
                    seeded_for = t.name
                progress.start(f"{title} · {t.name} · c={cell.concurrency} · {cell.driver}")
                t0 = time.monotonic()
                if cell.driver == drivers.CEILING:
                    r = measure_ceiling(cell, uri, args)
                else:
                    r = measure_driver(cell, uri, args)
                r["server"] = server
                if _ok(r) and "collection" in r and t.op in spec_tasks.WRITE_OPS:
                    _check_writes(witness, r)
                if _ok(r) and "collection" in r and t.op == "gridfs_upload":
                    _check_upload(witness, r, gridfs_bytes(args))
                runs.append(r)
                progress.advance(_summary(r, time.monotonic() - t0))
                if not _ok(r):
                    progress.note(f"ERROR {title} {t.name} c={cell.concurrency} {cell.driver}: "
                                  f"{r.get('error')}")
                if t.seeded and (i + 1 == len(cells) or cells[i + 1].task is not t):
                    worker.drop_task_data(witness, t, spec_tasks.collection_name(t, ""))
                    worker.drop_task_data(witness, t, f"{t.name}_ceiling")
    finally:
        if handle is not None:
            handle.stop()
    return runs


def _check_writes(witness, r: dict) -> None:
    from benchmarks import worker

    coll = r["collection"]
    r["docs_in_collection"] = got = worker.count_docs(witness, coll)
    witness[drivers.DB_NAME].drop_collection(coll)  # large documents must not pile up in the server
    want = r.get("expected_docs")
    if want is not None and got != want:
        r["error"] = f"{want} documents inserted, the server holds {got}"


def _check_upload(witness, r: dict, nbytes: int) -> None:
    """What the last timed upload left in its bucket: the 1-byte file and one file of nbytes with
    every chunk; then the bucket is dropped."""
    from benchmarks import worker

    bucket = r["collection"]
    db = witness[drivers.DB_NAME]
    files = list(db[f"{bucket}.files"].find({}, {"length": 1, "chunkSize": 1}))
    big = [f for f in files if f.get("length") == nbytes]
    r["files_in_bucket"] = len(files)
    r["file_chunks"] = got = (db[f"{bucket}.chunks"].count_documents({"files_id": big[0]["_id"]})
                              if len(big) == 1 else 0)
    worker.drop_task_data(witness, TASKS[r["task"]], bucket)
    if len(files) != 2 or len(big) != 1:
        r["error"] = (f"the bucket holds {len(files)} files ({len(big)} of {nbytes} bytes); "
                      "expected the 1-byte file and one upload")
    elif got != -(-nbytes // big[0]["chunkSize"]):
        r["error"] = f"the uploaded file has {got} chunks, not {-(-nbytes // big[0]['chunkSize'])}"


def _rate(v: float) -> str:
    # A GridFS task does a file or two a second: whole numbers would show 0 or 1.
    return format(v, ",.0f" if v >= 100 else ".2f")


def _summary(r: dict, took: float) -> str:
    head = f"{r.get('server', '?'):<8} {r['task']:<18} c={r['concurrency']:<5} {r['driver']:<22}"
    if not _ok(r):
        return f"{head} ERROR"
    return (f"{head} {_rate(r['ops_per_s']):>10} {r.get('unit', 'op')}/s {r.get('mb_per_s', 0):8.2f} MB/s "
            f"{r['cpu_us_per_op']:8.1f} µs CPU/{r.get('unit', 'op')}  p50 {r['lat_p50_us'] / 1e3:8.3f} ms "
            f"p99 {r['lat_p99_us'] / 1e3:8.3f} ms ({took:.1f}s)")


# --- aggregation and ratios -----------------------------------------------------------------------

_MEDIAN_FIELDS = ("wall_s", "ops_per_s", "mb_per_s", "iteration_median_s", "cpu_s", "cpu_user_s",
                  "cpu_sys_s", "cpu_us_per_op", "lat_p50_us", "lat_p99_us", "lat_mean_us",
                  "lat_max_us")


def _key(r: dict) -> tuple:
    return (r["server"], r["task"], r["concurrency"], r["driver"])


def aggregate(runs: list[dict]) -> list[dict]:
    """One result per cell: the median of its rounds (with --repeat 1, the run itself)."""
    cells: dict[tuple, list[dict]] = {}
    for r in runs:
        cells.setdefault(_key(r), []).append(r)
    out = []
    for group in cells.values():
        bad = [r for r in group if not _ok(r)]
        if bad:
            # A cell that failed in any round is reported as failed, not as a median of survivors.
            out.append({k: v for k, v in bad[0].items() if k != "round"} | {"rounds": len(group)})
            continue
        cell = {k: v for k, v in group[0].items() if k != "round"}
        for f in _MEDIAN_FIELDS:
            if all(f in r for r in group):
                cell[f] = statistics.median(r[f] for r in group)
        cell["misses"] = sum(r.get("misses", 0) for r in group)
        cell["rounds"] = len(group)
        cell["ops_per_s_all"] = [r["ops_per_s"] for r in group]
        cell["cpu_us_per_op_all"] = [r["cpu_us_per_op"] for r in group]
        out.append(cell)
    return out


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)) or \
            (isinstance(b, float) and math.isnan(b)):
        return None
    return a / b


def ratios(results: list[dict], baseline: str, peers: list[str]) -> list[dict]:
    """Baseline against each peer (the ceiling included), per cell:
    x_faster = baseline ops/s ÷ peer ops/s; score_ratio the same for MB/s; cpu_ratio, p50_ratio and
    p99_ratio = baseline ÷ peer (below 1: the baseline cheaper / quicker)."""
    by = {_key(r): r for r in results}
    out = []
    for (srv, task, c, drv), base in by.items():
        if drv != baseline:
            continue
        for peer in peers:
            pr = by.get((srv, task, c, peer))
            row = {"server": srv, "task": task, "concurrency": c, "baseline": baseline, "peer": peer,
                   "x_faster": None, "score_ratio": None, "cpu_ratio": None, "p50_ratio": None,
                   "p99_ratio": None}
            if _ok(base) and _ok(pr):
                row["x_faster"] = _div(base["ops_per_s"], pr["ops_per_s"])
                row["score_ratio"] = _div(base.get("mb_per_s"), pr.get("mb_per_s"))
                row["cpu_ratio"] = _div(base["cpu_us_per_op"], pr["cpu_us_per_op"])
                row["p50_ratio"] = _div(base["lat_p50_us"], pr["lat_p50_us"])
                row["p99_ratio"] = _div(base["lat_p99_us"], pr["lat_p99_us"])
            out.append(row)
    return out


def ceiling_ratios(results: list[dict]) -> list[dict]:
    """Every driver against the ceiling: of_ceiling = driver ops/s ÷ ceiling ops/s (1 = as fast as
    C on native threads); cpu_x_ceiling = driver CPU/op ÷ ceiling CPU/op."""
    by = {_key(r): r for r in results}
    out = []
    for (srv, task, c, drv), r in by.items():
        if drv == drivers.CEILING:
            continue
        ceil = by.get((srv, task, c, drivers.CEILING))
        row = {"server": srv, "task": task, "concurrency": c, "driver": drv,
               "of_ceiling": None, "cpu_x_ceiling": None}
        if _ok(r) and _ok(ceil):
            row["of_ceiling"] = _div(r["ops_per_s"], ceil["ops_per_s"])
            row["cpu_x_ceiling"] = _div(r["cpu_us_per_op"], ceil["cpu_us_per_op"])
        out.append(row)
    return out


# --- output -------------------------------------------------------------------------------------

def _fmt(v: float | None, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return format(v, spec)


def _md_table(header: list[str], rows: list[list[str]], left: int = 0) -> str:
    # The first `left` columns are labels (left-aligned), the rest numbers; padded so the same text
    # reads well in a terminal.
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i < left else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join(":" + "-" * (w + 1) if i < left else "-" * (w + 1) + ":"
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _mb(v: float) -> str:
    return _fmt(v, ",.1f" if v >= 100 else ".2f" if v >= 1 else ".3f")


def render_table(report: dict) -> str:
    """The one table: a row per server x task x concurrency x driver."""
    cfg = report["config"]
    info = report["drivers"]
    baseline = report["baseline"]
    by = {_key(r): r for r in report["results"]}
    rat = {(r["server"], r["task"], r["concurrency"], r["peer"]): r for r in report["ratios"]}
    cel = {(r["server"], r["task"], r["concurrency"], r["driver"]): r
           for r in report["ceiling_ratios"]}
    b = "am" if baseline and baseline.startswith("asyncmongo") else (baseline or "")
    header = ["server", "task", "conc", "driver", "ops/s", "MB/s", "p50 ms", "p99 ms", "CPU µs/op",
              f"{b} x faster", f"{b} CPU ratio", "of ceiling", "CPU x ceiling"]
    rows = []
    for srv in cfg["servers"]:
        for tn in cfg["tasks"]:
            if tn in report["skipped_tasks"] or tn in report["server_skipped_tasks"].get(srv, {}):
                continue
            t = TASKS[tn]
            label = tn + (" (docs)" if t.multi_doc else " (file)" if t.gridfs else "")
            for c in (cfg["concurrency"] if t.kind == "sweep" else [1]):
                for n in cfg["drivers"]:
                    r = by.get((srv, tn, c, n))
                    row = [SERVER_LABELS[srv], label, str(c), n]
                    if not info[n]["available"]:
                        rows.append(row + ["n/a"] * 9)
                        continue
                    if not _ok(r):
                        rows.append(row + ["ERR"] * 5 + ["—"] * 4)
                        continue
                    x = rat.get((srv, tn, c, n), {})
                    ce = cel.get((srv, tn, c, n), {})
                    rows.append(row + [
                        _rate(r["ops_per_s"]), _mb(r.get("mb_per_s")),
                        _fmt(r["lat_p50_us"] / 1e3, ".3f"), _fmt(r["lat_p99_us"] / 1e3, ".3f"),
                        _fmt(r["cpu_us_per_op"], ",.1f"),
                        _fmt(x.get("x_faster"), ".2f"), _fmt(x.get("cpu_ratio"), ".2f"),
                        _fmt(ce.get("of_ceiling"), ".2f"), _fmt(ce.get("cpu_x_ceiling"), ".2f"),
                    ])
    return _md_table(header, rows, left=4)


def legend(report: dict) -> str:
    baseline = report["baseline"]
    lines = []
    if baseline:
        lines.append(
            f"\"am x faster\" = {baseline} ops/s ÷ this row's ops/s (>1: {baseline} faster); "
            f"\"am CPU ratio\" = {baseline} CPU µs/op ÷ this row's (<1: {baseline} cheaper). "
            "\"of ceiling\" = this row's ops/s ÷ the ceiling's; \"CPU x ceiling\" = this row's CPU "
            "µs/op ÷ the ceiling's.")
    lines.append(
        "MB/s is the spec's score (task size in 10^6 bytes of BSON ÷ median iteration time). CPU = "
        "user+sys of the driver's own process over the timed iterations. For \"(docs)\" tasks ops are "
        "documents and latency is per call (one find drained, one insert_many). For \"(file)\" "
        "tasks an op is one GridFS file, uploaded from or downloaded into memory, and its size "
        "(gridfs_large.bin's bytes, not BSON) is the task size.")
    threads = [f"{r['task']} x{r['concurrency']}: {r['threads']}" for r in report["results"]
               if r.get("driver") == drivers.CEILING and r.get("threads") is not None
               and r.get("threads") != min(r["concurrency"], r.get("pool_size") or 100)]
    lines.append(
        "The ceiling of a concurrency cell is the best of 1, 2, 4 ... threads up to the cell's task "
        "count (--ceiling-threads best)" + (": fewer threads did best in " + "; ".join(threads)
                                            if threads else "") + ".")
    return "\n".join(lines)


def notes(report: dict) -> list[str]:
    info = report["drivers"]
    out = [f"- {n}: unavailable — {d['error']}" for n, d in info.items() if not d["available"]]
    out += [f"- {tn}: skipped — {why}" for tn, why in report["skipped_tasks"].items()]
    out += [f"- {SERVER_TITLES.get(s, s)} {tn}: skipped — {why}"
            for s, skipped in report["server_skipped_tasks"].items() for tn, why in skipped.items()]
    for r in report["results"]:
        if "error" in r and info.get(r["driver"], {}).get("available"):
            out.append(f"- {SERVER_TITLES.get(r.get('server'), r.get('server'))} {r['task']} "
                       f"c={r['concurrency']} {r['driver']}: ERR — {r['error']}")
    return out


def render_main(report: dict) -> str:
    parts = [legend(report), render_table(report)]
    n = notes(report)
    if n:
        parts.append("\n".join(n))
    return "\n\n".join(parts)


def render_markdown(report: dict) -> str:
    m = report["meta"]
    cfg = report["config"]
    versions = ", ".join(f"{n} {d['version']}" for n, d in report["drivers"].items() if d["available"])
    servers = "; ".join(f"{SERVER_TITLES[s]}: {d['description']}" for s, d in m["servers"].items())
    counts = ", ".join(
        f"{tn} {cfg['ops_per_iteration'][tn]:,}"
        + (f" file of {cfg['gridfs_file_bytes']:,} bytes" if TASKS[tn].gridfs else "")
        for tn in cfg["tasks"] if tn not in report["skipped_tasks"])
    lines = [
        "# asyncmongo benchmark run",
        "",
        f"- date: {m['date']}; command: `{m['command']}`",
        f"- machine: {m['nproc']} CPUs, {m['cpu_model']}; load avg at start/end "
        f"{m['loadavg_start']} / {m['loadavg_end']}",
        f"- Python {m['python']} ({m['platform']}), loop: {cfg['loop']}",
        f"- drivers: {versions or 'none available'}",
        f"- servers: {servers}",
        f"- ops per iteration: {counts}; spec tasks {cfg['iterations']} timed iterations, sweep one "
        f"timed phase; maxPoolSize={cfg['pool_size']}",
        f"- rounds: {cfg['repeat']} (cells show the median over rounds)",
        f"- wall time of the run: {m['run_seconds']:.0f} s",
        "",
        "## Results",
        "",
        render_main(report),
        "",
    ]
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="smoke run: every cell, tiny counts")
    g.add_argument("--demo", action="store_true",
                   help="the README's main job: a short measurement on SecantusDB and the C bench "
                        "server")
    p.add_argument("--server", choices=("secantus", "cbench", "both", "uri"), default=None,
                   help="server(s) to measure on, each in its own process (default: uri when "
                        "MONGODB_URI is set, else both)")
    p.add_argument("--tasks", default="all",
                   help=f"comma list of {', '.join(TASKS)}, or the groups spec, sweep, all")
    p.add_argument("--drivers", default=None,
                   help=f"comma list from {', '.join(drivers.COLUMNS)}; 'asyncmongo' means both "
                        "wake-up paths")
    p.add_argument("--concurrency", default=",".join(map(str, SWEEP_CONCURRENCY)),
                   help="comma list of task counts for the sweep")
    p.add_argument("--ops", type=int, default=None,
                   help="timed ops per sweep cell (full 10000, demo 2000, quick 100); raised to "
                        "the concurrency")
    p.add_argument("--scale", type=float, default=None,
                   help="fraction of the spec's per-iteration counts (full 1, demo 0.1, quick 0.002); "
                        "GridFS tasks move that fraction of the file, at least 1 MiB")
    p.add_argument("--iterations", type=int, default=None,
                   help="timed iterations per spec task (full 5, demo 3, quick 2)")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds over all cells; cells then show the median over rounds")
    p.add_argument("--baseline", default=DEFAULT_BASELINE, choices=drivers.DRIVERS,
                   help="driver the ratio columns compare against")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--pool-size", type=int, default=100, help="maxPoolSize for every driver")
    p.add_argument("--ceiling-threads", choices=("best", "match"), default="best",
                   help="best: the ceiling of a concurrency cell is the best of 1, 2, 4 ... threads up "
                        "to the cell's task count (what libmongoc can do at most here); match: "
                        "exactly that many threads")
    p.add_argument("--seed-docs", type=int, default=None, help="docs the sweep's find_one reads")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement")
    p.add_argument("--json", dest="json_out", default=None)
    p.add_argument("--markdown", dest="md_out", default=None)
    p.add_argument("--plot", default=None,
                   help="PNG to write (default: benchmarks/results.png for full runs, "
                        "benchmarks/.data/results-demo.png for --demo, none for --quick)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto",
                   help="bar: one line redrawn in place; lines: a line per cell (auto: bar on a terminal)")
    args = p.parse_args(argv)
    args.mode = "quick" if args.quick else "demo" if args.demo else "full"
    mode = MODES[args.mode]
    args.driver_list = drivers.expand(args.drivers)
    try:
        args.task_list = spec_tasks.task_names(args.tasks)
    except ValueError as e:
        p.error(f"--tasks: {e}")
    if not args.task_list:
        p.error("--tasks names no task")
    try:
        args.conc_list = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        p.error("--concurrency must be a comma list of integers")
    if not args.conc_list or min(args.conc_list) < 1:
        p.error("--concurrency values must be >= 1")
    if args.server is None:
        args.server = "uri" if os.environ.get("MONGODB_URI") else mode.server
    if args.server == "uri" and not os.environ.get("MONGODB_URI"):
        p.error("--server uri needs MONGODB_URI")
    args.server_list = list(SERVERS) if args.server == "both" else [args.server]
    args.ops = mode.sweep_ops if args.ops is None else args.ops
    args.scale = mode.scale if args.scale is None else args.scale
    args.iterations = mode.iterations if args.iterations is None else args.iterations
    args.seed_docs = mode.seed_docs if args.seed_docs is None else args.seed_docs
    if args.ops < 1 or args.seed_docs < 1 or args.repeat < 1 or args.iterations < 1 or args.scale <= 0:
        p.error("--ops, --seed-docs, --repeat, --iterations and --scale must be positive")
    if args.no_plot:
        args.plot = None
    elif args.plot is None and mode.plot is not None:
        args.plot = str(mode.plot)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_run = time.monotonic()
    names = args.driver_list
    _log(f"probing: {', '.join(names)}")
    info = {n: probe(n) for n in names}
    for n, d in info.items():
        _log(f"  {n}: " + (f"{d['version']}" if d["available"] else f"unavailable ({d['error']})"))

    baseline = args.baseline if args.baseline in names else None
    if baseline is None:
        baseline = next((n for n in names if n.startswith("asyncmongo")), None)

    # The spec tasks need the data set; without it they are skipped by name, the sweep still runs.
    skipped: dict[str, str] = {}
    args.data_dir = None
    if any(TASKS[t].kind == "spec" for t in args.task_list):
        try:
            args.data_dir = spec_tasks.data_dir()
        except spec_tasks.DataMissing as e:
            skipped = {t: str(e) for t in args.task_list if TASKS[t].kind == "spec"}
            _log(f"spec tasks skipped: {e}")
    tasks = [t for t in args.task_list if t not in skipped]
    server_skipped = {s: {t: why for t, why in UNSUPPORTED.get(s, {}).items() if t in tasks}
                      for s in args.server_list}
    server_skipped = {s: d for s, d in server_skipped.items() if d}
    for s, d in server_skipped.items():
        _log(f"{SERVER_TITLES[s]}: skipping {', '.join(d)} (the table's notes say why)")

    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "data_dir": str(args.data_dir) if args.data_dir else None,
        "servers": {},
    }

    live = [n for n in names if info[n]["available"]]
    plan = {s: plan_cells(s, live, tasks, args.conc_list) for s in args.server_list}
    total = sum(len(c) for c in plan.values()) * args.repeat
    bar = {"bar": True, "lines": False}.get(args.progress)
    progress = Progress(total, bar=bar)
    runs: list[dict] = []
    try:
        for s in args.server_list:
            for k in range(args.repeat):
                for r in run_server(s, plan[s], args, progress, meta):
                    r["round"] = k
                    runs.append(r)
    finally:
        progress.close()

    results = aggregate(runs)
    for r in results:
        # The ceiling's version is whatever the binary reported in its first run.
        if r["driver"] == drivers.CEILING and _ok(r) and r.get("version"):
            info[drivers.CEILING]["version"] = r["version"]
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["run_seconds"] = time.monotonic() - t_run
    peers = [n for n in names if n != baseline] if baseline else []
    report = {
        "meta": meta,
        "config": {
            "mode": args.mode, "quick": args.quick, "demo": args.demo,
            "servers": args.server_list, "drivers": names, "tasks": args.task_list,
            "concurrency": args.conc_list,
            "ops_per_iteration": {t: cell_counts(TASKS[t], args)[0] for t in args.task_list},
            "iterations": args.iterations, "sweep_ops": args.ops, "scale": args.scale,
            "gridfs_file_bytes": gridfs_bytes(args) if args.data_dir else None,
            "seed_docs": args.seed_docs, "pool_size": args.pool_size, "loop": args.loop,
            "repeat": args.repeat,
        },
        "drivers": info,
        "baseline": baseline,
        "skipped_tasks": skipped,
        "server_skipped_tasks": server_skipped,
        "results": results,
        "runs": runs,
        "ratios": ratios(results, baseline, peers) if baseline else [],
        "ceiling_ratios": ceiling_ratios(results),
    }

    print(render_main(report), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    if args.md_out:
        Path(args.md_out).write_text(render_markdown(report))
    if args.plot:
        from benchmarks.plot import write_plot

        path = Path(args.plot)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_plot(report, path)
        _log(f"plot: {path}")
    return 0 if all(_ok(r) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

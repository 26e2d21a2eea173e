"""Runner: every driver x op x concurrency, each measurement in its own worker process.

One server for the whole run (SecantusDB started here, or MONGODB_URI); drivers run one at
a time. Prints one markdown table to stdout, progress to stderr; optional --json/--markdown.
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
from pathlib import Path

from benchmarks import drivers
from benchmarks.worker import OPS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONCURRENCY = (1, 64, 1024)
# Sized so the default run (5 drivers x 2 ops x 3 levels) stays at a few minutes on a
# 2-core box against SecantusDB, which tops out around 2k ops/s.
DEFAULT_OPS = 10000
QUICK_OPS = 100
DEMO_OPS = 2000
DEFAULT_SEED_DOCS = 1000
QUICK_SEED_DOCS = 100
DEFAULT_BASELINE = "asyncmongo-eventfd"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _child_env() -> dict[str, str]:
    # Workers must import `benchmarks` (and an in-tree `asyncmongo`) whatever the caller's cwd.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _worker_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.worker", *args]


def probe(name: str) -> dict:
    """Import check in a child: a half-built extension may crash rather than raise."""
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


def measure(name: str, op: str, concurrency: int, ops: int, uri: str, args) -> dict:
    cmd = _worker_cmd("--driver", name, "--op", op, "--concurrency", str(concurrency),
                      "--ops", str(ops), "--uri", uri, "--loop", args.loop,
                      "--pool-size", str(args.pool_size), "--seed-docs", str(args.seed_docs))
    base = {"driver": name, "op": op, "concurrency": concurrency}
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


_MEDIAN_FIELDS = ("wall_s", "ops_per_s", "cpu_s", "cpu_user_s", "cpu_sys_s", "cpu_us_per_op",
                  "lat_p50_us", "lat_p99_us", "lat_mean_us", "lat_max_us")


def aggregate(runs: list[dict]) -> list[dict]:
    """One result per cell: the median of its rounds (with --repeat 1, the run itself)."""
    cells: dict[tuple, list[dict]] = {}
    for r in runs:
        cells.setdefault((r["driver"], r["op"], r["concurrency"]), []).append(r)
    out = []
    for group in cells.values():
        bad = [r for r in group if not _ok(r)]
        if bad:
            # A cell that failed in any round is reported as failed, not as a median of survivors.
            out.append({k: v for k, v in bad[0].items() if k != "round"} | {"rounds": len(group)})
            continue
        cell = {k: v for k, v in group[0].items() if k != "round"}
        for f in _MEDIAN_FIELDS:
            cell[f] = statistics.median(r[f] for r in group)
        cell["misses"] = sum(r["misses"] for r in group)
        cell["rounds"] = len(group)
        cell["ops_per_s_all"] = [r["ops_per_s"] for r in group]
        cell["cpu_us_per_op_all"] = [r["cpu_us_per_op"] for r in group]
        out.append(cell)
    return out


def ratios(results: list[dict], baseline: str, peers: list[str]) -> list[dict]:
    """x_faster = baseline ops/s / peer ops/s; cpu_ratio = baseline CPU/op / peer CPU/op."""
    by = {(r["driver"], r["op"], r["concurrency"]): r for r in results}
    out = []
    for (drv, op, c), base in by.items():
        if drv != baseline:
            continue
        for peer in peers:
            pr = by.get((peer, op, c))
            row = {"op": op, "concurrency": c, "baseline": baseline, "peer": peer,
                   "x_faster": None, "cpu_ratio": None}
            if _ok(base) and _ok(pr):
                row["x_faster"] = base["ops_per_s"] / pr["ops_per_s"]
                row["cpu_ratio"] = base["cpu_us_per_op"] / pr["cpu_us_per_op"]
            out.append(row)
    return out


def _fmt(v: float | None, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return format(v, spec)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    # Right-align numbers; padded so the same text reads well in a terminal.
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def render_main(report: dict) -> str:
    names = report["config"]["drivers"]
    info = report["drivers"]
    baseline = report["baseline"]
    peers = [n for n in names if n != baseline] if baseline else []
    by = {(r["driver"], r["op"], r["concurrency"]): r for r in report["results"]}
    rat = {(r["op"], r["concurrency"], r["peer"]): r for r in report["ratios"]}

    header = ["op", "conc"]
    for n in names:
        header += [f"{n} ops/s", f"{n} CPU µs/op"]
    for p in peers:
        header += [f"x faster vs {p}", f"CPU ratio vs {p}"]

    rows = []
    for op in report["config"]["ops"]:
        for c in report["config"]["concurrency"]:
            row = [op, str(c)]
            for n in names:
                r = by.get((n, op, c))
                if not info[n]["available"]:
                    row += ["n/a", "n/a"]
                elif not _ok(r):
                    row += ["ERR", "ERR"]
                else:
                    row += [_fmt(r["ops_per_s"], ",.0f"), _fmt(r["cpu_us_per_op"], ".0f")]
            for p in peers:
                x = rat.get((op, c, p), {})
                row += [_fmt(x.get("x_faster"), ".2f"), _fmt(x.get("cpu_ratio"), ".2f")]
            rows.append(row)

    parts = []
    if baseline:
        parts.append(
            f"Ratios, baseline {baseline}: \"x faster\" = {baseline} ops/s ÷ peer ops/s "
            f"(>1: {baseline} faster); \"CPU ratio\" = {baseline} CPU µs/op ÷ peer CPU µs/op "
            f"(<1: {baseline} cheaper). CPU = user+sys of the driver's own process over the timed phase.")
    parts.append(_md_table(header, rows))
    notes = [f"- {n}: unavailable — {info[n]['error']}" for n in names if not info[n]["available"]]
    for r in report["results"]:
        if "error" in r and info.get(r["driver"], {}).get("available"):
            notes.append(f"- {r['driver']} {r['op']} c={r['concurrency']}: ERR — {r['error']}")
    if notes:
        parts.append("\n".join(notes))
    return "\n\n".join(parts)


def render_latency(report: dict) -> str:
    names = [n for n in report["config"]["drivers"] if report["drivers"][n]["available"]]
    by = {(r["driver"], r["op"], r["concurrency"]): r for r in report["results"]}
    header = ["op", "conc"] + [f"{n} p50/p99 ms" for n in names]
    rows = []
    for op in report["config"]["ops"]:
        for c in report["config"]["concurrency"]:
            row = [op, str(c)]
            for n in names:
                r = by.get((n, op, c))
                row.append(f"{r['lat_p50_us'] / 1e3:.2f} / {r['lat_p99_us'] / 1e3:.2f}"
                           if _ok(r) else "ERR")
            rows.append(row)
    return _md_table(header, rows)


def render_markdown(report: dict) -> str:
    m = report["meta"]
    cfg = report["config"]
    versions = ", ".join(f"{n} {d['version']}" for n, d in report["drivers"].items() if d["available"])
    lines = [
        "# asyncmongo benchmark run",
        "",
        f"- date: {m['date']}",
        f"- machine: {m['nproc']} CPUs, {m['cpu_model']}; load avg at start/end "
        f"{m['loadavg_start']} / {m['loadavg_end']}",
        f"- Python {m['python']} ({m['platform']}), loop: {cfg['loop']}",
        f"- drivers: {versions or 'none available'}",
        f"- server: {m['server']} at {m['uri']}",
        f"- workload: {cfg['ops_per_measurement']} timed ops per cell (at least one per task), "
        f"warm-up max(ops/10, concurrency); maxPoolSize={cfg['pool_size']}; "
        f"find_one over {cfg['seed_docs']} seeded docs; insert_one into a dropped collection",
        f"- rounds: {cfg['repeat']} (cells show the median over rounds)",
        f"- wall time of the run: {m['run_seconds']:.0f} s",
        "",
        "## Throughput and CPU",
        "",
        render_main(report),
        "",
        "## Latency (per op, p50 / p99, ms"
        + ("; each the median over rounds)" if cfg["repeat"] > 1 else ")"),
        "",
        render_latency(report),
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny counts: a smoke run, not a measurement")
    p.add_argument("--demo", action="store_true",
                   help="the README's main job: a shorter measurement (DEMO_OPS ops per cell)")
    p.add_argument("--ops", type=int, default=None,
                   help=f"timed ops per measurement (default {DEFAULT_OPS}, quick {QUICK_OPS}); "
                        "raised to the concurrency so every task runs at least one")
    p.add_argument("--drivers", default=None,
                   help=f"comma list from {', '.join(drivers.DRIVERS)}; 'asyncmongo' means both variants")
    p.add_argument("--op", default=",".join(OPS), help="comma list of find_one,insert_one")
    p.add_argument("--concurrency", default=",".join(map(str, DEFAULT_CONCURRENCY)),
                   help="comma list of task counts")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds over all cells; tables then show per-cell medians")
    p.add_argument("--baseline", default=DEFAULT_BASELINE, choices=drivers.DRIVERS,
                   help="driver the ratio columns compare against")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--pool-size", type=int, default=100, help="maxPoolSize for every driver")
    p.add_argument("--seed-docs", type=int, default=None)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per worker")
    p.add_argument("--json", dest="json_out", default=None)
    p.add_argument("--markdown", dest="md_out", default=None)
    args = p.parse_args(argv)
    args.driver_list = drivers.expand(args.drivers)
    args.op_list = [o.strip() for o in args.op.split(",") if o.strip()]
    bad = [o for o in args.op_list if o not in OPS]
    if bad or not args.op_list:
        p.error(f"--op: choose from {', '.join(OPS)}")
    try:
        args.conc_list = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        p.error("--concurrency must be a comma list of integers")
    if not args.conc_list or min(args.conc_list) < 1:
        p.error("--concurrency values must be >= 1")
    if args.ops is None:
        args.ops = QUICK_OPS if args.quick else DEMO_OPS if args.demo else DEFAULT_OPS
    if args.seed_docs is None:
        args.seed_docs = QUICK_SEED_DOCS if args.quick else DEFAULT_SEED_DOCS
    if args.ops < 1 or args.seed_docs < 1 or args.repeat < 1:
        p.error("--ops, --seed-docs and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_run = time.monotonic()
    names = args.driver_list
    _log(f"probing drivers: {', '.join(names)}")
    info = {n: probe(n) for n in names}
    for n, d in info.items():
        _log(f"  {n}: " + (f"{d['version']}" if d["available"] else f"unavailable ({d['error']})"))

    baseline = args.baseline if args.baseline in names else None
    if baseline is None:
        baseline = next((n for n in names if n.startswith("asyncmongo")), None)

    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }

    server = None
    uri = os.environ.get("MONGODB_URI")
    runs: list[dict] = []
    try:
        if uri:
            from benchmarks._server import server_version

            meta["server"] = f"external MONGODB_URI (version {server_version(uri)})"
        else:
            from benchmarks._server import SecantusServer

            _log("starting SecantusDB ...")
            # The oplog is pruned only past its cap (default 100k entries), so with the default
            # the drivers run last would pay pruning costs the first ones did not: a small cap
            # makes every driver's inserts pay the same amortised pruning.
            server = SecantusServer(extra_args=["--oplog-max-entries", "5000"]).start()
            uri = server.uri
            meta["server"] = (f"SecantusDB {importlib.metadata.version('SecantusDB')} "
                              "(secantusd-py --storage-path :memory: --oplog-max-entries 5000, own process)")
        meta["uri"] = _redact(drivers.bench_uri(uri))

        # Whole rounds, one after another: drift in machine load then hits every driver in
        # every round instead of whichever driver happened to run during the busy spell.
        todo = [(k, n, op, c) for k in range(args.repeat) for n in names if info[n]["available"]
                for op in args.op_list for c in args.conc_list]
        for i, (k, n, op, c) in enumerate(todo, 1):
            t0 = time.monotonic()
            r = measure(n, op, c, args.ops, uri, args)
            r["round"] = k
            runs.append(r)
            took = time.monotonic() - t0
            head = f"[{i}/{len(todo)}] {n:<22} {op:<10} c={c:<5}"
            if _ok(r):
                _log(f"{head} {r['ops_per_s']:8.0f} ops/s {r['cpu_us_per_op']:6.0f} µs CPU/op  "
                     f"p50 {r['lat_p50_us'] / 1e3:8.2f} ms  p99 {r['lat_p99_us'] / 1e3:8.2f} ms  "
                     f"({took:.1f}s)")
            else:
                _log(f"{head} ERROR: {r.get('error')}")
    finally:
        if server is not None:
            server.stop()

    results = aggregate(runs)
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["run_seconds"] = time.monotonic() - t_run
    peers = [n for n in names if n != baseline] if baseline else []
    report = {
        "meta": meta,
        "config": {
            "drivers": names, "ops": args.op_list, "concurrency": args.conc_list,
            "ops_per_measurement": args.ops, "seed_docs": args.seed_docs,
            "pool_size": args.pool_size, "loop": args.loop, "quick": args.quick,
            "repeat": args.repeat,
        },
        "drivers": info,
        "baseline": baseline,
        "results": results,
        "runs": runs,
        "ratios": ratios(results, baseline, peers) if baseline else [],
    }

    print(render_main(report), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    if args.md_out:
        Path(args.md_out).write_text(render_markdown(report))
    return 0 if all(_ok(r) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

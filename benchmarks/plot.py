"""The runner's figure: one PNG, two rows per server: the spec tasks' MB/s score, p50 latency and CPU
per op; the concurrency sweep's throughput, p99 latency and CPU per op; every driver beside the ceiling.

Reads only the runner's report dict (the --json file has the same shape); draws with matplotlib's
Agg backend, so it needs no display.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks import drivers
from benchmarks.spec_tasks import TASKS

COLORS = {
    "asyncmongo-eventfd": "#d62728",
    "asyncmongo-threadsafe": "#ff9896",
    "pymongo": "#1f77b4",
    "motor": "#2ca02c",
    "mongojet": "#9467bd",
    drivers.CEILING: "#222222",
}


SHORT = {
    "run_command": "command", "find_one_by_id": "find one", "small_insert_one": "insert small",
    "large_insert_one": "insert large", "find_many": "find many", "small_bulk_insert": "bulk small",
    "large_bulk_insert": "bulk large", "gridfs_upload": "gridfs up", "gridfs_download": "gridfs down",
}


def _ok(r: dict | None) -> bool:
    return bool(r) and "error" not in r and r.get("ops", 0) > 0


def _log_or_empty(ax, drawn: bool, axis: str) -> None:
    # Figures span orders of magnitude (a hello vs a 2.5 MB insert); an empty panel (a failed
    # server, every cell failed) says so instead of failing the whole figure.
    if drawn:
        getattr(ax, f"set_{axis}scale")("log")
    else:
        ax.text(0.5, 0.5, "no results", transform=ax.transAxes, ha="center", va="center")


def _bars(ax, by, server, tasks, names, field, scale=1.0):
    width = 0.8 / max(len(names), 1)
    drawn = False
    for j, n in enumerate(names):
        xs, ys = [], []
        for i, t in enumerate(tasks):
            r = by.get((server, t, 1, n))
            if _ok(r) and r.get(field):
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(r[field] * scale)
        ax.bar(xs, ys, width, label=n, color=COLORS.get(n))
        drawn = drawn or bool(ys)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([SHORT.get(t, t) for t in tasks], fontsize=7, rotation=30, ha="right")
    _log_or_empty(ax, drawn, "y")
    ax.grid(axis="y", which="both", alpha=0.3)


def _lines(ax, by, server, conc, names, field, scale=1.0):
    styles = {"sweep_find_one": "-", "sweep_insert_one": "--"}
    drawn = False
    for t, ls in styles.items():
        for n in names:
            pts = [(c, by[(server, t, c, n)][field] * scale) for c in conc
                   if _ok(by.get((server, t, c, n)))]
            if pts:
                ax.plot(*zip(*pts), ls, marker="o", ms=3, color=COLORS.get(n),
                        label=n if t == "sweep_find_one" else None)
                drawn = True
    ax.set_xscale("log")
    _log_or_empty(ax, drawn, "y")
    ax.set_xticks(conc)
    ax.set_xticklabels([str(c) for c in conc])
    ax.set_xlabel("concurrent tasks (solid find_one, dashed insert_one)", fontsize=8)
    ax.grid(which="both", alpha=0.3)


def write_plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.run import SERVER_TITLES

    cfg = report["config"]
    names = [n for n in cfg["drivers"] if report["drivers"][n]["available"]]
    by = {(r["server"], r["task"], r["concurrency"], r["driver"]): r for r in report["results"]}
    spec = [t for t in cfg["tasks"] if TASKS[t].kind == "spec" and t not in report["skipped_tasks"]]
    sweep = [t for t in cfg["tasks"] if TASKS[t].kind == "sweep"]
    conc = cfg["concurrency"]
    # Per server, a row of spec panels and a row of sweep panels, three wide: narrow enough for a
    # README, each panel still legible.
    rows = []
    if spec:
        rows.append(("spec", [("mb_per_s", 1.0, "spec tasks: MB/s score (higher is better)"),
                              ("lat_p50_us", 1e-3, "spec tasks: p50 latency per call, ms"),
                              ("cpu_us_per_op", 1.0, "spec tasks: client CPU µs per op or doc")]))
    if sweep:
        rows.append(("sweep", [("ops_per_s", 1.0, "sweep: ops/s"),
                               ("lat_p99_us", 1e-3, "sweep: p99 latency, ms"),
                               ("cpu_us_per_op", 1.0, "sweep: client CPU µs per op")]))
    servers = cfg["servers"]
    nrows = max(len(servers) * len(rows), 1)
    fig, axes = plt.subplots(nrows, 3, squeeze=False, figsize=(15, 3.7 * nrows + 0.8))
    for i, srv in enumerate(servers):
        for j, (kind, panels) in enumerate(rows):
            for col, (field, scale, title) in enumerate(panels):
                ax = axes[i * len(rows) + j][col]
                if kind == "spec":
                    _bars(ax, by, srv, spec, names, field, scale)
                else:
                    _lines(ax, by, srv, conc, names, field, scale)
                ax.set_title(f"{SERVER_TITLES.get(srv, srv)} — {title}", fontsize=9)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    m = report["meta"]
    fig.suptitle(f"asyncmongo beside PyMongo Async, Motor, mongojet and the libmongoc ceiling "
                 f"({cfg['mode']} run, {m['date'][:10]}, {m['nproc']} CPUs)", fontsize=11)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.8 / (3.7 * nrows + 0.8), 1, 1 - 0.5 / (3.7 * nrows + 0.8)))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Re-draw a plot from a saved report: python -m benchmarks.plot results.json out.png"""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    write_plot(json.loads(Path(argv[0]).read_text()), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Smoke tests for the benchmark harness: a --quick run of every task over every importable driver
and the C ceiling, on both servers (GridFS on SecantusDB only); the spec data's unpacking and sizes;
the run without the data.

Checks plumbing and output shape only; timings are never asserted (shared CI boxes are noisy).
Run with: pytest benchmarks/test_smoke.py
"""
from __future__ import annotations

import json
import subprocess
import sys

import bson
import pytest

from benchmarks import drivers, spec_tasks
from benchmarks.run import REPO_ROOT, UNSUPPORTED, _child_env, probe
from benchmarks.spec_tasks import SPEC_TASKS, SWEEP_TASKS, TASKS

RESULT_KEYS = {
    "server", "driver", "version", "task", "op", "kind", "concurrency", "pool_size", "ops",
    "warmup_ops", "iterations", "ops_per_iteration", "unit", "op_bytes", "iteration_bytes",
    "iteration_median_s", "mb_per_s", "wall_s", "ops_per_s", "cpu_s", "cpu_user_s", "cpu_sys_s",
    "cpu_us_per_op", "lat_p50_us", "lat_p99_us", "lat_mean_us", "lat_max_us", "misses",
}
TOP_KEYS = {"meta", "config", "drivers", "baseline", "skipped_tasks", "server_skipped_tasks",
            "results", "runs", "ratios", "ceiling_ratios"}
META_KEYS = {"date", "command", "nproc", "cpu_model", "python", "platform", "servers", "run_seconds",
             "data_dir"}
# Every sweep level runs in-process in test_bench_tasks.py; here the runner's plumbing needs the
# smallest and the largest only, which keeps this test inside the suite's budget.
SMOKE_CONCURRENCY = (1, 1024)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(args: list[str], tmp_path, env=None, timeout=600):
    out_json = tmp_path / "bench.json"
    out_md = tmp_path / "bench.md"
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--progress", "lines",
         "--json", str(out_json), "--markdown", str(out_md), *args],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env or _child_env(), timeout=timeout,
    )
    report = json.loads(out_json.read_text()) if out_json.exists() else None
    return p, report, out_md


def _table_rows(stdout: str) -> list[list[str]]:
    rows = [ln for ln in stdout.splitlines() if ln.startswith("| ") and not ln.startswith("| server")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]


@pytest.mark.timeout(900)
def test_quick_run_every_task_driver_and_server(tmp_path):
    available = [n for n in drivers.DRIVERS if probe(n)["available"]]
    # scripts/setup.sh installs every peer, builds asyncmongo and has what the ceiling needs: a
    # missing one is a broken setup, not a reason to skip the smoke run.
    assert "asyncmongo-eventfd" in available, f"asyncmongo is not importable; available: {available}"
    ceiling = probe(drivers.CEILING)
    assert ceiling["available"], f"the ceiling does not build: {ceiling['error']}"
    cols = available + [drivers.CEILING]
    has_data, why = spec_tasks.data_available()
    plot = tmp_path / "bench.png"
    p, report, out_md = _run(
        ["--server", "both", "--drivers", ",".join(cols), "--tasks", "all",
         "--concurrency", ",".join(map(str, SMOKE_CONCURRENCY)), "--plot", str(plot)], tmp_path)
    assert p.returncode == 0, f"runner failed:\n{p.stdout[-6000:]}\n{p.stderr[-6000:]}"

    assert TOP_KEYS <= report.keys()
    assert META_KEYS <= report["meta"].keys()
    cfg = report["config"]
    assert cfg["drivers"] == cols and cfg["quick"] is True
    assert cfg["servers"] == ["secantus", "cbench"]
    assert set(report["meta"]["servers"]) == {"secantus", "cbench"}
    tasks = [t.name for t in SPEC_TASKS + SWEEP_TASKS]
    assert cfg["tasks"] == tasks
    if has_data:
        assert report["skipped_tasks"] == {}
        run_tasks = tasks
    else:  # the sweep still runs; the reason names where the data was looked for
        assert set(report["skipped_tasks"]) == {t.name for t in SPEC_TASKS}
        assert spec_tasks.DATA_ENV in why
        run_tasks = [t.name for t in SWEEP_TASKS]
    # GridFS runs on SecantusDB only: the C bench server's cells are left out, and the notes say why.
    gridfs = [t for t in run_tasks if TASKS[t].gridfs]
    assert report["server_skipped_tasks"] == ({"cbench": {t: UNSUPPORTED["cbench"][t] for t in gridfs}}
                                              if gridfs else {})
    for t in gridfs:
        assert f"- C bench server {t}: skipped — the C bench server has no GridFS" in p.stdout

    expected = {(s, t, c, n) for s in cfg["servers"] for t in run_tasks
                for c in (SMOKE_CONCURRENCY if TASKS[t].kind == "sweep" else (1,)) for n in cols
                if t not in report["server_skipped_tasks"].get(s, {})}
    got = {(r["server"], r["task"], r["concurrency"], r["driver"]) for r in report["results"]}
    assert got == expected
    for r in report["results"]:
        assert "error" not in r, r
        assert RESULT_KEYS <= r.keys(), sorted(RESULT_KEYS - r.keys())
        task = TASKS[r["task"]]
        assert r["op"] == task.op and r["kind"] == task.kind and r["unit"] == task.unit
        assert r["ops"] >= r["ops_per_iteration"] > 0
        if not task.multi_doc:
            assert r["ops"] >= r["concurrency"]
        assert r["ops_per_s"] > 0 and r["cpu_us_per_op"] > 0 and r["mb_per_s"] > 0
        assert r["misses"] == 0, r  # every find hit, every write was acknowledged in full
        assert r["iteration_bytes"] == r["op_bytes"] * r["ops_per_iteration"]
        if task.op in spec_tasks.WRITE_OPS:
            # The runner's own client counted what the last timed iteration left in the server.
            assert r["docs_in_collection"] >= r["ops_per_iteration"]
            if r["driver"] != drivers.CEILING:
                assert r["docs_in_collection"] == r["expected_docs"] == r["ops_per_iteration"]
        if task.gridfs:
            # One file an iteration; the quick run moves the first MiB of gridfs_large.bin.
            assert r["ops_per_iteration"] == 1 and r["ops"] == cfg["iterations"]
            assert r["op_bytes"] == r["file_bytes"] == cfg["gridfs_file_bytes"] == \
                spec_tasks.GRIDFS_MIN_BYTES
        if task.op == "gridfs_upload":
            # The runner's client found the 1-byte file and the last upload, with all its chunks.
            assert r["files_in_bucket"] == 2
            assert r["file_chunks"] == -(-spec_tasks.GRIDFS_MIN_BYTES // (255 * 1024))
        if r["driver"] != drivers.CEILING:
            assert len(r["iteration_s"]) == r["iterations"] == (cfg["iterations"]
                                                                if task.kind == "spec" else 1)

    peers = [n for n in cols if n != report["baseline"]]
    assert report["baseline"] == "asyncmongo-eventfd"
    assert {(x["server"], x["task"], x["concurrency"], x["peer"]) for x in report["ratios"]} == \
        {(s, t, c, n) for s, t, c, n in expected if n in peers}
    for x in report["ratios"]:
        assert x["x_faster"] > 0 and x["cpu_ratio"] > 0 and x["score_ratio"] > 0, x
    assert len(report["ceiling_ratios"]) == len([k for k in expected if k[3] != drivers.CEILING])
    for x in report["ceiling_ratios"]:
        assert x["of_ceiling"] > 0 and x["cpu_x_ceiling"] > 0, x

    # One table on stdout: a row per cell, every figure present.
    rows = _table_rows(p.stdout)
    assert len(rows) == len(expected)
    for row in rows:
        assert len(row) == 13 and "ERR" not in row and "n/a" not in row, row
    assert "## Results" in out_md.read_text()
    assert plot.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.timeout(300)
def test_without_data_the_spec_tasks_are_skipped_by_name(tmp_path):
    env = _child_env()
    env[spec_tasks.DATA_ENV] = str(tmp_path / "nowhere")
    p, report, _ = _run(["--server", "secantus", "--drivers", "asyncmongo-eventfd", "--tasks",
                         "run_command,sweep_find_one", "--concurrency", "1", "--no-plot"],
                        tmp_path, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    reason = report["skipped_tasks"]["run_command"]
    assert str(tmp_path / "nowhere") in reason and spec_tasks.DATA_ENV in reason
    assert [(r["task"], r["concurrency"]) for r in report["results"]] == [("sweep_find_one", 1)]
    assert "run_command: skipped" in p.stdout


def test_spec_data_unpacks_only_the_task_files_and_sizes_come_from_the_data(tmp_path, monkeypatch):
    if not (spec_tasks.DEFAULT_DATA / spec_tasks.TARBALL).is_file():
        pytest.skip(f"no {spec_tasks.TARBALL} at {spec_tasks.DEFAULT_DATA}")
    monkeypatch.setenv(spec_tasks.DATA_ENV, str(spec_tasks.DEFAULT_DATA))
    folder = spec_tasks.data_dir(scratch=tmp_path)
    assert sorted(f.name for f in folder.iterdir()) == ["gridfs_large.bin", "large_doc.json",
                                                        "small_doc.json", "tweet.json"]
    assert (tmp_path / ".gitignore").read_text() == "*\n"
    assert spec_tasks.data_dir(scratch=tmp_path) == folder  # unpacked once, then reused
    # A folder of unpacked files is taken as it is.
    monkeypatch.setenv(spec_tasks.DATA_ENV, str(folder))
    assert spec_tasks.data_dir(scratch=tmp_path / "other") == folder

    tweet = spec_tasks.load_doc("tweet", folder)
    assert "_id" not in tweet
    assert spec_tasks.op_bytes(TASKS["find_one_by_id"], tweet) == len(bson.encode(tweet))
    assert spec_tasks.op_bytes(TASKS["run_command"], None) == 13  # BSON {hello: true}
    seeded = spec_tasks.seed_docs(TASKS["find_one_by_id"], tweet, 3)
    assert [d["_id"] for d in seeded] == [0, 1, 2] and "_id" not in tweet
    assert all("_id" not in d for d in spec_tasks.seed_docs(TASKS["find_many"], tweet, 3))

    # GridFS sizes are the file's bytes (the spec's 52,428,800 for gridfs_large.bin), read from it.
    assert spec_tasks.gridfs_size(folder) == (folder / "gridfs_large.bin").stat().st_size == 52_428_800
    assert spec_tasks.op_bytes(TASKS["gridfs_upload"], None) == 52_428_800
    head = spec_tasks.load_data(TASKS["gridfs_download"], folder, spec_tasks.GRIDFS_MIN_BYTES)
    assert head == spec_tasks.load_file(folder)[:spec_tasks.GRIDFS_MIN_BYTES]
    assert spec_tasks.op_bytes(TASKS["gridfs_download"], head) == spec_tasks.GRIDFS_MIN_BYTES
    assert spec_tasks.doc_path(TASKS["gridfs_upload"], folder) == folder / "gridfs_large.bin"
    with pytest.raises(spec_tasks.DataMissing, match="fewer than"):
        spec_tasks.load_file(folder, 52_428_801)


def test_task_counts_scale_down_but_keep_bulks_bulks():
    assert spec_tasks.task_names("sweep") == ["sweep_find_one", "sweep_insert_one"]
    assert spec_tasks.task_names("find_many,spec")[:2] == ["run_command", "find_one_by_id"]
    with pytest.raises(ValueError):
        spec_tasks.task_names("nope")
    assert spec_tasks.scaled(TASKS["find_one_by_id"], 1.0) == 10_000
    assert spec_tasks.scaled(TASKS["large_bulk_insert"], 1.0) == 10
    assert spec_tasks.scaled(TASKS["find_one_by_id"], 0.1) == 1000
    assert spec_tasks.scaled(TASKS["large_bulk_insert"], 0.002) == 2
    # A GridFS task moves one file an iteration whatever the mode; quick and demo runs shrink the
    # file instead: 1 MiB at least, never more than the file.
    for fraction in (0.002, 0.1, 1.0):
        assert spec_tasks.scaled(TASKS["gridfs_upload"], fraction) == 1
    full = 52_428_800
    assert spec_tasks.file_bytes(1.0, full) == full
    assert spec_tasks.file_bytes(0.1, full) == 5_242_880  # demo
    assert spec_tasks.file_bytes(0.002, full) == spec_tasks.GRIDFS_MIN_BYTES == 1_048_576  # quick
    assert spec_tasks.file_bytes(0.5, 1000) == 1000
    assert spec_tasks.task_names("gridfs_download,gridfs_upload") == ["gridfs_upload",
                                                                      "gridfs_download"]

"""Smoke test for the benchmark harness: a --quick run over every importable driver.

Checks plumbing and output shape only; timings are never asserted (shared CI boxes are noisy).
Run with: pytest benchmarks/test_smoke.py
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import drivers
from benchmarks.run import REPO_ROOT, _child_env, probe

RESULT_KEYS = {
    "driver", "version", "op", "concurrency", "loop", "pool_size", "ops", "warmup_ops",
    "wall_s", "ops_per_s", "cpu_s", "cpu_user_s", "cpu_sys_s", "cpu_us_per_op",
    "lat_p50_us", "lat_p99_us", "lat_mean_us", "lat_max_us", "misses",
}
TOP_KEYS = {"meta", "config", "drivers", "baseline", "results", "runs", "ratios"}
META_KEYS = {"date", "nproc", "cpu_model", "python", "platform", "server", "uri", "run_seconds"}
CONCURRENCY = (1, 64, 1024)


@pytest.mark.timeout(900)
def test_quick_run(tmp_path):
    available = [n for n in drivers.DRIVERS if probe(n)["available"]]
    # scripts/setup.sh installs every peer and builds asyncmongo: a missing one is a broken setup,
    # not a reason to skip the smoke run.
    assert "asyncmongo-eventfd" in available, f"asyncmongo is not importable; available: {available}"
    out_json = tmp_path / "bench.json"
    out_md = tmp_path / "bench.md"
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--drivers", ",".join(available),
         "--json", str(out_json), "--markdown", str(out_md)],
        capture_output=True, text=True, cwd=REPO_ROOT, env=_child_env(), timeout=850,
    )
    assert p.returncode == 0, f"runner failed:\n{p.stdout}\n{p.stderr[-4000:]}"

    report = json.loads(out_json.read_text())
    assert TOP_KEYS <= report.keys()
    assert META_KEYS <= report["meta"].keys()
    assert report["config"]["drivers"] == available
    assert report["config"]["quick"] is True

    expected = {(n, op, c) for n in available for op in ("find_one", "insert_one") for c in CONCURRENCY}
    got = {(r["driver"], r["op"], r["concurrency"]) for r in report["results"]}
    assert got == expected
    for r in report["results"]:
        assert "error" not in r, r
        assert RESULT_KEYS <= r.keys(), sorted(RESULT_KEYS - r.keys())
        assert r["ops"] >= r["concurrency"] and r["ops"] > 0
        assert r["ops_per_s"] > 0 and r["cpu_us_per_op"] > 0
        assert r["misses"] == 0, r  # every find_one hit a seeded doc, every insert was acked
        if r["op"] == "insert_one":
            assert r["docs_in_collection"] == r["ops"] + r["warmup_ops"]

    if report["baseline"]:
        for x in report["ratios"]:
            assert {"op", "concurrency", "baseline", "peer", "x_faster", "cpu_ratio"} <= x.keys()
            assert x["x_faster"] is not None and x["x_faster"] > 0

    # One table on stdout with a row per (op, concurrency).
    table_rows = [ln for ln in p.stdout.splitlines() if ln.lstrip().startswith("| ") and "conc" not in ln]
    assert len(table_rows) == 2 * len(CONCURRENCY)
    assert "## Throughput and CPU" in out_md.read_text()

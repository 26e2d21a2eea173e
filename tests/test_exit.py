"""Exits are part of the API: applications that end badly with everything open end with their own
status and their own traceback, never with a crash. Each case runs tests/apps/exit_app.py in a
subprocess (with a client, a cursor half read, a change stream, a session inside a transaction, a
GridFS upload stream and operations in flight) on asyncio, uvloop and Tornado, by both wake-up
paths. Under the sanitizer build (scripts/test.sh) the subprocesses inherit AddressSanitizer.

These tests choose their loops and wake-up paths themselves, so the suite's other modes skip them
(marker ``modes_inside``); the sanitizer mode runs them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "tests", "apps", "exit_app.py")

# What an interpreter prints when it dies instead of exiting, from CPython, ASan or UBSan.
CRASH_MARKS = ("Fatal Python error", "Segmentation fault", "AddressSanitizer", "runtime error:",
               "Aborted", "core dumped")

pytestmark = pytest.mark.modes_inside


def run_app(uri: str, runner: str, end: str, wakeup: str, timeout: float = 90):
    env = dict(os.environ, PYTHONPATH=ROOT, MONGODB_URI=uri, RUNNER=runner, END=end,
               ASYNCMONGO_WAKEUP=wakeup, PYTHONFAULTHANDLER="1")
    return subprocess.run([sys.executable, APP], env=env, capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def assert_no_crash(proc) -> None:
    for mark in CRASH_MARKS:
        assert mark not in proc.stderr, proc.stderr[-4000:]
    # Nothing of asyncmongo's may be reported as an unraisable exception on the way out.
    for line in proc.stderr.splitlines():
        if line.startswith("Exception ignored"):
            assert "asyncmongo" not in line, proc.stderr[-4000:]


# The status each way of ending gives with any driver: Python's own rules.
EXPECTED = {
    "raise": (1,),
    "exit": (3,),
    "sigint": (-signal.SIGINT, 128 + signal.SIGINT),  # killed by SIGINT, as Python re-raises it
    "cycle": (0,),
}


@pytest.mark.parametrize("wakeup", ["eventfd", "threadsafe"])
@pytest.mark.parametrize("end", sorted(EXPECTED))
@pytest.mark.parametrize("runner", ["asyncio", "uvloop", "tornado", "motor"])
def test_app_ends_with_its_own_status(server, runner, end, wakeup):
    proc = run_app(server.uri, runner, end, wakeup)
    assert proc.stdout.startswith("ready"), (proc.returncode, proc.stdout, proc.stderr[-4000:])
    assert_no_crash(proc)
    assert proc.returncode in EXPECTED[end], (proc.returncode, proc.stderr[-4000:])
    if end == "raise":
        assert "RuntimeError: the application failed" in proc.stderr
    elif end == "sigint":
        assert "KeyboardInterrupt" in proc.stderr

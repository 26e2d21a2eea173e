"""The Client Side Operations Timeout tests of MongoDB's Unified Test Format
(``../shared/data/csot-unified``, or ASYNCMONGO_CSOT_SPEC_DIR), one pytest test per JSON test, on
asyncmongo, with the witness rule of the CRUD suite (tests/spec/suite.py). They wait on fail points
that block the server for tens to hundreds of milliseconds, so they run in the default and the
sanitizer modes only (marker modes_inside, scripts/test.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.spec.suite import run_case
from tests.spec.test_crud_unified import ASYNCMONGO, WITNESS
from tests.spec.unified import load_cases, spec_folder

_REPO_ROOT = Path(__file__).resolve().parents[2]
_FOLDER, _NO_FOLDER = spec_folder(_REPO_ROOT, "csot-unified", "ASYNCMONGO_CSOT_SPEC_DIR")
_CASES = load_cases(_FOLDER) if _FOLDER is not None else []
if _FOLDER is not None and not _CASES:
    _NO_FOLDER = f"no unified test files: {_FOLDER} holds no *.json"

pytestmark = pytest.mark.modes_inside

# Tests known to fail, for reasons that are not the server's (each must fail for that reason, and
# only that one: tests/spec/suite.py), listed in tests/spec/README.md.
#
# 1. The test cannot pass as written: its fail point blocks the getMore 60 ms where the cursor's
#    timeoutMS is 100, so a correct iteration timeout never expires (DRIVERS-2965; the Node driver
#    skips these three for it). asyncmongo's getMore succeeds in time; the timeout error the test
#    expects does not come.
_DRIVERS_2965 = (
    "the test is wrong: blockTimeMS 60 < timeoutMS 100, no timeout can occur (DRIVERS-2965)",
    ("expected an error", "isTimeoutError"),
)
# 2. libmongoc 1.23 builds abortTransaction itself, with no maxTimeMS (it has no way to give one).
_ABORT = (
    "asyncmongo cannot: libmongoc 1.23 builds abortTransaction itself and gives it no maxTimeMS "
    "(the deadline still bounds the abort client-side)",
    ("abortTransaction", "maxTimeMS: missing"),
)
# 3. libmongoc 1.23 builds commitTransaction itself, with the maxTimeMS and write concern fixed
#    when the transaction starts: a timeout given to the commit alone (not known then) cannot set
#    them (it bounds the commit client-side).
_COMMIT_ONLY = (
    "asyncmongo cannot: libmongoc 1.23 fixes commitTransaction's maxTimeMS when the transaction "
    "starts, when a timeout given to the commit alone is not known",
    ("commitTransaction",),
)
_WTIMEOUT_ABORT = (
    "asyncmongo cannot: libmongoc 1.23 builds abortTransaction with the transaction's write "
    "concern (the client's wTimeoutMS), fixed when it starts, when the abort's timeout is not known",
    ("abortTransaction", "writeConcern: should not exist"),
)
_P = "runCursorCommand: "
KNOWN_FAILURES = {
    _P + "Non-tailable cursor iteration timeoutMS is refreshed for getMore if timeoutMode is "
         "iteration - failure": _DRIVERS_2965,
    _P + "Tailable cursor iteration timeoutMS is refreshed for getMore - failure": _DRIVERS_2965,
    _P + "Tailable cursor awaitData iteration timeoutMS is refreshed for getMore - failure":
        _DRIVERS_2965,
    "convenient-transactions: timeoutMS is not refreshed for each operation in the callback":
        _ABORT,
    "deprecated-options: abortTransaction ignores socketTimeoutMS if timeoutMS is set": _ABORT,
    "deprecated-options: abortTransaction ignores wTimeoutMS if timeoutMS is set":
        _WTIMEOUT_ABORT,
    "sessions-inherit-timeoutMS: timeoutMS applied to abortTransaction": _ABORT,
    "sessions-inherit-timeoutMS: timeoutMS applied to withTransaction": _ABORT,
    "sessions-override-operation-timeoutMS: timeoutMS applied to abortTransaction": _ABORT,
    "sessions-override-operation-timeoutMS: timeoutMS applied to withTransaction": _ABORT,
    "sessions-override-timeoutMS: timeoutMS applied to abortTransaction": _ABORT,
    "sessions-override-timeoutMS: timeoutMS applied to withTransaction": _ABORT,
    "deprecated-options: commitTransaction ignores socketTimeoutMS if timeoutMS is set":
        _COMMIT_ONLY,
    "deprecated-options: commitTransaction ignores wTimeoutMS if timeoutMS is set": _COMMIT_ONLY,
    "deprecated-options: commitTransaction ignores maxCommitTimeMS if timeoutMS is set":
        _COMMIT_ONLY,
    "sessions-override-operation-timeoutMS: timeoutMS can be overridden for commitTransaction":
        _COMMIT_ONLY,
}


@pytest.mark.skipif(not _CASES, reason=_NO_FOLDER)
@pytest.mark.parametrize("case", _CASES or [None], ids=[c.id for c in _CASES] or ["no files"])
async def test_csot_unified(case, spec_facts, server, request):
    await run_case(case, spec_facts, server.uri, request, ASYNCMONGO, WITNESS, KNOWN_FAILURES)

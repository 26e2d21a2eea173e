"""The CRUD tests of MongoDB's Unified Test Format, one pytest test per JSON test, on asyncmongo.

A test whose runOnRequirements the server does not meet is skipped with the unmet requirement; one
that needs something the server refuses (configureFailPoint...) is skipped with the server's answer.
When a test fails on an answer from the server, the same test runs again through PyMongo's own
client: if PyMongo gets the very same answer, the server deviates from MongoDB and the test is an
expected failure (strict) with that answer as the reason; otherwise the failure stands.
"""

from __future__ import annotations

from pathlib import Path

import pymongo
import pytest

import asyncmongo
from tests.spec.unified import (
    LACKS_FEATURE_CODES,
    Driver,
    SpecFailure,
    SpecSkip,
    SpecRun,
    load_cases,
    spec_folder,
)

# The codec and the spec corpora do not depend on the loop or the wake-up path.
pytestmark = pytest.mark.modes_inside

_REPO_ROOT = Path(__file__).resolve().parents[2]
_FOLDER, _NO_FOLDER = spec_folder(_REPO_ROOT)
_CASES = load_cases(_FOLDER) if _FOLDER is not None else []
if _FOLDER is not None and not _CASES:
    _NO_FOLDER = f"no unified test files: {_FOLDER} holds no *.json"

ASYNCMONGO = Driver("asyncmongo", asyncmongo.AsyncMongoClient)
WITNESS = Driver(f"PyMongo {pymongo.version}", pymongo.AsyncMongoClient)


async def _witness(case, facts, uri) -> SpecFailure | str:
    """The same test through PyMongo: its failure, or what became of it otherwise."""
    try:
        await SpecRun(case, facts, WITNESS, uri).run()
    except SpecFailure as exc:
        return exc
    except SpecSkip as exc:
        return f"skipped under {WITNESS.name} ({exc})"
    except Exception as exc:  # the witness broke elsewhere: it says nothing about the server
        return f"{WITNESS.name} failed differently ({type(exc).__name__}: {exc})"
    return f"{WITNESS.name} passes this test"


@pytest.mark.skipif(not _CASES, reason=_NO_FOLDER)
@pytest.mark.parametrize("case", _CASES or [None], ids=[c.id for c in _CASES] or ["no files"])
async def test_unified(case, spec_facts, server, request):
    why = spec_facts.unmet(case.spec.get("runOnRequirements")) or spec_facts.unmet(
        case.test.get("runOnRequirements")
    )
    if why:
        pytest.skip(why)
    try:
        await SpecRun(case, spec_facts, ASYNCMONGO, server.uri).run()
    except SpecSkip as exc:
        pytest.skip(str(exc))
    except SpecFailure as ours:
        if ours.signature is None:
            raise  # the client's own doing: no server can excuse it
        witness = await _witness(case, spec_facts, server.uri)
        if not isinstance(witness, SpecFailure) or witness.signature != ours.signature:
            theirs = witness if isinstance(witness, str) else f"{WITNESS.name}: {witness}"
            raise SpecFailure(ours.where, f"{ours.message}; but {theirs}") from ours
        same = f"{WITNESS.name} gets the same answer"
        if ours.code in LACKS_FEATURE_CODES:
            pytest.skip(f"the server lacks it: {ours.answer} ({same})")
        reason = f"server deviates from MongoDB at {ours.where}: {ours.answer} ({same})"
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))
        raise

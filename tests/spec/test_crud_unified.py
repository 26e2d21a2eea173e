"""The CRUD tests of MongoDB's Unified Test Format, one pytest test per JSON test, on asyncmongo.

A test whose runOnRequirements the server does not meet is skipped with the unmet requirement; one
that needs something the server refuses (configureFailPoint...) is skipped with the server's answer.
When a test fails on an answer from the server, the same test runs again through PyMongo's own
client: if PyMongo gets the very same answer, the server deviates from MongoDB and the test is an
expected failure (strict) with that answer as the reason; otherwise the failure stands.
"""

from __future__ import annotations

from pathlib import Path

import gridfs
import pymongo
import pytest

import asyncmongo
import asyncmongo.gridfs
from tests.spec.suite import run_case
from tests.spec.unified import Driver, load_cases, spec_folder

# The codec and the spec corpora do not depend on the loop or the wake-up path.
pytestmark = pytest.mark.modes_inside

_REPO_ROOT = Path(__file__).resolve().parents[2]
_FOLDER, _NO_FOLDER = spec_folder(_REPO_ROOT)
_CASES = load_cases(_FOLDER) if _FOLDER is not None else []
if _FOLDER is not None and not _CASES:
    _NO_FOLDER = f"no unified test files: {_FOLDER} holds no *.json"

ASYNCMONGO = Driver("asyncmongo", asyncmongo.AsyncMongoClient, asyncmongo.gridfs.AsyncGridFSBucket)
WITNESS = Driver(f"PyMongo {pymongo.version}", pymongo.AsyncMongoClient, gridfs.AsyncGridFSBucket)


@pytest.mark.skipif(not _CASES, reason=_NO_FOLDER)
@pytest.mark.parametrize("case", _CASES or [None], ids=[c.id for c in _CASES] or ["no files"])
async def test_unified(case, spec_facts, server, request):
    await run_case(case, spec_facts, server.uri, request, ASYNCMONGO, WITNESS)

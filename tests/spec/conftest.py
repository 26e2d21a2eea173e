"""Fixtures of the unified-format tests: the server's facts and the internal client (PyMongo's)."""

from __future__ import annotations

import pymongo
import pytest

from tests.spec.unified import ServerFacts


@pytest.fixture(scope="module")
def spec_facts(server):
    """What runOnRequirements are checked against, and the internal client of setup and outcome
    checks (PyMongo's own, never the driver under test)."""
    internal = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10000)
    try:
        yield ServerFacts(internal, server.uri)
    finally:
        internal.close()

"""The runner itself: its matching rules reject what the format says they must, and a test whose
expectations are made wrong fails (with the server's answer only where the server gave one), so a
passing spec test means something."""

from __future__ import annotations

import copy

import pytest
from bson.int64 import Int64
from bson.objectid import ObjectId

import asyncmongo
from tests.spec.matching import Matcher, Mismatch, assert_same_documents
from tests.spec.test_crud_unified import _CASES, ASYNCMONGO
from tests.spec.unified import SpecFailure, SpecRun


def test_matching_rules():
    m = Matcher({"saved": {"a": 1}})
    ok = [
        ({"x": 1}, {"x": 1, "extra": True}),  # extra keys at the root
        ({"x": 1}, {"x": 1.0}),  # numbers by value
        ({"x": Int64(2)}, {"x": 2}),
        ({"x": {"$$exists": False}}, {"y": 1}),
        ({"x": {"$$exists": True}}, {"x": None}),
        ({"x": {"$$unsetOrMatches": 1}}, {}),
        ({"x": {"$$unsetOrMatches": {"y": 1}}}, {"x": {"y": 1}}),
        ({"x": {"$$type": ["int", "long"]}}, {"x": Int64(5)}),
        ({"x": {"$$type": "objectId"}}, {"x": ObjectId()}),
        ({"x": {"$$matchesEntity": "saved"}}, {"x": {"a": 1}}),
        ({"$$unsetOrMatches": {"n": 1}}, None),  # a result that is not returned at all
        ({"x": {"$$lte": 5}}, {"x": 5}),
    ]
    for expected, actual in ok:
        m.match(expected, actual)
    bad = [
        ({"x": 1}, {"x": 2}),
        ({"x": 1}, {}),
        ({"x": True}, {"x": 1}),  # a boolean is not a number
        ({"x": "1"}, {"x": 1}),
        ({"x": {"y": 1}}, {"x": {"y": 1, "z": 2}}),  # no extra keys below the root
        ({"x": [1, 2]}, {"x": [1, 2, 3]}),
        ({"x": [{"a": 1}]}, {"x": [{"a": 1, "b": 2}]}),
        ({"x": {"$$exists": False}}, {"x": 1}),
        ({"x": {"$$exists": True}}, {}),
        ({"x": {"$$unsetOrMatches": 1}}, {"x": 2}),
        ({"x": {"$$type": "int"}}, {"x": Int64(5)}),
        ({"x": {"$$type": "string"}}, {}),
        ({"x": {"$$lte": 5}}, {"x": 6}),
    ]
    for expected, actual in bad:
        with pytest.raises(Mismatch):
            m.match(expected, actual)
    with pytest.raises(Mismatch):
        m.match_root_list([{"a": 1}], [{"a": 1}, {"a": 2}])
    m.match_root_list([{"a": 1}], [{"a": 1, "b": 2}])
    assert_same_documents([{"_id": 1, "x": 1}], [{"x": 1.0, "_id": 1}])
    for actual in ([{"_id": 1}], [{"_id": 1, "x": 1, "y": 2}], []):
        with pytest.raises(Mismatch):
            assert_same_documents([{"_id": 1, "x": 1}], actual)


def _case(file_stem: str, description: str):
    for case in _CASES:
        if case.path.stem == file_stem and case.test["description"] == description:
            return copy.deepcopy(case)
    pytest.skip(f"{file_stem}: {description} is not among the unified test files")


async def test_wrong_expectations_fail(spec_facts, server):
    case = _case("updateOne", "UpdateOne when many documents match")
    await SpecRun(case, spec_facts, ASYNCMONGO, server.uri).run()  # as written, it passes

    wrong = copy.deepcopy(case)
    wrong.test["operations"][0]["expectResult"]["modifiedCount"] = 7
    with pytest.raises(SpecFailure) as info:
        await SpecRun(wrong, spec_facts, ASYNCMONGO, server.uri).run()
    assert "expectResult" in info.value.where and info.value.answer is not None

    wrong = copy.deepcopy(case)
    wrong.test["outcome"] = [{"collectionName": "coll", "databaseName": "crud-v1",
                              "documents": [{"_id": 1, "x": 11}, {"_id": 2, "x": 22}]}]
    with pytest.raises(SpecFailure) as info:
        await SpecRun(wrong, spec_facts, ASYNCMONGO, server.uri).run()
    assert info.value.where.startswith("outcome")

    wrong = copy.deepcopy(case)
    wrong.test["operations"][0]["expectError"] = {"isClientError": True}
    del wrong.test["operations"][0]["expectResult"]
    with pytest.raises(SpecFailure) as info:
        await SpecRun(wrong, spec_facts, ASYNCMONGO, server.uri).run()
    assert info.value.answer is None  # a client error that did not come is the client's doing


async def test_wrong_command_is_the_clients_doing(spec_facts, server):
    case = _case("find", "Find with filter")
    wrong = copy.deepcopy(case)
    wrong.test["expectEvents"] = [{"client": "client0", "events": [
        {"commandStartedEvent": {"command": {"find": "coll0", "filter": {"_id": 2}}}}]}]
    wrong.spec["createEntities"][0]["client"]["observeEvents"] = ["commandStartedEvent"]
    with pytest.raises(SpecFailure) as info:
        await SpecRun(wrong, spec_facts, ASYNCMONGO, server.uri).run()
    assert "command.filter" in str(info.value) and info.value.answer is None
    assert asyncmongo.AsyncMongoClient is ASYNCMONGO.client_class

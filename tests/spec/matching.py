"""The unified test format's matching rules ("Evaluating Matches"): expected values against what a
driver returned, with the $$ operators, extra keys allowed only in root-level documents, and numbers
compared by value. A mismatch raises Mismatch naming the path to the first difference; nothing is
coerced silently, so a test can only pass by matching.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any, Callable

from bson.binary import Binary
from bson.code import Code
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

_INT32 = range(-(2**31), 2**31)


class Mismatch(AssertionError):
    """Expected and actual values differ at ``path``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<root>'}: {message}")
        self.path = path


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Int64)) and not isinstance(value, bool)


def _is_int32(value: Any) -> bool:
    return type(value) is int and value in _INT32


def _is_long(value: Any) -> bool:
    # PyMongo decodes an int64 as Int64, but a Python int out of int32 range encodes as one too.
    return isinstance(value, Int64) or (type(value) is int and value not in _INT32)


# The $type aliases of the query language, as the format uses them.
_TYPES: dict[str, Callable[[Any], bool]] = {
    "double": lambda v: type(v) is float,
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
    "binData": lambda v: isinstance(v, (bytes, Binary)),
    "undefined": lambda v: False,
    "objectId": lambda v: isinstance(v, ObjectId),
    "bool": lambda v: isinstance(v, bool),
    "date": lambda v: isinstance(v, datetime.datetime),
    "null": lambda v: v is None,
    "regex": lambda v: isinstance(v, (Regex, re.Pattern)),
    "dbPointer": lambda v: isinstance(v, DBRef),
    "javascript": lambda v: isinstance(v, Code) and v.scope is None,
    "symbol": lambda v: False,
    "javascriptWithScope": lambda v: isinstance(v, Code) and v.scope is not None,
    "int": _is_int32,
    "timestamp": lambda v: isinstance(v, Timestamp),
    "long": _is_long,
    "decimal": lambda v: isinstance(v, Decimal128),
    "minKey": lambda v: isinstance(v, MinKey),
    "maxKey": lambda v: isinstance(v, MaxKey),
    "number": lambda v: _is_number(v) or isinstance(v, Decimal128),
}


def _operator(value: Any) -> str | None:
    """The $$ operator a value is, if it is one: a document whose only key starts with '$$'."""
    if isinstance(value, Mapping) and len(value) == 1:
        key = next(iter(value))
        if isinstance(key, str) and key.startswith("$$"):
            return key
    return None


def _scalar_equal(expected: Any, actual: Any) -> bool:
    if _is_number(expected) and _is_number(actual):
        return float(expected) == float(actual) if isinstance(expected, float) or isinstance(
            actual, float) else int(expected) == int(actual)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, Binary) or isinstance(actual, Binary):
        return bytes(expected) == bytes(actual) and getattr(expected, "subtype", 0) == getattr(
            actual, "subtype", 0)
    if type(expected) is not type(actual) and not (
        isinstance(expected, str) and isinstance(actual, str)
    ):
        return False
    return expected == actual


class Matcher:
    """Matches with access to the test's entities (for $$matchesEntity)."""

    def __init__(self, entities: Mapping[str, Any] | None = None) -> None:
        self.entities = entities if entities is not None else {}

    def match(self, expected: Any, actual: Any, path: str = "", root: bool = True) -> None:
        op = _operator(expected)
        if op is not None:
            self._special(op, expected[op], actual, path, root)
            return
        if isinstance(expected, Mapping):
            if not isinstance(actual, Mapping):
                raise Mismatch(path, f"expected a document, got {actual!r}")
            for key, value in expected.items():
                sub = f"{path}.{key}" if path else str(key)
                key_op = _operator(value)
                if key_op == "$$exists":
                    if bool(value[key_op]) != (key in actual):
                        raise Mismatch(sub, "should exist" if value[key_op] else
                                       f"should not exist, got {actual.get(key)!r}")
                    continue
                if key_op == "$$unsetOrMatches":
                    if key in actual:
                        self.match(value[key_op], actual[key], sub, root=False)
                    continue
                if key not in actual:
                    raise Mismatch(sub, f"missing (expected {value!r})")
                self.match(value, actual[key], sub, root=False)
            if not root:
                extra = [k for k in actual if k not in expected]
                if extra:
                    raise Mismatch(path, f"unexpected keys {extra} in {actual!r}")
            return
        if isinstance(expected, list):
            if not isinstance(actual, (list, tuple)):
                raise Mismatch(path, f"expected an array, got {actual!r}")
            if len(actual) != len(expected):
                raise Mismatch(
                    path, f"expected {len(expected)} elements, got {len(actual)}: {actual!r}"
                )
            for i, (e, a) in enumerate(zip(expected, actual)):
                # Elements of an array of documents are not root-level (only a cursor's results,
                # matched one by one by the caller, are).
                self.match(e, a, f"{path}[{i}]", root=False)
            return
        if not _scalar_equal(expected, actual):
            raise Mismatch(path, f"expected {expected!r}, got {actual!r}")

    def match_root_list(self, expected: list[Any], actual: list[Any], path: str = "") -> None:
        """An iterated result (find, aggregate): same length, each document root-level."""
        if not isinstance(actual, list):
            raise Mismatch(path, f"expected an array, got {actual!r}")
        if len(actual) != len(expected):
            raise Mismatch(
                path, f"expected {len(expected)} documents, got {len(actual)}: {actual!r}"
            )
        for i, (e, a) in enumerate(zip(expected, actual)):
            self.match(e, a, f"{path}[{i}]", root=True)

    def _special(self, op: str, arg: Any, actual: Any, path: str, root: bool) -> None:
        if op == "$$unsetOrMatches":
            # At the root of a result: a driver may return nothing at all.
            if actual is not None:
                self.match(arg, actual, path, root)
            return
        if op == "$$exists":
            raise Mismatch(path, "$$exists is only valid as the value of a key")
        if op == "$$type":
            names = arg if isinstance(arg, list) else [arg]
            for name in names:
                if name not in _TYPES:
                    raise ValueError(f"unknown $$type {name!r}")
            if not any(_TYPES[name](actual) for name in names):
                raise Mismatch(
                    path, f"expected type {names}, got {type(actual).__name__} {actual!r}"
                )
            return
        if op == "$$matchesEntity":
            if arg not in self.entities:
                raise ValueError(f"$$matchesEntity: no entity named {arg!r}")
            self.match(self.entities[arg], actual, path, root)
            return
        if op == "$$matchesHexBytes":
            if not isinstance(arg, str) or len(arg) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", arg):
                raise ValueError(f"$$matchesHexBytes: malformed {arg!r}")
            if not isinstance(actual, (bytes, Binary)) or bytes(actual) != bytes.fromhex(arg):
                raise Mismatch(path, f"expected bytes {arg}, got {actual!r}")
            return
        if op == "$$lte":
            if not (_is_number(actual) and _is_number(arg) and actual <= arg):
                raise Mismatch(path, f"expected a number <= {arg!r}, got {actual!r}")
            return
        if op == "$$matchAsDocument":
            from bson import json_util

            if not isinstance(actual, str):
                raise Mismatch(path, f"expected an Extended JSON string, got {actual!r}")
            self.match(arg, json_util.loads(actual), path, root=False)
            return
        if op == "$$matchAsRoot":
            self.match(arg, actual, path, root=True)
            return
        raise ValueError(f"unsupported special operator {op}")


def assert_same_documents(expected: list[Any], actual: list[Any], path: str = "outcome") -> None:
    """Collection contents (test.outcome): exactly the expected documents, key order aside; no
    matching rules apply, but numbers still compare by value (the server may store 1 as 1.0)."""
    if len(expected) != len(actual):
        raise Mismatch(path, f"expected {len(expected)} documents, got {len(actual)}: {actual!r}")
    for i, (e, a) in enumerate(zip(expected, actual)):
        _exact(e, a, f"{path}[{i}]")


def _exact(expected: Any, actual: Any, path: str) -> None:
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping) or set(expected) != set(actual):
            raise Mismatch(path, f"expected {expected!r}, got {actual!r}")
        for key in expected:
            _exact(expected[key], actual[key], f"{path}.{key}")
        return
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(expected) != len(actual):
            raise Mismatch(path, f"expected {expected!r}, got {actual!r}")
        for i, (e, a) in enumerate(zip(expected, actual)):
            _exact(e, a, f"{path}[{i}]")
        return
    if not _scalar_equal(expected, actual):
        raise Mismatch(path, f"expected {expected!r}, got {actual!r}")


__all__ = ["Matcher", "Mismatch", "assert_same_documents"]

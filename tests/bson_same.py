"""Exact comparison of what two BSON codecs gave: same types at every level, same key order, same
values (NaN and -0.0 included), or the same exception type and message. Used by the codec's corpus and
differential tests, where PyMongo's bson is the oracle for asyncmongo._core's native codec."""

from __future__ import annotations

import datetime
import math
import re
import struct
import uuid
from collections.abc import Mapping

from bson.binary import Binary
from bson.code import Code
from bson.dbref import DBRef
from bson.raw_bson import RawBSONDocument
from bson.regex import Regex


def assert_same(a, b, path="$"):
    """a (native) is exactly b (bson)."""
    assert type(a) is type(b), f"{path}: type {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, RawBSONDocument):
        assert type(a.raw) is type(b.raw), f"{path}: raw {type(a.raw)} != {type(b.raw)}"
        assert bytes(a.raw) == bytes(b.raw), f"{path}: raw bytes differ"
    elif isinstance(a, DBRef):
        assert a.collection == b.collection and a.database == b.database, path
        assert_same(a.id, b.id, path + ".$id")
        assert_same(a.as_doc(), b.as_doc(), path + "(dbref)")
    elif isinstance(a, Code):
        assert str(a) == str(b), f"{path}: code {a!r} != {b!r}"
        if a.scope is None or b.scope is None:
            assert a.scope is b.scope, path
        else:
            assert_same(a.scope, b.scope, path + ".scope")
    elif isinstance(a, Mapping):
        ka, kb = list(a.keys()), list(b.keys())
        assert ka == kb, f"{path}: keys {ka} != {kb}"
        for k in ka:
            assert type(k) is type(kb[ka.index(k)]), path
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: len {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b)), (
            f"{path}: {a!r} != {b!r}"
        )
    elif isinstance(a, Binary):
        assert bytes(a) == bytes(b) and a.subtype == b.subtype, f"{path}: {a!r} != {b!r}"
    elif isinstance(a, Regex):
        assert a.pattern == b.pattern and a.flags == b.flags, f"{path}: {a!r} != {b!r}"
    elif isinstance(a, re.Pattern):
        assert a.pattern == b.pattern and a.flags == b.flags, path
    elif isinstance(a, datetime.datetime):
        assert a == b and repr(a) == repr(b) and a.utcoffset() == b.utcoffset(), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, uuid.UUID):
        assert a == b and a.is_safe == b.is_safe, f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
        assert repr(a) == repr(b), f"{path}: {a!r} != {b!r}"


def outcome(fn, *args, **kwargs):
    """('ok', value) or ('err', exception)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - every exception is part of the behaviour compared
        return ("err", exc)


def assert_same_outcome(native, oracle, what="", message=True):
    """Both gave the same value, or both raised the same exception type (and message)."""
    kind_n, val_n = native
    kind_o, val_o = oracle
    if kind_o == "err" or kind_n == "err":
        assert kind_n == kind_o == "err", f"{what}: native {native!r} but bson {oracle!r}"
        assert type(val_n) is type(val_o), f"{what}: native raised {val_n!r}, bson raised {val_o!r}"
        if message:
            assert str(val_n) == str(val_o), f"{what}: native raised {val_n!r}, bson raised {val_o!r}"
        return
    assert_same(val_n, val_o, what or "$")

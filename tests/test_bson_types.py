"""BSON values users store, round-tripped through asyncmongo (insert_one, then find_one) and checked on
the server with PyMongo's sync client as the witness, so a bug symmetric in encode and decode cannot
hide; plus the codec options (tz_aware, tzinfo, uuidRepresentation, document_class, ...) and a
hypothesis property test over nested JSON-like documents."""

from __future__ import annotations

import collections
import datetime
import decimal
import math
import re
import uuid
import zoneinfo

import bson
import pytest
from bson import (
    Binary,
    Code,
    DBRef,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    Timestamp,
)
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion, TypeCodec, TypeRegistry
from bson.datetime_ms import DatetimeMS
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from bson.tz_util import utc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import run_in_new_loop

RAW = CodecOptions(document_class=RawBSONDocument)


def witness(sync_client, coll, codec_options=None):
    """PyMongo's view of the same collection (default codec options unless given)."""
    return sync_client[coll.database.name].get_collection(coll.name, codec_options=codec_options)


async def round_trip(coll, sync_client, value):
    """Store {"v": value}; return (what asyncmongo reads back, what PyMongo sees on the server)."""
    res = await coll.insert_one({"v": value})
    got = await coll.find_one({"_id": res.inserted_id})
    stored = witness(sync_client, coll).find_one({"_id": res.inserted_id})
    assert got is not None and stored is not None
    return got["v"], stored["v"]


# (id, value stored, value expected back, exact type expected back)
_OID = ObjectId("65f0c0ffee0000000000abcd")
_CASES = [
    ("objectid", _OID, _OID, ObjectId),
    ("datetime_ms", datetime.datetime(2024, 2, 29, 23, 59, 59, 123000),
     datetime.datetime(2024, 2, 29, 23, 59, 59, 123000), datetime.datetime),
    # BSON keeps milliseconds: microseconds are truncated, never rounded up into the next second.
    ("datetime_us_truncated", datetime.datetime(2024, 12, 31, 23, 59, 59, 999999),
     datetime.datetime(2024, 12, 31, 23, 59, 59, 999000), datetime.datetime),
    ("datetime_pre_epoch", datetime.datetime(1900, 1, 1, 0, 0, 0, 500000),
     datetime.datetime(1900, 1, 1, 0, 0, 0, 500000), datetime.datetime),
    ("datetime_min", datetime.datetime(1, 1, 1), datetime.datetime(1, 1, 1), datetime.datetime),
    ("datetime_max", datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
     datetime.datetime(9999, 12, 31, 23, 59, 59, 999000), datetime.datetime),
    ("decimal128", Decimal128("1.10"), Decimal128("1.10"), Decimal128),
    ("decimal128_neg_zero", Decimal128("-0"), Decimal128("-0"), Decimal128),
    ("decimal128_nan", Decimal128("NaN"), Decimal128("NaN"), Decimal128),
    ("decimal128_inf", Decimal128("-Infinity"), Decimal128("-Infinity"), Decimal128),
    ("decimal128_max", Decimal128("9.999999999999999999999999999999999E+6144"),
     Decimal128("9.999999999999999999999999999999999E+6144"), Decimal128),
    # Subtype 0 comes back as plain bytes (PyMongo 4); the other subtypes stay Binary.
    ("binary_0", Binary(b"\x00\x01\xfe\xff", 0), b"\x00\x01\xfe\xff", bytes),
    ("binary_1_function", Binary(b"fn", 1), Binary(b"fn", 1), Binary),
    ("binary_2_old", Binary(b"old binary", 2), Binary(b"old binary", 2), Binary),
    ("binary_3_legacy_uuid", Binary(b"\x11" * 16, 3), Binary(b"\x11" * 16, 3), Binary),
    ("binary_4_uuid_default_client", Binary(b"\x22" * 16, 4), Binary(b"\x22" * 16, 4), Binary),
    ("binary_5_md5", Binary(bytes(range(16)), 5), Binary(bytes(range(16)), 5), Binary),
    ("binary_128_user", Binary(b"\x00user\x00", 128), Binary(b"\x00user\x00", 128), Binary),
    ("bytes", b"\x00\xff\x10 bytes", b"\x00\xff\x10 bytes", bytes),
    ("bytes_empty", b"", b"", bytes),
    ("regex", Regex(r"^a.*z$", "imsx"), Regex(r"^a.*z$", "imsx"), Regex),
    ("int64", Int64(5), Int64(5), Int64),
    ("int64_max", Int64(2**63 - 1), Int64(2**63 - 1), Int64),
    ("int64_min", Int64(-(2**63)), Int64(-(2**63)), Int64),
    ("int32_zero", 0, 0, int),
    ("int32_max", 2**31 - 1, 2**31 - 1, int),
    ("int32_max_plus_1", 2**31, Int64(2**31), Int64),
    ("int32_min", -(2**31), -(2**31), int),
    ("int32_min_minus_1", -(2**31) - 1, Int64(-(2**31) - 1), Int64),
    ("int_big", 2**62 + 12345, Int64(2**62 + 12345), Int64),
    ("float", 1.5, 1.5, float),
    ("float_integral", 3.0, 3.0, float),
    ("float_max", 1.7976931348623157e308, 1.7976931348623157e308, float),
    ("float_min_subnormal", 5e-324, 5e-324, float),
    ("float_inf", float("inf"), float("inf"), float),
    ("float_ninf", float("-inf"), float("-inf"), float),
    ("timestamp", Timestamp(1700000000, 7), Timestamp(1700000000, 7), Timestamp),
    ("minkey", MinKey(), MinKey(), MinKey),
    ("maxkey", MaxKey(), MaxKey(), MaxKey),
    ("code", Code("function () { return 1; }"), Code("function () { return 1; }"), Code),
    ("code_w_scope", Code("function () { return x; }", {"x": 1, "y": [1, "two"]}),
     Code("function () { return x; }", {"x": 1, "y": [1, "two"]}), Code),
    ("true", True, True, bool),
    ("false", False, False, bool),
    ("none", None, None, type(None)),
    ("str_empty", "", "", str),
    ("str_cjk", "日本語の文字列", "日本語の文字列", str),
    ("str_emoji", "🎉👩‍👩‍👧‍👦🏳️‍🌈", "🎉👩‍👩‍👧‍👦🏳️‍🌈", str),
    # Combining characters are not normalised: "e" + U+0301 stays two code points.
    ("str_combining", "e\u0301 a\u0308\u0323", "e\u0301 a\u0308\u0323", str),
    ("str_nul_inside", "a\x00b", "a\x00b", str),
    ("str_long", "x" * 100_000, "x" * 100_000, str),
    ("dbref", DBRef("other", _OID, "otherdb", extra=1), DBRef("other", _OID, "otherdb", extra=1), DBRef),
    ("doc_empty", {}, {}, dict),
    ("array_empty", [], [], list),
]


@pytest.mark.parametrize(
    "value, expected, expected_type", [c[1:] for c in _CASES], ids=[c[0] for c in _CASES]
)
async def test_value_round_trip(coll, sync_client, value, expected, expected_type):
    got, stored = await round_trip(coll, sync_client, value)
    assert type(got) is expected_type, f"read back as {type(got)}"
    assert got == expected
    # What reached the server, read by PyMongo: the same value, of the same type.
    assert type(stored) is expected_type
    assert stored == expected


async def test_float_nan_and_negative_zero(coll, sync_client):
    got, stored = await round_trip(coll, sync_client, float("nan"))
    assert type(got) is float and math.isnan(got)
    assert type(stored) is float and math.isnan(stored)
    got, stored = await round_trip(coll, sync_client, -0.0)
    assert got == 0.0 and math.copysign(1.0, got) == -1.0  # the sign survives
    assert math.copysign(1.0, stored) == -1.0


async def test_compiled_pattern_is_stored_as_regex(coll, sync_client):
    pattern = re.compile(r"^b\d+ [a-z]$", re.IGNORECASE | re.MULTILINE | re.DOTALL)
    got, stored = await round_trip(coll, sync_client, pattern)
    assert isinstance(got, Regex)  # PyMongo 4 decodes BSON regexes as Regex, never re.Pattern
    assert got.pattern == pattern.pattern
    assert got == Regex.from_native(pattern) == stored
    compiled = got.try_compile()
    assert compiled.flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL) == (
        re.IGNORECASE | re.MULTILINE | re.DOTALL
    )
    assert compiled.match("B12 X")


async def test_many_types_in_one_document_keep_order(coll, sync_client):
    doc = {c[0]: c[1] for c in _CASES}
    doc["_id"] = "all-types"
    await coll.insert_one(doc)
    got = await coll.find_one("all-types")
    stored = witness(sync_client, coll).find_one("all-types")
    assert got == stored
    # PyMongo moves _id first when encoding; the other keys keep the caller's order.
    assert list(got) == ["_id"] + [c[0] for c in _CASES]
    for name, _, expected, expected_type in _CASES:
        assert type(got[name]) is expected_type and got[name] == expected, name


@pytest.mark.parametrize(
    "id_value",
    ["a-string-id", 42, Int64(2**40), 2.5, {"a": 1, "b": "x"}, Decimal128("7.5"),
     datetime.datetime(2020, 5, 17, 1, 2, 3), b"\x01\x02", _OID, True],
    ids=["str", "int", "int64", "float", "doc", "decimal128", "datetime", "bytes", "objectid", "bool"],
)
async def test_id_types_and_find_one_by_id(coll, sync_client, id_value):
    res = await coll.insert_one({"_id": id_value, "payload": 1})
    assert res.inserted_id == id_value
    # A non-mapping filter is an _id (a mapping would be a filter, so it is wrapped).
    got = await coll.find_one({"_id": id_value} if isinstance(id_value, dict) else id_value)
    assert got == {"_id": id_value, "payload": 1}
    assert type(got["_id"]) is type(id_value)
    assert witness(sync_client, coll).find_one({"_id": id_value}) == got


# ---- datetimes and time zones ------------------------------------------------------------------


async def test_naive_datetime_is_utc(coll, sync_client):
    naive = datetime.datetime(2024, 7, 1, 12, 30, 45, 678000)
    got, stored = await round_trip(coll, sync_client, naive)
    assert got == naive and got.tzinfo is None
    assert stored == naive and stored.tzinfo is None
    # The stored instant is the naive value read as UTC.
    raw = witness(sync_client, coll, RAW).find_one({"v": naive})
    assert raw is not None
    ms = bson.decode(raw.raw, CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS))["v"]
    assert int(ms) == int(naive.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


async def test_aware_datetime_is_stored_as_its_utc_instant(coll, sync_client):
    aware = datetime.datetime(2024, 1, 1, 12, 0, 0, 250000, tzinfo=datetime.timezone(datetime.timedelta(hours=5)))
    got, stored = await round_trip(coll, sync_client, aware)
    # A default (tz_aware=False) client returns naive UTC.
    assert got == datetime.datetime(2024, 1, 1, 7, 0, 0, 250000)
    assert got.tzinfo is None
    assert stored == got


async def test_tz_aware_client_returns_aware_utc(make_client, db_name, sync_client):
    client = make_client(tz_aware=True)
    coll = client[db_name]["items"]
    naive = datetime.datetime(2023, 3, 26, 1, 59, 59, 999000)
    res = await coll.insert_one({"v": naive, "nested": {"when": [naive]}})
    got = await coll.find_one(res.inserted_id)
    assert got["v"].tzinfo is not None and got["v"].utcoffset() == datetime.timedelta(0)
    assert got["v"] == naive.replace(tzinfo=datetime.timezone.utc)
    assert got["v"].tzinfo is utc  # bson.tz_util.utc, as PyMongo returns
    # Nested datetimes are decoded with the same options.
    assert got["nested"]["when"][0].tzinfo is utc
    # Filters with aware datetimes match the same instant.
    other_zone = naive.replace(tzinfo=datetime.timezone.utc).astimezone(
        datetime.timezone(datetime.timedelta(hours=-8))
    )
    assert (await coll.find_one({"v": other_zone}))["_id"] == res.inserted_id
    assert sync_client[db_name]["items"].find_one(res.inserted_id)["v"] == naive


async def test_tzinfo_converts_returned_datetimes(make_client, db_name, sync_client):
    tokyo = zoneinfo.ZoneInfo("Asia/Tokyo")
    client = make_client(tz_aware=True, tzinfo=tokyo)
    coll = client[db_name]["items"]
    instant = datetime.datetime(2024, 6, 30, 20, 15, 0, 5000)
    res = await coll.insert_one({"v": instant})
    got = (await coll.find_one(res.inserted_id))["v"]
    assert got.tzinfo is tokyo
    assert (got.hour, got.minute, got.day) == (5, 15, 1)  # UTC+9, next day
    assert got == instant.replace(tzinfo=datetime.timezone.utc)
    assert sync_client[db_name]["items"].find_one(res.inserted_id)["v"] == instant


async def test_collection_codec_options_override_client(client, db_name, sync_client):
    base = client[db_name]["items"]
    aware = base.with_options(codec_options=CodecOptions(tz_aware=True))
    when = datetime.datetime(2022, 2, 2, 2, 2, 2, 2000)
    res = await base.insert_one({"v": when})
    assert (await base.find_one(res.inserted_id))["v"].tzinfo is None
    assert (await aware.find_one(res.inserted_id))["v"].tzinfo is utc
    assert sync_client[db_name]["items"].find_one(res.inserted_id)["v"] == when


async def test_datetime_conversion_datetime_ms(make_client, db_name, sync_client):
    client = make_client(datetime_conversion="DATETIME_MS")
    coll = client[db_name]["items"]
    res = await coll.insert_one({"v": DatetimeMS(-1), "w": datetime.datetime(1970, 1, 1, 0, 0, 1)})
    got = await coll.find_one(res.inserted_id)
    assert got["v"] == DatetimeMS(-1) and type(got["v"]) is DatetimeMS
    assert got["w"] == DatetimeMS(1000)
    stored = sync_client[db_name]["items"].find_one(res.inserted_id)
    assert stored["v"] == datetime.datetime(1969, 12, 31, 23, 59, 59, 999000)


# ---- UUIDs ---------------------------------------------------------------------------------------


async def test_default_client_refuses_native_uuid_like_pymongo(coll, sync_client):
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with pytest.raises(Exception) as pymongo_err:
        witness(sync_client, coll).insert_one({"v": u})
    assert type(pymongo_err.value) is ValueError  # PyMongo's own behaviour, for the record
    with pytest.raises(Exception, match="UuidRepresentation") as ours:
        await coll.insert_one({"v": u})
    assert type(ours.value) is type(pymongo_err.value)
    with pytest.raises(Exception) as ours:
        await coll.find_one({"v": u})
    assert type(ours.value) is type(pymongo_err.value)
    assert witness(sync_client, coll).count_documents({}) == 0
    # The client is still fine, and an explicit Binary works without any option.
    res = await coll.insert_one({"v": Binary.from_uuid(u)})
    got = await coll.find_one(res.inserted_id)
    assert got["v"] == Binary(u.bytes, 4) and got["v"].as_uuid() == u


@pytest.mark.parametrize(
    "representation, subtype",
    [("standard", 4), ("pythonLegacy", 3), ("javaLegacy", 3), ("csharpLegacy", 3)],
)
async def test_uuid_representation(make_client, db_name, sync_client, representation, subtype):
    client = make_client(uuidRepresentation=representation)
    coll = client[db_name]["items"]
    u = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    res = await coll.insert_one({"v": u, "list": [u]})
    got = await coll.find_one(res.inserted_id)
    assert type(got["v"]) is uuid.UUID and got["v"] == u and got["list"] == [u]
    # Filters are encoded with the same representation.
    assert (await coll.find_one({"v": u}))["_id"] == res.inserted_id
    stored = sync_client[db_name]["items"].find_one(res.inserted_id)["v"]
    assert isinstance(stored, Binary) and stored.subtype == subtype
    rep = getattr(UuidRepresentation, {"standard": "STANDARD", "pythonLegacy": "PYTHON_LEGACY",
                                       "javaLegacy": "JAVA_LEGACY", "csharpLegacy": "CSHARP_LEGACY"}[representation])
    assert stored.as_uuid(rep) == u
    if representation == "standard":
        assert bytes(stored) == u.bytes


# ---- nesting, strings, keys ----------------------------------------------------------------------


async def test_deeply_nested_documents_and_arrays(coll, sync_client):
    deep_doc: dict = {"leaf": "bottom"}
    for i in range(90):
        deep_doc = {f"level{i}": deep_doc, "i": i}
    deep_list: list = ["bottom"]
    for _ in range(60):
        deep_list = [deep_list, len(deep_list)]
    mixed = [1, "two", 3.0, None, True, {"k": [Int64(2**40), {"x": []}]}, [[], [{}]], b"\x00"]
    doc = {"_id": "deep", "doc": deep_doc, "list": deep_list, "mixed": mixed}
    await coll.insert_one(doc)
    got = await coll.find_one("deep")
    assert got == doc
    assert witness(sync_client, coll).find_one("deep") == doc
    node = got["doc"]
    for i in reversed(range(90)):
        assert node["i"] == i
        node = node[f"level{i}"]
    assert node == {"leaf": "bottom"}


async def test_non_ascii_keys_and_values(coll, sync_client):
    doc = {
        "_id": "unicode",
        "日本語": "値",
        "ключ": "значение",
        "🔑": "🗝️",
        "\u00e9": "precomposed",  # é
        "e\u0301": "combining",  # e + combining acute: a different key, not normalised
        "mixed": {"κλειδί": ["αβγ", "中文", "עברית", "\u200d\u200b"], "ß": "ẞ"},
        "": "empty key",
        "empty": "",
        "empty_doc": {},
        "empty_list": [],
    }
    await coll.insert_one(doc)
    got = await coll.find_one("unicode")
    assert got == doc
    assert list(got) == list(doc)
    assert got["\u00e9"] == "precomposed" and got["e\u0301"] == "combining"
    stored = witness(sync_client, coll).find_one("unicode")
    assert stored == doc and list(stored) == list(doc)
    # Non-ASCII values also work as filters.
    assert (await coll.find_one({"mixed.ß": "ẞ"}))["_id"] == "unicode"
    assert (await coll.find_one({"🔑": "🗝️"}))["_id"] == "unicode"


# ---- document_class --------------------------------------------------------------------------------


class MyDict(dict):
    """A dict subclass a user might pass as document_class."""


@pytest.mark.parametrize(
    "document_class", [SON, collections.OrderedDict, MyDict, dict],
    ids=["SON", "OrderedDict", "dict_subclass", "dict"],
)
async def test_document_class_is_honoured(make_client, db_name, sync_client, document_class):
    client = make_client(document_class=document_class)
    coll = client[db_name]["items"]
    assert coll.codec_options.document_class is document_class
    # Keys deliberately not in sorted order, _id last: PyMongo's encoder puts _id first.
    doc = document_class([("z", 1), ("a", {"y": 1, "b": 2, "x": [{"q": 1, "c": 2}]}), ("m", 3), ("_id", "dc")])
    await coll.insert_one(doc)
    got = await coll.find_one("dc")
    assert type(got) is document_class
    assert list(got.keys()) == ["_id", "z", "a", "m"]
    assert type(got["a"]) is document_class and list(got["a"].keys()) == ["y", "b", "x"]
    assert type(got["a"]["x"][0]) is document_class and list(got["a"]["x"][0].keys()) == ["q", "c"]
    assert dict(got) == {"_id": "dc", "z": 1, "a": {"y": 1, "b": 2, "x": [{"q": 1, "c": 2}]}, "m": 3}
    stored = sync_client[db_name].get_collection("items", codec_options=CodecOptions(document_class=SON)).find_one("dc")
    assert list(stored.keys()) == ["_id", "z", "a", "m"] and list(stored["a"].keys()) == ["y", "b", "x"]


async def test_raw_bson_document_class(make_client, db_name, sync_client):
    client = make_client(document_class=RawBSONDocument)
    coll = client[db_name]["items"]
    doc = SON([("_id", "raw"), ("b", 2), ("a", {"nested": [1, 2]}), ("s", "日本")])
    await coll.insert_one(doc)
    got = await coll.find_one("raw")
    assert type(got) is RawBSONDocument
    assert type(got.raw) is bytes  # an owned copy, not a view of the driver's reply buffer
    assert list(got.keys()) == ["_id", "b", "a", "s"]
    assert type(got["a"]) is RawBSONDocument and got["a"]["nested"] == [1, 2]
    on_server = sync_client[db_name].get_collection("items", codec_options=RAW).find_one("raw")
    assert got.raw == on_server.raw == bson.encode(doc)
    # The document stays valid after the driver has gone on with other replies.
    for i in range(5):
        await coll.insert_one({"_id": i, "filler": "y" * 1000})
        assert (await coll.find_one(i))["filler"] == "y" * 1000
    assert bson.decode(got.raw) == dict(doc) and got["s"] == "日本"


async def test_insert_raw_bson_document(coll, sync_client):
    raw = RawBSONDocument(bson.encode(SON([("_id", "r1"), ("z", 1), ("a", Decimal128("2.5"))])))
    res = await coll.insert_one(raw)
    assert res.inserted_id == "r1"
    assert witness(sync_client, coll, RAW).find_one("r1").raw == raw.raw
    assert await coll.find_one("r1") == {"_id": "r1", "z": 1, "a": Decimal128("2.5")}


class DecimalCodec(TypeCodec):
    python_type = decimal.Decimal
    bson_type = Decimal128

    def transform_python(self, value):
        return Decimal128(value)

    def transform_bson(self, value):
        return value.to_decimal()


async def test_type_registry_codec(make_client, db_name, sync_client):
    client = make_client(type_registry=TypeRegistry([DecimalCodec()]))
    coll = client[db_name]["items"]
    res = await coll.insert_one({"price": decimal.Decimal("19.99"), "list": [decimal.Decimal("-0.001")]})
    got = await coll.find_one({"price": decimal.Decimal("19.99")})
    assert got["_id"] == res.inserted_id
    assert got["price"] == decimal.Decimal("19.99") and type(got["price"]) is decimal.Decimal
    assert got["list"] == [decimal.Decimal("-0.001")]
    stored = sync_client[db_name]["items"].find_one(res.inserted_id)
    assert stored["price"] == Decimal128("19.99")


class FailingDecimalCodec(DecimalCodec):
    def transform_bson(self, value):
        raise ValueError(f"refusing to decode {value}")


async def test_decode_error_reaches_the_caller(make_client, db_name, sync_client):
    """A value that fails to decode fails that find_one (as in PyMongo), not the client."""
    client = make_client(type_registry=TypeRegistry([FailingDecimalCodec()]))
    coll = client[db_name]["items"]
    await coll.insert_one({"_id": "bad", "price": Decimal128("1.5")})
    await coll.insert_one({"_id": "good", "price": 1.5})
    with pytest.raises(ValueError, match="refusing to decode 1.5"):
        await coll.find_one("bad")
    assert await coll.find_one("good") == {"_id": "good", "price": 1.5}
    assert sync_client[db_name]["items"].find_one("bad")["price"] == Decimal128("1.5")


# ---- property test -----------------------------------------------------------------------------

_keys = st.text(max_size=12).filter(lambda k: not k.startswith("$") and "." not in k and "\x00" not in k)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=25,
)
_documents = st.dictionaries(_keys.filter(lambda k: k != "_id"), _values, max_size=8)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=_documents)
def test_property_json_like_round_trip(coll, sync_client, loop_kind, document):
    original = {"_id": ObjectId(), **document}
    expected_bytes = bson.encode(original)  # key order, int32/int64 choice, -0.0 all in the bytes

    async def scenario():
        res = await coll.insert_one(dict(original))
        assert res.inserted_id == original["_id"]
        return await coll.find_one({"_id": original["_id"]})

    # Each example on a new event loop of the chosen kind, failing on loop exception-handler calls.
    got, errors = run_in_new_loop(loop_kind, scenario, {})
    assert not errors.contexts, errors.contexts
    assert got == original
    assert bson.encode(got) == expected_bytes
    stored = witness(sync_client, coll, RAW).find_one({"_id": original["_id"]})
    assert stored.raw == expected_bytes

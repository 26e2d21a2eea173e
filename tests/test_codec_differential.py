"""Differential tests of the core's native BSON codec against PyMongo's bson (the oracle), with
hypothesis: random nested documents of every BSON type, under every combination of the CodecOptions
the codec reads, decode and encode exactly as bson does (value, type, key order, or exception type
and message); random, truncated and corrupted bytes never crash the decoder and raise what bson
raises. Plus the inputs bson itself would crash on or that change while they are encoded, checked for
no crash only. No server is needed."""

from __future__ import annotations

import datetime
import re
import struct
import sys
import uuid
from collections import OrderedDict
from collections.abc import MutableMapping

import bson
import pytest
from bson.binary import Binary, UuidRepresentation
from bson.code import Code
from bson.codec_options import CodecOptions, DatetimeConversion, TypeCodec, TypeRegistry
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.regex import Regex
from bson.son import SON
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncmongo import _core
from tests.bson_same import assert_same, assert_same_outcome, outcome

# The codec and the spec corpora do not depend on the loop or the wake-up path.
pytestmark = pytest.mark.modes_inside

settings.register_profile(
    "codec",
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)
settings.register_profile("codec-long", parent=settings.get_profile("codec"), max_examples=5000)
PROFILE = "codec-long" if __import__("os").environ.get("ASYNCMONGO_CODEC_LONG") else "codec"
codec_settings = settings.get_profile(PROFILE)


class MyMap(MutableMapping):
    """A MutableMapping that is not a dict: the codec must call its methods as bson does."""

    def __init__(self, *args, **kwargs):
        self._d = dict(*args, **kwargs)

    def __getitem__(self, k):
        return self._d[k]

    def __setitem__(self, k, v):
        self._d[k] = v

    def __delitem__(self, k):
        del self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def __eq__(self, other):
        return isinstance(other, MyMap) and list(self._d.items()) == list(other._d.items())


class DecimalCodec(TypeCodec):
    """A type codec: options with it go to bson whole (decode and encode)."""

    python_type = type(None).__class__  # never matches a value: only its presence matters
    bson_type = Decimal128

    def transform_python(self, value):
        return value

    def transform_bson(self, value):
        return value.to_decimal()


EST = datetime.timezone(datetime.timedelta(hours=-5), "EST")
PLUS_14 = datetime.timezone(datetime.timedelta(hours=14))

# ---- values ----

keys = st.one_of(
    st.sampled_from(["_id", "a", "b", "$ref", "$id", "$db", "x.y", "$x", "", "é", "ключ"]),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12),
)
int32s = st.integers(-(2**31), 2**31 - 1)
int64s = st.integers(-(2**63), 2**63 - 1)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
ms_in_range = st.integers(-62135596800000, 253402300799999)
naive_datetimes = ms_in_range.map(
    lambda ms: datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms)
)
aware_datetimes = st.builds(
    lambda dt, tz: dt.replace(tzinfo=datetime.timezone.utc).astimezone(tz)
    if datetime.datetime(1, 1, 2) < dt < datetime.datetime(9999, 12, 30)
    else dt.replace(tzinfo=datetime.timezone.utc),
    naive_datetimes,
    st.sampled_from([datetime.timezone.utc, EST, PLUS_14]),
)
uuids = st.builds(uuid.UUID, int=st.integers(0, 2**128 - 1))
binaries = st.one_of(
    st.builds(Binary, st.binary(max_size=20), st.sampled_from([1, 2, 5, 6, 7, 8, 0x80, 0xFF])),
    st.builds(Binary, st.binary(min_size=16, max_size=16), st.sampled_from([3, 4])),
    st.builds(Binary, st.binary(max_size=20), st.sampled_from([3, 4])),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    int32s,
    int64s,
    int64s.map(Int64),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.binary(max_size=20),
    binaries,
    uuids,
    st.binary(min_size=12, max_size=12).map(ObjectId),
    naive_datetimes,
    aware_datetimes,
    st.integers(-(2**63), 2**63 - 1).map(DatetimeMS),
    st.builds(
        Regex,
        st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8),
        st.integers(0, 127),
    ),
    st.sampled_from([re.compile("a+b"), re.compile("x", re.I | re.M), re.compile(b"by")]),
    st.builds(Code, texts),
    st.builds(Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.just(MinKey()),
    st.just(MaxKey()),
    st.binary(min_size=16, max_size=16).map(Decimal128.from_bid),
)


def documents(values):
    return st.one_of(
        st.dictionaries(keys, values, max_size=6),
        st.lists(st.tuples(keys, values), max_size=5).map(SON),
    )


values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=3).map(tuple),
        documents(children),
        st.builds(Code, texts, st.dictionaries(keys, children, max_size=3)),
        st.builds(
            lambda coll, oid, db, extra: DBRef(coll, oid, db, **extra),
            texts,
            children,
            st.one_of(st.none(), texts),
            st.dictionaries(st.sampled_from(["k", "n"]), children, max_size=2),
        ),
        st.dictionaries(keys, children, max_size=4).map(MyMap),
    ),
    max_leaves=25,
)
docs = documents(values)

# ---- options ----

decode_options = st.builds(
    lambda cls, tz_aware, tzinfo, uuid_rep, handler, conv: CodecOptions(
        document_class=cls,
        tz_aware=tz_aware,
        tzinfo=tzinfo if tz_aware else None,
        uuid_representation=uuid_rep,
        unicode_decode_error_handler=handler,
        datetime_conversion=conv,
    ),
    st.sampled_from([dict, SON, OrderedDict, MyMap, RawBSONDocument]),
    st.booleans(),
    st.sampled_from([None, datetime.timezone.utc, EST, PLUS_14]),
    st.sampled_from(
        [
            UuidRepresentation.UNSPECIFIED,
            UuidRepresentation.STANDARD,
            UuidRepresentation.PYTHON_LEGACY,
            UuidRepresentation.JAVA_LEGACY,
            UuidRepresentation.CSHARP_LEGACY,
        ]
    ),
    st.sampled_from(["strict", "replace", "ignore", "backslashreplace", "surrogateescape"]),
    st.sampled_from(list(DatetimeConversion)),
)
encode_options = st.builds(
    lambda uuid_rep, registry: CodecOptions(uuid_representation=uuid_rep, type_registry=registry),
    st.sampled_from(
        [
            UuidRepresentation.UNSPECIFIED,
            UuidRepresentation.STANDARD,
            UuidRepresentation.PYTHON_LEGACY,
            UuidRepresentation.JAVA_LEGACY,
            UuidRepresentation.CSHARP_LEGACY,
        ]
    ),
    st.sampled_from([None, TypeRegistry(fallback_encoder=repr)]),
)


def encodable(doc, opts=bson.DEFAULT_CODEC_OPTIONS):
    """bson's bytes for doc, or None when bson refuses it."""
    kind, value = outcome(bson.encode, doc, codec_options=opts)
    return value if kind == "ok" else None


# ---- decode ----


@codec_settings
@given(doc=docs, opts=decode_options)
def test_decode_random_documents(doc, opts):
    data = encodable(doc, CodecOptions(uuid_representation=UuidRepresentation.STANDARD))
    if data is None:
        data = encodable(doc)
    if data is None:
        return
    assert_same_outcome(outcome(_core.bson_decode, data, opts), outcome(bson.decode, data, opts))
    batch = data * 3
    assert_same_outcome(outcome(_core.bson_decode_all, batch, opts), outcome(bson.decode_all, batch, opts))


def element(type_byte, key, payload):
    return bytes([type_byte]) + key + b"\x00" + payload


def wrap(body):
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def bson_string(raw):
    return struct.pack("<i", len(raw) + 1) + raw + b"\x00"


raw_bytes = st.binary(max_size=12).filter(lambda b: b"\x00" not in b)
raw_elements = st.one_of(
    st.builds(lambda k, v: element(0x02, k, bson_string(v)), raw_bytes, raw_bytes),
    st.builds(lambda k, v: element(0x0E, k, bson_string(v)), raw_bytes, raw_bytes),
    st.builds(lambda k, v: element(0x0D, k, bson_string(v)), raw_bytes, raw_bytes),
    st.builds(lambda k, p, f: element(0x0B, k, p + b"\x00" + f + b"\x00"), raw_bytes, raw_bytes, raw_bytes),
    st.builds(lambda k, v: element(0x0C, k, bson_string(v) + b"\x11" * 12), raw_bytes, raw_bytes),
    st.builds(lambda k, ms: element(0x09, k, struct.pack("<q", ms)), raw_bytes, int64s),
    st.builds(lambda k, b: element(0x08, k, bytes([b])), raw_bytes, st.integers(0, 255)),
    st.builds(lambda k, t: element(t, k, b""), raw_bytes, st.sampled_from([0x06, 0x0A, 0xFF, 0x7F, 0x14, 0x00])),
)


@st.composite
def raw_documents(draw, depth=0):
    """BSON written by hand: keys and strings with any bytes (invalid UTF-8 included), datetimes of
    any int64, booleans of any byte, unknown types; nested documents and arrays."""
    parts = draw(st.lists(raw_elements, max_size=5))
    if depth < 3:
        for _ in range(draw(st.integers(0, 2))):
            sub = draw(raw_documents(depth + 1))
            parts.append(element(draw(st.sampled_from([0x03, 0x04])), draw(raw_bytes), sub))
    return wrap(b"".join(parts))


@codec_settings
@given(data=raw_documents(), opts=decode_options)
def test_decode_raw_documents(data, opts):
    assert_same_outcome(outcome(_core.bson_decode, data, opts), outcome(bson.decode, data, opts))


@codec_settings
@given(doc=docs, cut=st.integers(0, 10**6), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4))
def test_decode_truncated_and_corrupted(doc, cut, edits):
    data = encodable(doc)
    if data is None:
        return
    bad = bytearray(data)
    for pos, byte in edits:
        bad[pos % len(bad)] = byte
    for b in (bytes(bad), data[: cut % (len(data) + 1)], bytes(bad[: cut % (len(bad) + 1)])):
        assert_same_outcome(outcome(_core.bson_decode, b), outcome(bson.decode, b))
        assert_same_outcome(outcome(_core.bson_decode_all, b), outcome(bson.decode_all, b))


@codec_settings
@given(data=st.binary(max_size=64), prefix=st.booleans())
def test_decode_random_bytes(data, prefix):
    if prefix:  # a plausible length, so the decoder gets past the frame checks
        data = struct.pack("<i", len(data) + 4) + data
    assert_same_outcome(outcome(_core.bson_decode, data), outcome(bson.decode, data))
    assert_same_outcome(outcome(_core.bson_decode_all, data), outcome(bson.decode_all, data))


def test_decode_registry_goes_to_bson():
    opts = CodecOptions(type_registry=TypeRegistry([DecimalCodec()]))
    data = bson.encode({"d": Decimal128("1.5"), "x": [Decimal128("2")]})
    assert_same(_core.bson_decode(data, opts), bson.decode(data, opts))
    assert_same(_core.bson_decode_all(data * 2, opts), bson.decode_all(data * 2, opts))


def test_decode_buffers_and_options_errors():
    data = bson.encode({"a": 1})
    for d in (data, bytearray(data), memoryview(data), memoryview(data * 2)[: len(data)]):
        assert_same_outcome(outcome(_core.bson_decode, d), outcome(bson.decode, d))
    import array

    for bad in ("text", 12, array.array("i", [1, 2]), memoryview(b"abcd")[::2]):
        assert_same_outcome(outcome(_core.bson_decode, bad), outcome(bson.decode, bad))
        assert_same_outcome(outcome(_core.bson_decode_all, bad), outcome(bson.decode_all, bad))
    for bad_opts in ({"tz_aware": True}, 3):
        assert_same_outcome(outcome(_core.bson_decode, data, bad_opts), outcome(bson.decode, data, bad_opts))


def test_raw_documents_views():
    """RawBSONDocument: the input bytes itself, a view from 4 KB up, a copy below or for bytearray."""
    opts = CodecOptions(document_class=RawBSONDocument)
    small, big = bson.encode({"a": 1}), bson.encode({"a": "x" * 5000})
    for data in (small, big, small + big, big + small, bytearray(big + small), memoryview(big + big)):
        assert_same_outcome(outcome(_core.bson_decode_all, data, opts), outcome(bson.decode_all, data, opts))
    for data in (small, big, bytearray(big), memoryview(big)):
        assert_same_outcome(outcome(_core.bson_decode, data, opts), outcome(bson.decode, data, opts))
    assert _core.bson_decode(big, opts).raw is big


def test_objects_built_natively_equal_their_constructors():
    """ObjectId and UUID are built without their Python __init__: the same objects as the classes
    make (slots, and nothing else)."""
    oid = ObjectId()
    native = _core.bson_decode(bson.encode({"o": oid}))["o"]
    assert native == oid and native.binary == oid.binary and type(native.binary) is bytes
    assert not hasattr(native, "__dict__") and ObjectId.__slots__ == ("__id",)
    u = uuid.uuid4()
    opts = CodecOptions(uuid_representation=UuidRepresentation.STANDARD)
    nu = _core.bson_decode(bson.encode({"u": u}, codec_options=opts), opts)["u"]
    assert nu == u and nu.is_safe is uuid.UUID(bytes=u.bytes).is_safe
    assert set(uuid.UUID.__slots__) == {"int", "is_safe", "__weakref__"}


# ---- encode ----


class Weird:
    pass


bad_leaves = st.one_of(
    st.just(object()),
    st.just({1, 2}),
    st.integers(2**63, 2**70),
    st.integers(-(2**70), -(2**63) - 1),
    st.just(Weird()),
    st.text(st.characters(whitelist_categories=("Cs",)), min_size=1, max_size=2),  # surrogates
    st.just(Regex("a\x00b")),
    st.just(Regex(b"\xff")),
    st.just(DatetimeMS(0)),
)
bad_keys = st.one_of(keys, st.sampled_from(["a\x00b", "$bad", "x.y"]), st.integers(0, 3), st.just(b"k"))
bad_values = st.recursive(
    st.one_of(leaves, bad_leaves),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(bad_keys, children, max_size=4),
        st.dictionaries(keys, children, max_size=3).map(MyMap),
    ),
    max_leaves=15,
)


@codec_settings
@given(doc=docs, opts=encode_options, check_keys=st.booleans())
def test_encode_random_documents(doc, opts, check_keys):
    assert_same_outcome(
        outcome(_core.bson_encode, doc, check_keys, opts), outcome(bson.encode, doc, check_keys, opts)
    )


@codec_settings
@given(
    doc=st.one_of(st.dictionaries(bad_keys, bad_values, max_size=5), bad_values),
    opts=encode_options,
    check_keys=st.booleans(),
)
def test_encode_bad_documents(doc, opts, check_keys):
    native = outcome(_core.bson_encode, doc, check_keys, opts)
    oracle = outcome(bson.encode, doc, check_keys, opts)
    assert_same_outcome(native, oracle)
    if oracle[0] == "err" and isinstance(oracle[1], bson.errors.InvalidDocument):
        assert_same(native[1].document, oracle[1].document)


def test_encode_raw_and_mappings():
    raw = RawBSONDocument(bson.encode({"b": 1, "_id": 2}))
    for doc in (raw, {"x": raw}, SON([("a", 1), ("_id", 3)]), OrderedDict(z=1, _id=2), MyMap(a=1, _id=5)):
        assert _core.bson_encode(doc) == bson.encode(doc)
    view = RawBSONDocument(memoryview(bson.encode({"v": "y" * 5000})))
    assert _core.bson_encode(view) == bson.encode(view) and type(_core.bson_encode(view)) is bytes
    for bad in ([1], 5, "s", None):
        assert_same_outcome(outcome(_core.bson_encode, bad), outcome(bson.encode, bad))
    assert_same_outcome(
        outcome(_core.bson_encode, {"a": 1}, False, {"tz_aware": 1}),
        outcome(bson.encode, {"a": 1}, False, {"tz_aware": 1}),
    )


def test_encode_fallback_encoder_goes_to_bson():
    opts = CodecOptions(type_registry=TypeRegistry(fallback_encoder=lambda v: str(v)))
    doc = {"w": Weird(), "n": [1, {2, 3}]}
    assert _core.bson_encode(doc, codec_options=opts) == bson.encode(doc, codec_options=opts)


# ---- inputs bson itself would crash on, or that change under the encoder: no crash ----


def nested(depth, array=False):
    """{a: {a: ... {a: null}}} (or arrays) depth levels deep, in linear time: level i from the
    inside is 8 + 8 * i bytes (length, type, key "a", NUL)."""
    head = [struct.pack("<i", 8 + 8 * (depth - i)) + (b"\x04" if array else b"\x03") + b"a\x00" for i in range(depth)]
    return b"".join(head) + wrap(b"\x0aa\x00") + b"\x00" * depth


@pytest.mark.parametrize("array", [False, True])
def test_deep_nesting(array):
    for depth in (10, 400, 5000, 100000):
        data = nested(depth, array)
        assert_same_outcome(outcome(_core.bson_decode, data), outcome(bson.decode, data))
    doc = {}
    inner = doc
    for _ in range(5000):
        inner["a"] = [{}] if array else {}
        inner = inner["a"][0] if array else inner["a"]
    assert_same_outcome(outcome(_core.bson_encode, doc), outcome(bson.encode, doc))
    selfref = {}
    selfref["me"] = selfref
    assert_same_outcome(outcome(_core.bson_encode, selfref), outcome(bson.encode, selfref))


def test_deep_nesting_with_a_high_recursion_limit():
    """Past sys.getrecursionlimit(), the codec's own depth limit keeps the C stack safe."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(10**6)
    try:
        with pytest.raises(bson.errors.InvalidBSON, match="recursion"):
            _core.bson_decode(nested(200000))
        with pytest.raises(bson.errors.InvalidBSON, match="recursion"):
            _core.bson_decode(nested(200000, array=True))
        doc = {}
        inner = doc
        for _ in range(200000):
            inner["a"] = {}
            inner = inner["a"]
        with pytest.raises(RecursionError):
            _core.bson_encode(doc)
    finally:
        sys.setrecursionlimit(old)


def test_huge_lengths():
    for data in (
        b"\xff\xff\xff\x7f" + b"\x00",
        wrap(b"\x02a\x00" + b"\xff\xff\xff\x7f" + b"ab\x00"),
        wrap(b"\x02a\x00" + b"\xff\xff\xff\xff" + b"ab\x00"),
        wrap(b"\x05a\x00" + b"\xfb\xff\xff\xff\x00"),
        wrap(b"\x05a\x00" + b"\x03\x00\x00\x00\x02" + b"\x01\x00\x00\x00"),
        wrap(b"\x0fa\x00" + b"\xff\xff\xff\x7f" + b"\xf0\xff\xff\xff" + b"x\x00" + wrap(b"")),
        wrap(b"\x0fa\x00" + struct.pack("<ii", 14, 2) + b"x\x00" + b"\xff\xff\xff\xff"),
        wrap(b"\x03a\x00" + b"\xff\xff\xff\x7f"),
        wrap(b"\x04a\x00" + b"\x05\x00\x00\x00"),
        wrap(b"\x04a\x00" + wrap(b"\x02" + b"0" * 20)),
    ):
        assert_same_outcome(outcome(_core.bson_decode, data), outcome(bson.decode, data))
        assert_same_outcome(outcome(_core.bson_decode_all, data), outcome(bson.decode_all, data))


class Mutator:
    """A value whose encoding (bson asks it for _type_marker) empties the containers given."""

    def __init__(self, *targets):
        self.targets = targets

    @property
    def _type_marker(self):
        for t in self.targets:
            t.clear()
        return 0


def test_documents_that_change_while_encoded():
    for _ in range(50):
        d = {f"k{i}": "v" * 100 for i in range(20)}
        d["m"] = Mutator(d)
        outcome(_core.bson_encode, d)
        lst = ["x" * 50 for _ in range(20)]
        lst.insert(3, Mutator(lst))
        outcome(_core.bson_encode, {"l": lst})
        inner = {"a": [1, 2, {"q": "w" * 40}]}
        outer = {"i": inner, "z": Mutator(inner["a"], inner)}
        outcome(_core.bson_encode, outer)


def test_errors_leave_the_buffer_usable():
    """A failed encode raises and the next one is whole (the buffer is reset to its start)."""
    for _ in range(3):
        with pytest.raises(bson.errors.InvalidDocument):
            _core.bson_encode({"a": "x" * 1000, "b": object()})
        assert _core.bson_encode({"a": 1}) == bson.encode({"a": 1})

"""The BSON Corpus (mongodb/specifications, source/bson-corpus) through the core's native codec, with
PyMongo's bson as the oracle: every valid case decodes to exactly what bson gives (types, key order)
under several CodecOptions and re-encodes to the canonical bytes wherever bson itself does; every
decodeErrors case raises what bson raises (InvalidBSON, same message). No server is needed.

The corpus is read from ASYNCMONGO_BSON_CORPUS or ../shared/data/bson-corpus; when it is absent the
suite fails, it does not skip."""

from __future__ import annotations

import json
import os
import pathlib
from collections import OrderedDict

import bson
import pytest
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from bson.son import SON

from asyncmongo import _core
from tests.bson_same import assert_same, assert_same_outcome, outcome

# The codec and the spec corpora do not depend on the loop or the wake-up path.
pytestmark = pytest.mark.modes_inside

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = pathlib.Path(
    os.environ.get("ASYNCMONGO_BSON_CORPUS", ROOT.parent / "shared" / "data" / "bson-corpus")
)


def load_corpus():
    """{file name: (valid cases, decodeErrors cases)}, or the reason it is missing."""
    files = sorted(CORPUS.glob("*.json")) if CORPUS.is_dir() else []
    if not files:
        # Reported by test_corpus_present: a missing corpus must not look like a passing suite.
        return {}, f"BSON corpus not found at {CORPUS} (set ASYNCMONGO_BSON_CORPUS)"
    corpus = {}
    for f in files:
        data = json.loads(f.read_text())
        corpus[f.name] = (data.get("valid", []), data.get("decodeErrors", []))
    return corpus, None


# One test per corpus file and check, the cases looped inside: the suite's autouse fixtures cost a
# gc.collect() per test, which nearly a thousand cases times the options would make minutes.
CORPUS_FILES, MISSING = load_corpus()
FILES = sorted(CORPUS_FILES) or ["<missing>"]
WITH_VALID = [f for f in FILES if f in CORPUS_FILES and CORPUS_FILES[f][0]] or ["<missing>"]
WITH_ERRORS = [f for f in FILES if f in CORPUS_FILES and CORPUS_FILES[f][1]] or ["<missing>"]


def cases(fname, kind):
    if fname not in CORPUS_FILES:
        pytest.fail(MISSING or f"{fname} not in the corpus")
    return CORPUS_FILES[fname][0 if kind == "valid" else 1]


OPTIONS = {
    "default": bson.DEFAULT_CODEC_OPTIONS,
    "tz_aware": CodecOptions(tz_aware=True),
    "standard_uuid": CodecOptions(uuid_representation=UuidRepresentation.STANDARD),
    "python_legacy_uuid": CodecOptions(uuid_representation=UuidRepresentation.PYTHON_LEGACY),
    "son": CodecOptions(document_class=SON),
    "ordered_dict": CodecOptions(document_class=OrderedDict),
    "raw": CodecOptions(document_class=RawBSONDocument),
    "datetime_auto": CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO),
    "datetime_clamp": CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_CLAMP),
    "datetime_ms": CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS),
    "replace_errors": CodecOptions(unicode_decode_error_handler="replace"),
}

# Valid cases whose canonical bytes bson itself cannot write back, and why. The native codec must
# then write exactly what bson writes (checked below), which is not the canonical form:
NO_ROUND_TRIP = {
    # DBPointer decodes to DBRef(collection, id), which encodes as a {$ref, $id} document.
    "dbpointer.json",
    # Symbol decodes to str, which encodes as a BSON string (type 0x02, not 0x0E).
    "symbol.json",
    # Undefined decodes to None, which encodes as BSON null (0x0A, not 0x06).
    "undefined.json",
    # Holds a DBPointer, a Symbol and an Undefined (the three above).
    "multi-type-deprecated.json",
}
# Cases bson decodes only with some options: "Y10K" (year 10000) is out of datetime's range, so
# under DATETIME it raises InvalidBSON in both codecs, and round-trips under DATETIME_AUTO (as
# DatetimeMS). The round trip is checked with the first options listed that decode the case.
ROUND_TRIP_OPTIONS = ("default", "datetime_auto")


def test_corpus_present():
    assert MISSING is None, MISSING
    assert len(CORPUS_FILES) == 31
    assert sum(len(v) + len(e) for v, e in CORPUS_FILES.values()) > 800


@pytest.mark.parametrize("fname", WITH_VALID)
@pytest.mark.parametrize("opts", list(OPTIONS))
def test_valid_decodes_as_bson(fname, opts):
    o = OPTIONS[opts]
    for case in cases(fname, "valid"):
        for key in ("canonical_bson", "degenerate_bson", "converted_bson"):
            if key not in case:
                continue
            data = bytes.fromhex(case[key])
            what = f"{case['description']} ({key})"
            assert_same_outcome(outcome(_core.bson_decode, data, o), outcome(bson.decode, data, o), what)
            assert_same_outcome(
                outcome(_core.bson_decode_all, data * 2, o), outcome(bson.decode_all, data * 2, o), what
            )
            # Any bytes-like object, read in place.
            assert_same_outcome(
                outcome(_core.bson_decode, memoryview(data), o),
                outcome(bson.decode, memoryview(data), o),
                what,
            )


@pytest.mark.parametrize("fname", WITH_VALID)
def test_valid_reencodes(fname):
    for case in cases(fname, "valid"):
        canonical = bytes.fromhex(case["canonical_bson"])
        for name in ROUND_TRIP_OPTIONS:
            o = OPTIONS[name]
            kind, value = outcome(bson.decode, canonical, o)
            if kind == "ok":
                break
        else:
            pytest.fail(f"bson decodes {case['description']!r} under none of {ROUND_TRIP_OPTIONS}")
        native = _core.bson_encode(_core.bson_decode(canonical, o), codec_options=o)
        oracle = bson.encode(value, codec_options=o)
        assert native == oracle, case["description"]
        if fname in NO_ROUND_TRIP:
            # If bson learns to round-trip these, the list above is stale.
            assert native != canonical, case["description"]
        elif not case.get("lossy"):
            assert native == canonical, case["description"]
        # Encoding the value bson decoded gives the same bytes too.
        assert _core.bson_encode(value, codec_options=o) == oracle, case["description"]


@pytest.mark.parametrize("fname", WITH_ERRORS)
@pytest.mark.parametrize("opts", ["default", "son", "replace_errors", "raw"])
def test_decode_errors_raise_as_bson(fname, opts):
    o = OPTIONS[opts]
    for case in cases(fname, "errors"):
        data = bytes.fromhex(case["bson"])
        what = case["description"]
        oracle = outcome(bson.decode, data, o)
        if opts == "default":
            assert oracle[0] == "err" and isinstance(oracle[1], bson.errors.InvalidBSON), what
        assert_same_outcome(outcome(_core.bson_decode, data, o), oracle, what)
        assert_same_outcome(
            outcome(_core.bson_decode_all, data, o), outcome(bson.decode_all, data, o), what
        )
        # Every truncation of an invalid document is refused as bson refuses it, never a crash.
        for cut in range(len(data)):
            assert_same_outcome(
                outcome(_core.bson_decode, data[:cut], o), outcome(bson.decode, data[:cut], o), what
            )


@pytest.mark.parametrize("fname", WITH_VALID)
def test_valid_truncated_and_corrupted(fname):
    """Every truncation, and every single-byte change at each position, of a valid document."""
    o = OPTIONS["default"]
    for case in cases(fname, "valid"):
        data = bytes.fromhex(case["canonical_bson"])
        what = case["description"]
        for cut in range(len(data)):
            assert_same_outcome(
                outcome(_core.bson_decode, data[:cut], o), outcome(bson.decode, data[:cut], o), what
            )
        for i in range(len(data)):
            for byte in (0x00, 0x01, 0x7F, 0xFF):
                bad = bytearray(data)
                bad[i] = byte
                bad = bytes(bad)
                assert_same_outcome(outcome(_core.bson_decode, bad, o), outcome(bson.decode, bad, o), what)


def test_valid_all_in_one_batch():
    """decode_all of every valid canonical document, concatenated, as one call."""
    assert MISSING is None, MISSING
    blobs = []
    for valid, _ in CORPUS_FILES.values():
        for case in valid:
            data = bytes.fromhex(case["canonical_bson"])
            if outcome(bson.decode, data)[0] == "ok":
                blobs.append(data)
    batch = b"".join(blobs)
    for o in OPTIONS.values():
        assert_same_outcome(outcome(_core.bson_decode_all, batch, o), outcome(bson.decode_all, batch, o))
    assert_same(_core.bson_decode_all(batch), bson.decode_all(batch))

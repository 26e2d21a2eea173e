"""The core's native BSON codec against PyMongo's bson and orjson (the floor: the same content as
JSON, the same Python objects built or read). A benchmark, not a test: run it as
``python -m benchmarks.codec [--rounds N] [--data DIR]``.

Data: the Driver Performance Benchmarking set (tweet.json, small_doc.json, large_doc.json), unpacked
from ../shared/data/driver-benchmark/single_and_multi_document.tgz into a scratch folder (git-ignored)
when --data is not given. Each figure is the median of several rounds of one timed loop; ratios are
bson's (or orjson's) time over the native codec's (above 1: the native codec is faster)."""

from __future__ import annotations

import argparse
import gc
import json
import pathlib
import platform
import statistics
import sys
import tarfile
import time

import bson
import orjson
import pymongo

from asyncmongo import _core

ROOT = pathlib.Path(__file__).resolve().parent.parent
TGZ = ROOT.parent / "shared" / "data" / "driver-benchmark" / "single_and_multi_document.tgz"
SCRATCH = ROOT / "scratch" / "single_and_multi_document"


def data_dir(arg: str | None) -> pathlib.Path:
    if arg:
        return pathlib.Path(arg)
    if not (SCRATCH / "tweet.json").exists():
        if not TGZ.exists():
            sys.exit(f"benchmark data not found: {TGZ} (or pass --data DIR)")
        with tarfile.open(TGZ) as tar:
            members = [m for m in tar.getmembers() if m.name.endswith(".json")]
            tar.extractall(SCRATCH.parent, members=members)
    return SCRATCH


def median_time(fn, rounds: int, min_time: float = 0.05) -> float:
    """Median over rounds of the time of one call (each round loops until min_time has passed)."""
    fn()
    n = 1
    while True:
        t = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t >= min_time / 4:
            break
        n *= 2
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n)
    return statistics.median(times)


def row(name, native, oracle, floor):
    return (
        f"{name:<34} {native * 1e6:>11.1f} {oracle * 1e6:>11.1f} {floor * 1e6:>11.1f}"
        f" {oracle / native:>8.2f}x {floor / native:>8.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--data")
    args = ap.parse_args()
    d = data_dir(args.data)
    tweet = json.loads((d / "tweet.json").read_text())
    small = json.loads((d / "small_doc.json").read_text())
    large = json.loads((d / "large_doc.json").read_text())

    print(f"python {platform.python_version()}, pymongo {pymongo.__version__} (bson C: {bson.has_c()}), orjson "
          f"{orjson.__version__}, libbson {_core.BSON_VERSION}, {platform.machine()}")
    print(f"median of {args.rounds} rounds; times in microseconds per call; gc enabled (as in use)")
    head = f"{'task':<34} {'native':>11} {'bson':>11} {'orjson':>11} {'vs bson':>9} {'vs orjson':>9}"
    print(head)
    print("-" * len(head))
    gc.collect()

    results = []
    # Decode: batches of documents as a reply holds them, against orjson.loads of the same content.
    for name, doc, counts in (("tweet", tweet, (100, 1000)), ("small_doc", small, (100, 1000)),
                              ("large_doc", large, (1,))):
        one = bson.encode(doc)
        for n in counts:
            batch = one * n
            text = orjson.dumps([doc] * n)
            assert _core.bson_decode_all(batch) == bson.decode_all(batch)
            native = median_time(lambda: _core.bson_decode_all(batch), args.rounds)
            oracle = median_time(lambda: bson.decode_all(batch), args.rounds)
            floor = median_time(lambda: orjson.loads(text), args.rounds)
            label = f"decode {name} x{n} ({len(batch):,} B)"
            results.append((label, native, oracle, floor))
            print(row(label, native, oracle, floor), flush=True)
    # Encode: one document per call, as insert_one / insert_many give them.
    for name, doc, n in (("tweet", tweet, 100), ("small_doc", small, 100), ("large_doc", large, 1)):
        docs = [json.loads(json.dumps(doc)) for _ in range(n)]
        assert _core.bson_encode(docs[0]) == bson.encode(docs[0])
        native = median_time(lambda: [_core.bson_encode(x) for x in docs], args.rounds)
        oracle = median_time(lambda: [bson.encode(x) for x in docs], args.rounds)
        floor = median_time(lambda: [orjson.dumps(x) for x in docs], args.rounds)
        label = f"encode {name} x{n} (one per call)"
        results.append((label, native, oracle, floor))
        print(row(label, native, oracle, floor), flush=True)


if __name__ == "__main__":
    main()

"""What the feature store's damage check costs a reader: a store of Qwen2-Audio-7B-sized rows
(256 KiB per clip) is read whole and cast to float32 (what the classifiers do with it) on a
freshly opened store, every batch checked against its checksum once; the seconds spent in the
checks are timed within each read and printed with their share of the read (medians over rounds,
page cache warm). A second read of the same open store checks nothing again.

    python benchmarks/store_checksum.py                 # 1000 clips (256 MiB), batches of 8
    python benchmarks/store_checksum.py --clips 4000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Sequence

import numpy as np

import calm.store
from calm.features import HeadIndex
from calm.store import FeatureStore


def _read_all(root: str, key: dict, heads: HeadIndex) -> tuple[float, float, float]:
    """Seconds for open + read + cast to float32, of which in the checks, and for a second read +
    cast of the same store."""
    spent = [0.0]
    fault = calm.store._fault

    def timed(batch: np.ndarray, digest: str | None) -> str | None:
        start = time.perf_counter()
        try:
            return fault(batch, digest)
        finally:
            spent[0] += time.perf_counter() - start

    calm.store._fault = timed
    start = time.perf_counter()
    store = FeatureStore.open(root, key, heads)
    np.asarray(store.read().X, dtype=np.float32)
    first = time.perf_counter() - start
    start = time.perf_counter()
    np.asarray(store.read().X, dtype=np.float32)
    calm.store._fault = fault
    return first, spent[0], time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    heads = HeadIndex.from_tuples(("self_attn", layer, head) for layer in range(32) for head in range(32))
    key = {"model_id": "benchmark", "prompt": "p"}
    rng = np.random.default_rng(0)
    reads, checks, second = [], [], []
    with tempfile.TemporaryDirectory() as root:
        with FeatureStore.open(root, key, heads) as store:
            for start in range(0, args.clips, args.batch_size):
                ids = [f"clip{i}" for i in range(start, min(start + args.batch_size, args.clips))]
                X = rng.standard_normal((len(ids), len(heads), 128), dtype=np.float32)
                store.append(ids, ids, X)
        size = sum(f.stat().st_size for f in os.scandir(next(os.scandir(root)).path))
        _read_all(root, key, heads)  # warm the page cache
        for _ in range(args.rounds):
            seconds, checking, again = _read_all(root, key, heads)
            reads.append(seconds)
            checks.append(checking)
            second.append(again)
    read, check = statistics.median(reads), statistics.median(checks)
    print(f"{args.clips} clips x 256 KiB ({size / 2**20:.0f} MiB), batches of {args.batch_size}, "
          f"{os.cpu_count()} cores; median of {args.rounds} rounds:")
    print(f"  open + read + cast to float32: {read:.3f} s, of which checking the batches {check:.3f} s "
          f"({100 * check / read:.0f}%, {size / 2**30 / check:.2f} GiB/s); a second read of the same open store "
          f"{statistics.median(second):.3f} s (no checks)")


if __name__ == "__main__":
    main()

"""Extraction on Ray (calm.distributed.extract_ray): 1 vs N CPU actors on the same clips, with
Ray's start-up cost, against the single-process ``calm.extract`` on one thread.

    python benchmarks/ray_extract.py                          # whisper-base, 32 clips of 5 s, 1 and 2 actors
    python benchmarks/ray_extract.py --model tiny:qwen2_audio --clips 64
    python benchmarks/ray_extract.py --gpus --actors 1 8      # on a GPU machine: 1 vs 8 GPU actors

Each actor reserves one CPU (so runs torch on one thread) or, with ``--gpus``, one GPU. Timings:

* ``ray.init``: starting a local cluster (``num_cpus`` = the largest actor count; no dashboard).
* per run, ``wall``: the whole ``extract_ray`` call into a fresh store (one model load on the
  cluster for the store key, actor start-up and model loads, extraction, store writes);
  ``first result``: seconds until the first batch came back (the start-up part of ``wall``);
  ``steady clips/s``: clips after the first batch over the time from the first batch to the last,
  as batches reach the driver (the rate that scales with actors).
* ``single process``: ``calm.extract`` in this process, one torch thread, model already loaded.
* driver side, what does not scale with actors: ``prepare`` (content hash and duration of each
  clip, before anything is dispatched) and ``store`` (``FeatureStore.append`` of batches of 64
  rows of Qwen2-Audio-7B's size, 1024 heads x 128, float16 as the actors send them, fsynced).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import soundfile
import torch

import calm.distributed as distributed
from calm.media import content_hash, duration
from calm.backbones import load_backbone
from calm.data.items import Item
from calm.features import HeadIndex
from calm.heads import extract
from calm.store import FeatureStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_throughput import cpu_name, make_clips  # noqa: E402  (the same synthetic clips)

PROMPT = "What is the sound in this recording? Answer in one word."
RATE = 16000


def write_clips(root: Path, count: int, seconds: float) -> list[Item]:
    items = []
    for n, clip in enumerate(make_clips(seconds, count, RATE)):
        path = root / f"clip{n:04d}.wav"
        soundfile.write(path, clip, RATE)
        items.append(Item(path.stem, path))
    return items


class ResultClock:
    """Wraps :func:`calm.distributed._results` to time-stamp each batch as it reaches the driver."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, int]] = []
        self._results = distributed._results

    def __enter__(self) -> "ResultClock":
        import pickle

        def timed(*args: Any, **kwargs: Any) -> Iterator[bytes]:
            for result in self._results(*args, **kwargs):
                ids, _, failures = pickle.loads(result)
                self.stamps.append((time.perf_counter(), len(ids) + len(failures)))
                yield result

        distributed._results = timed
        return self

    def __exit__(self, *exc: object) -> None:
        distributed._results = self._results


def ray_run(model: str, items: Sequence[Item], actors: int, batch_size: int, gpus: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as store, ResultClock() as clock:
        start = time.perf_counter()
        features = distributed.extract_ray(model, items, PROMPT, store, num_actors=actors,
                                           num_gpus_per_actor=1 if gpus else 0, batch_size=batch_size)
        wall = time.perf_counter() - start
    assert len(features) == len(items) and not features.failed
    (first, first_clips), (last, _) = clock.stamps[0], clock.stamps[-1]
    steady = (len(items) - first_clips) / (last - first) if last > first else float("nan")
    return {"wall": wall, "first": first - start, "steady": steady, "overall": len(items) / wall}


def single_process(model: str, items: Sequence[Item], batch_size: int, device: str) -> float:
    backbone = load_backbone(model, device=device)
    extract(backbone, items[:batch_size], PROMPT, batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    extract(backbone, items, PROMPT, batch_size=batch_size)
    return len(items) / (time.perf_counter() - start)


def prepare_rate(items: Sequence[Item]) -> float:
    """Clips/s of the driver's preparation: content hash and duration, as extract_ray does."""
    start = time.perf_counter()
    for item in items:
        content_hash(item.audio), duration(item.audio)
    return len(items) / (time.perf_counter() - start)


def store_rate(batches: int = 8, rows: int = 64, heads: int = 1024, dim: int = 128) -> tuple[float, float]:
    """Clips/s and MB/s (float16 written) of the single writer, on Qwen2-Audio-7B-sized rows."""
    index = HeadIndex.from_tuples((f"layer{h // 32}", h // 32, h % 32) for h in range(heads))
    X = np.random.default_rng(0).standard_normal((rows, heads, dim)).astype(np.float16)  # as actors send them
    with tempfile.TemporaryDirectory() as root, FeatureStore.open(root, {"benchmark": 1}, index) as store:
        start = time.perf_counter()
        for b in range(batches):
            ids = [f"{b}-{r}" for r in range(rows)]
            store.append(ids, ids, X)
        seconds = time.perf_counter() - start
    return batches * rows / seconds, batches * X.size * 2 / seconds / 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gpus", action="store_true", help="one GPU per actor (else one CPU)")
    args = parser.parse_args(argv)
    import ray

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        items = write_clips(Path(folder), args.clips, args.seconds)
        start = time.perf_counter()
        ray.init(num_cpus=max(args.actors) + (1 if args.gpus else 0), include_dashboard=False,
                 logging_level=logging.WARNING)
        startup = time.perf_counter() - start
        rows = [(n, ray_run(args.model, items, n, args.batch_size, args.gpus)) for n in args.actors]
        ray.shutdown()
        single = single_process(args.model, items, args.batch_size, "cuda" if args.gpus else "cpu")
        prepare = prepare_rate(items)
    store_clips, store_mb = store_rate()
    print(f"{cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; python "
          f"{platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}")
    print(f"{args.model}, {args.clips} clips of {args.seconds:g} s, batch {args.batch_size}; "
          f"ray.init {startup:.1f} s; single process (1 thread): {single:.2f} clips/s")
    print(f"driver: prepare {prepare:.0f} clips/s (hash + duration); store {store_clips:.0f} clips/s "
          f"({store_mb:.0f} MB/s float16) at 1024 heads x 128\n")
    print("| actors | wall s | first result s | overall clips/s | steady clips/s | steady vs 1 actor |")
    print("|---:|---:|---:|---:|---:|---:|")
    base = rows[0][1]["steady"]
    for n, row in rows:
        print(f"| {n} | {row['wall']:.1f} | {row['first']:.1f} | {row['overall']:.2f} | {row['steady']:.2f} "
              f"| {row['steady'] / base:.2f}x |")


if __name__ == "__main__":
    main()

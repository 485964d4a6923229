"""Prepare every dev set and write its Whisper-base head features as ``<out>/<task>.npz`` + ``.json``.

The dev sets are the tasks calm chooses its methods and defaults on (docs/devsets.md): the two
demo tasks and the ``calm data prepare`` recipes of :mod:`calm.devdata.devsets`. Features come from
the offline Whisper base with a 5 s encoder window (the demo's setting) and are cached in the
feature store, so a rerun only rewrites the files.

    PYTHONPATH=src python scripts/devsets.py --out /work/devfeatures [--tasks spoken-numbers ...]

Each ``<task>.npz`` holds ``X`` (float16 [N, K, D]), ``y`` (labels), ``ids``, ``split`` and
``source`` (str, ``''`` where the dataset has none); ``<task>.json`` says how support and query
are formed, the prompt, counts per class and the encoder window.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENCODER_SECONDS = 5.0
MODEL = "whisper-base"


@dataclass(frozen=True)
class DevTask:
    """One dev task: its recipe, the prompt its features are read under, and how to split it."""

    name: str
    kind: str  # "in-domain" or "shifted"
    prompt: str
    episodes: str  # how support and query are formed


DEV_TASKS: tuple[DevTask, ...] = (
    DevTask("spoken-numbers", "shifted", "Someone says a number.",
            "fixed split: support = espeak-ng TTS (30 per class), query = human Asterisk speakers (5 per class)"),
    DevTask("spoof", "shifted", "A short recording of speech.",
            "fixed split: support/query columns; query TTS voice variants unseen in support"),
    DevTask("instruments", "in-domain", "A short recording of a sound.",
            "no split: support drawn at random per seed, query = every other clip"),
    DevTask("instruments-shift", "shifted", "A short recording of a sound.",
            "fixed split: each family's instruments in two groups (odd/even GM programs); "
            "support = the larger group (20 per class), query = the other (16 per class)"),
    DevTask("languages", "in-domain", "A short recording of a sound.",
            "no split: support drawn at random per seed, query = every other clip"),
    DevTask("languages-shift", "shifted", "A short recording of a sound.",
            "fixed split: support = Tux Paint spoken names, query = Asterisk telephone prompts (40 + 40 per class)"),
    DevTask("drums", "in-domain", "A short recording of a sound.",
            "no split: support drawn at random per seed, query = every other clip"),
    DevTask("drums-shift", "shifted", "A short recording of a sound.",
            "fixed split: support = SoundFont drum kits (FluidR3, AVL; up to 20 per class), "
            "query = LMMS drum samples (3-16 per class)"),
)


def _column(items, key: str) -> np.ndarray:
    values = []
    for item in items:
        if key == "split":
            values.append(item.fold or "")
        else:
            values.append(str(item.meta.get(key) or ""))
    return np.array(values)


def write_task(task: DevTask, backbone, out: Path, store: Path, batch_size: int) -> dict:
    """Prepare, extract and write one task's npz and json; returns the json summary."""
    import calm
    from calm.devdata.recipes import prepare

    started = time.perf_counter()
    metadata = prepare(task.name, verbose=True)
    items = calm.load_dataset(metadata)
    features = calm.extract(backbone, items, task.prompt, batch_size=batch_size, store=store,
                            on_error="record", order="store")
    if features.failed:
        failed = list(features.failed.items())
        raise RuntimeError(f"{task.name}: {len(failed)} clips failed, e.g. {failed[:3]}")
    by_id = {item.id: item for item in items}
    rows = [by_id[i] for i in features.ids]
    y = np.array([str(item.label) for item in rows])
    split, source = _column(rows, "split"), _column(rows, "source")
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"{task.name}.npz", X=np.asarray(features.X, dtype=np.float16), y=y,
             ids=np.array(features.ids), split=split, source=source)
    counts = {s or "all": dict(sorted(Counter(y[split == s]).items())) for s in sorted(set(split))}
    summary = {
        "task": task.name, "kind": task.kind, "prompt": task.prompt, "model": MODEL,
        "encoder_seconds": backbone.encoder_seconds, "n": len(y), "classes": len(set(y)),
        "shape": list(features.X.shape), "chance": round(1 / len(set(y)), 4),
        "support_query": task.episodes, "n_per_class": counts, "metadata": str(metadata),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / f"{task.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{task.name}: {summary['shape']} {summary['classes']} classes -> {out / task.name}.npz "
          f"({summary['seconds']} s)", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/devfeatures"))
    parser.add_argument("--tasks", nargs="*", help="task names (default: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--encoder-seconds", type=float, default=ENCODER_SECONDS,
                        help=f"Whisper's encoder window (default {ENCODER_SECONDS:g}; 0: the model's full 30 s)")
    args = parser.parse_args(argv)
    import torch

    import calm
    from calm.cache import cache_dir

    torch.set_num_threads(args.threads)
    known = {task.name: task for task in DEV_TASKS}
    unknown = sorted(set(args.tasks or ()) - set(known))
    if unknown:
        parser.error(f"unknown tasks {unknown}; known: {sorted(known)}")
    backbone = calm.load_backbone(MODEL).with_options(encoder_seconds=args.encoder_seconds or None)
    for task in DEV_TASKS:
        if not args.tasks or task.name in args.tasks:
            write_task(task, backbone, args.out, cache_dir("features"), args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())

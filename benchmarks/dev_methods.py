"""Every method on every dev task, with the project's protocol: mean ± 95% interval over seeds.

A dev task is ``<dir>/<task>.npz`` (X float16 [N, K, D], y, ids, split, optional source) with
``<dir>/<task>.json`` (``kind``: ``in-domain`` or ``shifted``; how support and query are formed).
The folder is read afresh on every run. Items become :class:`calm.data.items.Item` (``split`` as
their fold, so the episodes follow the task's support/query split; an empty split: support drawn
at random per seed, query every other item) and features
:class:`calm.features.HeadFeatures`; :func:`calm.evaluation.protocol.evaluate_features` does the rest.

    python benchmarks/dev_methods.py --out docs/dev-results.md
    python benchmarks/dev_methods.py --tasks spoof --methods sav sav-white --seeds 3
    python benchmarks/dev_methods.py --params '{"sav-white": {"geometry": {"shrinkage": 0.3}}}'
    python benchmarks/dev_methods.py --tasks spoof --json a.json     # tasks in parallel processes,
    python benchmarks/dev_methods.py --merge a.json b.json --out docs/dev-results.md   # then one table

Shot counts a task cannot supply (fewer support items in some class) are skipped and said so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before numpy loads: threaded BLAS was 6x slower on a shared machine
import numpy as np  # noqa: E402
import torch

from calm.data.items import Item
from calm.evaluation.protocol import evaluate_features
from calm.evaluation.report import EvaluationReport
from calm.features import HeadFeatures, HeadIndex

DEV_DIR = Path("/work/devfeatures")
SHOTS = (1, 4, 5, 16)
METHODS = ("sav", "calm", "probe", "probe-tuned", "sav-white", "calm-white", "calm-tuned-white", "auto")


@dataclass
class DevTask:
    name: str
    kind: str
    features: HeadFeatures
    items: list[Item]
    info: dict


def load_task(npz: Path) -> DevTask:
    """One dev task from its npz and json (a missing or malformed file raises ValueError naming it)."""
    meta_path = npz.with_suffix(".json")
    if not meta_path.is_file():
        raise ValueError(f"{npz}: no {meta_path.name} beside it (kind, support/query)")
    info = json.loads(meta_path.read_text())
    with np.load(npz, allow_pickle=False) as data:
        missing = {"X", "y", "ids"} - set(data.files)
        if missing:
            raise ValueError(f"{npz}: missing array(s) {sorted(missing)}")
        X, y, ids = data["X"], data["y"].astype(str), data["ids"].astype(str)
        split = data["split"].astype(str) if "split" in data.files else None
    kind = info.get("kind")
    if kind not in ("in-domain", "shifted"):
        raise ValueError(f"{meta_path}: kind must be 'in-domain' or 'shifted', got {kind!r}")
    n_heads = X.shape[1]
    heads = HeadIndex.from_dict(info["heads"]) if "heads" in info else HeadIndex.from_tuples(
        ("head", 0, k) for k in range(n_heads))
    fingerprint = {"model_id": info.get("model"), "prompt": info.get("prompt"), "task": npz.stem}
    features = HeadFeatures(X, heads, ids.tolist(), fingerprint)
    folds = split.tolist() if split is not None else [""] * len(ids)
    items = [Item(i, None, label, fold=fold or None) for i, label, fold in zip(ids.tolist(), y.tolist(), folds)]
    return DevTask(npz.stem, kind, features, items, info)


def support_counts(task: DevTask) -> int:
    """The fewest support candidates in any class (items not in a query split when there is one)."""
    folds = {str(i.fold).lower() for i in task.items}
    pool = [i for i in task.items if not ({"support", "train"} & folds) or str(i.fold).lower() in ("support", "train")]
    labels = [i.label for i in pool]
    return min(labels.count(c) for c in set(labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=DEV_DIR)
    parser.add_argument("--tasks", nargs="*", default=None, help="task names (default: every npz in --dir)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--shots", nargs="+", type=int, default=list(SHOTS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--params", type=json.loads, default=None, help="JSON: method -> parameters")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown tables here")
    parser.add_argument("--json", type=Path, default=None, help="write the tables and summary rows here")
    parser.add_argument("--merge", nargs="+", type=Path, default=None, help="combine --json files of earlier runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        lines = [line for part in parts for line in part["lines"]]
        text = "\n".join(lines + averages([r for part in parts for r in part["summary"]], "accuracy")) + "\n"
        if args.out:
            args.out.write_text(text)
        print(text)
        return

    tasks = [load_task(p) for p in sorted(args.dir.glob("*.npz")) if args.tasks is None or p.stem in args.tasks]
    if not tasks:
        sys.exit(f"no dev tasks in {args.dir}")
    command = "python benchmarks/dev_methods.py " + " ".join(sys.argv[1:])
    load = os.getloadavg()[0]
    lines = [f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({args.threads} "
             f"thread(s)), load average {load:.1f} at start; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    summary = []
    for task in tasks:
        most = support_counts(task)
        shots = [k for k in args.shots if k <= most]
        skipped = [k for k in args.shots if k > most]
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = evaluate_features(task.features, task.items, shots=shots, seeds=args.seeds,
                                       methods=args.methods, params=args.params)
        seconds = time.perf_counter() - started
        rows = report.summary_rows()
        for row in rows:
            row.update(task=task.name, kind=task.kind)
        summary += rows
        lines += table(task, report, rows, skipped, seconds)
        print("\n".join(lines[-len(rows) - 8:]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"lines": lines, "summary": summary}, indent=1))
    text = "\n".join(lines + averages(summary, "accuracy")) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


def table(task: DevTask, report: EvaluationReport, rows: list[dict], skipped: list[int], seconds: float) -> list[str]:
    """Markdown: one row per method, one column per shot count (accuracy, mean ± 95% interval)."""
    shots = sorted({r["shots"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["shots"]): r for r in rows}
    best = {k: max(cell[m, k]["accuracy"] or 0 for m in methods) for k in shots}
    out = [f"### {task.name} ({task.kind}; {len(report.classes)} classes; {report.task})", "",
           f"{task.info.get('support_query', '')}; model {task.info.get('model')}, features "
           f"{tuple(task.features.X.shape)}; {seconds:.0f} s." + (f" Shots {skipped} skipped: too few support items."
                                                                  if skipped else ""), "",
           "| method | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|---|" + "---|" * len(shots)]
    for m in methods:
        cells = []
        for k in shots:
            r = cell[m, k]
            half = 100 * (r["accuracy_ci"] or 0)
            text = "—" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f} ± {half:.1f}"
            cells.append(f"**{text}**" if r["accuracy"] is not None and r["accuracy"] >= best[k] - 1e-12 else text)
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return out + [""]


def averages(summary: list[dict], metric: str) -> list[str]:
    """Mean accuracy per method over the in-domain and the shifted tasks, per shot count."""
    out = ["### Averages over tasks (accuracy, %)", ""]
    shots = sorted({r["shots"] for r in summary})
    methods = list(dict.fromkeys(r["method"] for r in summary))
    out += ["| tasks | method | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|---|---|" + "---|" * len(shots)]
    for kind in ("in-domain", "shifted"):
        names = sorted({r["task"] for r in summary if r["kind"] == kind})
        for m in methods:
            cells = []
            for k in shots:
                values = [r[metric] for r in summary if r["kind"] == kind and r["method"] == m and r["shots"] == k
                          and r[metric] is not None]
                cells.append(f"{100 * np.mean(values):.1f} ({len(values)})" if values else "—")
            out.append(f"| {kind}: {', '.join(names)} | {m} | " + " | ".join(cells) + " |")
    return out + ["", "(n): number of tasks averaged."]


if __name__ == "__main__":
    main()

"""calm scan on the detection dev benchmark: event F1 at a 0.5 s onset collar per background strategy.

    calm data prepare detection --out data/detection
    python benchmarks/scan_detection.py data/detection --task instruments --encoder-seconds 5 --hop 1 \\
        --thresholds 0.3 0.5 0.7 --store features/ --json instruments.json

For a task of ``calm data prepare detection`` (speech backgrounds) or ``detection-ambient`` (nature
ambience; both :mod:`calm.devdata.detection`), ``auto`` is fitted on
its 5 support clips per class and scans the task's long files, once per background strategy:

* ``named``: a background class (the task's background clips, cut from other parts of the same
  kind of recording) named with ``background``;
* ``quiet``: a background class of the long files' quietest windows
  (:func:`calm.scanning.background.quiet_clips`, as many as the named class has);
* ``reject``: no background class, windows the open-set score rejects are left out;
* ``threshold``: no background class and no rejection (the threshold alone; same scan as ``reject``).

The window is the median length of the class clips, at least the hop. Window features go to one
store, so every strategy and threshold after the first reads them back. Printed per strategy and
threshold: event precision, recall, F1 (micro, over all classes) and macro F1 at ``--collar``, and
the recall at each SNR.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile
import torch

from calm.backbones import BackboneOptions, load_backbone
from calm.data.items import Item
from calm.evaluation.detection import COLLAR, Span, score_events
from calm.predict import fit_classifier
from calm.scanning import ScanOptions, scan
from calm.scanning.background import quiet_clips

PROMPT = "A short recording of a sound."  # the dev tasks' prompt (docs/devsets.md)
BACKGROUND = "background"


def support_items(task_dir: Path) -> list[Item]:
    with open(task_dir / "support.csv", newline="", encoding="utf-8") as handle:
        return [Item(row["id"], task_dir / row["path"], label=row["label"]) for row in csv.DictReader(handle)]


def reference(task_dir: Path) -> list[tuple[Span, float]]:
    """The reference events (file resolved) with their SNRs."""
    long = task_dir / "long"
    with open(long / "reference.csv", newline="", encoding="utf-8") as handle:
        return [(Span(str((long / row["file"]).resolve()), float(row["onset"]), float(row["offset"]), row["label"]),
                 float(row["snr"])) for row in csv.DictReader(handle)]


def score(found: list[Span], refs: list[tuple[Span, float]], collar: float) -> dict:
    """Event scores of ``found``, with the recall at each SNR and the number of events found."""
    scores = score_events(found, [span for span, _ in refs], collar)
    by_snr = {}
    for snr in sorted({s for _, s in refs}):
        subset = [span for span, s in refs if s == snr]
        by_snr[f"{snr:g}"] = score_events(found, subset, collar).overall.tp / len(subset)
    return {**scores.as_dict(), "recall_by_snr_db": by_snr, "events_found": len(found)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the folder calm data prepare detection wrote")
    parser.add_argument("--task", required=True)
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder-seconds", type=float, default=None)
    parser.add_argument("--hop", type=float, default=None, help="seconds between windows (default: calm scan's)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5],
                        help="scan at each of these thresholds (after the first, from the store)")
    parser.add_argument("--collar", type=float, default=COLLAR)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--store", type=Path, required=True, help="feature store for support clips and windows")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    task_dir = args.data / args.task
    items = support_items(task_dir)
    classes = [i for i in items if i.label != BACKGROUND]
    named = [i for i in items if i.label == BACKGROUND]
    files = sorted((task_dir / "long").glob("*.wav"))
    seconds = sum(soundfile.info(f).duration for f in files)
    window = float(np.median([soundfile.info(i.audio).duration for i in classes]))
    hop = args.hop if args.hop is not None else min(window / 2, 0.5)
    window = max(window, hop)
    refs = reference(task_dir)
    print(f"{args.task}: {len(files)} files, {seconds / 60:.1f} min, {len(refs)} events, "
          f"{len({i.label for i in classes})} classes x {len(classes) // len({i.label for i in classes})} shots; "
          f"window {window:.2f} s, hop {hop:g} s; {args.model}, encoder window {args.encoder_seconds or 'default'} s, "
          f"{args.device}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
          flush=True)
    backbone = load_backbone(args.model, BackboneOptions(device=args.device, encoder_seconds=args.encoder_seconds))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        quiet = quiet_clips(files, window, len(named), Path(tmp) / "quiet")
        plans = {"named": (classes + named, BACKGROUND, False), "quiet": (classes + quiet, BACKGROUND, False),
                 "reject": (classes, None, True), "threshold": (classes, None, False)}
        for strategy, (support, background, reject) in plans.items():
            start = time.perf_counter()
            clf = fit_classifier(backbone, support, PROMPT, method="auto", store=args.store,
                                 batch_size=args.batch_size)
            for threshold in args.thresholds:
                options = ScanOptions(window=window, hop=hop, threshold=threshold, background=background,
                                      reject=reject)
                scanned = scan(backbone, clf, files, options, store=args.store, batch_size=args.batch_size)
                found = [Span(str(Path(e.file).resolve()), e.onset, e.offset, e.label)
                         for r in scanned for e in r.events]
                results.setdefault(strategy, {})[f"{threshold:g}"] = row = score(found, refs, args.collar)
                row["seconds"] = time.perf_counter() - start
                print(f"{args.task} {strategy:9s} threshold {threshold:g}: F1 {row['f1']:.3f}  precision "
                      f"{row['precision']:.3f}  recall {row['recall']:.3f}  macro F1 {row['macro_f1']:.3f}  "
                      f"({len(found)} events found, {row['tp']} hits); recall by SNR "
                      + ", ".join(f"{k} dB {v:.2f}" for k, v in row["recall_by_snr_db"].items())
                      + f"  [{row['seconds']:.0f} s]", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"task": args.task, "window": window, "hop": hop, "minutes": seconds / 60,
                                         "events": len(refs), "collar": args.collar,
                                         "strategies": results}, indent=1))


if __name__ == "__main__":
    main()

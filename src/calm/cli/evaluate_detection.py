"""``calm evaluate --task detection``: few-shot event detection on long files with reference events
(:mod:`calm.scanning.evaluation`); the options ``calm evaluate`` adds for it."""

from __future__ import annotations

import argparse

from calm.cli._common import check_writable_folder
from calm.cli._prepare import backbone_for
from calm.cli.scan import non_negative_seconds, probability, positive_seconds

UNUSED = (("query_fold", "--query-fold"), ("workers", "--workers"))
"""``calm evaluate`` options a detection evaluation has no use for: refused rather than ignored."""


def add_detection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "--task detection", "score few-shot event detection: --data gives the labelled clips the K-shot support is "
                            "drawn from, --reference the long files and their events")
    group.add_argument("--reference", default=None, metavar="CSV",
                       help="reference events: file,onset,offset,label (seconds; file relative to the CSV)")
    group.add_argument("--collar", type=non_negative_seconds, default=0.5, metavar="S",
                       help="onset collar: a found event within S seconds of a reference onset of its class is a hit "
                            "(default: 0.5)")
    group.add_argument("--threshold", type=probability, default=0.5,
                       help="probability a window's top class needs to count (default: 0.5)")
    group.add_argument("--background", default=None, metavar="CLASS",
                       help="a class of --data that means 'nothing of interest' (never an event)")
    group.add_argument("--reject", action="store_true", help="windows unlike every class are never part of an event")
    group.add_argument("--window", type=positive_seconds, default=None, metavar="S",
                       help="window length (default: the median length of the --data clips)")
    group.add_argument("--hop", type=positive_seconds, default=None, metavar="S",
                       help="hop between windows (default: half the window, at most 0.5 s)")
    group.add_argument("--merge-gap", type=non_negative_seconds, default=0.0, metavar="S",
                       help="join events of one class at most S seconds apart (default: 0)")


def run_detection(args: argparse.Namespace) -> int:
    """``calm evaluate`` for ``--task detection``; ValueError for a missing ``--reference`` or an
    option of the other tasks, before any model loads."""
    from calm.data.loaders import load_dataset  # numpy/torch: imported when the command runs, not for --help
    from calm.evaluation.detection import read_events  # numpy/torch: imported when the command runs, not for --help
    from calm.scanning import ScanOptions  # numpy/torch: imported when the command runs, not for --help
    from calm.scanning.evaluation import (  # numpy/torch: imported when the command runs, not for --help
        DetectionSetup, check_detection, evaluate_detection)

    if args.task != "detection":
        raise ValueError("--reference scores event detection: use it with --task detection")
    if args.reference is None:
        raise ValueError("--task detection needs --reference CSV (file,onset,offset,label of the long files' events)")
    for name, flag in UNUSED:
        if getattr(args, name) is not None:
            raise ValueError(f"--task detection does not use {flag}")
    check_writable_folder(args.out, "the report")
    options = ScanOptions(window=args.window, hop=args.hop, threshold=args.threshold, reject=args.reject,
                          background=args.background, merge_gap=args.merge_gap)
    setup = DetectionSetup(shots=args.shots, seeds=args.seeds, methods=args.methods, options=options,
                           collar=args.collar, loader_threads=args.loaders)
    items = [i for i in load_dataset(args.data) if i.label is not None]
    check_detection(items, read_events(args.reference), setup)
    backbone = backbone_for(args, args.prompt)
    report = evaluate_detection(backbone, items, args.reference, setup, prompt=args.prompt, store=args.store,
                                batch_size=args.batch_size, progress=not args.quiet)
    paths = report.write(args.out)
    print(report.markdown())
    print(f"report: {paths['json']} (and {paths['md'].name})")
    return 0

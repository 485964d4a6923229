"""``calm predict``: a saved classifier + audio (or video) files -> label and per-class probabilities."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from contextlib import nullcontext
from typing import Any, Sequence, TextIO

from calm.cli._common import add_backbone_arguments, add_on_error_argument, check_writable_file


def write_rows(rows: Sequence[Any], classes: Sequence[str], handle: TextIO, fmt: str) -> None:
    """Predictions as CSV (path, label, error, one probability column per class) or JSON lines."""
    if fmt == "jsonl":
        for row in rows:
            handle.write(json.dumps({"path": row.path, "label": row.label, "probabilities": row.probabilities,
                                     "error": row.error}) + "\n")
        return
    writer = csv.writer(handle)
    writer.writerow(["path", "label", "error", *(f"p_{c}" for c in classes)])
    for row in rows:
        writer.writerow([row.path, row.label or "", row.error or "",
                         *(f"{row.probabilities[c]:.6g}" if c in row.probabilities else "" for c in classes)])


def _run(args: argparse.Namespace) -> int:
    from calm.classifiers import load
    from calm.predict import load_backbone_for, predict_files

    out = check_writable_file(args.out, "the predictions file") if args.out else None
    clf = load(args.classifier)
    backbone = load_backbone_for(clf, args.model, device=args.device, dtype=args.dtype, fast=args.fast,
                                 compile=args.compile or None, encoder_seconds=args.encoder_seconds)
    rows = predict_files(backbone, clf, args.files, prompt=args.prompt, batch_size=args.batch_size,
                         on_error=args.on_error, progress=not args.quiet)
    with open(out, "w", newline="") if out else nullcontext(sys.stdout) as handle:
        write_rows(rows, [str(c) for c in clf.classes_], handle, args.format)
    failed = sum(row.error is not None for row in rows)
    if failed:
        print(f"calm predict: {failed} of {len(rows)} file(s) could not be read (see their rows' error)",
              file=sys.stderr)
    return 1 if failed == len(rows) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="label audio or video files with a saved classifier",
        description="Extract features of each file with the classifier's own model, options and prompt, and print "
                    "(or write) its label and per-class probabilities. Exit status 1 when no file could be read.")
    parser.add_argument("files", nargs="+", help="audio or video files")
    parser.add_argument("--classifier", required=True, help="file written by calm fit")
    parser.add_argument("--prompt", default=None,
                        help="feature prompt, only for a classifier that records none (default: the classifier's)")
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="default: csv")
    parser.add_argument("--out", default=None, help="output file (default: standard output)")
    add_backbone_arguments(parser, model_required=False,
                           model_help="the model (default: the one the classifier records; if given, it must "
                                      "give the same features)")
    add_on_error_argument(parser, "is a row with an error")
    parser.set_defaults(func=_run)

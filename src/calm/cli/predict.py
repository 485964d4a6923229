"""``calm predict``: a saved classifier + audio (or video) files -> label and per-class probabilities."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from contextlib import nullcontext
from typing import Any, Sequence, TextIO

from calm.cli._common import add_backbone_arguments, add_on_error_argument, check_writable_file
from calm.cli._prepare import check_files, encoder_window_hint


def write_rows(rows: Sequence[Any], classes: Sequence[str], handle: TextIO, fmt: str, score: bool = False,
               sets: bool = False, typicality: bool = False) -> None:
    """Predictions as CSV (path, label, error, [score], [set: a JSON list], [typicality], one
    probability column per class) or JSON lines (with ``score``, ``set`` and ``typicality`` keys
    when asked for)."""
    if fmt == "jsonl":
        for row in rows:
            record = {"path": row.path, "label": row.label, "probabilities": row.probabilities, "error": row.error}
            if score:
                record["score"] = row.score
            if sets:
                record["set"] = None if row.prediction_set is None else list(row.prediction_set)
            if typicality:
                record["typicality"] = row.typicality
            handle.write(json.dumps(record) + "\n")
        return
    writer = csv.writer(handle)
    writer.writerow(["path", "label", "error", *(["score"] if score else []), *(["set"] if sets else []),
                     *(["typicality"] if typicality else []), *(f"p_{c}" for c in classes)])
    for row in rows:
        extra = [f"{row.score:.6g}" if row.score is not None else ""] if score else []
        if sets:
            extra.append(json.dumps(list(row.prediction_set)) if row.prediction_set is not None else "")
        if typicality:
            extra.append(f"{row.typicality:.4g}" if row.typicality is not None else "")
        writer.writerow([row.path, row.label or "", row.error or "", *extra,
                         *(f"{row.probabilities[c]:.6g}" if c in row.probabilities else "" for c in classes)])


def _level(text: str) -> float:
    try:
        level = float(text)
    except ValueError:
        level = float("nan")
    if not 0 < level < 1:
        raise argparse.ArgumentTypeError(f"a coverage level strictly between 0 and 1, got {text!r}")
    return level


def _run(args: argparse.Namespace) -> int:
    from calm.classifiers import load
    from calm.predict import load_backbone_for, predict_files

    out = check_writable_file(args.out, "the predictions file") if args.out else None
    paths, truth = _inputs(args)
    clf = load(args.classifier)
    if args.on_error == "raise":
        check_files(paths)  # a missing or undecodable file: before the model loads
    backbone = load_backbone_for(clf, args.model, store=args.store, prompt=args.prompt, device=args.device,
                                 dtype=args.dtype, fast=args.fast, compile=args.compile or None,
                                 encoder_seconds=args.encoder_seconds, loaders=args.loaders)
    hint = encoder_window_hint(backbone, paths)
    if hint:
        warnings.warn(hint)
    rows = predict_files(backbone, clf, paths, prompt=args.prompt, batch_size=args.batch_size, store=args.store,
                         on_error=args.on_error, progress=not args.quiet, reject=args.reject,
                         unknown_label=args.unknown_label, sets=args.sets)
    if not out and hasattr(sys.stdout, "reconfigure"):  # a non-UTF-8 file name is written as its bytes
        sys.stdout.reconfigure(errors="surrogateescape")
    with open(out, "w", newline="", errors="surrogateescape") if out else nullcontext(sys.stdout) as handle:
        write_rows(rows, [str(c) for c in clf.classes_], handle, args.format, score=args.reject,
                   sets=args.sets is not None, typicality=args.reject or args.sets is not None)
    failed = sum(row.error is not None for row in rows)
    if failed:
        print(f"calm predict: {failed} of {len(rows)} file(s) could not be read (see their rows' error)",
              file=sys.stderr)
    if truth is not None and failed < len(rows):
        from calm.predict import score_predictions

        print(summary(score_predictions(rows, truth)), file=sys.stdout if out else sys.stderr)
    return 1 if failed == len(rows) else 0


def _inputs(args: argparse.Namespace) -> tuple[list[str], dict[str, Any] | None]:
    """The files to label, and with ``--data`` their labels by path."""
    if not args.files and args.data is None:
        raise ValueError("no files to label: give audio files, or --data with a labelled folder or CSV")
    paths = [str(p) for p in args.files]
    if args.data is None:
        return paths, None
    from calm.data.loaders import load_dataset

    items = [item for item in load_dataset(args.data) if item.media_path is not None]
    truth = {str(item.media_path): item.label for item in items if not isinstance(item.label, tuple)}
    return paths + [p for p in truth if p not in set(paths)], truth


def summary(scores: dict[str, Any]) -> str:
    """Accuracy, macro-F1 and the confusion matrix as text (row: true class, column: predicted)."""
    classes = scores["classes"]
    width = max(len(c) for c in classes)
    lines = [f"accuracy {scores['accuracy']:.1%} of {scores['n']} labelled clip(s), macro-F1 {scores['macro_f1']:.1%}"
             + (f"; {scores['unreadable']} unreadable, not scored" if scores["unreadable"] else ""),
             "confusion (row: true class, column: predicted):",
             " " * width + "  " + "  ".join(c.rjust(max(len(c), 3)) for c in classes)]
    for name, counts in zip(classes, scores["confusion"]):
        lines.append(name.ljust(width) + "  " + "  ".join(str(int(n)).rjust(max(len(c), 3))
                                                          for c, n in zip(classes, counts)))
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="label audio or video files with a saved classifier",
        description="Extract features of each file with the classifier's own model, options and prompt, and print "
                    "(or write) its label and per-class probabilities. With --reject or --sets, a typicality column "
                    "says how much each clip looks like the support clips (<= 0.1: unlike all of them), and a "
                    "calibrated classifier warns when the files as a batch do not look like its support set. Files "
                    "are checked (readable, a known audio or video header) before the model loads. Exit status 1 "
                    "when no file could be read.")
    parser.add_argument("files", nargs="*", help="audio or video files")
    parser.add_argument("--data", default=None,
                        help="a labelled folder or CSV (as for calm fit): label its clips too and report accuracy, "
                             "macro-F1 and the confusion matrix against its labels")
    parser.add_argument("--store", default=None,
                        help="feature store root: files already in it are not run again, new ones are added")
    parser.add_argument("--classifier", required=True, help="file written by calm fit")
    parser.add_argument("--prompt", default=None,
                        help="feature prompt, only for a classifier that records none (default: the classifier's)")
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="default: csv")
    parser.add_argument("--out", default=None, help="output file (default: standard output)")
    parser.add_argument("--reject", action="store_true",
                        help="label clips unlike every class (open-set score below the threshold chosen at fit for "
                             "its false-rejection rate, 5%% by default) as unknown; adds a score column; no clip is "
                             "dropped")
    parser.add_argument("--unknown-label", default="unknown", help="label of rejected clips (default: unknown)")
    parser.add_argument("--sets", type=_level, default=None, metavar="LEVEL",
                        help="also print each clip's conformal prediction set at this coverage, e.g. 0.9")
    add_backbone_arguments(parser, model_required=False,
                           model_help="the model (default: the one the classifier records; if given, it must "
                                      "give the same features)")
    add_on_error_argument(parser, "is a row with an error")
    parser.set_defaults(func=_run)

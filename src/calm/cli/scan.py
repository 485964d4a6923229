"""``calm scan``: a saved classifier + long recordings -> events (CSV, JSON, Audacity labels, Raven
selection tables) and, if asked, a timeline PNG per file."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from calm.cli._common import add_backbone_arguments, add_on_error_argument, check_writable_folder


def _number(accept: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    """An argparse type: a float that ``accept`` takes, else an error saying it wants ``wanted``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not accept(value):  # NaN fails every test
            raise argparse.ArgumentTypeError(f"{wanted}, got {text!r}")
        return value

    return parse


positive_seconds = _number(lambda v: v > 0, "a positive number of seconds")
non_negative_seconds = _number(lambda v: v >= 0, "a number of seconds, at least 0")
probability = _number(lambda v: 0 <= v <= 1, "a probability between 0 and 1")


def _run(args: argparse.Namespace) -> int:
    from calm.classifiers import load
    from calm.predict import load_backbone_for
    from calm.scanning import ScanOptions, scan
    from calm.scanning.outputs import file_stems, write_outputs
    from calm.scanning.run import default_hop, support_window

    out = check_writable_folder(args.out, "the scan's outputs")
    clf = load(args.classifier)
    backbone = load_backbone_for(clf, args.model, device=args.device, dtype=args.dtype, fast=args.fast,
                                 compile=args.compile or None, encoder_seconds=args.encoder_seconds)
    window = args.window or support_window(clf, backbone)
    options = ScanOptions(window=window, hop=args.hop or default_hop(window), threshold=args.threshold,
                          reject=args.reject, unknown_label=args.unknown_label, background=args.background,
                          merge_gap=args.merge_gap, on_error=args.on_error)
    results = scan(backbone, clf, args.files, options, store=args.store, batch_size=args.batch_size,
                   loader_threads=args.loaders, progress=not args.quiet)  # --loaders 0: windows read inline
    settings = {"classifier": str(args.classifier), "model": clf.fingerprint_.get("model_id"),
                "classes": [str(c) for c in clf.classes_], "window": options.window, "hop": options.hop,
                "threshold": options.threshold, "reject": options.reject, "background": options.background,
                "unknown_label": options.unknown_label, "merge_gap": options.merge_gap}
    written = write_outputs(results, out, settings, windows=args.windows)
    if args.timeline:
        from calm.scanning.timeline import plot_timeline

        for stem, result in zip(file_stems(results), results):
            if result.error is None:
                plot_timeline(result, out / f"{stem}.timeline.png", options.threshold)
    if args.reference:
        from calm.scanning.scoring import score_scan

        scores = score_scan(results, args.reference, args.collar)
        (out / "detection.json").write_text(json.dumps(scores.as_dict(), indent=1) + "\n")
        o = scores.overall
        print(f"against {args.reference} (onset collar {args.collar:g} s): F1 {o.f1:.3f}, precision {o.precision:.3f}, "
              f"recall {o.recall:.3f} ({o.tp} hit(s), {o.fp} false alarm(s), {o.fn} missed); macro-F1 "
              f"{scores.macro_f1:.3f}; per class in {out / 'detection.json'}")
    hours = sum(r.seconds for r in results) / 3600
    events = sum(len(r.events) for r in results)
    print(f"{events} event(s) in {len(results)} file(s), {hours:.2f} h of audio (window {options.window:g} s, hop "
          f"{options.hop:g} s); events: {written['csv']} (and {written['json'].name}, per file Audacity labels and "
          f"Raven selection tables{' and timelines' if args.timeline else ''} in {out})")
    failed = [r for r in results if r.error is not None]
    for result in failed:
        print(f"calm scan: {result.path}: {result.error}", file=sys.stderr)
    return 1 if failed and len(failed) == len(results) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scan", help="find where each class occurs in long recordings",
        description="Cut each recording into windows (by default as long as the classifier's support clips, every "
                    "half window, at most 0.5 s), classify every window with the classifier's own model and prompt, "
                    "and join runs of windows whose top class reaches the threshold into events. Files are read "
                    "window by window, never whole. Writes events.csv, events.json, and per file an Audacity label "
                    "track and a Raven selection table.")
    parser.add_argument("files", nargs="+", help="audio files or folders of them")
    parser.add_argument("--classifier", required=True, help="file written by calm fit")
    parser.add_argument("--out", default="calm-scan", help="output folder (default: calm-scan)")
    parser.add_argument("--window", type=positive_seconds, default=None, metavar="S",
                        help="window length (default: the median length of the classifier's support clips)")
    parser.add_argument("--hop", type=positive_seconds, default=None, metavar="S",
                        help="hop between windows (default: half the window, at most 0.5 s)")
    parser.add_argument("--threshold", type=probability, default=0.5,
                        help="probability a window's top class needs to count (default: 0.5)")
    parser.add_argument("--background", default=None, metavar="CLASS",
                        help="a class of the classifier that means 'nothing of interest' (never an event)")
    parser.add_argument("--reject", action="store_true",
                        help="windows unlike every class (open-set score below the classifier's threshold) are "
                             "unknown and never part of an event")
    parser.add_argument("--unknown-label", default="unknown", help="label of rejected windows (default: unknown)")
    parser.add_argument("--merge-gap", type=non_negative_seconds, default=0.0, metavar="S",
                        help="join events of one class at most S seconds apart (default: 0)")
    parser.add_argument("--timeline", action="store_true", help="also draw <file>.timeline.png per file")
    parser.add_argument("--windows", action="store_true",
                        help="also write <file>.windows.csv: every window's stretch, label (unknown if rejected) and "
                             "probabilities")
    parser.add_argument("--reference", default=None, metavar="CSV",
                        help="score the events against reference events (onset,offset,label[,file] in seconds; file "
                             "relative to the CSV) -> event-based precision, recall, F1 in detection.json")
    parser.add_argument("--collar", type=non_negative_seconds, default=0.5, metavar="S",
                        help="onset collar for --reference: a found event within S seconds of a reference onset of "
                             "its class is a hit (default: 0.5)")
    parser.add_argument("--store", default=None,
                        help="feature store root: a rerun, or another classifier on the same model and prompt, "
                             "reuses the windows' features")
    add_backbone_arguments(parser, model_required=False,
                           model_help="the model (default: the one the classifier records; if given, it must "
                                      "give the same features)")
    add_on_error_argument(parser, "is listed with its error in events.json")
    parser.set_defaults(func=_run)

"""``calm evaluate``: every method on a dataset, few-shot over several seeds -> report files."""

from __future__ import annotations

import argparse
import warnings

from calm import methods
from calm.choices import EVALUATE_TASKS
from calm.cli._common import DEFAULT_PROMPT, add_backbone_arguments, check_writable_folder
from calm.cli._prepare import backbone_for, encoder_window_hint
from calm.cli.evaluate_detection import add_detection_arguments, run_detection
from calm.errors import InputError
from calm.evaluation.config import EvaluationConfig


def _run(args: argparse.Namespace) -> int:
    from calm.data.loaders import load_dataset  # these import numpy, soundfile and torch: not at start-up
    from calm.evaluation.planning import check_evaluation
    from calm.evaluation.protocol import evaluate

    if args.task == "detection" or args.reference is not None:  # events in long files: calm.cli.evaluate_detection
        return run_detection(args)
    check_writable_folder(args.out, "the report")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    config = evaluation_config(args)
    items = load_dataset(args.data)
    check_evaluation(items, shots=config.shots, seeds=config.seeds, methods=config.methods, task=config.task,
                     query_fold=config.query_fold)  # before any model loads
    backbone = backbone_for(args, args.prompt)
    hint = encoder_window_hint(backbone, [item.media_path for item in items])
    if hint:
        warnings.warn(hint)
    report = evaluate(backbone, items, prompt=args.prompt, config=config, store=args.store, progress=not args.quiet)
    paths = report.write(args.out)
    print(report.markdown())
    print(f"report: {paths['json']} (and {', '.join(p.name for k, p in paths.items() if k != 'json')})")
    return 0


def evaluation_config(args: argparse.Namespace) -> EvaluationConfig:
    """The :class:`~calm.evaluation.config.EvaluationConfig` the flags ask for: ``--methods``,
    exactly those; else every method (those needing a chat model where they apply)."""
    named = args.methods is not None
    return EvaluationConfig(
        shots=args.shots, seeds=args.seeds, methods=args.methods, task=args.task, query_fold=args.query_fold,
        trust=not args.no_trust, workers=args.workers, batch_size=args.batch_size,
        zero_shot=False if args.no_zero_shot else (None if named else True),
        pseudo_label=False if args.no_pseudo_label else (None if named else True),
        samples=args.samples, max_new_tokens=args.max_new_tokens)


def register(subparsers: argparse._SubParsersAction) -> None:
    names = methods.names()
    parser = subparsers.add_parser(
        "evaluate", help="few-shot evaluation of every method on a dataset -> report.json, report.md, plots",
        description="Extract features once, then fit every method on K-shot support sets drawn per seed and "
                    "score it on disjoint queries (official folds or splits where the dataset has them). "
                    "Writes report.json (every number and the configuration), report.md and PNG plots. Shot "
                    "counts, methods and the report folder are checked before any model loads; with --store, a "
                    "rerun whose features are all stored loads no model weights.")
    parser.add_argument("--data", required=True,
                        help="a folder of class subfolders, a CSV (path,label[,split]), a dataset root or layout:path")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"feature prompt (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5], help="support items per class (default: 1 5)")
    parser.add_argument("--seeds", type=int, default=5, help="support draws per shot count (default: 5)")
    parser.add_argument("--methods", nargs="+", choices=names, default=None, metavar="METHOD",
                        help=f"methods (default: all that need no chat model): {', '.join(names)}")
    parser.add_argument("--task", choices=EVALUATE_TASKS, default=None,
                        help="default: detected from the labels; detection: events in long files (--reference)")
    parser.add_argument("--query-fold", default=None, help="hold out this fold as the query for every seed")
    parser.add_argument("--out", default="calm-report", help="report folder (default: calm-report)")
    parser.add_argument("--store", default=None, help="feature store root, so a rerun skips extraction")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes fitting episodes in parallel (default: one per core when the fits would "
                             "take more than a few seconds); the report is the same for every count")
    parser.add_argument("--no-zero-shot", action="store_true", help="leave out the zero-shot baseline")
    parser.add_argument("--no-pseudo-label", action="store_true", help="leave out the pseudo-label variant")
    parser.add_argument("--no-trust", action="store_true",
                        help="skip calibration, prediction-set and open-set metrics (they refit each method a few "
                             "times per episode)")
    parser.add_argument("--samples", type=int, default=5, help="sampled answers per support clip for pseudo-labels")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="answer length limit (default: 16)")
    add_backbone_arguments(parser)
    add_detection_arguments(parser)
    parser.set_defaults(func=_run)

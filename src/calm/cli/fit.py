"""``calm fit``: labelled clips -> a saved classifier (safetensors + JSON, with the feature fingerprint)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from calm.cli._common import DEFAULT_PROMPT, add_backbone_arguments, add_on_error_argument, load_model


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE read as JSON where it parses (``tau=0.1``, ``top_k=null``), else a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _run(args: argparse.Namespace) -> int:
    from calm.audio import AudioLoadError
    from calm.classifiers import save
    from calm.data.loaders import DatasetError, load_dataset
    from calm.predict import fit_classifier
    from calm.store import StoreError

    try:
        items = load_dataset(args.data)
    except DatasetError as error:
        print(f"calm fit: {error}", file=sys.stderr)
        return 1
    try:
        backbone = load_model(args)
        clf = fit_classifier(backbone, items, args.prompt, args.method, batch_size=args.batch_size, store=args.store,
                             on_error=args.on_error, progress=not args.quiet, **dict(args.param))
    except (OSError, StoreError, ValueError, TypeError) as error:
        print(f"calm fit: {error}", file=sys.stderr)
        if args.on_error == "raise" and isinstance(error, AudioLoadError):
            print("calm fit: use --on-error record to leave unreadable clips out and go on", file=sys.stderr)
        return 1
    path = save(clf, args.out)
    print(f"{path}: {type(clf).__name__} on {len(clf.classes_)} classes ({', '.join(map(str, clf.classes_[:8]))}"
          f"{', ...' if len(clf.classes_) > 8 else ''}); prompt {args.prompt!r}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from calm.evaluate.protocol import FEATURE_METHODS

    parser = subparsers.add_parser(
        "fit", help="fit a classifier on labelled clips and save it",
        description="Extract features of every labelled clip and fit one method on all of them. The file records "
                    "the model and prompt, so `calm predict` uses the same prompt and refuses another model.")
    parser.add_argument("--data", required=True,
                        help="a folder of class subfolders, a CSV (path,label[,split]), a dataset root or layout:path")
    parser.add_argument("--out", required=True, help="classifier file to write (.safetensors)")
    parser.add_argument("--method", choices=FEATURE_METHODS, default="auto", help="default: auto (the recommended method)")
    parser.add_argument("--param", type=parse_param, action="append", default=[], metavar="NAME=VALUE",
                        help="estimator parameter, repeatable (e.g. --param tau=0.1 --param top_k=50)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"feature prompt (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--store", default=None, help="feature store root, so a rerun skips extraction")
    add_backbone_arguments(parser)
    add_on_error_argument(parser, "is left out with a warning")
    parser.set_defaults(func=_run)

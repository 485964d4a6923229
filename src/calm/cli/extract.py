"""``calm extract``: head features of a dataset into a resumable feature store."""

from __future__ import annotations

import argparse
import sys

from calm.cli._common import (DEFAULT_PROMPT, add_backbone_arguments, add_on_error_argument, check_writable_folder,
                              load_model)


def _run(args: argparse.Namespace) -> int:
    from calm.data.loaders import load_dataset
    from calm.evaluation.answers import warn_label_leaks
    from calm.heads import extract, feature_fingerprint
    from calm.store import FeatureStore

    check_writable_folder(args.out, "the feature store")
    items = load_dataset(args.data)
    warn_label_leaks(args.prompt, items)
    backbone = load_model(args)
    print(f"{backbone.model_id} ({backbone.family}, {backbone.device}, {str(backbone.dtype).removeprefix('torch.')}): "
          f"{len(backbone.head_index())} heads; {len(items)} items from {args.data}", file=sys.stderr)
    with FeatureStore.open(args.out, feature_fingerprint(backbone, args.prompt), backbone.head_index()) as store:
        before = len(store.done_keys())
        features = extract(backbone, items, args.prompt, batch_size=args.batch_size, store=store,
                           on_error=args.on_error, progress=not args.quiet,
                           stop_after_last_site=args.stop_after_last_site, order="store")
        computed = len(store.done_keys()) - before
    done = len(features)
    print(f"store: {store.path}")
    print(f"done: {done} (computed {computed}, already stored {done - computed}); "
          f"failed: {len(features.failed)}; features [{done}, {features.X.shape[1]}, {features.X.shape[2]}] float16")
    for item_id, reason in sorted(features.failed.items()):
        print(f"  failed {item_id}: {reason}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract", help="extract per-head features of a dataset into a feature store",
        description="Run the model once per clip and store the per-head attention outputs at the last prompt "
                    "token. Reruns skip stored items; an interrupted run resumes.")
    parser.add_argument("--data", required=True,
                        help="a folder of class subfolders, a CSV (path,label[,split]) or layout:path")
    parser.add_argument("--out", required=True, help="feature store root (one subfolder per model and prompt)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"user text after the audio (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--stop-after-last-site", action="store_true",
                        help="end each forward pass after the last captured layer")
    add_backbone_arguments(parser)
    add_on_error_argument(parser, "is listed as failed in the store")
    parser.set_defaults(func=_run)

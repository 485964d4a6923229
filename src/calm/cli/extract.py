"""``calm extract``: head features of a dataset into a resumable feature store."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from calm.cli._common import (DEFAULT_PROMPT, add_backbone_arguments, add_on_error_argument, backbone_options,
                              check_writable_folder, load_model)
from calm.errors import InputError

if TYPE_CHECKING:
    from calm.data.items import Item
    from calm.engine import ExtractionConfig
    from calm.features import HeadFeatures


def _run(args: argparse.Namespace) -> int:
    from calm.data.loaders import load_dataset  # these import numpy, soundfile and torch: not at start-up
    from calm.evaluation.answers import warn_label_leaks
    from calm.heads import extract, feature_fingerprint
    from calm.store import FeatureStore

    if args.ray is None and (args.actors is not None or args.ray_timeout is not None):
        raise InputError("--actors and --ray-timeout need --ray")
    check_writable_folder(args.out, "the feature store")
    items = load_dataset(args.data)
    warn_label_leaks(args.prompt, items)
    if args.ray is not None:
        return _run_on_ray(args, items)
    backbone = load_model(args)
    print(f"{backbone.model_id} ({backbone.family}, {backbone.device}, {str(backbone.dtype).removeprefix('torch.')}): "
          f"{len(backbone.head_index())} heads; {len(items)} items from {args.data}", file=sys.stderr)
    with FeatureStore.open(args.out, feature_fingerprint(backbone, args.prompt), backbone.head_index()) as store:
        before = len(store.done_keys())
        features = extract(backbone, items, args.prompt, store=store, config=extraction_config(args))
        computed = len(store.done_keys()) - before
    _report(store.path, features, computed)
    return 0


def _run_on_ray(args: argparse.Namespace, items: list[Item]) -> int:
    """``--ray``: the same extraction on a pool of Ray actors (see :mod:`calm.distributed`)."""
    from calm.distributed import BackboneSpec, RayCluster, extract_ray  # torch: not at start-up
    from calm.store import FeatureStore

    cpu_only = args.device is not None and args.device.startswith("cpu")
    cluster = RayCluster(address=None if args.ray == "local" else args.ray, num_actors=args.actors,
                         num_gpus_per_actor=0 if cpu_only else None,
                         **({} if args.ray_timeout is None else {"connect_timeout": args.ray_timeout}))
    with _stderr_to_devnull() if args.quiet else nullcontext():
        features = extract_ray(BackboneSpec(args.model, backbone_options(args)), items, args.prompt, args.out,
                               config=extraction_config(args), cluster=cluster)
    with FeatureStore.open(args.out, features.fingerprint, features.heads) as store:
        _report(store.path, features, None)  # extract_ray said what it computed (stderr)
    return 0


def extraction_config(args: argparse.Namespace) -> ExtractionConfig:
    """The :class:`~calm.engine.ExtractionConfig` the flags ask for (rows in store order: the
    store is what the command writes)."""
    from calm.engine import ExtractionConfig  # torch: not at start-up

    return ExtractionConfig(batch_size=args.batch_size, on_error=args.on_error, progress=not args.quiet,
                            stop_after_last_site=args.stop_after_last_site, order="store")


@contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """File descriptor 2 to /dev/null meanwhile: ``--quiet`` silences what Ray's C++ core writes
    there (Python's loggers are quieted by extract_ray itself); an error still reaches the user,
    printed by calm.cli once this has ended."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _report(path: Path, features: HeadFeatures, computed: int | None) -> None:
    done = len(features)
    split = "" if computed is None else f" (computed {computed}, already stored {done - computed})"
    print(f"store: {path}")
    print(f"done: {done}{split}; failed: {len(features.failed)}; "
          f"features [{done}, {features.X.shape[1]}, {features.X.shape[2]}] float16")
    for item_id, reason in sorted(features.failed.items()):
        print(f"  failed {item_id}: {reason}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract", help="extract per-head features of a dataset into a feature store",
        description="Run the model once per clip and store the per-head attention outputs at the last prompt "
                    "token. Reruns skip stored items; an interrupted run resumes.")
    parser.add_argument("--data", required=True,
                        help="a folder of class subfolders, a CSV (path,label[,split]) or layout:path "
                             "(hf:PATH[:SPLIT] for a Hugging Face dataset on disk)")
    parser.add_argument("--out", required=True, help="feature store root (one subfolder per model and prompt)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"user text after the audio (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--stop-after-last-site", action="store_true",
                        help="end each forward pass after the last captured layer")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="extract on a pool of Ray actors (pip install 'calm-audio[ray]'): on a new local "
                             "cluster (all GPUs of this machine), or on the cluster at ADDRESS (auto, host:6379, "
                             "ray://host:10001)")
    parser.add_argument("--actors", type=int, default=None,
                        help="with --ray: number of actors (default: one per GPU of the cluster, else 1)")
    parser.add_argument("--ray-timeout", type=float, default=None, metavar="S",
                        help="with --ray ADDRESS: seconds to wait for the cluster to answer (default: 30)")
    add_backbone_arguments(parser)
    add_on_error_argument(parser, "is listed as failed in the store")
    parser.set_defaults(func=_run)

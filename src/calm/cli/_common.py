"""What several subcommands share: the default prompt, backbone arguments and options, and
checking an output path before any work is done."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from calm.choices import ON_ERROR
from calm.errors import InputError

DEFAULT_PROMPT = "What sound is in this audio clip?"
"""A neutral prompt: it names no classes, so it leaks no labels."""


def add_backbone_arguments(parser: argparse.ArgumentParser, model_required: bool = True,
                           model_help: str = "local model folder, hub id, whisper-base, whisper-tiny.en or "
                                             "tiny:<family>", model_default: str | None = None) -> None:
    """``--model`` (required unless ``model_required`` is False or it has a default), the backbone
    options (``--device``, ``--dtype``, ``--no-fast``, ``--compile``/``--no-compile``,
    ``--encoder-seconds``, ``--loaders``), ``--batch-size`` and ``--quiet``."""
    parser.add_argument("--model", required=model_required and model_default is None, default=model_default,
                        help=model_help)
    parser.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: 8)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--no-fast", dest="fast", action="store_false",
                        help="the reference path instead of the family's exact fast path (same features, slower)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile every layer (numerics change slightly, so features are keyed apart); "
                             "default: only on a GPU, for jobs large enough to repay it (docs/benchmarks.md)")
    parser.add_argument("--loaders", type=int, default=None, metavar="N",
                        help="worker processes that decode and resample clips while the model runs (0: all in this "
                             "process; default: one per core but one)")
    parser.add_argument("--encoder-seconds", type=float, default=None, metavar="S",
                        help="Whisper: run the encoder on S seconds instead of 30 (faster for short clips; changes "
                             "the features)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no warnings on stderr")


def backbone_options(args: argparse.Namespace) -> Any:
    """The :class:`~calm.backbones.options.BackboneOptions` the arguments ask for."""
    from calm.backbones.options import BackboneOptions  # the package imports torch: not at start-up

    return BackboneOptions(device=args.device, dtype=args.dtype, fast=args.fast, compile=args.compile,
                           encoder_seconds=args.encoder_seconds, loaders=args.loaders)


def load_model(args: argparse.Namespace) -> Any:
    """The backbone named by ``--model`` with the options the arguments ask for."""
    from calm.backbones import load_backbone  # torch: not at start-up

    return load_backbone(args.model, backbone_options(args))


def add_on_error_argument(parser: argparse.ArgumentParser, record_means: str) -> None:
    """``--on-error raise|record``; ``record_means`` says what ``record`` does with a file that cannot be loaded."""
    parser.add_argument("--on-error", choices=ON_ERROR, default="raise",
                        help=f"a file that cannot be loaded stops the run (raise) or {record_means} (record)")


def check_writable_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if a file can be written there; else a ValueError naming it (before any work)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: {what} is a folder; give a file name")
    check_writable_folder(path.parent if str(path.parent) else Path("."), what, create=False)
    return path


def check_writable_folder(path: str | os.PathLike, what: str, create: bool = True) -> Path:
    """``path`` (created if ``create``) if files can be written in it; else a ValueError naming it."""
    path = Path(path)
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise InputError(f"{path}: not a folder, so {what} cannot be written there")
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise InputError(f"{path}: {what} cannot be written there ({error.strerror or error})") from None
    return path

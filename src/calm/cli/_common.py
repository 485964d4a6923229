"""What several subcommands share: the default prompt and how a model is loaded from arguments."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_PROMPT = "What sound is in this audio clip?"
"""A neutral prompt: it names no classes, so it leaks no labels."""


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(args: argparse.Namespace) -> Any:
    """The backbone named by ``--model``, on ``--device`` (default: :func:`default_device`) in ``--dtype``."""
    from calm.backbones import load_backbone

    return load_backbone(args.model, device=args.device or default_device(), dtype=args.dtype)


def add_backbone_arguments(parser: argparse.ArgumentParser,
                           model_help: str = "local model folder, hub id, whisper-base, whisper-tiny.en or tiny:<family>",
                           model_default: str | None = None) -> None:
    """``--model`` (required unless ``model_default``), ``--batch-size``, ``--device``, ``--dtype`` and
    ``--quiet``: running a backbone."""
    parser.add_argument("--model", required=model_default is None, default=model_default, help=model_help)
    parser.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: 8)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_on_error_argument(parser: argparse.ArgumentParser, record_means: str) -> None:
    """``--on-error raise|record``; ``record_means`` says what ``record`` does with a file that cannot be loaded."""
    parser.add_argument("--on-error", choices=("raise", "record"), default="raise",
                        help=f"a file that cannot be loaded stops the run (raise) or {record_means} (record)")

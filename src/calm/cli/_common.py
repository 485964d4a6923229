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

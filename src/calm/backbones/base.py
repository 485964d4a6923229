"""The backbone adapter: one model family's inputs, chat template, sample rate and *sites*.

A site is the input of a decoder attention block's output projection (``self_attn.o_proj`` in
Qwen-style decoders, ``self_attn.out_proj`` / ``encoder_attn.out_proj`` in Whisper's decoder).
Sites are found by walking the model's modules, never by hard-coded paths: the decoder is the
module that owns the input token embedding, and inside it every attention block with a linear
output projection is a site, its layer number read from the module path.

Family adapters subclass :class:`Backbone` and override :meth:`Backbone.build_inputs` (and, where
the model's call differs, :meth:`Backbone.forward`). :meth:`Backbone.forward` is the reference
path; a faster one (e.g. trimming padded mel frames) is meant to be another adapter option that
must reproduce it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from calm.features import HeadIndex

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


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early (before the LM head, or after the last site)."""


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


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """None -> float32 on CPU, bfloat16 on an accelerator; names like ``"bf16"`` are accepted."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def local_revision(path: str | Path) -> str | None:
    """For a local model directory: a digest of its config and its weight files' names and sizes,
    so features from a changed checkpoint are not mistaken for the old one. None for hub ids."""
    path = Path(path)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return "local-" + digest.hexdigest()[:16]


class Backbone:
    """A loaded model of one family, ready for head extraction and zero-shot generation.

    Attributes:
        family: adapter name (``"qwen2_audio"``, ``"whisper"`` ...).
        model_id, revision: what was loaded (revision: hub commit or a digest of a local directory).
        model: the torch module (for Qwen2.5-Omni: the thinker).
        processor: the transformers processor (tokenizer + feature extractor ...).
        sample_rate: audio rate the feature extractor expects.
        device, dtype: where and in which precision the model runs.
        sites: the capture points, in the order of the K heads.
        padding_side: ``"left"`` or ``"right"``, for batched token sequences.
    """

    family: ClassVar[str] = "generic"
    model_types: ClassVar[tuple[str, ...]] = ()
    """``config.model_type`` values this adapter serves (used by :func:`calm.backbones.detect_family`)."""
    model_class: ClassVar[str | None] = None
    """transformers class to load; None: the checkpoint's own ``config.architectures[0]``."""
    supports_video: ClassVar[bool] = False
    site_kinds: ClassVar[tuple[str, ...]] = ("self_attn",)

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        *,
        model_id: str,
        revision: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        sample_rate: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.revision = revision
        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else next(model.parameters()).dtype
        rate = sample_rate or getattr(getattr(processor, "feature_extractor", None), "sampling_rate", None)
        if not rate:
            raise ValueError(f"{model_id}: cannot tell the audio sample rate from its processor")
        self.sample_rate = int(rate)
        self.padding_side = "left"
        self.sites = discover_sites(self.model, self.site_kinds)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        config: Any,
        device: str | torch.device = "cpu",
        dtype: Any = None,
        model_id: str | None = None,
    ) -> "Backbone":
        """Load weights and processor from a local directory (or a hub id, for users with a network);
        ``model_id`` names it in fingerprints (default: ``name_or_path``)."""
        import transformers

        torch_dtype = resolve_dtype(dtype, device)
        model = cls.load_model(transformers, str(name_or_path), config, torch_dtype)
        processor = cls.load_processor(transformers, str(name_or_path))
        revision = local_revision(name_or_path) or getattr(config, "_commit_hash", None)
        return cls(model.to(device), processor, model_id=model_id or str(name_or_path), revision=revision,
                   device=device, dtype=torch_dtype)

    @classmethod
    def load_model(cls, transformers: Any, name_or_path: str, config: Any, dtype: torch.dtype) -> nn.Module:
        """The torch module this adapter works on."""
        name = cls.model_class or next(iter(getattr(config, "architectures", None) or []), None)
        model_cls = getattr(transformers, name, None) if name else None
        if model_cls is None:
            raise ValueError(f"{name_or_path}: transformers {transformers.__version__} has no model class {name!r}")
        return model_cls.from_pretrained(name_or_path, config=config, dtype=dtype)

    @classmethod
    def load_processor(cls, transformers: Any, name_or_path: str) -> Any:
        """The processor (tokenizer, feature extractor, chat template) this adapter works with."""
        return transformers.AutoProcessor.from_pretrained(name_or_path)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.model_id!r}, sites={len(self.sites)}, heads={len(self.head_index())}, "
                f"device={self.device}, dtype={self.dtype})")

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def head_index(self) -> HeadIndex:
        """(site kind, layer, head) for each of the K heads, site by site."""
        return HeadIndex.from_tuples((s.kind, s.layer, h) for s in self.sites for h in range(s.num_heads))

    def fingerprint(self) -> dict[str, Any]:
        """What about the model determines a feature."""
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "dtype": str(self.dtype).removeprefix("torch."),
            "family": self.family,
        }

    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    # ---- inputs ---------------------------------------------------------------------------
    @staticmethod
    def prompt_messages(prompt: str, with_video: bool = False) -> list[dict[str, Any]]:
        """One user turn: the video (optional), the audio, then the text."""
        content: list[dict[str, Any]] = [{"type": "video"}] if with_video else []
        content.append({"type": "audio"})
        if prompt:
            content.append({"type": "text", "text": prompt})
        return [{"role": "user", "content": content}]

    def render_prompt(self, prompt: str, with_video: bool = False) -> str:
        """The prompt as the model sees it: :meth:`prompt_messages` through the processor's chat
        template, with the generation prompt."""
        messages = self.prompt_messages(prompt, with_video)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def build_inputs(
        self, audios: Sequence[np.ndarray], prompt: str, videos: Sequence[np.ndarray] | None = None
    ) -> dict[str, torch.Tensor]:
        """Model inputs for a batch (tensors on the backbone's device, floats in its dtype);
        ``"attention_mask"`` is the mask of the token sequence the sites see."""
        if videos is not None and not self.supports_video:
            raise ValueError(f"{self.family} backbones take no video")
        text = self.render_prompt(prompt, with_video=videos is not None)
        kwargs: dict[str, Any] = {
            # padding for the token sequences only: audio keeps the feature extractor's own padding
            "text_kwargs": {"padding": True, "padding_side": self.padding_side},
            "audio_kwargs": {"sampling_rate": self.sample_rate},
        }
        if videos is not None:
            kwargs["videos"] = list(videos)
        batch = self.processor(text=[text] * len(audios), audio=list(audios), return_tensors="pt", **kwargs)
        return self.to_device(dict(batch))

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Tensors to the device; floating tensors to the model's dtype."""
        out = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, dtype=self.dtype if value.is_floating_point() else None)
            out[key] = value
        return out

    def token_mask(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, T] mask of the token sequence at the sites (1 = real token)."""
        return inputs["attention_mask"]

    @staticmethod
    def positions(mask: torch.Tensor) -> torch.Tensor:
        """Position ids that count only real tokens, so left padding does not shift positions."""
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    # ---- running ----------------------------------------------------------------------------
    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        """One forward pass for feature capture (the reference path). The LM head is never run:
        a pre-hook on the output embedding stops the pass just before it."""
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        handle = head.register_forward_pre_hook(_stop) if head is not None else None
        try:
            self.model(**self.forward_kwargs(inputs))
        except StopForward:
            pass
        finally:
            if handle is not None:
                handle.remove()

    def forward_kwargs(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The keyword arguments of the model call for feature capture."""
        kwargs = dict(inputs)
        kwargs.setdefault("position_ids", self.positions(inputs["attention_mask"]))
        kwargs["use_cache"] = False
        return kwargs

    def generate(
        self,
        audios: Sequence[np.ndarray],
        prompt: str,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        num_return_sequences: int = 1,
        videos: Sequence[np.ndarray] | None = None,
    ) -> list[list[str]]:
        """Answers for each clip: greedy (``do_sample=False``) or sampled decoding; returns, per clip,
        ``num_return_sequences`` decoded strings (new tokens only, special tokens stripped)."""
        side = self.padding_side
        self.padding_side = "left"  # batched generation appends after the last column
        try:
            inputs = self.build_inputs(audios, prompt, videos=videos)
        finally:
            self.padding_side = side
        options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                                   "num_return_sequences": num_return_sequences}
        if do_sample:
            options["temperature"] = temperature
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = self.run_generate(inputs, options)
        new = output[:, self.prompt_length(inputs):]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        texts = [t.strip() for t in texts]
        n = num_return_sequences
        return [texts[i * n:(i + 1) * n] for i in range(len(audios))]

    def run_generate(self, inputs: dict[str, torch.Tensor], options: dict[str, Any]) -> torch.Tensor:
        """Token ids from the model's ``generate`` (prompt included)."""
        pad = self.tokenizer.pad_token_id
        return self.model.generate(**inputs, pad_token_id=pad, **options)

    def prompt_length(self, inputs: dict[str, torch.Tensor]) -> int:
        """Where the generated tokens start in :meth:`run_generate`'s output."""
        return int(inputs["input_ids"].shape[1])


def _stop(module: nn.Module, args: Any) -> None:
    raise StopForward

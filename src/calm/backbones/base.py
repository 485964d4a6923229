"""The backbone adapter: one model family's inputs, chat template, sample rate and sites.

Family adapters subclass :class:`Backbone` and override :meth:`Backbone.build_inputs` (and, where
the model's call differs, :meth:`Backbone.forward`). :meth:`Backbone.forward` is the reference
path; a faster one (e.g. trimming padded mel frames) is an option (``BackboneOptions.fast``) that
must reproduce it. Options are fixed at loading (:class:`~calm.backbones.options.BackboneOptions`);
sites are found by walking the model (:mod:`calm.backbones.sites`).
"""

from __future__ import annotations

import copy
import hashlib
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from calm.backbones.options import BackboneOptions, should_compile
from calm.backbones.sites import Site, discover_sites
from calm.backbones.tokens import PromptTokens
from calm.features import HeadIndex

__all__ = ["Backbone", "BackboneOptions", "Site", "StopForward", "local_revision", "resolve_dtype"]

MIN_SECONDS = 0.1
"""Clips shorter than this are padded with silence to it: shorter ones break the audio encoders'
pooling, or leave them too few frames for the features to depend on the sound."""


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early (before the LM head, or after the last site)."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> cuda when a GPU is visible, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
        options: how it runs (:class:`~calm.backbones.options.BackboneOptions`), fixed at loading.
        device, dtype: where and in which precision the model runs.
        sites: the capture points, in the order of the K heads.
    """

    family: ClassVar[str] = "generic"
    model_types: ClassVar[tuple[str, ...]] = ()
    """``config.model_type`` values this adapter serves (used by :func:`calm.backbones.detect_family`)."""
    model_class: ClassVar[str | None] = None
    """transformers class to load; None: the checkpoint's own ``config.architectures[0]``."""
    supports_video: ClassVar[bool] = False
    answers_questions: ClassVar[bool] = True
    """A chat model that answers questions (zero-shot, pseudo-labels); Whisper does not."""
    site_kinds: ClassVar[tuple[str, ...]] = ("self_attn",)
    min_seconds: ClassVar[float] = MIN_SECONDS
    """The shortest clip the encoder is given (shorter ones are padded with silence to it)."""
    has_encoder_window: ClassVar[bool] = False
    """Whether the option ``encoder_seconds`` applies (Whisper)."""

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        *,
        model_id: str,
        revision: str | None = None,
        options: BackboneOptions | None = None,
        sample_rate: int | None = None,
    ) -> None:
        """Wrap a loaded model: it is moved to the options' device and dtype (when they are given),
        and its layers compiled if asked."""
        options = options or BackboneOptions()
        self._check_encoder_window(options)
        if options.video_max_pixels is not None and not self.supports_video:
            raise ValueError(f"video_max_pixels applies to video backbones; {self.family} backbones take no video")
        parameter = next(model.parameters())
        device = resolve_device(options.device) if options.device is not None else parameter.device
        dtype = resolve_dtype(options.dtype, device) if options.dtype is not None else parameter.dtype
        self.model = model.to(device, self.weight_dtype(dtype, torch.device(device))).eval()
        self.processor = processor
        self.model_id = model_id
        self.revision = revision
        self._options = options
        self._device, self._dtype = torch.device(device), dtype
        rate = sample_rate or getattr(getattr(processor, "feature_extractor", None), "sampling_rate", None)
        if not rate:
            raise ValueError(f"{model_id}: cannot tell the audio sample rate from its processor")
        self.sample_rate = int(rate)
        self.sites = discover_sites(self.model, self.site_kinds)
        if options.compile:
            compile_layers(self.model)

    @property
    def compiled(self) -> bool:
        """Whether the layers are compiled (the option ``compile=True``, or :meth:`compile_for`)."""
        return bool(getattr(self.model, COMPILED_MARK, False))

    def compile_for(self, clips: int) -> bool:
        """Compile the layers in place if the option ``compile`` is None (automatic) and a job of
        ``clips`` clips repays it here (:func:`~calm.backbones.options.should_compile`); the
        fingerprint then says so. Returns whether the layers are compiled."""
        if not self.compiled and self._options.compile is None and \
                should_compile(None, self.device.type, clips):
            compile_layers(self.model)
        return self.compiled

    @classmethod
    def weight_dtype(cls, dtype: torch.dtype, device: torch.device) -> torch.dtype:
        """The dtype the weights are held in for a backbone of ``dtype`` on ``device`` (usually
        ``dtype``; a family may hold float32 weights and run parts in ``dtype`` under autocast)."""
        return dtype

    @property
    def options(self) -> BackboneOptions:
        return self._options

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def padding_side(self) -> str:
        return self._options.padding_side

    @property
    def fast(self) -> bool:
        """Whether the family's exact fast path is in use (False where the family has none)."""
        return False

    @property
    def window_seconds(self) -> float | None:
        """The longest audio the model sees (longer clips are cut), if it has such a window."""
        fe = getattr(self.processor, "feature_extractor", None)
        samples = getattr(fe, "n_samples", None)
        return float(samples) / self.sample_rate if samples else None

    def _check_encoder_window(self, options: BackboneOptions) -> None:
        if options.encoder_seconds is not None and not self.has_encoder_window:
            raise ValueError(f"encoder_seconds is a Whisper option; {self.family} backbones have no encoder window")

    def with_options(self, **changes: Any) -> "Backbone":
        """A backbone on the same weights with some options changed (``fast``, ``encoder_seconds``,
        ``padding_side``, ``video_max_pixels``); device, dtype and compile need a new
        :func:`calm.load_backbone`."""
        options = self._options.replace(**changes)
        self._check_encoder_window(options)
        moved = [n for n in ("device", "dtype", "compile") if getattr(options, n) != getattr(self._options, n)]
        if moved:
            raise ValueError(f"changing {', '.join(moved)} needs a new calm.load_backbone(...)")
        twin = copy.copy(self)
        twin._options = options
        return twin

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        config: Any,
        options: BackboneOptions | None = None,
        model_id: str | None = None,
    ) -> "Backbone":
        """Load weights and processor from a local directory (or a hub id, for users with a network);
        ``model_id`` names it in fingerprints (default: ``name_or_path``)."""
        import transformers

        options = options or BackboneOptions()
        device = resolve_device(options.device)
        options = options.replace(device=str(device))
        torch_dtype = resolve_dtype(options.dtype, device)
        model = cls.load_model(transformers, str(name_or_path), config, cls.weight_dtype(torch_dtype, device))
        processor = cls.load_processor(transformers, str(name_or_path))
        revision = local_revision(name_or_path) or getattr(config, "_commit_hash", None)
        return cls(model, processor, model_id=model_id or str(name_or_path), revision=revision,
                   options=options.replace(dtype=str(torch_dtype).removeprefix("torch.")))

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
        """What about the model determines a feature: model, revision, dtype, family and the
        options that change features (:meth:`BackboneOptions.fingerprint`; ``compile`` when the
        layers are compiled, whether asked for or chosen by :meth:`compile_for`)."""
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "dtype": str(self.dtype).removeprefix("torch."),
            "family": self.family,
            **self._options.replace(compile=self.compiled).fingerprint(),
        }

    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    @cached_property
    def prompt_tokens(self) -> PromptTokens:
        """Rendered prompts and their token ids, computed once per prompt (:mod:`calm.backbones.tokens`)."""
        return PromptTokens(self)

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

    @property
    def clip_features(self) -> Callable[[np.ndarray], Any] | None:
        """A picklable, torch-free function from a loaded clip to what :meth:`build_inputs` takes in its
        place (Whisper: its log-mel), run in :mod:`calm.clips`' loaders or inline; None: the audio."""
        return None

    def build_inputs(
        self, audios: Sequence[np.ndarray], prompt: str, videos: Sequence[np.ndarray] | None = None,
        padding_side: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Model inputs for a batch (tensors on the backbone's device, floats in its dtype);
        ``"attention_mask"`` is the mask of the token sequence the sites see. ``padding_side``
        overrides the option (generation needs left padding)."""
        if videos is not None and not self.supports_video:
            raise ValueError(f"{self.family} backbones take no video")
        text = self.render_prompt(prompt, with_video=videos is not None)
        kwargs: dict[str, Any] = {
            # padding for the token sequences only: audio keeps the feature extractor's own padding
            "text_kwargs": {"padding": True, "padding_side": padding_side or self.padding_side},
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

    def generate(self, audios: Sequence[np.ndarray], prompt: str, max_new_tokens: int = 32, do_sample: bool = False,
                 temperature: float = 1.0, num_return_sequences: int = 1,
                 videos: Sequence[np.ndarray] | None = None) -> list[list[str]]:
        """Answers for each clip: greedy (``do_sample=False``) or sampled decoding; returns, per clip,
        ``num_return_sequences`` decoded strings (new tokens only, special tokens stripped)."""
        inputs = self.generation_inputs(audios, prompt, videos)
        options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                                   "num_return_sequences": num_return_sequences}
        if do_sample:
            options["temperature"] = temperature
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = self.run_generate(inputs, options)
        texts = [t.strip() for t in self.tokenizer.batch_decode(output[:, self.prompt_length(inputs):],
                                                                skip_special_tokens=True)]
        n = num_return_sequences
        return [texts[i * n:(i + 1) * n] for i in range(len(audios))]

    def generation_inputs(self, audios: Sequence[np.ndarray], prompt: str,
                          videos: Sequence[np.ndarray] | None) -> dict[str, torch.Tensor]:
        """Inputs for :meth:`run_generate`: left-padded (batched generation appends after the last column)."""
        return self.build_inputs(audios, prompt, videos=videos, padding_side="left")

    def run_generate(self, inputs: dict[str, torch.Tensor], options: dict[str, Any]) -> torch.Tensor:
        """Token ids from the model's ``generate`` (prompt included)."""
        pad = self.tokenizer.pad_token_id
        return self.model.generate(**inputs, pad_token_id=pad, **options)

    def prompt_length(self, inputs: dict[str, torch.Tensor]) -> int:
        """Where the generated tokens start in :meth:`run_generate`'s output."""
        return int(inputs["input_ids"].shape[1])


def _stop(module: nn.Module, args: Any) -> None:
    raise StopForward


COMPILED_MARK = "calm_compiled"
"""Attribute set on a model whose layers :func:`compile_layers` compiled (backbones on the same
weights see it)."""


def compile_layers(model: nn.Module, **options: Any) -> None:
    """``torch.compile`` every layer of every layer stack (a ``ModuleList`` named ``layers``) in
    place; ``options`` go to :meth:`torch.nn.Module.compile`. Numerics change slightly."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers":
            for layer in module:
                layer.compile(**options)
    setattr(model, COMPILED_MARK, True)

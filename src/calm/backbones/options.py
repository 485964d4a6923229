"""Backbone options: one frozen object that says how a backbone runs, given to :func:`calm.load_backbone`.

Options are fixed when a backbone is loaded; :meth:`calm.backbones.base.Backbone.with_options`
gives a new backbone on the same weights for the options that need no reload. Those that change
features are part of the feature fingerprint (:meth:`BackboneOptions.fingerprint`); the others
(device, padding side, the exact fast path) give the same features up to floating-point
summation order, so features and classifiers move freely between them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

PADDING_SIDES = ("left", "right")

FEATURE_OPTIONS = {"compile": bool, "encoder_seconds": float, "video_max_pixels": int}
"""The options that change features (name -> their type in a fingerprint): the one list that
:meth:`BackboneOptions.fingerprint` writes and :meth:`BackboneOptions.recorded_in` reads back."""

COMPILE_MIN_CLIPS = 20_000
"""Clips from which compiling pays on a GPU. Measured on an H200 (Qwen2-Audio-7B shape, bf16,
batch 64, 5 s clips; ``docs/benchmarks.md``): compiling takes 14-34 s and saves about 1.4 ms per
clip (fast path 180-185 clips/s, compiled 236-252), so it is repaid after 10,000-25,000 clips;
20,000 repays the slow end of compile times with a margin and never costs more than a few
seconds on a job that misses it."""


def should_compile(choice: bool | None, device_type: str, clips: int, threshold: int = COMPILE_MIN_CLIPS) -> bool:
    """Whether to compile the layers for a job of ``clips`` clips on ``device_type``: ``choice``
    when given (True/False), else only on CUDA and only for at least ``threshold`` clips (on a CPU
    compilation costs minutes and saves little)."""
    if choice is not None:
        return bool(choice)
    return device_type == "cuda" and clips >= threshold


@dataclass(frozen=True)
class BackboneOptions:
    """How a backbone runs.

    Attributes:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... (None: cuda when a GPU is visible, else cpu).
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` (short names such as ``"bf16"`` work);
            None: float32 on a CPU, bfloat16 on a GPU. (Whisper's bfloat16 on a CPU is mixed:
            float32 weights, the encoder under bfloat16 autocast.)
        fast: use the family's exact fast path where it has one (Qwen2-Audio: log-mel and audio
            encoder on the frames that carry audio; Qwen2.5-Omni: log-mel of those frames; Whisper:
            cross-attention keys and values folded into the queries); False: the reference path,
            the model's own call.
        compile: ``torch.compile`` each encoder and decoder layer (numerics change slightly, so
            compiled features are keyed apart). None (the default): only where it pays, decided per
            extraction by :func:`should_compile` (on a GPU, for jobs of at least
            :data:`COMPILE_MIN_CLIPS` clips); True: always; False: never.
        encoder_seconds: Whisper only: run the encoder on this many seconds instead of 30 (faster
            for short clips, but *changes* the features; None: the reference 30 s window).
        padding_side: ``"left"`` or ``"right"``, for batched token sequences (same features).
        video_max_pixels: Qwen2.5-Omni only: per-frame pixel budget for video frames (None: the
            model's own, 768 x 28 x 28).
        loaders: worker processes that decode and resample clips while the model runs, in every
            extraction with this backbone (0: inline; None: from the cores, see
            :func:`calm.clips.default_loaders`). Same features for every value.
    """

    device: str | None = None
    dtype: str | None = None
    fast: bool = True
    compile: bool | None = None
    encoder_seconds: float | None = None
    padding_side: str = "left"
    video_max_pixels: int | None = None
    loaders: int | None = None

    def __post_init__(self) -> None:
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {self.padding_side!r}")
        if self.encoder_seconds is not None and not 0 < float(self.encoder_seconds) <= 30:
            raise ValueError(f"encoder_seconds must be in (0, 30], got {self.encoder_seconds!r}")
        if self.video_max_pixels is not None and int(self.video_max_pixels) < 28 * 28:
            raise ValueError(f"video_max_pixels must be at least {28 * 28}, got {self.video_max_pixels!r}")
        if self.loaders is not None and int(self.loaders) < 0:
            raise ValueError(f"loaders must be at least 0, got {self.loaders!r}")

    def fingerprint(self) -> dict[str, Any]:
        """The options that change features, when not at their defaults (``compile`` only when
        True: the backbone records whether it compiled, see :meth:`Backbone.fingerprint`)."""
        return {name: kind(getattr(self, name)) for name, kind in FEATURE_OPTIONS.items() if getattr(self, name)}

    @staticmethod
    def recorded_in(fingerprint: dict[str, Any]) -> dict[str, Any]:
        """The options a feature fingerprint records: its dtype and every feature-changing option
        (``compile`` False where it is not recorded: those features were not compiled)."""
        recorded = {name: fingerprint.get(name) for name in FEATURE_OPTIONS}
        return {"dtype": fingerprint.get("dtype"), **recorded, "compile": bool(recorded["compile"])}

    def replace(self, **changes: Any) -> "BackboneOptions":
        """A copy with some options changed (validated)."""
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown backbone option(s) {sorted(unknown)}; known: {sorted(asdict(self))}")
        return replace(self, **changes)

"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration``): a Whisper-style audio encoder feeding a
Qwen2 decoder. Sites: the decoder's ``self_attn.o_proj`` (Qwen2-Audio-7B: 32 layers x 32 heads).

The prompt is one user turn, ``Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\\n{prompt}``, through
the processor's chat template with the assistant generation prompt; the processor expands
``<|AUDIO|>`` to one token per encoder frame, so sequences differ in length and are padded.
Audio longer than 30 s is cut to 30 s by the feature extractor.

``backbone.fast = True`` switches :meth:`~Qwen2AudioBackbone.build_inputs` and
:meth:`~Qwen2AudioBackbone.forward` to the fast path of :mod:`calm.backbones.qwen2_audio_fast`
(log-mel and audio encoder on the frames that carry audio only; same features). The plain path,
the model's own call on the processor's inputs, stays the reference.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Sequence

import numpy as np
import torch

from calm.backbones.base import Backbone
from calm.backbones.qwen2_audio_fast import AudioParts, build_fast_inputs, fast_forward


class Qwen2AudioBackbone(Backbone):
    family = "qwen2_audio"
    model_types = ("qwen2_audio",)
    model_class = "Qwen2AudioForConditionalGeneration"
    fast: bool = False
    """Use the trimmed fast path for inputs and forward passes (off: the reference path)."""

    @cached_property
    def audio_parts(self) -> AudioParts:
        """The audio encoder, projector and decoder body the fast path calls."""
        return AudioParts.find(self.model)

    def build_inputs(
        self, audios: Sequence[np.ndarray], prompt: str, videos: Sequence[np.ndarray] | None = None
    ) -> dict[str, torch.Tensor]:
        dither = getattr(self.processor.feature_extractor, "dither", 0.0)
        if self.fast and videos is None and not dither:
            return build_fast_inputs(self, audios, prompt)
        return super().build_inputs(audios, prompt, videos=videos)

    def generate(self, *args: Any, **kwargs: Any) -> list[list[str]]:
        """As :meth:`Backbone.generate`, always on the reference path (the model's ``generate``
        takes the full 30 s of mel frames)."""
        fast, self.fast = self.fast, False
        try:
            return super().generate(*args, **kwargs)
        finally:
            self.fast = fast

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        if self.fast:
            fast_forward(self, inputs)
        else:
            super().forward(inputs)

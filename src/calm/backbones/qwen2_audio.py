"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration``): a Whisper-style audio encoder feeding a
Qwen2 decoder. Sites: the decoder's ``self_attn.o_proj`` (Qwen2-Audio-7B: 32 layers x 32 heads).

The prompt is one user turn, ``Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\\n{prompt}``, through
the processor's chat template with the assistant generation prompt; the processor expands
``<|AUDIO|>`` to one token per encoder frame, so sequences differ in length and are padded.
Audio longer than 30 s is cut to 30 s by the feature extractor.

By default (``BackboneOptions.fast``) inputs and forward passes take the exact fast path: log-mel
and audio encoder on the frames that carry audio only, the same features (why it is exact:
:mod:`calm.backbones.qwen2_audio_fast`). ``fast=False`` is the reference path, the model's own
call on the processor's inputs; generation always takes it.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Sequence

import numpy as np
import torch

from calm.backbones.audio_encoder import log_mel
from calm.backbones.base import Backbone, StopForward
from calm.backbones.qwen2_audio_fast import AudioParts, encode_audio, kept_frames, mel_lengths


class Qwen2AudioBackbone(Backbone):
    family = "qwen2_audio"
    model_types = ("qwen2_audio",)
    model_class = "Qwen2AudioForConditionalGeneration"

    @property
    def fast(self) -> bool:
        """The fast path is on (the option) and exact here (the feature extractor does not dither)."""
        return self.options.fast and not getattr(self.processor.feature_extractor, "dither", 0.0)

    @cached_property
    def audio_parts(self) -> AudioParts:
        """The audio encoder, projector and decoder body the fast path calls."""
        return AudioParts.find(self.model)

    def build_inputs(
        self, audios: Sequence[np.ndarray], prompt: str, videos: Sequence[np.ndarray] | None = None,
        padding_side: str | None = None,
    ) -> dict[str, torch.Tensor]:
        if self.fast and videos is None:
            return self.fast_inputs(audios, prompt, padding_side or self.padding_side)
        return super().build_inputs(audios, prompt, videos=videos, padding_side=padding_side)

    def generation_inputs(self, audios: Sequence[np.ndarray], prompt: str,
                          videos: Sequence[np.ndarray] | None) -> dict[str, torch.Tensor]:
        """The reference inputs (the model's ``generate`` takes the full 30 s of mel frames)."""
        return super().build_inputs(audios, prompt, videos=videos, padding_side="left")

    def fast_inputs(self, audios: Sequence[np.ndarray], prompt: str, padding_side: str) -> dict[str, Any]:
        """Inputs for the fast forward: the token sequence the processor would build (one
        ``<|AUDIO|>`` per audio token) and only the mel frames the encoder needs, computed on the
        backbone's device."""
        fe = self.processor.feature_extractor
        parts = self.audio_parts
        lengths = mel_lengths(audios, fe)
        frames = kept_frames(max(lengths), parts.max_frames)
        features = log_mel(audios, fe, frames, self.device).to(self.dtype)
        length_tensor = torch.tensor(lengths)
        tokens = parts.output_lengths(length_tensor)[1].tolist()
        placeholder = self.processor.audio_token
        ids, attention = self.prompt_tokens.batch(self.prompt_tokens.ids(prompt), [{placeholder: n} for n in tokens],
                                                  padding_side)
        mask = (torch.arange(frames)[None, :] < length_tensor[:, None]).long()
        out = self.to_device({"input_ids": ids, "attention_mask": attention, "feature_attention_mask": mask})
        out["input_features"] = features
        return out

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        if self.fast:
            self.fast_forward(inputs)
        else:
            super().forward(inputs)

    def fast_forward(self, inputs: dict[str, torch.Tensor]) -> None:
        """One forward pass for feature capture on the fast path (inputs from :meth:`fast_inputs`
        or the processor); the sites' hooks fire as on the reference path."""
        parts = self.audio_parts
        ids = inputs["input_ids"]
        embeds = parts.decoder.get_input_embeddings()(ids)
        audio = encode_audio(parts, inputs["input_features"], inputs["feature_attention_mask"].sum(-1))
        placeholders = ids == parts.audio_token_id
        if int(placeholders.sum()) != audio.shape[0]:
            raise ValueError(f"{int(placeholders.sum())} audio tokens in the prompt but {audio.shape[0]} audio features")
        embeds = embeds.masked_scatter(placeholders[..., None], audio.to(embeds.dtype))
        mask = inputs["attention_mask"]
        try:
            parts.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=self.positions(mask),
                          use_cache=False)
        except StopForward:
            pass

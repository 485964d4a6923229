"""Whisper (``WhisperForConditionalGeneration``): sites are the decoder's self-attention
(``self_attn.out_proj``) and cross-attention (``encoder_attn.out_proj``) blocks, so
K = 2 x decoder layers x heads.

Whisper takes no instruction, so the text prompt becomes *previous context*: the decoder prefix
is ``<|startofprev|> {prompt}`` followed by the start tokens ``<|startoftranscript|>``
(+ ``<|en|><|transcribe|>`` on multilingual models) ``<|notimestamps|>``; the last real token is
``<|notimestamps|>``, where the decoder is about to write the transcript. Without a prompt the
prefix is just the start tokens. Every clip gets the same prefix, so the token sequences never
need padding; the encoder sees 30 s of (padded or cut) log-mel frames, as Whisper was trained.
Each clip's log-mel is computed in numpy by :mod:`calm.logmel` (:attr:`WhisperBackbone.clip_features`),
which an extraction runs in its loader processes; it equals the processor's up to float rounding.

By default (``BackboneOptions.fast``) feature passes take the exact fast path of
:mod:`calm.backbones.whisper_fast` (the decoder never projects the encoder's positions into
cross-attention keys and values; same features up to float rounding); ``fast=False`` is the
model's own call. Generation always takes the model's own path.

``dtype="bfloat16"`` on a CPU is a mixed mode, not a bfloat16 copy of the model: the weights stay
float32, the encoder (nearly all the work) runs under ``torch.autocast`` in bfloat16 (its matrix
products use the CPU's bfloat16 units; residual stream and norms stay float32) and the decoder runs
in float32 (whisper-base on a Zen 4 core: 1.75x the float32 loop, min per-head cosine 0.9989 with
it; a pure bfloat16 model was 2.07x but far less accurate, cosine 0.989; see
``docs/benchmarks.md``). Its fingerprint says bfloat16, so its features never mix with float32
ones. On a GPU, bfloat16 is the plain model in bfloat16.

``BackboneOptions.encoder_seconds`` (off by default) trades exactness for speed: clips are cut to that many
seconds and the encoder runs on only that window of log-mel frames (position embeddings sliced to
match). Whisper's encoder has no padding mask, so unlike Qwen2-Audio's fast path this *changes*
the features (the padded frames it drops are attended to in the reference path); it is part of
the fingerprint, so such features never mix with reference ones. For short clips on a CPU it
cuts the encoder's work several times over (see ``docs/benchmarks.md``).

With a fixed prefix, the first layer's self-attention heads see only prompt tokens and are
constant across clips: classifiers must tolerate them (see docs/method.md). Whisper answers no
questions, so methods that need a chat model's answers are skipped on it.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ContextManager, Sequence

import numpy as np
import torch
from transformers import GenerationMixin

from calm.backbones.audio_encoder import encoder_states
from calm.backbones.base import Backbone, StopForward
from calm.backbones.whisper_fast import decoder_sites
from calm.logmel import LogMel, MelFrames, stack_frames

MULTILINGUAL_VOCAB = 51865
"""Whisper's multilingual checkpoints have at least this many tokens; English-only ones have fewer."""


class WhisperBackbone(Backbone):
    family = "whisper"
    model_types = ("whisper",)
    model_class = "WhisperForConditionalGeneration"
    site_kinds = ("self_attn", "cross_attn")
    answers_questions = False
    has_encoder_window = True
    language = "en"
    task = "transcribe"

    @property
    def encoder_seconds(self) -> float | None:
        """None: the reference 30 s encoder window. A number: the trimmed window (see the module docstring)."""
        return self.options.encoder_seconds

    @classmethod
    def weight_dtype(cls, dtype: torch.dtype, device: torch.device) -> torch.dtype:
        """float32 weights for bfloat16 on a CPU (the mixed mode of the module docstring)."""
        return torch.float32 if dtype == torch.bfloat16 and device.type == "cpu" else dtype

    def autocast(self) -> ContextManager[Any]:
        """bfloat16 autocast in the CPU's mixed mode; else nothing."""
        if self.weight_dtype(self.dtype, self.device) == self.dtype:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def fast(self) -> bool:
        """Whether feature passes take the exact fast path (the option ``fast``)."""
        return self.options.fast

    @property
    def window_seconds(self) -> float | None:
        return self.encoder_seconds if self.encoder_seconds is not None else super().window_seconds

    @property
    def multilingual(self) -> bool:
        return int(self.model.config.vocab_size) >= MULTILINGUAL_VOCAB

    def decoder_prefix(self, prompt: str) -> list[int]:
        """Token ids of the decoder prefix for ``prompt`` (see the module docstring)."""
        tokenizer = self.tokenizer
        tokens = ["<|startoftranscript|>"]
        if self.multilingual:
            tokens += [f"<|{self.language}|>", f"<|{self.task}|>"]
        tokens.append("<|notimestamps|>")
        start = [self._token_id(t) for t in tokens]
        if not prompt.strip():
            return start
        previous = [self._token_id("<|startofprev|>")] + tokenizer.encode(" " + prompt.strip(), add_special_tokens=False)
        limit = int(self.model.config.max_target_positions) // 2
        if len(previous) > limit:
            raise ValueError(f"the prompt is {len(previous)} tokens; Whisper takes at most {limit} as previous "
                             "context: give a shorter one (--prompt)")
        return previous + start

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"{self.model_id}: the tokenizer has no {token} token")
        return int(token_id)

    @property
    def encoder_frames(self) -> int | None:
        """Log-mel frames the encoder sees in the trimmed window (None: the full 30 s)."""
        if self.encoder_seconds is None:
            return None
        fe = self.processor.feature_extractor
        frames = int(round(self.encoder_seconds * self.sample_rate / fe.hop_length))
        frames += frames % 2  # conv2 has stride 2
        return min(frames, int(fe.nb_max_frames))

    def render_prompt(self, prompt: str, with_video: bool = False) -> str:
        return self.tokenizer.decode(self.decoder_prefix(prompt))

    @property
    def clip_features(self) -> LogMel | None:
        """Each clip's log-mel (:class:`calm.logmel.LogMel`, of the encoder's window), which loader
        processes compute; None when the feature extractor dithers (random: its own log-mel is used)."""
        fe = self.processor.feature_extractor
        return None if getattr(fe, "dither", 0.0) else LogMel.of(fe, self.encoder_frames)

    def build_inputs(
        self, audios: Sequence[np.ndarray | MelFrames], prompt: str, videos: Sequence[np.ndarray] | None = None,
        padding_side: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """A clip is its audio or its log-mel from :attr:`clip_features`. Every clip gets the same
        decoder prefix, so ``padding_side`` has nothing to pad."""
        if videos is not None:
            raise ValueError("whisper backbones take no video")
        mel = self.clip_features
        if mel is None:
            fe = self.processor.feature_extractor
            features = fe(list(audios), sampling_rate=self.sample_rate, return_tensors="pt")["input_features"]
            features = features[..., : self.encoder_frames or features.shape[-1]]
        else:
            clips = [clip if isinstance(clip, MelFrames) else mel(clip) for clip in audios]
            features = torch.from_numpy(stack_frames(clips, mel.frames))
        prefix = torch.tensor([self.prompt_tokens.kept(("prefix", prompt), lambda: self.decoder_prefix(prompt))]
                              * len(audios), dtype=torch.long)
        return self.to_device(
            {"input_features": features, "decoder_input_ids": prefix, "attention_mask": torch.ones_like(prefix)}
        )

    def encoder_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The encoder's part of a model call: the mel frames (reference) or, with a trimmed
        window, the encoder's output computed here on those frames only."""
        frames = self.encoder_frames
        if frames is None:
            return {"input_features": inputs["input_features"]}
        encoder = self.model.get_encoder()
        with self.autocast():
            hidden = encoder.layer_norm(encoder_states(encoder, inputs["input_features"], frames, None))
        return {"encoder_outputs": (hidden,)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        """The model's own call (``fast=False``) or the encoder then :func:`decoder_sites` (the
        decoder's layers run piece by piece there, so ``compile`` speeds up only the encoder)."""
        if not self.fast:
            with self.autocast():
                super().forward(inputs)
            return
        kwargs = self.encoder_inputs(inputs)
        if "encoder_outputs" in kwargs:
            encoded = kwargs["encoder_outputs"][0]
        else:
            with self.autocast():
                encoded = self.model.get_encoder()(kwargs["input_features"]).last_hidden_state
        decoder = self.model.get_decoder()
        try:
            decoder_sites(decoder, inputs["decoder_input_ids"], encoded.to(decoder.embed_tokens.weight.dtype))
        except StopForward:
            pass

    def forward_kwargs(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {
            **self.encoder_inputs(inputs),
            "decoder_input_ids": inputs["decoder_input_ids"],
            "decoder_attention_mask": inputs["attention_mask"],
            "use_cache": False,
        }

    def run_generate(self, inputs: dict[str, torch.Tensor], options: dict[str, Any]) -> torch.Tensor:
        # The plain decoding loop, not Whisper's long-form generate: the prefix is ours.
        with self.autocast():
            return GenerationMixin.generate(
                self.model,
                **self.encoder_inputs(inputs),
                decoder_input_ids=inputs["decoder_input_ids"],
                pad_token_id=self.tokenizer.pad_token_id,
                **options,
            )

    def prompt_length(self, inputs: dict[str, torch.Tensor]) -> int:
        return int(inputs["decoder_input_ids"].shape[1])

"""Granite Speech (``GraniteSpeechForConditionalGeneration``): a conformer encoder and a windowed
Q-Former projector feeding a Granite decoder. Sites: the decoder's ``self_attn.o_proj``
(granite-speech-3.3-8b: 40 layers x 32 heads, D = 128).

The prompt is a fixed system turn (the model card's, so the template's "Today's Date" never
changes the features) and one user turn ``<|audio|>{prompt}``, through the tokenizer's chat
template with the assistant generation prompt; ``<|audio|>`` is expanded to one token per
projector output (``window // downsample`` per window of ``window`` encoder frames).

The conformer has no padding mask, so in the model's own batched call a clip's features depend on
how long the other clips of its batch are. Here each clip's log-mel is computed on its own and the
encoder + projector run clip by clip; only the decoder runs on the padded batch, so batching
changes nothing. The log-mel is :class:`GraniteMel`, the feature extractor's own computation
(``torchaudio.transforms.MelSpectrogram`` = ``torch.stft`` + an HTK mel bank) in plain torch,
because the feature extractor class needs torchaudio, whose PyPI build does not load beside the
CPU torch (a test checks both agree wherever torchaudio is installed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from calm.backbones.parts import EmbeddingInputsBackbone, ProcessorParts

SYSTEM_PROMPT = ("Knowledge Cutoff Date: April 2024.\nToday's Date: April 9, 2025.\n"
                 "You are Granite, developed by IBM. You are a helpful AI assistant")
"""The system turn of the granite-speech model card."""

AUDIO_TOKEN = "<|audio|>"


@dataclass
class GraniteMel:
    """Granite Speech's log-mel features: 2 stacked frames of ``n_mels`` bins per encoder frame."""

    sampling_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    projector_window_size: int = 15
    projector_downsample_rate: int = 5

    @classmethod
    def from_pretrained(cls, transformers: Any, name_or_path: str) -> "GraniteMel":
        """The settings in a checkpoint's ``preprocessor_config.json``."""
        settings, _ = transformers.FeatureExtractionMixin.get_feature_extractor_dict(name_or_path)
        fields = cls.__dataclass_fields__
        return cls(**{key: value for key, value in settings.items() if key in fields})

    def filters(self) -> torch.Tensor:
        """[n_fft // 2 + 1, n_mels] HTK mel filters without normalisation (torchaudio's default)."""
        from transformers.audio_utils import mel_filter_bank

        bank = mel_filter_bank(self.n_fft // 2 + 1, self.n_mels, 0.0, self.sampling_rate // 2, self.sampling_rate,
                               norm=None, mel_scale="htk")
        return torch.from_numpy(bank).float()

    def __call__(self, audio: np.ndarray) -> torch.Tensor:
        """[frames, 2 * n_mels] features of one clip."""
        signal = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        window = torch.hann_window(self.win_length)
        spec = torch.stft(signal, self.n_fft, self.hop_length, self.win_length, window, center=True,
                          pad_mode="reflect", return_complex=True).abs().pow(2)
        logmel = (spec.T @ self.filters()).clamp(min=1e-10).log10()
        logmel = torch.maximum(logmel, logmel.max() - 8.0) / 4 + 1
        if logmel.shape[0] % 2:
            logmel = logmel[:-1]
        return logmel.reshape(-1, 2 * self.n_mels)

    def token_count(self, frames: int) -> int:
        """Projector outputs for ``frames`` encoder frames."""
        window = self.projector_window_size
        return math.ceil(frames / window) * (window // self.projector_downsample_rate)


class GraniteSpeechBackbone(EmbeddingInputsBackbone):
    family = "granite_speech"
    model_types = ("granite_speech",)
    model_class = "GraniteSpeechForConditionalGeneration"

    @classmethod
    def load_processor(cls, transformers: Any, name_or_path: str) -> ProcessorParts:
        return ProcessorParts(GraniteMel.from_pretrained(transformers, name_or_path),
                              transformers.AutoTokenizer.from_pretrained(name_or_path))

    @staticmethod
    def prompt_messages(prompt: str, with_video: bool = False) -> list[dict[str, Any]]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": AUDIO_TOKEN + prompt}]

    def render_prompt(self, prompt: str, with_video: bool = False) -> str:
        return self.tokenizer.apply_chat_template(self.prompt_messages(prompt), add_generation_prompt=True,
                                                  tokenize=False)

    def audio_inputs(self, audios: Sequence[np.ndarray], prompt: str, padding_side: str) -> dict[str, torch.Tensor]:
        mel = self.processor.feature_extractor
        features = [mel(audio) for audio in audios]
        ids, mask = self.prompt_tokens.batch(self.prompt_tokens.ids(prompt),
                                             [{AUDIO_TOKEN: mel.token_count(len(f))} for f in features], padding_side)
        return self.to_device({
            "input_ids": ids, "attention_mask": mask,
            "input_features": torch.nn.utils.rnn.pad_sequence(features, batch_first=True),
            "audio_frames": torch.tensor([len(f) for f in features]),
        })

    def input_embeddings(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, T, hidden] decoder inputs: token embeddings with each clip's audio embeddings (encoder
        and projector run on that clip's frames only) in place of its ``<|audio|>`` tokens."""
        if getattr(self.model, "_hf_peft_config_loaded", False):
            self.model.enable_adapters()  # the checkpoint's LoRA serves prompts with audio (as in its generate)
        ids = inputs["input_ids"]
        is_audio = ids == self.model.config.audio_token_id
        embeds = self.model.get_input_embeddings()(ids.masked_fill(is_audio, 0))
        clips = []
        for features, frames in zip(inputs["input_features"], inputs["audio_frames"].tolist()):
            output = self.model.get_audio_features(features[None, :frames])
            clips.append(getattr(output, "pooler_output", output)[0])
        audio = torch.cat(clips).to(embeds.dtype)
        if audio.shape[0] != int(is_audio.sum()):
            raise RuntimeError(f"{audio.shape[0]} audio embeddings for {int(is_audio.sum())} {AUDIO_TOKEN} tokens")
        return embeds.masked_scatter(is_audio[..., None], audio)

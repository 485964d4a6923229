"""Qwen2.5-Omni, thinker only (``Qwen2_5OmniThinkerForConditionalGeneration``): audio, or audio
with video frames. Sites: the thinker decoder's ``self_attn.o_proj`` (Omni-7B: 28 x 28 heads).

The prompt is one user turn through the chat template: ``<|vision_bos|><|VIDEO|><|vision_eos|>``
(with video) then ``<|audio_bos|><|AUDIO|><|audio_eos|>`` then the text, with the assistant
generation prompt. Video and audio are separate parts of the turn (not the interleaved
"audio in video" layout), so any audio file can go with any video.

Inputs are built here rather than by the processor's ``__call__`` (so the processor here is just
its parts, :class:`OmniParts`): the audio goes through the feature extractor (30 s of log-mel frames, like the processor), each ``<|AUDIO|>`` /
``<|VIDEO|>`` is expanded to one token per encoder output, and video frames are cut into the
vision encoder's patches by :meth:`Qwen2_5OmniBackbone.video_patches` (Qwen2-VL layout: frames
resized to multiples of 28 px within a pixel budget, CLIP-normalised, 2-frame x 14 px patches
ordered by 2x2 merge groups). That needs no torchvision (the processor's video processor does)
and gives every transformers version the same inputs. Rotary positions (3-D, per modality) are
computed by the model from the attention mask, so left and right padding both work.

The audio tower already runs only on the valid mel frames: the thinker keeps the frames the
``feature_attention_mask`` marks (``input_features[mask]``), cuts each clip into windows of
``2 x n_window`` frames and attends within each window (``cu_seqlens``), so padding never
reaches the encoder and Qwen2-Audio's trimmed-encoder argument has nothing left to save. What
the reference inputs still waste is the log-mel of 30 s per clip, in numpy on the CPU. With
``BackboneOptions.fast`` (the default) only the first ``longest clip + 4`` mel frames are
computed, in torch on the model's device; the kept frames equal the feature extractor's (the
argument of :mod:`calm.backbones.qwen2_audio_fast`: the padded frames' log-mel is the floor, so
the clamp's maximum is the same), so the features are the reference path's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from calm.backbones.audio_encoder import log_mel
from calm.backbones.base import Backbone
from calm.backbones.qwen2_audio_fast import kept_frames, mel_lengths

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2.5-Omni's chat template (as shipped with the checkpoint, without the optional
"Audio 1:" / "Video 1:" numbering), used where a processor comes without one."""

AUDIO_TOKEN, VIDEO_TOKEN = "<|AUDIO|>", "<|VIDEO|>"


def audio_token_count(mel_frames: torch.Tensor) -> torch.Tensor:
    """Encoder outputs (= ``<|AUDIO|>`` tokens) for a number of valid mel frames: two stride-2 steps."""
    return ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1


def fit_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Height and width rounded to multiples of ``factor``, scaled into [min_pixels, max_pixels]
    with the aspect ratio kept (Qwen2-VL's rule)."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


@dataclass
class OmniParts:
    """The parts of the Qwen2.5-Omni processor the thinker adapter uses."""

    feature_extractor: Any
    tokenizer: Any
    chat_template: str = CHAT_TEMPLATE

    @classmethod
    def from_pretrained(
        cls, transformers: Any, name_or_path: str, default_template: str = CHAT_TEMPLATE
    ) -> "OmniParts":
        """Feature extractor, tokenizer and chat template of a checkpoint (its own template where
        it ships one as ``chat_template.json`` / ``chat_template.jinja``)."""
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path)
        feature_extractor = transformers.AutoFeatureExtractor.from_pretrained(name_or_path)
        return cls(feature_extractor, tokenizer, _shipped_template(Path(name_or_path)) or default_template)


def _shipped_template(path: Path) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return None


class Qwen2_5OmniBackbone(Backbone):
    family = "qwen2_5_omni"
    model_types = ("qwen2_5_omni", "qwen2_5_omni_thinker")
    model_class = "Qwen2_5OmniThinkerForConditionalGeneration"
    supports_video = True
    video_fps = 2.0
    """Frames per second sampled from a video (the rate Qwen2.5-Omni was trained with)."""
    max_video_frames = 64
    min_pixels = 128 * 28 * 28
    default_max_pixels = 768 * 28 * 28
    """Per-frame pixel budget of the Qwen2.5-Omni processor's video settings."""
    audio_token, video_token = AUDIO_TOKEN, VIDEO_TOKEN
    pixel_mean, pixel_std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    audio_padding = "max_length"
    """Feature-extractor padding: Qwen2.5-Omni's processor pads every clip to 30 s of mel frames."""
    default_chat_template = CHAT_TEMPLATE

    @property
    def max_pixels(self) -> int:
        """Per-frame pixel budget: the option ``video_max_pixels`` or the processor's default."""
        return self.options.video_max_pixels or self.default_max_pixels

    @property
    def frame_min_pixels(self) -> int:
        """The processor's minimum, or a quarter of a smaller budget (``video_max_pixels``)."""
        return min(self.min_pixels, self.max_pixels // 4)

    def __init__(self, model: nn.Module, processor: OmniParts, **kwargs: Any) -> None:
        super().__init__(model, processor, **kwargs)
        vision = model.config.vision_config
        self.patch_size = int(vision.patch_size)
        self.merge_size = int(vision.spatial_merge_size)
        self.temporal_patch_size = int(vision.temporal_patch_size)

    full_model: tuple[str, str] = ("qwen2_5_omni", "Qwen2_5OmniForConditionalGeneration")
    """The full checkpoint's ``model_type`` and class: loaded, its thinker is kept (no talker)."""

    @property
    def fast(self) -> bool:
        """Log-mel of the frames that carry audio only (the option; exact unless the feature extractor dithers)."""
        return self.options.fast and not getattr(self.processor.feature_extractor, "dither", 0.0)

    @classmethod
    def load_model(cls, transformers: Any, name_or_path: str, config: Any, dtype: torch.dtype) -> nn.Module:
        model_type, class_name = cls.full_model
        if config.model_type == model_type:  # the full checkpoint: keep the thinker, skip the talker
            full = getattr(transformers, class_name).from_pretrained(
                name_or_path, config=config, dtype=dtype, enable_audio_output=False
            )
            return full.thinker
        return super().load_model(transformers, name_or_path, config, dtype)

    @classmethod
    def load_processor(cls, transformers: Any, name_or_path: str) -> OmniParts:
        return OmniParts.from_pretrained(transformers, name_or_path, cls.default_chat_template)

    def render_prompt(self, prompt: str, with_video: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            self.prompt_messages(prompt, with_video), chat_template=self.processor.chat_template,
            add_generation_prompt=True, tokenize=False,
        )

    def video_frames(self, seconds: float) -> int:
        """How many frames to sample from a clip of this length (even, at :attr:`video_fps`)."""
        frames = int(round(seconds * self.video_fps))
        step = self.temporal_patch_size
        return min(self.max_video_frames, max(step, (frames + step - 1) // step * step))

    def video_patches(self, videos: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Vision-encoder patches of uint8 [T, H, W, 3] frame arrays: (pixel_values_videos
        [patches, 3*2*14*14], video_grid_thw [n, 3], ``<|VIDEO|>`` tokens per video)."""
        from PIL import Image

        p, m, tp = self.patch_size, self.merge_size, self.temporal_patch_size
        mean, std = np.array(self.pixel_mean, np.float32), np.array(self.pixel_std, np.float32)
        all_patches, grids, counts = [], [], []
        for frames in videos:
            frames = np.asarray(frames)
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f"video frames must be [T, H, W, 3], got shape {frames.shape}")
            if frames.shape[0] % tp:
                frames = np.concatenate([frames, np.repeat(frames[-1:], tp - frames.shape[0] % tp, axis=0)])
            h, w = fit_size(frames.shape[1], frames.shape[2], p * m, self.frame_min_pixels, self.max_pixels)
            resized = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in frames])
            pixels = ((resized.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)  # T, C, H, W
            gt, gh, gw = frames.shape[0] // tp, h // p, w // p
            patches = pixels.reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
            all_patches.append(patches.reshape(gt * gh * gw, 3 * tp * p * p))
            grids.append([gt, gh, gw])
            counts.append(gt * gh * gw // (m * m))
        return torch.from_numpy(np.concatenate(all_patches)), torch.tensor(grids), counts

    def build_inputs(
        self, audios: Sequence[np.ndarray], prompt: str, videos: Sequence[np.ndarray] | None = None,
        padding_side: str | None = None,
    ) -> dict[str, torch.Tensor]:
        if videos is not None and len(videos) != len(audios):
            raise ValueError(f"{len(videos)} videos for {len(audios)} audio clips")
        input_features, feature_mask = self.audio_features(audios)
        counts = [{self.audio_token: int(n)} for n in self.audio_token_count(feature_mask.sum(-1))]
        batch: dict[str, Any] = {"input_features": input_features, "feature_attention_mask": feature_mask}
        if videos is not None:
            pixels, grids, frames = self.video_patches(videos)
            counts = [{**clip, self.video_token: n} for clip, n in zip(counts, frames)]
            seconds = torch.full((len(videos),), self.temporal_patch_size / self.video_fps)
            batch.update(pixel_values_videos=pixels, video_grid_thw=grids, video_second_per_grid=seconds)
        template = self.prompt_tokens.ids(prompt, with_video=videos is not None)
        ids, mask = self.prompt_tokens.batch(template, counts, padding_side or self.padding_side)
        batch.update(input_ids=ids, attention_mask=mask)
        return self.to_device(batch)

    def audio_token_count(self, mel_frames: torch.Tensor) -> torch.Tensor:
        """Audio tokens for each clip's number of valid mel frames."""
        return audio_token_count(mel_frames)

    def audio_features(self, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel frames [B, mels, T] and their mask [B, T]: the feature extractor's 30 s (reference)
        or, on the fast path, only its first ``longest clip + 4`` frames, computed in torch."""
        fe = self.processor.feature_extractor
        if not self.fast:
            out = fe(list(audios), sampling_rate=self.sample_rate, padding=self.audio_padding,
                     return_attention_mask=True, return_tensors="pt")
            return out["input_features"], out["attention_mask"]
        lengths = torch.tensor(mel_lengths(audios, fe))
        frames = kept_frames(int(lengths.max()), int(fe.nb_max_frames))
        mask = (torch.arange(frames)[None, :] < lengths[:, None]).long()
        return log_mel(audios, fe, frames, self.device), mask

    def forward_kwargs(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        # No position ids: the thinker derives its 3-D rotary positions from the attention mask.
        return {**inputs, "use_cache": False}

"""Qwen3-Omni, thinker only (``Qwen3OmniMoeThinkerForConditionalGeneration``): audio, or audio
with video frames. Sites: the thinker's MoE decoder ``self_attn.o_proj`` (Qwen3-Omni-30B-A3B:
48 layers x 32 heads, D = 128).

The same adapter as Qwen2.5-Omni (:mod:`calm.backbones.qwen2_5_omni`: inputs built here, no
torchvision, video and audio as separate parts of one user turn), with Qwen3-Omni's differences:

* tokens ``<|audio_start|><|audio_pad|><|audio_end|>`` and ``<|vision_start|><|video_pad|><|vision_end|>``,
  and no default system turn in the chat template;
* the audio is *not* padded to 30 s: the feature extractor pads to the longest clip of the batch
  and the encoder, which works in chunks of ``2 * n_window`` mel frames with each clip's own
  length, gives ``audio_token_count`` tokens per clip (13 per full chunk), so batching changes
  nothing;
* video patches of 16 px (32 px after the 2x2 merge) normalised with mean = std = 0.5.

Positions are the model's own: with video, its 3-D rotary positions (time, height, width) come
from ``get_rope_index`` on the attention mask; audio-only prompts get the mask's running count on
all three axes. Either way no 1-D ``position_ids`` are passed, so left and right padding agree.
"""

from __future__ import annotations


import torch

from calm.backbones.qwen2_5_omni import Qwen2_5OmniBackbone

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'audio' %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen3-Omni-Instruct's chat template for user turns of audio, video and text (used where a
checkpoint ships none)."""


def audio_token_count(mel_frames: torch.Tensor, n_window: int) -> torch.Tensor:
    """Encoder outputs (= ``<|audio_pad|>`` tokens) for a number of valid mel frames: 13 per full
    chunk of ``2 * n_window`` frames, and three stride-2 steps on the rest."""
    chunk = 2 * n_window
    rest = (mel_frames % chunk - 1) // 2 + 1
    return ((rest - 1) // 2 + 1 - 1) // 2 + 1 + (mel_frames // chunk) * 13


class Qwen3OmniBackbone(Qwen2_5OmniBackbone):
    family = "qwen3_omni"
    model_types = ("qwen3_omni_moe", "qwen3_omni_moe_thinker")
    model_class = "Qwen3OmniMoeThinkerForConditionalGeneration"
    min_pixels = 128 * 32 * 32
    default_max_pixels = 768 * 32 * 32
    """Per-frame pixel budget of the Qwen3-Omni processor's video settings."""
    audio_token, video_token = "<|audio_pad|>", "<|video_pad|>"
    pixel_mean = pixel_std = (0.5, 0.5, 0.5)
    audio_padding = "longest"
    default_chat_template = CHAT_TEMPLATE

    full_model = ("qwen3_omni_moe", "Qwen3OmniMoeForConditionalGeneration")

    @property
    def fast(self) -> bool:
        """No fast path (Qwen2.5-Omni's is exact for its audio tower; this one's is not checked)."""
        return False

    def audio_token_count(self, mel_frames: torch.Tensor) -> torch.Tensor:
        return audio_token_count(mel_frames, int(self.model.config.audio_config.n_window))

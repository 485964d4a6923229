"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration``): a Whisper-style audio encoder feeding a
Qwen2 decoder. Sites: the decoder's ``self_attn.o_proj`` (Qwen2-Audio-7B: 32 layers x 32 heads).

The prompt is one user turn, ``Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\\n{prompt}``, through
the processor's chat template with the assistant generation prompt; the processor expands
``<|AUDIO|>`` to one token per encoder frame, so sequences differ in length and are padded.
Audio longer than 30 s is cut to 30 s by the feature extractor.
"""

from __future__ import annotations

from calm.backbones.base import Backbone


class Qwen2AudioBackbone(Backbone):
    family = "qwen2_audio"
    model_types = ("qwen2_audio",)
    model_class = "Qwen2AudioForConditionalGeneration"

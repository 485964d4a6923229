"""Tiny random backbones for tests: the real architectures, built from their real config classes
with a few small layers, a byte-level tokenizer with the family's special tokens and chat
template, and the real feature extractor class (right number of mel bins). No hub, no network;
each builds in well under a second on a CPU.

    >>> backbone = tiny_backbone("qwen2_audio")
    >>> backbone.head_index()  # 2 layers x 4 heads

``calm.load_backbone("tiny:<family>")`` loads them too (CLI smoke runs).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from calm.backbones import tiny_families
from calm.backbones.base import Backbone
from calm.backbones.options import BackboneOptions
from calm.backbones.registry import FAMILIES, adapter_class
from calm.backbones.tiny_parts import (ENCODER_POSITIONS, QWEN_SPECIALS, WINDOW_SECONDS, qwen_text, tiny_features,
                                       tiny_tokenizer)

__all__ = ["TINY_FAMILIES", "TINY_OPTIONS", "WINDOW_SECONDS", "tiny_backbone", "tiny_tokenizer"]


def _qwen2_audio(**overrides: Any) -> tuple[Callable[[], torch.nn.Module], Any]:
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
    )

    tokenizer = tiny_tokenizer(QWEN_SPECIALS + ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"),
                               eos="<|im_end|>", pad="<|endoftext|>")
    # The processor's own template is the one Qwen2-Audio-7B-Instruct ships.
    processor = Qwen2AudioProcessor(feature_extractor=tiny_features(128), tokenizer=tokenizer)
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, encoder_layers=1,
                          encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16,
                          max_source_positions=ENCODER_POSITIONS),
        text_config=dict(model_type="qwen2", **qwen_text(len(tokenizer), **overrides)),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    return lambda: Qwen2AudioForConditionalGeneration(config), processor


WHISPER_SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>",
                    "<|startofprev|>")


def _whisper(**overrides: Any) -> tuple[Callable[[], torch.nn.Module], Any]:
    from transformers import (
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    tokenizer = tiny_tokenizer(WHISPER_SPECIALS, eos="<|endoftext|>", pad="<|endoftext|>")
    processor = WhisperProcessor(feature_extractor=tiny_features(80), tokenizer=tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in WHISPER_SPECIALS}
    fields = dict(vocab_size=len(tokenizer), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=2,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                  max_source_positions=ENCODER_POSITIONS, max_target_positions=128, pad_token_id=ids["<|endoftext|>"],
                  bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
                  decoder_start_token_id=ids["<|startoftranscript|>"],
                  # at the default 0.02 the random attention is nearly uniform over the encoder's
                  # positions, so every head averages the clip away and is constant; 0.5 makes the
                  # cross-attention heads vary with the audio, as a trained Whisper's do
                  init_std=0.5)
    fields.update(overrides)
    config = WhisperConfig(**fields)
    return lambda: WhisperForConditionalGeneration(config), processor


OMNI_NAMED = {
    "audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}


def _qwen2_5_omni(**overrides: Any) -> tuple[Callable[[], torch.nn.Module], Any]:
    from transformers import (
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
    )

    from calm.backbones.qwen2_5_omni import OmniParts

    tokenizer = tiny_tokenizer(QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>", named=OMNI_NAMED)
    processor = OmniParts(tiny_features(128), tokenizer)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in OMNI_NAMED.items()}
    text = qwen_text(len(tokenizer), **overrides)
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6,
                               "mrope_section": [head_dim // 8, head_dim // 8, head_dim // 4]}
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                          d_model=16, output_dim=text["hidden_size"], n_window=100,
                          max_source_positions=ENCODER_POSITIONS),
        vision_config=dict(depth=1, hidden_size=16, num_heads=2, intermediate_size=32,
                           out_hidden_size=text["hidden_size"], fullatt_block_indexes=[0]),
        text_config=text,
        audio_token_index=ids["audio_token"], image_token_index=ids["image_token"],
        video_token_index=ids["video_token"], audio_start_token_id=ids["audio_bos_token"],
        audio_end_token_id=ids["audio_eos_token"], vision_start_token_id=ids["vision_bos_token"],
        vision_end_token_id=ids["vision_eos_token"],
    )
    return lambda: Qwen2_5OmniThinkerForConditionalGeneration(config), processor


def _qwen_chat_template(audio: str) -> str:
    """A Qwen (ChatML) chat template whose audio parts render as ``audio``."""
    return (
        "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for content in message['content'] %}"
        "{% if content['type'] == 'audio' %}" + audio + "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def _audioflamingo3(**overrides: Any) -> tuple[Callable[[], torch.nn.Module], Any]:
    """Audio Flamingo 3: Whisper-style encoder (30 s windows), Qwen2 decoder, ``<sound>`` tokens."""
    from transformers import (
        AudioFlamingo3Config,
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Processor,
    )

    tokenizer = tiny_tokenizer(QWEN_SPECIALS + ("<sound>",), eos="<|im_end|>", pad="<|endoftext|>")
    processor = AudioFlamingo3Processor(tiny_features(128), tokenizer,
                                        chat_template=_qwen_chat_template("<sound>"))
    config = AudioFlamingo3Config(
        audio_config=dict(model_type="audioflamingo3_encoder", num_mel_bins=128, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=32, hidden_size=16,
                          max_source_positions=ENCODER_POSITIONS),
        text_config=dict(model_type="qwen2", **qwen_text(len(tokenizer), **overrides)),
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
    )
    return lambda: AudioFlamingo3ForConditionalGeneration(config), processor


GLM_SPECIALS = ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|begin_of_audio|>",
                "<|end_of_audio|>", "<|pad|>")

GLM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' %}<|begin_of_audio|><|pad|><|end_of_audio|>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""GLM-4 style turns (``<|user|>`` ... ``<|assistant|>``) with the audio between begin/end markers."""


def _glmasr(**overrides: Any) -> tuple[Callable[[], torch.nn.Module], Any]:
    """GLM-ASR: rotary Whisper-style encoder, Llama decoder, ``<|pad|>`` audio tokens."""
    from transformers import (
        GlmAsrConfig,
        GlmAsrForConditionalGeneration,
        GlmAsrProcessor,
    )

    tokenizer = tiny_tokenizer(GLM_SPECIALS, eos="<|endoftext|>", pad="<|endoftext|>")
    processor = GlmAsrProcessor(tiny_features(128), tokenizer, chat_template=GLM_CHAT_TEMPLATE)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    text.update(overrides)
    config = GlmAsrConfig(
        audio_config=dict(model_type="glmasr_encoder", num_mel_bins=128, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, hidden_size=16, max_position_embeddings=ENCODER_POSITIONS),
        text_config=dict(model_type="llama", **text),
        audio_token_id=tokenizer.convert_tokens_to_ids("<|pad|>"),
    )
    return lambda: GlmAsrForConditionalGeneration(config), processor


TINY_OPTIONS: dict[str, dict[str, Any]] = {
    # small frames (at most 4x4 patches) keep the vision tower cheap
    "qwen2_5_omni": {"video_max_pixels": 112 * 112},
    "qwen3_omni": {"video_max_pixels": 128 * 128},
}
"""Backbone options a tiny model sets by default (the caller's options win)."""


TINY_FAMILIES: dict[str, Callable[..., tuple[Callable[[], torch.nn.Module], Any]]] = {
    "qwen2_audio": _qwen2_audio,
    "qwen2_5_omni": _qwen2_5_omni,
    "whisper": _whisper,
    "audioflamingo3": _audioflamingo3,
    "glmasr": _glmasr,
    "qwen3_omni": tiny_families.qwen3_omni,
    "granite_speech": tiny_families.granite_speech,
    "voxtral": tiny_families.voxtral,
    "phi4_multimodal": tiny_families.phi4_multimodal,
    "gemma3n": tiny_families.gemma3n,
}
"""Family -> builder returning (model constructor, processor)."""


def tiny_backbone(family: str, seed: int = 0, options: BackboneOptions | None = None, **overrides: Any) -> Backbone:
    """A tiny random backbone of ``family`` (see :data:`TINY_FAMILIES`), deterministic for ``seed``.

    ``overrides`` change the decoder's config fields (e.g. ``num_hidden_layers=3``).
    The adapter is the one :func:`calm.load_backbone` would pick for the real model.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(f"no tiny model for family {family!r}; known: {sorted(TINY_FAMILIES)}")
    build, processor = TINY_FAMILIES[family](**overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    defaults = TINY_OPTIONS.get(family, {})
    options = options or BackboneOptions()
    chosen = {k: v for k, v in defaults.items() if getattr(options, k) == getattr(BackboneOptions(), k)}
    adapter = adapter_class(family if family in FAMILIES else "generic")
    return adapter(model, processor, model_id=f"tiny:{family}", revision=f"tiny-seed{seed}",
                   options=options.replace(**chosen))

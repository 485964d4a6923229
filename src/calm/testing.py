"""Tiny random backbones for tests: the real architectures, built from their real config classes
with a few small layers, a byte-level tokenizer with the family's special tokens and chat
template, and the real feature extractor class (right number of mel bins). No hub, no network;
each builds in well under a second on a CPU.

    >>> backbone = tiny_backbone("qwen2_audio")
    >>> backbone.head_index()  # 2 layers x 4 heads
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from calm.backbones import adapter_class
from calm.backbones.base import Backbone

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Qwen chat tokens; ``<|endoftext|>`` pads, ``<|im_end|>`` ends a turn."""


def tiny_tokenizer(special_tokens: tuple[str, ...], eos: str, pad: str, chat_template: str | None = None) -> Any:
    """A byte-level tokenizer (256 byte tokens, no merges) with ``special_tokens`` appended, so any
    text round-trips and the special tokens are single ids as in the real tokenizers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=eos, pad_token=pad, additional_special_tokens=list(special_tokens)
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _qwen_text(vocab_size: int, **overrides: Any) -> dict[str, Any]:
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6)
    text.update(overrides)
    return text


def _qwen2_audio(**overrides: Any) -> tuple[Callable[[], torch.nn.Module], Any]:
    from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                              WhisperFeatureExtractor)

    tokenizer = tiny_tokenizer(QWEN_SPECIALS + ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"),
                               eos="<|im_end|>", pad="<|endoftext|>")
    # The processor's own template is the one Qwen2-Audio-7B-Instruct ships.
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer)
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, encoder_layers=1,
                          encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16),
        text_config=dict(model_type="qwen2", **_qwen_text(len(tokenizer), **overrides)),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    return lambda: Qwen2AudioForConditionalGeneration(config), processor


WHISPER_SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>",
                    "<|startofprev|>")


def _whisper(**overrides: Any) -> tuple[Callable[[], torch.nn.Module], Any]:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    tokenizer = tiny_tokenizer(WHISPER_SPECIALS, eos="<|endoftext|>", pad="<|endoftext|>")
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in WHISPER_SPECIALS}
    fields = dict(vocab_size=len(tokenizer), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=2,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                  max_source_positions=1500, max_target_positions=64, pad_token_id=ids["<|endoftext|>"],
                  bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
                  decoder_start_token_id=ids["<|startoftranscript|>"])
    fields.update(overrides)
    config = WhisperConfig(**fields)
    return lambda: WhisperForConditionalGeneration(config), processor


TINY_FAMILIES: dict[str, Callable[..., tuple[Callable[[], torch.nn.Module], Any]]] = {
    "qwen2_audio": _qwen2_audio,
    "whisper": _whisper,
}
"""Family -> builder returning (model constructor, processor)."""


def tiny_backbone(family: str, seed: int = 0, **overrides: Any) -> Backbone:
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
    adapter = adapter_class(family if family in _ADAPTED else "generic")
    return adapter(model, processor, model_id=f"tiny:{family}", revision=f"tiny-seed{seed}")


_ADAPTED = ("qwen2_audio", "qwen2_5_omni", "whisper")

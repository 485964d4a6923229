"""What the tiny random models share: their 5 s audio window, a byte-level tokenizer with a
family's special tokens, the real Whisper-style feature extractor, a small Qwen text config."""

from __future__ import annotations

from typing import Any

WINDOW_SECONDS = 5
"""Audio window of the tiny models (the real ones take 30 s): the same feature extractor and
encoder classes, with ``chunk_length`` and the encoder's positions cut to match, so a test
clip's mel frames and encoder pass cost a sixth."""

ENCODER_POSITIONS = WINDOW_SECONDS * 50
"""Encoder positions for :data:`WINDOW_SECONDS` (100 mel frames per second, stride 2)."""


def tiny_features(n_mels: int) -> Any:
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=n_mels, chunk_length=WINDOW_SECONDS)


QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Qwen chat tokens; ``<|endoftext|>`` pads, ``<|im_end|>`` ends a turn."""


def tiny_tokenizer(
    special_tokens: tuple[str, ...], eos: str, pad: str, named: dict[str, str] | None = None,
    chat_template: str | None = None,
) -> Any:
    """A byte-level tokenizer (256 byte tokens, no merges) with ``special_tokens`` appended, so any
    text round-trips and the special tokens are single ids as in the real tokenizers. ``named``
    tokens become attributes (``tokenizer.audio_token``, ``tokenizer.audio_token_id`` ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(dict.fromkeys([*special_tokens, *(named or {}).values()])))
    options: dict[str, Any] = {"extra_special_tokens": dict(named)} if named else {}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos, pad_token=pad, **options)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def qwen_text(vocab_size: int, **overrides: Any) -> dict[str, Any]:
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6)
    text.update(overrides)
    return text

"""Tiny random models of the newer families (Qwen3-Omni, Granite Speech, Voxtral, Phi-4-multimodal,
Gemma 3n), built like those of :mod:`calm.testing`: the real config and model classes with a few
small layers, a byte-level tokenizer with the family's special tokens, and the real feature
extractor class where it runs here. Each builder returns (model constructor, processor) and is
registered in :data:`calm.testing.TINY_FAMILIES`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

Builder = tuple[Callable[[], torch.nn.Module], Any]

QWEN3_OMNI_NAMED = {
    "audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>",
    "image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
}


def qwen3_omni(**overrides: Any) -> Builder:
    """Qwen3-Omni thinker: chunked Whisper-style audio encoder, Qwen3-VL vision encoder, MoE decoder."""
    from transformers import Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

    from calm.backbones.qwen2_5_omni import OmniParts
    from calm.backbones.qwen3_omni import CHAT_TEMPLATE
    from calm.testing import ENCODER_POSITIONS, QWEN_SPECIALS, _features, tiny_tokenizer

    tokenizer = tiny_tokenizer(QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>", named=QWEN3_OMNI_NAMED)
    processor = OmniParts(_features(128), tokenizer, CHAT_TEMPLATE)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in QWEN3_OMNI_NAMED.items()}
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                num_experts=4, num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1],
                                 "mrope_interleaved": True})
    text.update(overrides)
    config = Qwen3OmniMoeThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                          d_model=16, output_dim=text["hidden_size"], n_window=50, n_window_infer=100,
                          downsample_hidden_size=8, max_source_positions=ENCODER_POSITIONS),
        vision_config=dict(depth=2, hidden_size=16, num_heads=2, intermediate_size=32,
                           out_hidden_size=text["hidden_size"], num_position_embeddings=64,
                           deepstack_visual_indexes=[0]),
        text_config=text,
        audio_token_id=ids["audio_token"], image_token_id=ids["image_token"], video_token_id=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"], vision_start_token_id=ids["vision_bos_token"],
        position_id_per_seconds=13,
    )
    return lambda: Qwen3OmniMoeThinkerForConditionalGeneration(config), processor


GRANITE_SPECIALS = ("<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|audio|>")

GRANITE_CHAT_TEMPLATE = (
    "{% for message in messages %}<|start_of_role|>{{ message['role'] }}<|end_of_role|>"
    "{{ message['content'] }}<|end_of_text|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}"
)
"""Granite 3.3's turns (string contents), as the granite-speech checkpoints ship them."""


def granite_speech(**overrides: Any) -> Builder:
    """Granite Speech: conformer encoder (block attention of ``context_size`` frames), Q-Former
    projector, Granite decoder."""
    from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration

    from calm.backbones.granite_speech import GraniteMel
    from calm.backbones.parts import ProcessorParts
    from calm.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer(GRANITE_SPECIALS, eos="<|end_of_text|>", pad="<|end_of_text|>",
                               chat_template=GRANITE_CHAT_TEMPLATE)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                embedding_multiplier=12.0, attention_multiplier=0.125, residual_multiplier=0.22, logits_scaling=8.0)
    text.update(overrides)
    config = GraniteSpeechConfig(
        text_config=dict(model_type="granite", **text),
        encoder_config=dict(input_dim=160, num_layers=2, hidden_dim=16, num_heads=2, output_dim=8, context_size=20,
                            max_pos_emb=20, dropout=0.0),
        projector_config=dict(model_type="blip_2_qformer", hidden_size=16, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=32, encoder_hidden_size=16,
                              cross_attention_frequency=1),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|audio|>"), has_lora_adapter=False,
    )
    return lambda: GraniteSpeechForConditionalGeneration(config), ProcessorParts(GraniteMel(), tokenizer)


VOXTRAL_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[AUDIO]", "[BEGIN_AUDIO]")


def voxtral(**overrides: Any) -> Builder:
    """Voxtral: Whisper encoder on 4 s chunks (30 s in the real ones), 4 frames per token, Llama decoder."""
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration, WhisperFeatureExtractor

    from calm.backbones.parts import ProcessorParts
    from calm.testing import tiny_tokenizer

    seconds = 4
    tokenizer = tiny_tokenizer(VOXTRAL_SPECIALS, eos="</s>", pad="<pad>")
    tokenizer.bos_token, tokenizer.unk_token = "<s>", "<unk>"
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
                rms_norm_eps=1e-5)
    text.update(overrides)
    config = VoxtralConfig(
        audio_config=dict(num_mel_bins=128, hidden_size=16, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, max_source_positions=seconds * 50),
        text_config=dict(model_type="llama", **text),
        audio_token_id=tokenizer.convert_tokens_to_ids("[AUDIO]"),
    )
    features = WhisperFeatureExtractor(feature_size=128, chunk_length=seconds)
    return lambda: VoxtralForConditionalGeneration(config), ProcessorParts(features, tokenizer)


PHI4_SPECIALS = ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>")
PHI4_NAMED = {"audio_token": "<|endoftext11|>", "image_token": "<|endoftext10|>"}
PHI4_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""Phi-4's turns (string contents)."""


def phi4_multimodal(**overrides: Any) -> Builder:
    """Phi-4-multimodal: conformer speech encoder (8x time reduction), SigLIP-style vision tower,
    Phi-4-mini decoder (fused qkv, partial rotary)."""
    from transformers import Phi4MultimodalConfig, Phi4MultimodalFeatureExtractor, Phi4MultimodalForCausalLM

    from calm.backbones.parts import ProcessorParts
    from calm.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer(PHI4_SPECIALS, eos="<|end|>", pad="<|endoftext|>", named=PHI4_NAMED,
                               chat_template=PHI4_CHAT_TEMPLATE)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in PHI4_NAMED.items()}
    fields = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  original_max_position_embeddings=4096, partial_rotary_factor=0.75,
                  bos_token_id=ids["audio_token"] - 2, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    fields.update(overrides)
    config = Phi4MultimodalConfig(
        **fields,
        audio_config=dict(hidden_size=16, intermediate_size=32, num_blocks=2, num_attention_heads=2, input_size=80,
                          ext_pw_out_channel=16, depthwise_separable_out_channel=16, nemo_conv_channels=16,
                          time_reduction=8, bias_max_distance=50, left_chunk=18, chunk_size=-1,
                          audio_token_id=ids["audio_token"]),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, crop_size=28, patch_size=14, image_token_id=ids["image_token"]),
    )
    return lambda: Phi4MultimodalForCausalLM(config), ProcessorParts(Phi4MultimodalFeatureExtractor(), tokenizer)

"""Tiny random models of the newer families (Qwen3-Omni, Granite Speech, Voxtral, Phi-4-multimodal,
Gemma 3n), built like those of :mod:`calm.backbones.tiny`: the real config and model classes with a few
small layers, a byte-level tokenizer with the family's special tokens, and the real feature
extractor class where it runs here. Each builder returns (model constructor, processor) and is
registered in :data:`calm.backbones.tiny.TINY_FAMILIES`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from calm.backbones.tiny_parts import ENCODER_POSITIONS, QWEN_SPECIALS, WINDOW_SECONDS, tiny_features, tiny_tokenizer

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

    tokenizer = tiny_tokenizer(QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>", named=QWEN3_OMNI_NAMED)
    processor = OmniParts(tiny_features(128), tokenizer, CHAT_TEMPLATE)
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


GEMMA3N_TEXT_SPECIALS = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                         "<start_of_audio>")
GEMMA3N_VISION_TOKENS = ("<end_of_image>", "<image_soft_token>", "<vision_2>", "<vision_3>")
GEMMA3N_AUDIO_TOKENS = ("<end_of_audio>", "<audio_soft_token>", "<audio_2>", "<audio_3>")
"""Gemma 3n's vocabulary: text, then the vision tower's tokens, then the audio tower's (ids at or
past each tower's ``vocab_offset`` are embedded by that tower's embedder)."""

GEMMA3N_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'audio' %}<audio_soft_token>{% elif item['type'] == 'image' %}<image_soft_token>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
"""Gemma 3n's chat template (user and model turns, audio and text parts)."""


class _AbsentVisionTower(torch.nn.Module):
    """Stands in for Gemma 3n's MobileNetV5 vision tower where ``timm`` cannot be imported; the
    audio path never calls it."""

    def forward(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the tiny Gemma 3n has no vision tower here: timm (which needs torchvision) is missing")


def gemma3n(**overrides: Any) -> Builder:
    """Gemma 3n: USM conformer audio encoder (4x4 time reduction), Gemma 3n decoder (AltUp, LAuReL,
    per-layer inputs, KV sharing), 32 audio soft tokens per clip for 5 s (188 for 30 s in the real
    ones). Without timm the vision tower is :class:`_AbsentVisionTower`; everything else is the
    real classes."""
    from unittest import mock

    from transformers import Gemma3nAudioFeatureExtractor, Gemma3nConfig, Gemma3nForConditionalGeneration
    from transformers.models.gemma3n import modeling_gemma3n
    from transformers.utils import is_timm_available

    from calm.backbones.parts import ProcessorParts

    named = {"boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>", "audio_token": "<audio_soft_token>",
             "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tokenizer = tiny_tokenizer(GEMMA3N_TEXT_SPECIALS + GEMMA3N_VISION_TOKENS + GEMMA3N_AUDIO_TOKENS, eos="<eos>",
                               pad="<pad>", named=named, chat_template=GEMMA3N_CHAT_TEMPLATE)
    tokenizer.bos_token = "<bos>"
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in named.items()}
    text_vocab = tokenizer.convert_tokens_to_ids(GEMMA3N_VISION_TOKENS[0])
    audio_offset = tokenizer.convert_tokens_to_ids(GEMMA3N_AUDIO_TOKENS[0])
    text = dict(vocab_size=len(tokenizer), vocab_size_per_layer_input=text_vocab, hidden_size=32,
                intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                hidden_size_per_layer_input=4, num_kv_shared_layers=1, laurel_rank=4, altup_num_inputs=2,
                sliding_window=16, layer_types=["full_attention", "full_attention"],
                activation_sparsity_pattern=[0.0, 0.0], pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    text.update(overrides)
    config = Gemma3nConfig(
        text_config=text,
        audio_config=dict(hidden_size=16, conf_num_attention_heads=2, conf_num_hidden_layers=1,
                          sscp_conv_channel_size=[4, 4], vocab_size=len(GEMMA3N_AUDIO_TOKENS),
                          vocab_offset=audio_offset),
        vision_config=dict(hidden_size=16, vocab_size=len(GEMMA3N_VISION_TOKENS), vocab_offset=text_vocab),
        audio_soft_tokens_per_image=WINDOW_SECONDS * 100 // 16, vision_soft_tokens_per_image=4,
        boi_token_id=ids["boi_token"], eoi_token_id=ids["eoi_token"], image_token_id=ids["image_token"],
        boa_token_id=ids["boa_token"], eoa_token_id=ids["eoa_token"], audio_token_id=ids["audio_token"],
    )

    def build() -> torch.nn.Module:
        if is_timm_available():
            return Gemma3nForConditionalGeneration(config)
        real = modeling_gemma3n.AutoModel.from_config

        def from_config(sub_config: Any, *args: Any, **kwargs: Any) -> torch.nn.Module:
            if sub_config is config.vision_config:
                return _AbsentVisionTower()
            return real(sub_config, *args, **kwargs)

        with mock.patch.object(modeling_gemma3n.AutoModel, "from_config", from_config):
            return Gemma3nForConditionalGeneration(config)

    return build, ProcessorParts(Gemma3nAudioFeatureExtractor(), tokenizer)

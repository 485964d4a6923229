"""Heads x D of every family's released checkpoints, from their published config values: the real
model class is built on the meta device (no weights allocated) and its sites are discovered as
for a loaded model. The README's model table quotes these numbers."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from calm.backbones import adapter_class, detect_family
from calm.backbones.sites import discover_sites


def _qwen2_audio() -> Any:
    from transformers import Qwen2AudioConfig

    return Qwen2AudioConfig(text_config=dict(model_type="qwen2", vocab_size=156032, hidden_size=4096,
                                             intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                                             num_key_value_heads=32))


def _qwen2_5_omni(vocab: int, hidden: int, layers: int, heads: int, kv: int, ffn: int) -> Callable[[], Any]:
    def config() -> Any:
        from transformers import Qwen2_5OmniThinkerConfig

        return Qwen2_5OmniThinkerConfig(text_config=dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn,
                                                         num_hidden_layers=layers, num_attention_heads=heads,
                                                         num_key_value_heads=kv))
    return config


def _whisper(vocab: int, mel_bins: int, d_model: int, layers: int, heads: int) -> Callable[[], Any]:
    def config() -> Any:
        from transformers import WhisperConfig

        return WhisperConfig(vocab_size=vocab, num_mel_bins=mel_bins, d_model=d_model, encoder_layers=layers,
                             decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
                             encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model)
    return config


def _audioflamingo3() -> Any:
    from transformers import AudioFlamingo3Config

    return AudioFlamingo3Config(text_config=dict(model_type="qwen2", vocab_size=151672, hidden_size=3584,
                                                 intermediate_size=18944, num_hidden_layers=28,
                                                 num_attention_heads=28, num_key_value_heads=4))


def _glmasr() -> Any:
    from transformers import GlmAsrConfig

    return GlmAsrConfig()  # its defaults are GLM-ASR-Nano-2512's (2048 wide, 28 layers x 16 heads)


def _qwen3_omni() -> Any:
    from transformers import Qwen3OmniMoeThinkerConfig

    return Qwen3OmniMoeThinkerConfig(text_config=dict(
        vocab_size=152064, hidden_size=2048, intermediate_size=768, moe_intermediate_size=768, num_experts=128,
        num_experts_per_tok=8, num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128))


def _granite_speech(hidden: int, ffn: int) -> Callable[[], Any]:
    def config() -> Any:
        from transformers import GraniteSpeechConfig

        return GraniteSpeechConfig(
            text_config=dict(model_type="granite", vocab_size=49160, hidden_size=hidden, intermediate_size=ffn,
                             num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=8),
            has_lora_adapter=False)
    return config


def _voxtral(hidden: int, layers: int, ffn: int) -> Callable[[], Any]:
    def config() -> Any:
        from transformers import VoxtralConfig

        return VoxtralConfig(text_config=dict(model_type="llama", vocab_size=131072, hidden_size=hidden,
                                              intermediate_size=ffn, num_hidden_layers=layers, num_attention_heads=32,
                                              num_key_value_heads=8, head_dim=128))
    return config


def _phi4_multimodal() -> Any:
    from transformers import Phi4MultimodalConfig

    return Phi4MultimodalConfig(vocab_size=200064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                                num_attention_heads=24, num_key_value_heads=8)


def _gemma3n(layers: int, ffn: int, kv_shared: int) -> Callable[[], Any]:
    def config() -> Any:
        from transformers import Gemma3nConfig

        return Gemma3nConfig(text_config=dict(hidden_size=2048, intermediate_size=ffn, num_hidden_layers=layers,
                                              num_attention_heads=8, num_key_value_heads=2, head_dim=256,
                                              num_kv_shared_layers=kv_shared))
    return config


# Every value checked (2026-12) against the checkpoint's config.json on the Hugging Face Hub or a faithful copy
# of it: Qwen2-Audio-7B-Instruct's own (text sizes not set there are Qwen2Config's defaults), whisper-large-v3 /
# -base and Voxtral-Small as saved by fine-tunes and mirrors, Qwen3-Omni-30B-A3B-Instruct and Phi-4-multimodal
# as dumped or transcribed by ports; transformers' convert_audioflamingo3_to_hf.py (which wrote
# audio-flamingo-3-hf) and its config defaults documented as GLM-ASR-Nano-2512's and Voxtral-Mini-3B-2507's;
# for Qwen2.5-Omni, Granite Speech 3.3 and Gemma 3n, ports that transcribe the released configs.
RELEASED: dict[str, tuple[str, Callable[[], Any], int, int]] = {
    # checkpoint: (family, its config, K heads, D)
    "Qwen/Qwen2-Audio-7B-Instruct": ("qwen2_audio", _qwen2_audio, 1024, 128),
    "Qwen/Qwen2.5-Omni-7B (thinker)": ("qwen2_5_omni", _qwen2_5_omni(152064, 3584, 28, 28, 4, 18944), 784, 128),
    "Qwen/Qwen2.5-Omni-3B (thinker)": ("qwen2_5_omni", _qwen2_5_omni(151936, 2048, 36, 16, 2, 11008), 576, 128),
    "openai/whisper-large-v3": ("whisper", _whisper(51866, 128, 1280, 32, 20), 2 * 32 * 20, 64),
    "openai/whisper-base": ("whisper", _whisper(51865, 80, 512, 6, 8), 2 * 6 * 8, 64),
    "nvidia/audio-flamingo-3-hf": ("generic", _audioflamingo3, 784, 128),
    "zai-org/GLM-ASR-Nano-2512": ("generic", _glmasr, 448, 128),
    "Qwen/Qwen3-Omni-30B-A3B-Instruct (thinker)": ("qwen3_omni", _qwen3_omni, 1536, 128),
    "ibm-granite/granite-speech-3.3-8b": ("granite_speech", _granite_speech(4096, 12800), 1280, 128),
    "ibm-granite/granite-speech-3.3-2b": ("granite_speech", _granite_speech(2048, 8192), 1280, 64),
    "mistralai/Voxtral-Mini-3B-2507": ("voxtral", _voxtral(3072, 30, 8192), 960, 128),
    "mistralai/Voxtral-Small-24B-2507": ("voxtral", _voxtral(5120, 40, 32768), 1280, 128),
    "microsoft/Phi-4-multimodal-instruct": ("phi4_multimodal", _phi4_multimodal, 768, 128),
    "google/gemma-3n-E4B-it": ("gemma3n", _gemma3n(35, 16384, 15), 280, 256),
    "google/gemma-3n-E2B-it": ("gemma3n", _gemma3n(30, 8192, 10), 240, 256),
}


def _meta_model(family: str, config: Any) -> torch.nn.Module:
    """The family's model class on the meta device; Gemma 3n's language model alone where timm (its
    vision tower) is missing, since the sites are the language model's."""
    import transformers
    from transformers.utils import is_timm_available

    # generic checkpoints name their class in config.architectures; these configs are built by hand
    name = adapter_class(family).model_class or type(config).__name__.replace("Config", "ForConditionalGeneration")
    if family == "gemma3n" and not is_timm_available():
        name, config = "Gemma3nForCausalLM", config.text_config
    with torch.device("meta"):
        return getattr(transformers, name)(config)


@pytest.mark.parametrize("checkpoint", sorted(RELEASED))
def test_released_heads_and_head_size(checkpoint):
    import transformers

    family, make_config, heads, head_dim = RELEASED[checkpoint]
    try:
        config = make_config()
    except ImportError as error:
        pytest.skip(f"transformers {transformers.__version__} has no {family} config: {error}")
    assert detect_family(config) == family
    model = _meta_model(family, config)
    assert next(model.parameters()).device.type == "meta"
    sites = discover_sites(model, adapter_class(family).site_kinds)
    assert (sum(site.num_heads for site in sites), sites[0].head_dim) == (heads, head_dim)

"""Backbones: family detection, site discovery (decoder only, layer order, head counts), loading
from local directories, the Whisper decoder prefix, zero-shot generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calm.backbones import FAMILIES, adapter_class, detect_family, load_backbone
from calm.backbones.sites import discover_sites, find_decoder
from calm.backbones.tiny import TINY_FAMILIES, tiny_backbone

GENERIC = ["audioflamingo3", "glmasr"]


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def test_detect_family_from_configs():
    from transformers import (
        AudioFlamingo3Config,
        Qwen2_5OmniConfig,
        Qwen2_5OmniThinkerConfig,
        Qwen2AudioConfig,
        WhisperConfig,
    )

    assert detect_family(Qwen2AudioConfig()) == "qwen2_audio"
    assert detect_family(WhisperConfig()) == "whisper"
    assert detect_family(Qwen2_5OmniThinkerConfig()) == "qwen2_5_omni"
    assert detect_family(Qwen2_5OmniConfig()) == "qwen2_5_omni"
    assert detect_family(AudioFlamingo3Config()) == "generic"


def test_unknown_family_and_tiny_names():
    with pytest.raises(ValueError, match="unknown backbone family"):
        adapter_class("nope")
    with pytest.raises(ValueError, match="no tiny model"):
        load_backbone("tiny:nope")
    backbone = load_backbone("tiny:whisper")
    assert backbone.family == "whisper" and backbone.model_id == "tiny:whisper"


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_sites_are_the_decoder_attention_projections(family):
    backbone = tiny_backbone(family)
    assert backbone.family == (family if family in FAMILIES else "generic")
    prefix, decoder = find_decoder(backbone.model)
    assert decoder.get_input_embeddings() is backbone.model.get_input_embeddings()
    assert all(site.name.startswith(prefix + ".") for site in backbone.sites)
    layers = [site.layer for site in backbone.sites if site.kind == "self_attn"]
    assert layers == list(range(len(layers))) and len(layers) == 2
    for site in backbone.sites:
        block = backbone.model.get_submodule(site.name)
        assert site.proj is getattr(block, "o_proj", None) or site.proj is getattr(block, "out_proj", None)
        assert site.num_heads * site.head_dim == site.proj.in_features
    heads = backbone.head_index()
    assert len(heads) == sum(site.num_heads for site in backbone.sites)
    assert heads[0] == (backbone.sites[0].kind, 0, 0)


@pytest.mark.parametrize("family", GENERIC)
def test_generic_path_skips_audio_encoder_blocks(family):
    """The audio towers have their own self_attn blocks; only the language model's are sites."""
    backbone = tiny_backbone(family)
    all_blocks = [name for name, _ in backbone.model.named_modules() if name.endswith("self_attn")]
    assert len(all_blocks) > len(backbone.sites)
    assert all("language_model" in site.name for site in backbone.sites)
    assert {site.kind for site in backbone.sites} == {"self_attn"}


def test_whisper_has_self_and_cross_attention_heads():
    backbone = tiny_backbone("whisper")
    config = backbone.model.config
    kinds = [site.kind for site in backbone.sites]
    assert kinds == ["self_attn", "cross_attn"] * config.decoder_layers
    heads = backbone.head_index()
    assert len(heads) == len(backbone.sites) * config.decoder_attention_heads
    assert set(heads.sites) == {"self_attn", "cross_attn"}
    assert heads.label(len(heads) - 1) == f"cross_attn L{config.decoder_layers - 1} H{config.decoder_attention_heads - 1}"


def test_whisper_decoder_prefix():
    backbone = tiny_backbone("whisper")
    tokens = backbone.tokenizer.convert_ids_to_tokens(backbone.decoder_prefix(""))
    assert tokens == ["<|startoftranscript|>", "<|notimestamps|>"]
    rendered = backbone.render_prompt("Which animal?")
    assert rendered == "<|startofprev|> Which animal?<|startoftranscript|><|notimestamps|>"
    multilingual = tiny_backbone("whisper", vocab_size=51865)
    tokens = multilingual.tokenizer.convert_ids_to_tokens(multilingual.decoder_prefix(""))
    assert tokens == ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    with pytest.raises(ValueError, match="previous context"):
        backbone.decoder_prefix("word " * 100)


def test_qwen2_audio_prompt_uses_the_chat_template():
    backbone = tiny_backbone("qwen2_audio")
    text = backbone.render_prompt("What sound is this?")
    assert text.endswith("<|audio_bos|><|AUDIO|><|audio_eos|>\nWhat sound is this?<|im_end|>\n<|im_start|>assistant\n")
    inputs = backbone.build_inputs([_clip(1.0), _clip(0.5)], "What sound is this?")
    audio_id = backbone.model.config.audio_token_index
    counts = (inputs["input_ids"] == audio_id).sum(1).tolist()
    assert counts == [25, 12]  # 100 and 50 mel frames, two stride-2 steps


def test_omni_video_patches_layout():
    backbone = tiny_backbone("qwen2_5_omni")
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 90, 3), dtype=np.uint8)
    pixels, grids, counts = backbone.video_patches([frames])
    t, h, w = grids[0].tolist()
    assert t == 2  # 3 frames padded to 4, 2 per temporal patch
    assert h % 2 == 0 and w % 2 == 0 and 56 * 56 <= h * w * 14 * 14 <= 112 * 112
    assert pixels.shape == (t * h * w, 3 * 2 * 14 * 14)
    assert counts == [t * h * w // 4]
    assert backbone.video_frames(0.2) == 2 and backbone.video_frames(3.0) == 6


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2_5_omni", "whisper", "glmasr"])
def test_local_directory_loads_offline_with_same_inputs(family, tmp_path):
    backbone = tiny_backbone(family)
    backbone.model.save_pretrained(tmp_path)
    parts = [backbone.processor.tokenizer, backbone.processor.feature_extractor] if family == "qwen2_5_omni" else [
        backbone.processor]
    for part in parts:
        part.save_pretrained(tmp_path)
    loaded = load_backbone(tmp_path)
    assert type(loaded) is type(backbone)
    assert loaded.revision.startswith("local-")
    assert loaded.fingerprint() == {"model_id": str(tmp_path), "revision": loaded.revision, "dtype": "float32",
                                    "family": backbone.family}
    assert [s.name for s in loaded.sites] == [s.name for s in backbone.sites]
    a, b = backbone.build_inputs([_clip(0.7)], "hi"), loaded.build_inputs([_clip(0.7)], "hi")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name, tensor in backbone.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor)


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2_5_omni", "whisper"])
def test_generate_returns_decoded_answers(family):
    backbone = tiny_backbone(family)
    audios = [_clip(0.6, 1), _clip(1.1, 2)]
    greedy = backbone.generate(audios, "What is it?", max_new_tokens=3)
    assert len(greedy) == 2 and all(len(answers) == 1 and isinstance(answers[0], str) for answers in greedy)
    assert backbone.generate(audios, "What is it?", max_new_tokens=3) == greedy
    sampled = backbone.generate(audios, "What is it?", max_new_tokens=3, do_sample=True, num_return_sequences=3)
    assert [len(answers) for answers in sampled] == [3, 3]
    assert backbone.padding_side == "left"


def test_tiny_backbones_are_deterministic_and_fast():
    import time

    start = time.perf_counter()
    first = tiny_backbone("qwen2_audio", seed=3)
    assert time.perf_counter() - start < 1.0
    second = tiny_backbone("qwen2_audio", seed=3)
    other = tiny_backbone("qwen2_audio", seed=4)
    p1, p2, p3 = (next(iter(b.model.parameters())) for b in (first, second, other))
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
    assert first.revision == "tiny-seed3"


def test_no_sites_is_an_error():
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ValueError, match="no decoder attention blocks"):
        discover_sites(model)


def test_every_family_has_a_tiny_model():
    assert set(FAMILIES) - {"generic"} <= set(TINY_FAMILIES)

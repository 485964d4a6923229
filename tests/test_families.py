"""Every audio-language family end to end on its tiny random model: prompt rendering, the last
real token under left and right padding, batched == one by one, the captured heads reproduce the
output projection's real output, and ``calm extract`` / ``fit`` / ``predict`` run on it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from calm.cli import main
from calm.capture import HeadCapture, last_token_index
from calm.backbones.tiny import TINY_FAMILIES, tiny_backbone

NEW_FAMILIES = ["qwen3_omni", "granite_speech", "voxtral", "phi4_multimodal", "gemma3n"]
SAME_LENGTH = {"gemma3n"}
"""Families whose prompts have the same number of tokens for every clip (nothing to pad)."""
ALL_FAMILIES = sorted(TINY_FAMILIES)
PROMPT = "What is it?"

RENDERED = {
    "qwen3_omni": "<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|>What is it?<|im_end|>\n"
                  "<|im_start|>assistant\n",
    "granite_speech": "<|start_of_role|>system<|end_of_role|>Knowledge Cutoff Date: April 2024.\nToday's Date: "
                      "April 9, 2025.\nYou are Granite, developed by IBM. You are a helpful AI assistant<|end_of_text|>"
                      "\n<|start_of_role|>user<|end_of_role|><|audio|>What is it?<|end_of_text|>\n"
                      "<|start_of_role|>assistant<|end_of_role|>",
    "voxtral": "<s>[INST][BEGIN_AUDIO][AUDIO]What is it?[/INST]",
    "phi4_multimodal": "<|user|><|endoftext11|>What is it?<|end|><|assistant|>",
    "gemma3n": "<bos><start_of_turn>user\n<audio_soft_token>What is it?<end_of_turn>\n<start_of_turn>model\n",
}
"""The prompt as each family's chat template renders it."""


def _backbone(family: str):
    """The tiny backbone, or a skip naming what the installed transformers lacks."""
    try:
        return tiny_backbone(family)
    except ImportError as error:
        import transformers

        pytest.skip(f"transformers {transformers.__version__} cannot build {family}: {error}")


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


CLIPS = [_clip(0.7, 1), _clip(4.6, 2), _clip(1.4, 3)]
"""Clips of different lengths; the second spans two of tiny Voxtral's 4 s chunks."""


def _heads(backbone, audios, side: str, videos=None) -> torch.Tensor:
    backbone = backbone.with_options(padding_side=side)
    with torch.inference_mode(), HeadCapture(backbone) as capture:
        inputs = backbone.build_inputs(audios, PROMPT, videos=videos)
        capture.expect(backbone.token_mask(inputs))
        backbone.forward(inputs)
        return capture.collect()


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_prompt_renders_through_the_chat_template(family):
    backbone = _backbone(family)
    assert backbone.render_prompt(PROMPT) == RENDERED[family]


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_last_real_token_ends_the_generation_prompt(family):
    """Under left and right padding the hooks read the same token: the generation prompt's last."""
    backbone = _backbone(family)
    expected = backbone.tokenizer(RENDERED[family], add_special_tokens=False)["input_ids"][-1]
    for side in ("left", "right"):
        inputs = backbone.with_options(padding_side=side).build_inputs(CLIPS, PROMPT)
        mask = backbone.token_mask(inputs)
        assert bool(mask.all()) == (family in SAME_LENGTH)
        last = last_token_index(mask)
        assert inputs["input_ids"][torch.arange(len(CLIPS)), last].tolist() == [expected] * len(CLIPS)
        real_end = mask[:, -1] if side == "left" else mask[:, 0]
        assert real_end.bool().all()


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_batched_equals_one_by_one_under_both_paddings(family):
    backbone = _backbone(family)
    single = torch.cat([_heads(backbone, [clip], "left") for clip in CLIPS])
    assert single.abs().mean() > 1e-3
    for side in ("left", "right"):
        torch.testing.assert_close(_heads(backbone, CLIPS, side), single, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_output_projection_of_the_heads_is_the_module_output(family):
    """Each site's projection applied to its captured heads gives the projection's real output
    at the last real token (hooked on the projection's output)."""
    backbone = _backbone(family).with_options(padding_side="right")
    outputs: dict[int, torch.Tensor] = {}

    def keep(index):
        def hook(module, args, output):
            outputs[index] = output.detach()
        return hook

    handles = [site.proj.register_forward_hook(keep(i)) for i, site in enumerate(backbone.sites)]
    try:
        with torch.inference_mode(), HeadCapture(backbone) as capture:
            inputs = backbone.build_inputs(CLIPS[:2], PROMPT)
            mask = backbone.token_mask(inputs)
            capture.expect(mask)
            backbone.forward(inputs)
            X = capture.collect()
    finally:
        for handle in handles:
            handle.remove()
    rows, last = torch.arange(2), last_token_index(mask)
    start = 0
    for index, site in enumerate(backbone.sites):
        heads = X[:, start:start + site.num_heads].reshape(2, -1)
        start += site.num_heads
        with torch.inference_mode():
            torch.testing.assert_close(site.proj(heads), outputs[index][rows, last], atol=1e-5, rtol=1e-5)


def _tone(path: Path, hz: float, seconds: float) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 16000)


@pytest.mark.parametrize("family", [f for f in ALL_FAMILIES if f != "whisper"])
def test_cli_extract_fit_predict(family, tmp_path, capsys):
    """(Not the tiny Whisper: its random heads hardly differ between short tones once stored in
    float16, so ``fit`` rightly refuses them; the slow end-to-end test runs the CLI on the real
    Whisper base.)"""
    data = tmp_path / "data"
    for label, hz in (("low", 300.0), ("high", 2500.0)):
        (data / label).mkdir(parents=True)
        for k in range(2):
            _tone(data / label / f"{label}{k}.wav", hz * (1 + 0.05 * k), 0.4 + 0.3 * k)
    new = tmp_path / "new.wav"
    _tone(new, 320.0, 0.5)
    model, classifier = f"tiny:{family}", tmp_path / "clf.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["extract", "--model", model, "--data", str(data), "--out", str(tmp_path / "store"),
                     "--prompt", PROMPT, "--batch-size", "3", "--quiet"]) == 0
        assert "done: 4 (computed 4" in capsys.readouterr().out
        assert main(["fit", "--model", model, "--data", str(data), "--out", str(classifier),
                     "--prompt", PROMPT, "--store", str(tmp_path / "store"), "--quiet"]) == 0
        assert main(["predict", "--model", model, "--classifier", str(classifier), str(new), "--format", "jsonl",
                     "--quiet"]) == 0
    out = capsys.readouterr().out
    assert str(new) in out and ('"label": "low"' in out or '"label": "high"' in out)


def test_qwen3_omni_video_uses_the_models_3d_positions():
    """Audio + video: no 1-D positions are passed (the thinker computes 3-D rotary positions from
    the mask), so left padding, right padding and one by one agree."""
    backbone = _backbone("qwen3_omni")
    frames = [np.random.default_rng(s).integers(0, 255, (n, 60, 90, 3), dtype=np.uint8) for s, n in ((1, 2), (2, 4))]
    inputs = backbone.build_inputs(CLIPS[:2], PROMPT, videos=frames)
    assert "position_ids" not in backbone.forward_kwargs(inputs)
    video_id = backbone.model.config.video_token_id
    assert ((inputs["input_ids"] == video_id).sum(1) > 0).all()
    single = torch.cat([_heads(backbone, [clip], "left", videos=[video]) for clip, video in zip(CLIPS[:2], frames)])
    for side in ("left", "right"):
        torch.testing.assert_close(_heads(backbone, CLIPS[:2], side, videos=frames), single, atol=1e-4, rtol=0)
    flat = backbone.forward_kwargs(inputs)
    flat["position_ids"] = backbone.positions(inputs["attention_mask"])  # what the generic path would pass
    with torch.inference_mode():
        own = backbone.model(**backbone.forward_kwargs(inputs)).logits
        generic = backbone.model(**flat).logits
    assert not torch.allclose(own, generic, atol=1e-4)


def test_qwen3_omni_audio_tokens_follow_the_chunked_encoder():
    from calm.backbones.qwen3_omni import audio_token_count

    backbone = _backbone("qwen3_omni")
    inputs = backbone.build_inputs([_clip(0.7), _clip(2.3)], PROMPT)
    counts = (inputs["input_ids"] == backbone.model.config.audio_token_id).sum(1).tolist()
    assert counts == [9, 13 * 2 + 4]  # 70 mel frames; 230 = two 100-frame chunks + 30
    assert audio_token_count(torch.tensor([100, 200, 1]), 50).tolist() == [13, 26, 1]


def test_granite_mel_matches_the_feature_extractor():
    torchaudio = pytest.importorskip(
        "torchaudio", reason="torchaudio (GraniteSpeechFeatureExtractor's mel) has no PyPI build that loads beside "
                             "the CPU torch 2.13; GraniteMel reimplements it in torch")
    del torchaudio
    from transformers import GraniteSpeechFeatureExtractor

    from calm.backbones.granite_speech import GraniteMel

    clip = _clip(1.3)
    reference = GraniteSpeechFeatureExtractor()(clip)
    ours = GraniteMel()(clip)
    torch.testing.assert_close(ours, reference["input_features"][0], atol=1e-4, rtol=1e-4)
    assert GraniteMel().token_count(len(ours)) == reference["audio_embed_sizes"][0]


def test_granite_mel_settings_and_token_count():
    from calm.backbones.granite_speech import GraniteMel

    mel = GraniteMel()
    features = mel(_clip(1.0))
    assert features.shape == (50, 160)  # 101 frames of 80 bins, the odd last one dropped, stacked by 2
    assert mel.token_count(50) == 4 * 3 and mel.token_count(45) == 3 * 3


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_stopping_after_the_last_site_changes_nothing(family):
    backbone = _backbone(family)
    full = _heads(backbone, CLIPS[:2], "left")
    with torch.inference_mode(), HeadCapture(backbone, stop_after_last_site=True) as capture:
        inputs = backbone.build_inputs(CLIPS[:2], PROMPT)
        capture.expect(backbone.token_mask(inputs))
        backbone.forward(inputs)
        torch.testing.assert_close(capture.collect(), full, atol=1e-6, rtol=0)


def test_voxtral_cuts_clips_into_chunks():
    backbone = _backbone("voxtral")
    inputs = backbone.build_inputs([_clip(0.5), _clip(4.6)], PROMPT)
    assert inputs["input_features"].shape == (3, 128, 400)  # 1 + 2 chunks of 4 s
    counts = (inputs["input_ids"] == backbone.model.config.audio_token_id).sum(1).tolist()
    assert counts == [50, 100] and backbone.tokens_per_chunk == 50  # 200 encoder frames / 4 per token


def test_phi4_sites_skip_the_speech_encoder_inside_the_embedding():
    backbone = _backbone("phi4_multimodal")
    encoder_blocks = [name for name, _ in backbone.model.named_modules()
                      if name.startswith("model.embed_tokens_extend") and name.endswith("self_attn")]
    assert encoder_blocks
    assert [site.name for site in backbone.sites] == [f"model.layers.{i}.self_attn" for i in range(2)]


def test_gemma3n_every_clip_gets_the_soft_tokens():
    backbone = _backbone("gemma3n")
    inputs = backbone.build_inputs([_clip(0.5), _clip(6.0)], PROMPT)
    soft = (inputs["input_ids"] == backbone.model.config.audio_token_id).sum(1).tolist()
    assert soft == [31, 31] and int(inputs["audio_frames"].max()) <= 5 * 100  # cut to the 5 s window


def test_gemma3n_with_its_real_vision_tower():
    pytest.importorskip("timm", reason="timm (Gemma 3n's MobileNetV5 vision tower) needs torchvision, which has no "
                                       "PyPI build that imports beside torch 2.13; the tiny model stands in for it")
    backbone = _backbone("gemma3n")
    assert type(backbone.model.model.vision_tower).__name__ == "TimmWrapperModel"
    single = torch.cat([_heads(backbone, [clip], "left") for clip in CLIPS])
    torch.testing.assert_close(_heads(backbone, CLIPS, "left"), single, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["qwen3_omni", "granite_speech", "voxtral", "phi4_multimodal"])
def test_local_directory_loads_with_the_same_inputs_and_heads(family, tmp_path):
    """What ``load_backbone(folder)`` finds in a saved checkpoint: the same adapter, processor parts
    (Granite's log-mel settings from ``preprocessor_config.json``) and heads."""
    import json

    from calm.backbones import load_backbone

    backbone = _backbone(family)
    backbone.model.save_pretrained(tmp_path)
    backbone.tokenizer.save_pretrained(tmp_path)
    features = backbone.processor.feature_extractor
    if family == "granite_speech":
        settings = {**vars(features), "feature_extractor_type": "GraniteSpeechFeatureExtractor"}
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(settings))
    else:
        features.save_pretrained(tmp_path)
    loaded = load_backbone(tmp_path, backbone.options.replace(device=None, dtype=None))
    assert type(loaded) is type(backbone) and loaded.sample_rate == 16000
    assert loaded.render_prompt(PROMPT) == backbone.render_prompt(PROMPT)
    a, b = backbone.build_inputs(CLIPS[:2], PROMPT), loaded.build_inputs(CLIPS[:2], PROMPT)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.testing.assert_close(_heads(loaded, CLIPS[:2], "left"), _heads(backbone, CLIPS[:2], "left"))


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_generate_answers_each_clip(family):
    backbone = _backbone(family).with_options(padding_side="right")
    greedy = backbone.generate(CLIPS[:2], PROMPT, max_new_tokens=3)
    assert len(greedy) == 2 and all(len(answers) == 1 and isinstance(answers[0], str) for answers in greedy)
    assert backbone.generate(CLIPS[:2], PROMPT, max_new_tokens=3) == greedy
    assert backbone.padding_side == "right"


@pytest.mark.parametrize("family", ["granite_speech", "phi4_multimodal", "gemma3n"])
def test_clip_by_clip_encoding_is_the_models_own_call_on_one_clip(family):
    """Where the adapter runs the audio encoder clip by clip, a one-clip batch gives exactly what the
    model's own forward gives on the same inputs."""
    backbone = _backbone(family)
    inputs = backbone.build_inputs(CLIPS[1:2], PROMPT)
    own = {key: value for key, value in inputs.items() if key != "audio_frames"}
    with torch.inference_mode(), HeadCapture(backbone) as capture:
        capture.expect(backbone.token_mask(inputs))
        backbone.forward(inputs)
        ours = capture.collect()
        capture.expect(backbone.token_mask(inputs))
        backbone.model(**own, use_cache=False)
        reference = capture.collect()
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["kimi_audio", "minicpmo"])
def test_families_transformers_does_not_ship(model_type):
    """Kimi-Audio and MiniCPM-o exist only as remote code; once transformers ships one, this fails
    so that it gets an adapter and a tiny model."""
    import importlib.util

    import transformers

    if importlib.util.find_spec(f"transformers.models.{model_type}") is None:
        pytest.skip(f"transformers {transformers.__version__} has no {model_type} model (remote code only)")
    pytest.fail(f"transformers {transformers.__version__} now ships {model_type}: add an adapter and a tiny model")

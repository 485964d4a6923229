"""The Qwen2-Audio fast path (trimmed log-mel and encoder) gives the reference path's inputs and
features: clips of different lengths in one batch, left and right padding, through extract."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from calm.backbones.tiny import tiny_backbone
from calm.capture import HeadCapture
from calm.data.items import Item
from calm.heads import extract

PROMPT = "What sound is this?"
SECONDS = (0.37, 1.3, 2.01, 0.9, 0.6, 1.75)


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone("qwen2_audio")


@pytest.fixture(scope="module")
def audios(backbone) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    rate = backbone.sample_rate
    return [(0.1 * rng.standard_normal(int(rate * s))).astype(np.float32) for s in SECONDS]


def features(backbone, audios, fast: bool, inputs_fast: bool | None = None) -> torch.Tensor:
    """[B, K, D] from one forward pass; ``inputs_fast`` picks the input builder (default: ``fast``)."""
    inputs = backbone.with_options(fast=fast if inputs_fast is None else inputs_fast).build_inputs(audios, PROMPT)
    runner = backbone.with_options(fast=fast)
    with HeadCapture(runner) as capture, torch.inference_mode():
        capture.expect(runner.token_mask(inputs))
        runner.forward(inputs)
        return capture.collect()


def test_fast_is_the_default_and_the_reference_one_option_away(backbone):
    assert backbone.fast and not backbone.with_options(fast=False).fast
    assert backbone.fingerprint() == backbone.with_options(fast=False).fingerprint()  # exact: same features


def test_fast_inputs_equal_the_processors(backbone, audios):
    fe = backbone.processor.feature_extractor
    longer = np.ones(fe.n_samples + 1234, dtype=np.float32) * 0.01  # past the window: cut, as the processor does
    for clips in (audios, audios[:2], [longer, audios[0]]):
        plain = backbone.with_options(fast=False).build_inputs(clips, PROMPT)
        fast = backbone.build_inputs(clips, PROMPT)
        frames = fast["input_features"].shape[-1]
        longest = int(plain["feature_attention_mask"].sum(-1).max())
        full = plain["input_features"].shape[-1]
        assert min(longest + 2, full) <= frames <= full
        assert torch.equal(fast["input_ids"], plain["input_ids"])
        assert torch.equal(fast["attention_mask"], plain["attention_mask"])
        assert torch.equal(fast["feature_attention_mask"], plain["feature_attention_mask"][:, :frames])
        assert (fast["input_features"] - plain["input_features"][..., :frames]).abs().max() <= 1e-5


@pytest.mark.parametrize("side", ["left", "right"])
def test_fast_features_equal_the_reference(backbone, audios, side):
    backbone = backbone.with_options(padding_side=side)
    reference = features(backbone, audios, fast=False)
    assert (features(backbone, audios, fast=True) - reference).abs().max() <= 1e-4
    # the fast forward also takes the processor's 30 s inputs (trimmed inside)
    assert (features(backbone, audios, fast=True, inputs_fast=False) - reference).abs().max() <= 1e-4


@pytest.mark.parametrize("side", ["left", "right"])
def test_fast_extract_equals_the_reference(backbone, audios, side, tmp_path):
    items = []
    for i, audio in enumerate(audios):
        soundfile.write(tmp_path / f"clip{i}.wav", audio, backbone.sample_rate)
        items.append(Item(f"clip{i}", tmp_path / f"clip{i}.wav"))
    backbone = backbone.with_options(padding_side=side)
    reference = extract(backbone.with_options(fast=False), items, PROMPT, batch_size=4, dtype=np.float32)
    fast = extract(backbone, items, PROMPT, batch_size=4, dtype=np.float32, stop_after_last_site=True)
    assert fast.ids == reference.ids and not fast.failed
    assert np.abs(fast.X - reference.X).max() <= 1e-4


def test_dithering_keeps_the_processors_mel(backbone, audios):
    fe = backbone.processor.feature_extractor
    fe.dither = 1e-4
    try:
        assert not backbone.fast  # the mel shortcut would not be exact
        inputs = backbone.build_inputs(audios[:2], PROMPT)
    finally:
        fe.dither = 0.0
    assert inputs["input_features"].shape[-1] == fe.nb_max_frames


def test_generate_uses_the_reference_path(backbone, audios):
    reference = backbone.generation_inputs(audios[:2], PROMPT, None)
    assert reference["input_features"].shape[-1] == backbone.processor.feature_extractor.nb_max_frames
    assert len(backbone.generate(audios[:2], PROMPT, max_new_tokens=2)) == 2

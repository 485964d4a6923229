"""Qwen2.5-Omni's fast path (log-mel of the frames that carry audio only) gives the reference
path's inputs and features: clips of different lengths in one batch, left and right padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calm.backbones.tiny import tiny_backbone
from calm.capture import HeadCapture

PROMPT = "What sound is this?"
SECONDS = (0.37, 1.3, 2.01, 0.9)


@pytest.fixture(scope="module")
def omni():
    return tiny_backbone("qwen2_5_omni")


@pytest.fixture(scope="module")
def audios(omni) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(omni.sample_rate * s))).astype(np.float32) for s in SECONDS]


def heads(backbone, audios) -> torch.Tensor:
    inputs = backbone.build_inputs(audios, PROMPT)
    with HeadCapture(backbone) as capture, torch.inference_mode():
        capture.expect(backbone.token_mask(inputs))
        backbone.forward(inputs)
        return capture.collect()


def test_fast_is_the_default_and_keeps_the_fingerprint(omni):
    assert omni.fast and not omni.with_options(fast=False).fast
    assert omni.fingerprint() == omni.with_options(fast=False).fingerprint()


def test_fast_mel_equals_the_feature_extractors(omni, audios):
    plain = omni.with_options(fast=False).build_inputs(audios, PROMPT)
    fast = omni.build_inputs(audios, PROMPT)
    frames = fast["input_features"].shape[-1]
    longest = int(plain["feature_attention_mask"].sum(-1).max())
    assert longest + 2 <= frames < plain["input_features"].shape[-1]
    assert torch.equal(fast["input_ids"], plain["input_ids"])
    assert torch.equal(fast["feature_attention_mask"], plain["feature_attention_mask"][:, :frames])
    assert (fast["input_features"] - plain["input_features"][..., :frames]).abs().max() <= 1e-5


@pytest.mark.parametrize("side", ["left", "right"])
def test_fast_features_equal_the_reference(omni, audios, side):
    backbone = omni.with_options(padding_side=side)
    reference = heads(backbone.with_options(fast=False), audios)
    assert (heads(backbone, audios) - reference).abs().max() <= 1e-4
    # batched == one by one on the fast path
    alone = torch.cat([heads(backbone, [audio]) for audio in audios])
    assert (alone - reference).abs().max() <= 1e-4

"""Whisper's exact fast path (cross-attention keys and values folded into the queries) gives the
reference path's features, batched or not; the CPU's bfloat16 mode keeps float32 weights and
stays close to float32."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from calm.backbones.options import BackboneOptions
from calm.backbones.tiny import tiny_backbone
from calm.capture import HeadCapture
from calm.data.items import Item
from calm.heads import extract

SECONDS = (0.4, 1.3, 2.2)
SHORT, LONG = "", "one two three four five six"
"""Prefixes of 2 and more than 8 tokens: the tiny model (4 heads, width 32) folds keys and values
into the queries for the first and projects them, as the model does, for the second."""


@pytest.fixture(scope="module")
def whisper():
    return tiny_backbone("whisper")


@pytest.fixture(scope="module")
def audios(whisper) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [(0.1 * rng.standard_normal(int(whisper.sample_rate * s))).astype(np.float32) for s in SECONDS]


def heads(backbone, audios, prompt: str, stop: bool = False) -> torch.Tensor:
    inputs = backbone.build_inputs(audios, prompt)
    with HeadCapture(backbone, stop_after_last_site=stop) as capture, torch.inference_mode():
        capture.expect(backbone.token_mask(inputs))
        backbone.forward(inputs)
        return capture.collect()


def test_fast_is_the_default_and_keeps_the_fingerprint(whisper):
    assert whisper.fast and not whisper.with_options(fast=False).fast
    assert whisper.fingerprint() == whisper.with_options(fast=False).fingerprint()


@pytest.mark.parametrize("prompt", [SHORT, LONG])
@pytest.mark.parametrize("window", [None, 2.0])
def test_fast_features_equal_the_reference(whisper, audios, prompt, window):
    backbone = whisper.with_options(encoder_seconds=window)
    assert (4 * len(backbone.decoder_prefix(prompt)) < 32) == (prompt == SHORT)  # both branches run
    reference = heads(backbone.with_options(fast=False), audios, prompt)
    fast = heads(backbone, audios, prompt, stop=True)
    assert reference.abs().max() > 1.0  # not trivially small
    assert (fast - reference).abs().max() <= 1e-4
    alone = torch.cat([heads(backbone, [audio], prompt) for audio in audios])
    assert (alone - reference).abs().max() <= 1e-4


def test_fast_extract_equals_the_reference(whisper, audios, tmp_path):
    items = []
    for i, audio in enumerate(audios):
        soundfile.write(tmp_path / f"clip{i}.wav", audio, whisper.sample_rate)
        items.append(Item(f"clip{i}", tmp_path / f"clip{i}.wav"))
    reference = extract(whisper.with_options(fast=False), items, LONG, batch_size=3, dtype=np.float32)
    fast = extract(whisper, items, LONG, batch_size=2, dtype=np.float32, stop_after_last_site=True)
    assert reference.fingerprint == fast.fingerprint
    assert np.abs(fast.X - reference.X).max() <= 1e-4


def test_bfloat16_on_the_cpu_is_mixed_and_close_to_float32(audios):
    mixed = tiny_backbone("whisper", options=BackboneOptions(device="cpu", dtype="bfloat16"))
    assert mixed.dtype == torch.bfloat16 and mixed.fingerprint()["dtype"] == "bfloat16"
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())  # weights stay float32
    reference = heads(tiny_backbone("whisper").with_options(fast=False), audios, SHORT)
    for backbone in (mixed, mixed.with_options(fast=False)):
        X = heads(backbone, audios, SHORT)
        assert not torch.equal(X, reference)  # bfloat16 did run
        cosine = torch.nn.functional.cosine_similarity(X.double(), reference.double(), dim=-1)
        assert cosine.min() >= 0.99
    assert len(mixed.generate(audios[:1], SHORT, max_new_tokens=2)) == 1

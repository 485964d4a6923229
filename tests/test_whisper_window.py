"""Whisper's trimmed encoder window (``encoder_seconds``): the machinery equals the reference at
the full window, a shorter window changes the features (Whisper has no padding mask), stays
batch-independent, and is part of the fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from calm.backbones.tiny import WINDOW_SECONDS, tiny_backbone
from calm.data.items import Item
from calm.heads import extract

PROMPT = "Someone says a number."


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Item]:
    root = tmp_path_factory.mktemp("whisper_window")
    rng = np.random.default_rng(3)
    items = []
    for i in range(6):
        path = root / f"clip{i}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(int(16000 * (0.4 + 0.3 * i)))).astype(np.float32), 16000)
        items.append(Item(f"clip{i}", path))
    return items


def features(backbone, clips, batch_size: int = 3) -> np.ndarray:
    return extract(backbone, clips, PROMPT, batch_size=batch_size, dtype=np.float32).X


def test_full_window_equals_reference(clips):
    backbone = tiny_backbone("whisper")
    reference = features(backbone, clips)
    backbone = backbone.with_options(encoder_seconds=WINDOW_SECONDS)
    assert backbone.encoder_frames == backbone.processor.feature_extractor.nb_max_frames
    np.testing.assert_allclose(features(backbone, clips), reference, atol=1e-4)


def test_short_window_changes_features_but_not_across_batches(clips):
    backbone = tiny_backbone("whisper")
    reference = features(backbone, clips)
    backbone = backbone.with_options(encoder_seconds=2.0)
    assert backbone.encoder_frames == 200
    trimmed = features(backbone, clips)
    one_by_one = features(backbone, clips, batch_size=1)
    np.testing.assert_allclose(trimmed, one_by_one, atol=1e-4)
    cross = [k for k, (site, _, _) in enumerate(backbone.head_index()) if site == "cross_attn"]
    assert np.abs(trimmed[:, cross] - reference[:, cross]).max() > 1e-3


def test_window_is_part_of_the_fingerprint():
    backbone = tiny_backbone("whisper")
    assert "encoder_seconds" not in backbone.fingerprint()
    assert backbone.with_options(encoder_seconds=2.0).fingerprint()["encoder_seconds"] == 2.0
    with pytest.raises(AttributeError):
        backbone.encoder_seconds = 2.0  # options are fixed once loaded
    with pytest.raises(ValueError, match="Whisper option"):
        tiny_backbone("qwen2_audio").with_options(encoder_seconds=2.0)

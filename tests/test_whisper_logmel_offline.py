"""On the real offline Whisper models (whisper-base, whisper-tiny.en, converted from their PyPI
wheels), heads from calm.logmel's log-mel stay within float rounding of those from the processor's
(what calm computed before), so stores keep their fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
from test_whisper_logmel import PROMPT, speechlike

from calm.backbones import load_backbone
from calm.capture import HeadCapture
from calm.engine import forward_heads

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("calm-cache")


@pytest.mark.parametrize("name", ["whisper-base", "whisper-tiny.en"])
def test_offline_heads_match_the_processors_log_mel(name, cache, monkeypatch):
    monkeypatch.setenv("CALM_CACHE", str(cache))
    backbone = load_backbone(name, device="cpu")
    audios = [speechlike(seconds, seed) for seed, seconds in enumerate((0.8, 3.0, 7.5, 31.0))]
    ours = backbone.build_inputs(audios, PROMPT)
    extractor = backbone.processor.feature_extractor
    theirs = dict(ours, input_features=extractor(audios, sampling_rate=16000, return_tensors="pt")["input_features"])
    with HeadCapture(backbone) as capture:
        new, old = forward_heads(backbone, capture, ours), forward_heads(backbone, capture, theirs)
    assert np.abs(new - old).max() <= 1e-4
    norms = np.linalg.norm(new, axis=-1) * np.linalg.norm(old, axis=-1)
    varying = norms > 0
    assert ((new * old).sum(-1)[varying] / norms[varying]).min() >= 0.99999

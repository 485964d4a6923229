"""The layer profile: weight mass per layer and site, from weights or a fitted classifier."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from calm.classifiers import layer_profile, plot_layer_profile
from calm.features import HeadIndex

HEADS = HeadIndex.from_tuples([("self_attn", 0, 0), ("self_attn", 0, 1), ("self_attn", 1, 0),
                               ("cross_attn", 0, 0), ("cross_attn", 1, 0), ("cross_attn", 1, 1)])


def test_mass_per_layer_and_site():
    weights = np.array([[0.5, 0.0], [0.1, 0.0], [0.0, 0.2], [0.2, 0.0], [0.2, 0.3], [0.0, 0.5]])
    profile = layer_profile(weights, HEADS)
    np.testing.assert_allclose(profile["self_attn"], [(0.6 + 0.0) / 2, (0.0 + 0.2) / 2])
    np.testing.assert_allclose(profile["cross_attn"], [(0.2 + 0.0) / 2, (0.2 + 0.8) / 2])
    assert sum(v.sum() for v in profile.values()) == pytest.approx(1.0)


def test_sav_heads_and_png(tmp_path):
    sav = SimpleNamespace(classes_=np.array(["a", "b", "c"]), heads_=np.array([4, 0]), n_heads_in_=6,
                          head_index_=HEADS)
    profile = layer_profile(sav)
    np.testing.assert_allclose(profile["self_attn"], [0.5, 0.0])
    np.testing.assert_allclose(profile["cross_attn"], [0.0, 0.5])
    path = plot_layer_profile(sav, tmp_path / "profile.png", title="SAV")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="weights must be"):
        layer_profile(np.ones((5, 2)), HEADS)

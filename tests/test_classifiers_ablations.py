"""The ablations, the logistic probe and the weight maps against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_classifiers import make_data, ref_cosines, ref_item_score, ref_softmax

from calm.classifiers import (ClassAgnosticCALMClassifier, ConcatCentroidClassifier, LogisticProbe, SAVClassifier,
                              TopNSoftVoteClassifier, UniformVoteClassifier, plot_weight_maps, weight_maps)
from calm.classifiers._cosine import FeatureBlocks
from calm.classifiers.probe import concatenated_unit_heads
from calm.features import HeadIndex


def soft_vote(X, y, Xq, w, tau):
    out = np.zeros((len(Xq), w.shape[1]))
    for n in range(len(Xq)):
        cos = ref_cosines(X, y, Xq[n])
        for k in range(X.shape[1]):
            out[n] += w[k] * np.array(ref_softmax(cos[k], tau))
    return out


def test_uniform_vote() -> None:
    X, y, Xq, _ = make_data(seed=20)
    clf = UniformVoteClassifier(tau=0.3).fit(X, y)
    expected = soft_vote(X, y, Xq, np.full((6, 3), 1 / 6), 0.3)
    np.testing.assert_allclose(clf.decision_function(Xq), expected, atol=1e-9)
    np.testing.assert_array_equal(clf.predict(Xq), expected.argmax(1))


def test_top_n_soft_vote_uses_savs_heads() -> None:
    X, y, Xq, _ = make_data(seed=21, heads=8)
    clf = TopNSoftVoteClassifier(n_heads=3, tau=0.2).fit(X, y)
    sav = SAVClassifier(n_heads=3).fit(X, y)
    assert clf.heads_.tolist() == sav.heads_.tolist()
    w = np.zeros((8, 3))
    w[sav.heads_] = 1 / 3
    np.testing.assert_allclose(clf.decision_function(Xq), soft_vote(X, y, Xq, w, 0.2), atol=1e-9)


def test_concatenated_cosine_centroid() -> None:
    X, y, Xq, _ = make_data(seed=22)
    clf = ConcatCentroidClassifier(tau=0.5).fit(X, y)
    # cosine of the concatenated unit-per-head query and prototype vectors
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    protos = np.stack([unit(X[y == c].sum(0)).ravel() for c in range(3)])
    queries = np.stack([unit(q).ravel() for q in Xq])
    expected = queries @ protos.T / (np.linalg.norm(queries, axis=1, keepdims=True) * np.linalg.norm(protos, axis=1))
    np.testing.assert_allclose(clf.decision_function(Xq), expected, atol=1e-12)
    e = np.exp(expected / 0.5)
    np.testing.assert_allclose(clf.predict_proba(Xq), e / e.sum(1, keepdims=True), atol=1e-12)


def test_class_agnostic_reliability() -> None:
    X, y, Xq, _ = make_data(seed=23)
    tau, tau_w = 0.1, 0.2
    clf = ClassAgnosticCALMClassifier(tau=tau, tau_w=tau_w).fit(X, y)
    r = np.zeros(6)
    for i in range(len(X)):
        cos = ref_cosines(X, y, X[i], leave_out=i)
        for k in range(6):
            r[k] += ref_item_score(ref_softmax(cos[k], tau), y[i], "margin_clamped") / len(X)
    e = np.array([math.exp(v / tau_w) for v in r])
    w = np.repeat((e / e.sum())[:, None], 3, axis=1)
    np.testing.assert_allclose(clf.reliability_, np.repeat(r[:, None], 3, axis=1), atol=1e-9)
    np.testing.assert_allclose(clf.weights_, w, atol=1e-9)
    np.testing.assert_allclose(clf.decision_function(Xq), soft_vote(X, y, Xq, w, tau), atol=1e-9)


def test_logistic_probe_equals_scikit_learn() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    for classes in (2, 3):
        X, y, Xq, _ = make_data(seed=24, classes=classes)
        probe = LogisticProbe(C=0.7).fit(X, y)
        flat = concatenated_unit_heads(FeatureBlocks(X))  # the probe's design matrix, float32
        by_hand = (X / np.linalg.norm(X, axis=-1, keepdims=True)).reshape(len(X), -1)
        np.testing.assert_allclose(flat, by_hand, atol=1e-6)
        reference = linear_model.LogisticRegression(C=0.7, max_iter=1000).fit(flat, y)
        queries = concatenated_unit_heads(FeatureBlocks(Xq))
        np.testing.assert_allclose(probe.predict_proba(Xq), reference.predict_proba(queries), atol=1e-6)
        np.testing.assert_array_equal(probe.predict(Xq), reference.predict(queries))


def test_weight_maps_and_heatmap(tmp_path) -> None:
    X, y, _, _ = make_data(seed=25, heads=7)
    heads = HeadIndex.from_tuples([("self_attn", 0, 0), ("self_attn", 0, 1), ("self_attn", 1, 0), ("self_attn", 1, 1),
                                   ("cross_attn", 0, 0), ("cross_attn", 0, 1), ("cross_attn", 2, 1)])
    clf = ClassAgnosticCALMClassifier().fit(X, np.array(["a", "b", "c"])[y])
    maps = weight_maps(clf, heads)
    assert set(maps) == {"self_attn", "cross_attn"}
    assert maps["self_attn"].shape == (3, 2, 2) and maps["cross_attn"].shape == (3, 3, 2)
    assert maps["self_attn"][1, 1, 0] == clf.weights_[2, 1]
    assert maps["cross_attn"][2, 2, 1] == clf.weights_[6, 2]
    assert np.isnan(maps["cross_attn"][0, 1, 0])  # no head there
    sav = SAVClassifier(n_heads=2).fit(X, y)
    assert np.nansum(weight_maps(sav, heads)["self_attn"]) + np.nansum(weight_maps(sav, heads)["cross_attn"]) == 3
    path = plot_weight_maps(clf, tmp_path / "weights.png", heads=heads, classes=["a", "c"], title="CALM weights")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="unknown class"):
        plot_weight_maps(clf, tmp_path / "w.png", heads=heads, classes=["zebra"])
    with pytest.raises(ValueError, match="pass heads="):
        weight_maps(clf)
    with pytest.raises(ValueError, match="K = 3 heads"):
        weight_maps(clf, HeadIndex.from_tuples([("s", 0, h) for h in range(3)]))

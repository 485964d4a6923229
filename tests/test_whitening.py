"""The whitened head geometry against an independent numpy computation, its reduction to today's
cosine classifiers, and its save/load."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from calm.classifiers import (CALMClassifier, ClassAgnosticCALMClassifier, ConcatCentroidClassifier, HeadWhitener,
                              SAVClassifier, TopNSoftVoteClassifier, TunedCALMClassifier, UniformVoteClassifier, load,
                              save)


def make_data(seed: int = 0, classes: int = 3, shots: int = 6, heads: int = 4, dim: int = 5, queries: int = 9):
    """Support and queries with class means and correlated within-class noise per head."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, heads, dim))
    mix = rng.normal(size=(heads, dim, dim))
    y = np.repeat(np.arange(classes), shots)
    yq = rng.integers(0, classes, size=queries)
    X = means[y] + np.einsum("nkd,kde->nke", rng.normal(size=(len(y), heads, dim)), mix)
    Xq = means[yq] + np.einsum("nkd,kde->nke", rng.normal(size=(queries, heads, dim)), mix)
    return X, y, Xq, yq


# ---- independent reference, numpy, one head at a time ------------------------------------------

def ref_stats(X, y, k, normalize=True):
    """(support mean, pooled within-class covariance with N - C degrees of freedom) of head k."""
    q = X[:, k].copy()
    if normalize:
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    residuals = np.concatenate([q[y == c] - q[y == c].mean(0) for c in np.unique(y)])
    return q.mean(0), residuals.T @ residuals / (len(y) - len(np.unique(y))), residuals


def ref_oas(S, n):
    p = S.shape[0]
    mu = np.trace(S) / p
    alpha = np.mean(S ** 2)
    return min((alpha + mu ** 2) / ((n + 1) * (alpha - mu ** 2 / p)), 1.0)


def ref_ledoit_wolf(R):
    """Ledoit-Wolf intensity from centred samples R [n, p], written from the paper's sums."""
    n, p = R.shape
    S = R.T @ R / n
    mu = np.trace(S) / p
    d2 = np.sum((S - mu * np.eye(p)) ** 2) / p
    b2 = sum(np.sum((np.outer(r, r) - S) ** 2) for r in R) / p / n ** 2
    return min(b2, d2) / d2


def ref_inverse_sqrt(S, lam):
    shrunk = (1 - lam) * S + lam * np.trace(S) / len(S) * np.eye(len(S))
    values, vectors = np.linalg.eigh(shrunk)
    return vectors @ np.diag(values ** -0.5) @ vectors.T, shrunk


@pytest.mark.parametrize("shrinkage", [0.3, "oas", "ledoit-wolf"])
def test_whitening_matches_numpy(shrinkage):
    X, y, Xq, _ = make_data()
    whitener = HeadWhitener(shrinkage=shrinkage, center=True).fit(X, y)
    Z = whitener.transform(Xq)
    assert Z.dtype == np.float64
    for k in range(X.shape[1]):
        mean, S, R = ref_stats(X, y, k)
        lam = {0.3: 0.3, "oas": ref_oas(S, len(y) - 3), "ledoit-wolf": ref_ledoit_wolf(R)}[shrinkage]
        assert 0 < lam < 1
        np.testing.assert_allclose(whitener.shrinkage_[k], lam, rtol=0, atol=1e-6)
        np.testing.assert_allclose(whitener.mean_[k], mean, atol=1e-12)
        root, shrunk = ref_inverse_sqrt(S, lam)
        # L^{-1} with L L^T = S_lambda / t, t = tr(S) / D: the factor is S_lambda^{-1/2} up to a rotation and scale
        t = np.trace(S) / len(S)
        W = whitener.matrix_[k]
        np.testing.assert_allclose(W, np.linalg.inv(np.linalg.cholesky(shrunk / t)), atol=1e-9)
        np.testing.assert_allclose(W.T @ W, np.linalg.inv(shrunk) * t, atol=1e-9)
        q = Xq[:, k] / np.linalg.norm(Xq[:, k], axis=1, keepdims=True) - mean
        expected = (q @ root) * np.sqrt(t)  # rows S_lambda^{-1/2} (q - m), rescaled by sqrt(t)
        np.testing.assert_allclose(Z[:, k] @ Z[:, k].T, expected @ expected.T, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(Z[:, k], axis=1), np.linalg.norm(expected, axis=1), atol=1e-6)


def test_one_shot_and_constant_heads():
    X, y, Xq, _ = make_data(shots=1)
    whitener = HeadWhitener().fit(X, y)
    np.testing.assert_array_equal(whitener.shrinkage_, 1.0)  # no within-class spread: the identity
    np.testing.assert_array_equal(whitener.matrix_, np.broadcast_to(np.eye(5), (4, 5, 5)))
    X, y, Xq, _ = make_data()
    X[:, 2] = 1.0
    whitener = HeadWhitener().fit(X, y)
    assert whitener.constant_heads_.tolist() == [False, False, True, False]
    assert not whitener.transform(Xq)[:, 2].any()
    clf = SAVClassifier(n_heads=4, geometry="whitened")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    assert 2 not in clf.heads_.tolist()


def test_bad_options():
    X, y, _, _ = make_data(shots=2, dim=8)
    with pytest.raises(ValueError, match="shrinkage must be"):
        HeadWhitener(shrinkage=1.5).fit(X, y)
    with pytest.raises(ValueError, match="singular"):
        HeadWhitener(shrinkage=0.0).fit(X, y)  # 6 items in 8 dims
    with pytest.raises(ValueError, match="geometry must be"):
        SAVClassifier(geometry="euclid").fit(X, y)
    with pytest.raises(ValueError, match="unknown whitener option"):
        SAVClassifier(geometry={"lambda": 0.3}).fit(X, y)


IDENTITY = {"shrinkage": 1.0, "center": False, "normalize": False}
PROTOTYPE_CLASSIFIERS = [
    lambda g: SAVClassifier(n_heads=3, geometry=g),
    lambda g: CALMClassifier(tau=0.1, geometry=g),
    lambda g: TunedCALMClassifier(grid={"tau": [0.05, 0.2], "top_k": [None, 2]}, geometry=g),
    lambda g: UniformVoteClassifier(geometry=g),
    lambda g: TopNSoftVoteClassifier(n_heads=2, geometry=g),
    lambda g: ClassAgnosticCALMClassifier(geometry=g),
    lambda g: ConcatCentroidClassifier(geometry=g),
]


@pytest.mark.parametrize("make", PROTOTYPE_CLASSIFIERS)
def test_identity_whitening_is_the_cosine_classifier(make):
    X, y, Xq, _ = make_data(seed=3)
    np.testing.assert_array_equal(HeadWhitener(**IDENTITY).fit(X, y).transform(Xq), Xq)
    for dtype in (np.float64, np.float32):
        cosine, white = make("cosine").fit(X.astype(dtype), y), make(IDENTITY).fit(X.astype(dtype), y)
        np.testing.assert_array_equal(white.predict(Xq.astype(dtype)), cosine.predict(Xq.astype(dtype)))
        np.testing.assert_array_equal(white.decision_function(Xq.astype(dtype)),
                                      cosine.decision_function(Xq.astype(dtype)))


@pytest.mark.parametrize("make", PROTOTYPE_CLASSIFIERS)
def test_whitened_classifier_is_the_classifier_on_whitened_features(make, tmp_path):
    X, y, Xq, _ = make_data(seed=4)
    geometry = {"shrinkage": 0.4, "center": True}
    white = make(geometry).fit(X, y)
    whitener = HeadWhitener(**geometry).fit(X, y)
    plain = make("cosine").fit(whitener.transform(X), y)
    np.testing.assert_allclose(white.decision_function(Xq), plain.decision_function(whitener.transform(Xq)), atol=1e-9)
    save(white, tmp_path / "white.safetensors")
    again = load(tmp_path / "white.safetensors")
    np.testing.assert_array_equal(again.whiten_matrix_, white.whiten_matrix_)
    np.testing.assert_array_equal(again.decision_function(Xq), white.decision_function(Xq))

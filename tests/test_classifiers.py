"""SAV and CALM against values computed independently here, by plain loops over items, heads and
classes (float64 features, so agreement is checked to 1e-6 or better)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from calm.classifiers import CALMClassifier, SAVClassifier
from calm.classifiers._reliability import head_weights

SCHEMES = ("margin_clamped", "margin", "prob", "brier")


def make_data(seed: int = 0, classes: int = 3, shots: int = 4, heads: int = 6, dim: int = 5, queries: int = 7):
    """Support and queries whose class signal differs by head."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, heads, dim)) * rng.uniform(0.2, 1.5, size=(1, heads, 1))
    y = np.repeat(np.arange(classes), shots)
    yq = rng.integers(0, classes, size=queries)
    X = means[y] + rng.normal(size=(len(y), heads, dim))
    Xq = means[yq] + rng.normal(size=(queries, heads, dim))
    return X, y, Xq, yq


# ---- independent reference, plain loops ---------------------------------------------------------

def ref_cos(q: np.ndarray, s: np.ndarray) -> float:
    nq, ns = math.sqrt(float(q @ q)), math.sqrt(float(s @ s))
    return 0.0 if nq == 0 or ns == 0 else float(q @ s) / (nq * ns)


def ref_class_sum(X, y, k, c, leave_out=None):
    total = np.zeros(X.shape[2])
    for j in range(len(X)):
        if y[j] == c and j != leave_out:
            total = total + X[j, k]
    return total


def ref_cosines(X, y, q, leave_out=None):
    """[K, C] cosines of item q against prototypes built from (X, y) without item ``leave_out``."""
    classes = sorted(set(y.tolist()))
    return np.array([[ref_cos(q[k], ref_class_sum(X, y, k, c, leave_out)) for c in classes]
                     for k in range(X.shape[1])])


def ref_softmax(v, tau):
    e = [math.exp(x / tau) for x in v]
    return [x / sum(e) for x in e]


def ref_item_score(p, c, scheme):
    best_other = max(p[j] for j in range(len(p)) if j != c)
    if scheme == "margin_clamped":
        return max(0.0, p[c] - best_other)
    if scheme == "margin":
        return p[c] - best_other
    if scheme == "prob":
        return p[c]
    return 2 * p[c] - sum(x * x for x in p)


def ref_reliability(X, y, tau, scheme, mode):
    """r [K, C]: mean over the class's items of the item score; ``mode`` "loo" rebuilds the
    prototypes without the item (brute force), "support" keeps it (in-sample)."""
    K, C = X.shape[1], len(set(y.tolist()))
    r = np.zeros((K, C))
    for i in range(len(X)):
        cos = ref_cosines(X, y, X[i], leave_out=i if mode == "loo" else None)
        for k in range(K):
            r[k, y[i]] += ref_item_score(ref_softmax(cos[k], tau), y[i], scheme)
    counts = np.bincount(y)
    return r / counts


def ref_shrink(r, counts, alpha):
    mean = r.mean()
    return np.array([[r[k, c] * counts[c] / (counts[c] + alpha) + mean * alpha / (counts[c] + alpha)
                      for c in range(r.shape[1])] for k in range(r.shape[0])])


def ref_weights(r, scheme, tau_w, top_k=None):
    K, C = r.shape
    w = np.zeros((K, C))
    for c in range(C):
        ranked = sorted(range(K), key=lambda k: (-r[k, c], k))
        kept = ranked if top_k is None else ranked[:top_k]
        if scheme == "margin_clamped":
            v = [max(r[k, c], 0.0) ** (1 / tau_w) if k in kept else 0.0 for k in range(K)]
            total = sum(v)
            w[:, c] = [1 / K] * K if total == 0 else [x / total for x in v]
        else:
            e = [math.exp(r[k, c] / tau_w) if k in kept else 0.0 for k in range(K)]
            w[:, c] = [x / sum(e) for x in e]
    return w


def ref_scores(X, y, Xq, w, tau):
    scores = np.zeros((len(Xq), w.shape[1]))
    for n in range(len(Xq)):
        cos = ref_cosines(X, y, Xq[n])
        for k in range(X.shape[1]):
            p = ref_softmax(cos[k], tau)
            for c in range(w.shape[1]):
                scores[n, c] += w[k, c] * p[c]
    return scores


# ---- CALM ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("reliability", ["loo", "support"])
def test_calm_matches_loops(scheme: str, reliability: str) -> None:
    X, y, Xq, _ = make_data()
    tau, tau_w = 0.2, 0.5
    clf = CALMClassifier(tau=tau, tau_w=tau_w, scheme=scheme, reliability=reliability).fit(X, y)
    r = ref_reliability(X, y, tau, scheme, reliability)
    np.testing.assert_allclose(clf.reliability_, r, atol=1e-9)
    w = ref_weights(r, scheme, tau_w)
    np.testing.assert_allclose(clf.weights_, w, atol=1e-9)
    np.testing.assert_allclose(clf.prototypes_[2, 1], ref_class_sum(X, y, 2, 1) / np.linalg.norm(ref_class_sum(X, y, 2, 1)))
    scores = ref_scores(X, y, Xq, w, tau)
    np.testing.assert_allclose(clf.decision_function(Xq), scores, atol=1e-9)
    np.testing.assert_allclose(clf.predict_proba(Xq), scores / scores.sum(1, keepdims=True), atol=1e-9)
    np.testing.assert_array_equal(clf.predict(Xq), scores.argmax(1))


def test_loo_differs_from_support_and_equals_brute_force() -> None:
    X, y, _, _ = make_data(seed=1)
    loo = CALMClassifier(tau=0.1, scheme="prob").fit(X, y)
    support = CALMClassifier(tau=0.1, scheme="prob", reliability="support").fit(X, y)
    assert not np.allclose(loo.reliability_, support.reliability_, atol=1e-3)
    # in-sample reliability is optimistic: every item helped build the prototype that judges it
    assert support.reliability_.mean() > loo.reliability_.mean()
    np.testing.assert_allclose(loo.reliability_, ref_reliability(X, y, 0.1, "prob", "loo"), atol=1e-9)


def test_shrinkage_and_top_k() -> None:
    X, y, Xq, _ = make_data(seed=2, shots=3)
    tau, tau_w, alpha = 0.15, 0.3, 2.5
    for scheme in ("margin_clamped", "brier"):
        clf = CALMClassifier(tau=tau, tau_w=tau_w, scheme=scheme, top_k=2, shrinkage=alpha).fit(X, y)
        r = ref_shrink(ref_reliability(X, y, tau, scheme, "loo"), np.bincount(y), alpha)
        np.testing.assert_allclose(clf.reliability_, r, atol=1e-9)
        w = ref_weights(r, scheme, tau_w, top_k=2)
        np.testing.assert_allclose(clf.weights_, w, atol=1e-9)
        assert ((clf.weights_ > 0).sum(0) <= 2).all()
        np.testing.assert_allclose(clf.decision_function(Xq), ref_scores(X, y, Xq, w, tau), atol=1e-9)


def test_weights_by_hand_with_zero_column_and_ties() -> None:
    r = np.array([[0.5, 0.0, 0.2], [0.1, 0.0, 0.2], [0.4, 0.0, 0.2], [0.0, 0.0, 0.1]])
    active = torch.ones(4, dtype=torch.bool)
    for scheme, top_k, tau_w in [("margin_clamped", None, 0.5), ("margin_clamped", 2, 1.0), ("prob", 2, 0.1),
                                 ("margin", None, 2.0)]:
        got = head_weights(torch.from_numpy(r.T), scheme, tau_w, top_k, active).T.numpy()
        np.testing.assert_allclose(got, ref_weights(r, scheme, tau_w, top_k), atol=1e-12)
    # margin_clamped: a class with no positive reliability gets uniform weights, even with top_k
    got = head_weights(torch.from_numpy(r.T), "margin_clamped", 1.0, 2, active).T.numpy()
    np.testing.assert_allclose(got[:, 1], 0.25)
    # the third class's ties at 0.2 keep the lower head indices: 0 and 1
    np.testing.assert_allclose(got[:, 2], [0.5, 0.5, 0.0, 0.0])
    # a sharp power must not underflow to the uniform fallback
    sharp = head_weights(torch.tensor([[0.3, 0.2, 0.1, 0.0]], dtype=torch.float64), "margin_clamped", 0.005, None,
                         active)
    np.testing.assert_allclose(sharp.numpy(), [[1.0, 0.0, 0.0, 0.0]], atol=1e-12)


def test_zero_reliability_class_gets_uniform_weights_end_to_end() -> None:
    X, y, _, _ = make_data(seed=3)
    clf = CALMClassifier(reliability="support").fit(X, y)
    # validation items of class 2 sit exactly on class 0's prototypes: no head favours class 2
    val = np.concatenate([X[y == 0][:2], clf.prototypes_.transpose(1, 0, 2)[[0, 0]], X[y == 1][:2]])
    y_val = np.array([0, 0, 2, 2, 1, 1])
    holdout = CALMClassifier(reliability="holdout").fit(X, y, X_val=val, y_val=y_val)
    np.testing.assert_allclose(holdout.reliability_[:, 2], 0.0, atol=1e-12)
    np.testing.assert_allclose(holdout.weights_[:, 2], 1 / X.shape[1])
    np.testing.assert_allclose(holdout.reliability_, ref_holdout_reliability(X, y, val, y_val, 0.07), atol=1e-9)


def ref_holdout_reliability(X, y, val, y_val, tau):
    r = np.zeros((X.shape[1], 3))
    for i in range(len(val)):
        cos = ref_cosines(X, y, val[i])
        for k in range(X.shape[1]):
            r[k, y_val[i]] += ref_item_score(ref_softmax(cos[k], tau), y_val[i], "margin_clamped")
    return r / np.bincount(y_val)


def test_one_shot_class_warns_and_falls_back_to_in_sample() -> None:
    X, y, _, _ = make_data(seed=4)
    X, y = np.concatenate([X[y != 2], X[y == 2][:1]]), np.concatenate([y[y != 2], [2]])
    with pytest.warns(UserWarning, match=r"1 class\(es\) have a single support item \(2\)"):
        clf = CALMClassifier(scheme="prob", tau=0.2).fit(X, y)
    expected = ref_reliability(X, y, 0.2, "prob", "loo")
    expected[:, 2] = ref_reliability(X, y, 0.2, "prob", "support")[:, 2]
    np.testing.assert_allclose(clf.reliability_, expected, atol=1e-9)


def test_holdout_needs_validation_set_for_every_class() -> None:
    X, y, Xq, yq = make_data()
    with pytest.raises(ValueError, match="needs fit"):
        CALMClassifier(reliability="holdout").fit(X, y)
    with pytest.raises(ValueError, match="only used with reliability='holdout'"):
        CALMClassifier().fit(X, y, X_val=Xq, y_val=yq)
    with pytest.raises(ValueError, match="no validation items for class"):
        CALMClassifier(reliability="holdout").fit(X, y, X_val=Xq[yq != 1], y_val=yq[yq != 1])
    with pytest.raises(ValueError, match="not among the fitted classes"):
        CALMClassifier(reliability="holdout").fit(X, y, X_val=Xq, y_val=yq + 5)


# ---- SAV ----------------------------------------------------------------------------------------

def ref_head_accuracy(X, y, mode):
    K = X.shape[1]
    correct = np.zeros(K)
    for i in range(len(X)):
        cos = ref_cosines(X, y, X[i], leave_out=i if mode == "loo" else None)
        for k in range(K):
            correct[k] += int(np.argmax(cos[k]) == y[i])
    return correct / len(X)


@pytest.mark.parametrize("scoring", ["loo", "support"])
def test_sav_matches_loops(scoring: str) -> None:
    X, y, Xq, _ = make_data(seed=5, heads=8)
    clf = SAVClassifier(n_heads=3, scoring=scoring).fit(X, y)
    accuracy = ref_head_accuracy(X, y, scoring)
    np.testing.assert_allclose(clf.head_scores_, accuracy, atol=1e-12)
    assert sorted(accuracy[clf.heads_].tolist(), reverse=True) == sorted(accuracy, reverse=True)[:3]
    votes = np.zeros((len(Xq), 3))
    summed = np.zeros((len(Xq), 3))
    for n in range(len(Xq)):
        cos = ref_cosines(X, y, Xq[n])
        for k in clf.heads_:
            votes[n, np.argmax(cos[k])] += 1
            summed[n] += cos[k]
    np.testing.assert_allclose(clf.predict_proba(Xq), votes / 3)
    expected = [max(range(3), key=lambda c: (votes[n, c], summed[n, c])) for n in range(len(Xq))]
    np.testing.assert_array_equal(clf.predict(Xq), expected)


def test_sav_published_scoring_scores_every_head_perfect_at_one_shot() -> None:
    X, y, _, _ = make_data(seed=6, shots=1, heads=8)
    published = SAVClassifier(n_heads=4, scoring="support").fit(X, y)
    np.testing.assert_allclose(published.head_scores_, 1.0)
    with pytest.warns(UserWarning, match="single support item"):
        SAVClassifier(n_heads=4, scoring="loo").fit(X, y)
    with pytest.warns(UserWarning, match="asked for 20 heads but only 8 of the 8 heads vary"):
        SAVClassifier(scoring="support").fit(X, y)


def test_sav_loo_differs_and_equals_brute_force() -> None:
    X, y, _, _ = make_data(seed=7, shots=3, heads=10)
    loo = SAVClassifier(n_heads=5, scoring="loo").fit(X, y).head_scores_
    assert (SAVClassifier(n_heads=5, scoring="support").fit(X, y).head_scores_ >= loo).all()
    assert not np.allclose(loo, ref_head_accuracy(X, y, "support"))
    np.testing.assert_allclose(loo, ref_head_accuracy(X, y, "loo"), atol=1e-12)


def test_sav_tie_break_prefers_larger_summed_cosine() -> None:
    clf = SAVClassifier(n_heads=2)
    clf.classes_ = np.array(["a", "b"])
    clf.n_heads_in_, clf.head_dim_in_ = 2, 2
    clf.heads_ = np.array([0, 1])
    clf.prototypes_ = np.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    # head 0 votes a (cos 0.8 vs 0.6), head 1 votes b (cos 0.1 vs 0.995): 1-1, b has the larger sum
    q = np.array([[[0.8, 0.6], [0.1, 0.995]]])
    assert clf.predict(q).tolist() == ["b"]
    assert clf.predict_proba(q).tolist() == [[0.5, 0.5]]
    assert np.argmax(clf.decision_function(q)) == 1


# ---- manners shared by every classifier ------------------------------------------------------------

def test_permutations_and_head_scaling_change_nothing() -> None:
    X, y, Xq, _ = make_data(seed=8, classes=4, heads=7)
    names = np.array(["owl", "cat", "dog", "yak"])
    for make in (lambda: CALMClassifier(tau=0.1, top_k=3, shrinkage=1.0), lambda: SAVClassifier(n_heads=3)):
        base = make().fit(X, names[y])
        predicted = base.predict(Xq)
        proba = base.predict_proba(Xq)
        order = np.random.default_rng(0).permutation(len(X))
        assert (make().fit(X[order], names[y][order]).predict(Xq) == predicted).all()
        relabel = {"owl": "z", "cat": "y", "dog": "x", "yak": "w"}  # reverses the sorted class order
        renamed = make().fit(X, np.array([relabel[n] for n in names[y]]))
        assert [relabel[p] for p in predicted] == renamed.predict(Xq).tolist()
        scale = np.array([3.0, 0.01, 1.0, 250.0, 1.0, 0.5, 7.0])[None, :, None]
        scaled = make().fit(X * scale, names[y])
        assert (scaled.predict(Xq * scale) == predicted).all()
        np.testing.assert_allclose(scaled.predict_proba(Xq * scale), proba, atol=1e-9)
        np.testing.assert_allclose(base.predict_proba(Xq * scale), proba, atol=1e-9)


def test_constant_and_zero_heads_are_flagged_and_left_out() -> None:
    X, y, Xq, _ = make_data(seed=9, heads=6)
    Xc, Xqc = X.copy(), Xq.copy()
    Xc[:, 1], Xqc[:, 1] = 2.5, 2.5  # the same vector for every item
    Xc[:, 4], Xqc[:, 4] = 0.0, 0.0  # all zero
    keep = [0, 2, 3, 5]
    for make in (lambda: CALMClassifier(scheme="prob", top_k=2, shrinkage=1.0), lambda: SAVClassifier(n_heads=2),
                 lambda: CALMClassifier()):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            clf = make().fit(Xc, y)
        assert clf.constant_heads_.tolist() == [False, True, False, False, True, False]
        reduced = make().fit(Xc[:, keep], y)
        out = clf.decision_function(Xqc)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, reduced.decision_function(Xqc[:, keep]), atol=1e-12)
    with pytest.raises(ValueError, match="every head is constant"):
        CALMClassifier().fit(np.ones((6, 2, 3)), [0, 0, 0, 1, 1, 1])


def test_zero_query_vectors_give_finite_scores() -> None:
    X, y, Xq, _ = make_data(seed=10)
    Xq[0] = 0.0
    Xq[1, 2] = 0.0
    for clf in (CALMClassifier(), SAVClassifier(n_heads=2)):
        assert np.isfinite(clf.fit(X, y).predict_proba(Xq)).all()


def test_float16_memmap_and_torch_inputs(tmp_path) -> None:
    X, y, Xq, _ = make_data(seed=11)
    path = tmp_path / "q.f16"
    stored = np.memmap(path, dtype=np.float16, mode="w+", shape=Xq.shape)
    stored[:] = Xq
    stored.flush()
    read_only = np.memmap(path, dtype=np.float16, mode="r", shape=Xq.shape)
    clf = CALMClassifier().fit(torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y))
    assert clf.prototypes_.dtype == np.float32
    expected = clf.predict_proba(Xq.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(clf.predict_proba(read_only), expected, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(torch.from_numpy(np.array(read_only))), expected, atol=1e-6)
    assert clf.predict(read_only).dtype == y.dtype
    reversed_view = Xq.astype(np.float32)[::-1]  # negative strides: torch cannot view it
    np.testing.assert_allclose(clf.predict_proba(reversed_view), clf.predict_proba(Xq.astype(np.float32))[::-1],
                               atol=1e-6)
    big_endian = Xq.astype(">f4")
    np.testing.assert_allclose(clf.predict_proba(big_endian), clf.predict_proba(Xq.astype(np.float32)), atol=1e-6)


def test_bad_inputs_raise_clear_errors() -> None:
    X, y, Xq, _ = make_data()
    with pytest.raises(ValueError, match=r"shape \[N, K, D\]"):
        CALMClassifier().fit(X[0], y)
    with pytest.raises(ValueError, match="one label per item"):
        CALMClassifier().fit(X, y[:-1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        CALMClassifier().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="scheme must be one of"):
        CALMClassifier(scheme="votes").fit(X, y)
    with pytest.raises(ValueError, match="tau must be a positive number"):
        CALMClassifier(tau=0).fit(X, y)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        CALMClassifier(top_k=0).fit(X, y)
    with pytest.raises(ValueError, match="n_heads must be a positive integer"):
        SAVClassifier(n_heads=0).fit(X, y)
    bad = X.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        CALMClassifier().fit(bad, y)
    clf = CALMClassifier().fit(X, y)
    with pytest.raises(ValueError, match="fit on features of 6 heads x 5 dims, got 6 x 4"):
        clf.predict(Xq[:, :, :4])
    Xq[2, 1, 1] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf values \(e.g. in items \[2\]\)"):
        clf.predict(Xq)

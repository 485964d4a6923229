"""Support-only tuning against a brute-force nested leave-one-out computed by loops."""

from __future__ import annotations

import numpy as np
import pytest
from test_classifiers import make_data, ref_cosines, ref_item_score, ref_shrink, ref_softmax, ref_weights

from calm.classifiers import CALMClassifier, TunedCALMClassifier, tune_calm
from calm.classifiers.tuning import DEFAULT_GRID, expand_grid

GRID = {"tau": [0.05, 0.2], "tau_w": [0.1, 1.0], "top_k": [None, 2], "scheme": ["margin_clamped", "prob", "brier"]}


def brute_force_accuracy(X, y, tau, tau_w, top_k, scheme, alpha=0.0, nested=True):
    """Item i is judged by posteriors from prototypes without it, and (``nested``) by weights whose
    own-class reliability leaves out item i's own score (other items' LOO posteriors stay as they are)."""
    K, C = X.shape[1], len(set(y.tolist()))
    posts = [[ref_softmax(ref_cosines(X, y, X[i], leave_out=i)[k], tau) for k in range(K)] for i in range(len(X))]
    scores = np.array([[ref_item_score(posts[i][k], y[i], scheme) for k in range(K)] for i in range(len(X))])
    counts = np.bincount(y)
    sums = np.zeros((K, C))
    for i in range(len(X)):
        sums[:, y[i]] += scores[i]
    raw_mean = (sums / counts).mean()
    r = ref_shrink(sums / counts, counts, alpha)
    correct = []
    for i in range(len(X)):
        c = y[i]
        r_i = r.copy()
        r_i[:, c] = (sums[:, c] - scores[i]) / (counts[c] - 1)
        if alpha:
            r_i[:, c] = r_i[:, c] * (counts[c] - 1) / (counts[c] - 1 + alpha) + raw_mean * alpha / (counts[c] - 1 + alpha)
        w = ref_weights(r, scheme, tau_w, top_k)
        if nested:
            w[:, c] = ref_weights(r_i, scheme, tau_w, top_k)[:, c]
        votes = [sum(w[k, j] * posts[i][k][j] for k in range(K)) for j in range(C)]
        correct.append(int(np.argmax(votes) == c))
    return float(np.mean(correct))


def test_tuning_scores_equal_brute_force_nested_loo() -> None:
    X, y, _, _ = make_data(seed=12, classes=4, shots=2, heads=5)
    X = X + np.random.default_rng(12).normal(size=X.shape) * 1.5  # weak signal: the nesting matters
    result = tune_calm(X, y, GRID, shrinkage=0.5)
    assert len(result.scores) == 2 * 2 * 2 * 3 and result.n_scored == len(X)
    differs = 0
    for row in result.scores:
        params = (row["tau"], row["tau_w"], row["top_k"], row["scheme"])
        expected = brute_force_accuracy(X, y, *params, alpha=0.5)
        assert row["accuracy"] == pytest.approx(expected, abs=1e-12), row
        differs += expected != brute_force_accuracy(X, y, *params, alpha=0.5, nested=False)
    assert differs > 0  # so the check above can see a missing nesting
    best = max(result.scores, key=lambda s: (s["accuracy"], s["true_share"]))
    assert result.best_score == best["accuracy"]
    assert result.best_params == {k: best[k] for k in ("tau", "tau_w", "scheme", "top_k")}


def test_tuned_classifier_fits_calm_with_the_best_parameters() -> None:
    X, y, Xq, _ = make_data(seed=13, shots=4, heads=6)
    tuned = TunedCALMClassifier(grid=GRID).fit(X, y)
    assert tuned.best_params_ == tune_calm(X, y, GRID).best_params
    plain = CALMClassifier(**tuned.best_params_).fit(X, y)
    np.testing.assert_allclose(tuned.weights_, plain.weights_, atol=1e-12)
    np.testing.assert_allclose(tuned.predict_proba(Xq), plain.predict_proba(Xq), atol=1e-12)
    support = TunedCALMClassifier(grid=GRID, reliability="support").fit(X, y)
    plain_support = CALMClassifier(**support.best_params_, reliability="support").fit(X, y)
    np.testing.assert_allclose(support.weights_, plain_support.weights_, atol=1e-12)


def test_grid_expansion_and_errors() -> None:
    assert len(expand_grid(None)) == int(np.prod([len(v) for v in DEFAULT_GRID.values()])) == 100
    configs = expand_grid({"tau": [0.1, 0.1, 0.3]})
    assert configs == [{"tau": 0.1, "tau_w": 1.0, "scheme": "margin_clamped", "top_k": None},
                       {"tau": 0.3, "tau_w": 1.0, "scheme": "margin_clamped", "top_k": None}]
    with pytest.raises(ValueError, match="unknown grid key"):
        expand_grid({"alpha": [1]})
    with pytest.raises(ValueError, match="scheme must be one of"):
        expand_grid({"scheme": ["votes"]})
    X, y, _, _ = make_data(shots=1)
    with pytest.warns(UserWarning, match="single support item"), pytest.raises(ValueError, match="two or more"):
        tune_calm(X, y, {"tau": [0.1]})


def test_one_shot_classes_are_not_scored() -> None:
    X, y, _, _ = make_data(seed=14, shots=3, heads=4)
    keep = np.r_[np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:1]]
    with pytest.warns(UserWarning, match="single support item"):
        result = tune_calm(X[keep], y[keep], {"tau": [0.1], "scheme": ["prob"]})
    assert result.n_scored == 6 and len(result.scores) == 1
    X1 = X[np.r_[0, 3, 6]]
    with pytest.warns(UserWarning, match="single support item"), pytest.raises(ValueError, match="two or more"):
        TunedCALMClassifier(grid={"tau": [0.3]}).fit(X1, y[np.r_[0, 3, 6]])

"""The probe fitted in the row space equals scikit-learn's fit on all features; the tuned probe
chooses C by cross-validation on the support alone."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_score  # noqa: E402

from calm.classifiers import LogisticProbe, TunedLogisticProbe, load, save  # noqa: E402
from calm.classifiers.probe import concatenated_unit_heads  # noqa: E402
from calm.classifiers._cosine import FeatureBlocks  # noqa: E402


def make_data(seed=0, shots=4, classes=3, heads=6, dim=8):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, heads, dim))
    y = np.repeat(np.arange(classes), shots)
    X = means[y] + 1.5 * rng.normal(size=(len(y), heads, dim))
    Xq = means[np.arange(20) % classes] + 1.5 * rng.normal(size=(20, heads, dim))
    return X, y, Xq


def test_row_space_fit_equals_the_full_fit():
    X, y, Xq = make_data()
    probe = LogisticProbe(C=0.5).fit(X, y)
    full = LogisticRegression(C=0.5, max_iter=1000, tol=1e-10).fit(concatenated_unit_heads(FeatureBlocks(X)), y)
    logits = concatenated_unit_heads(FeatureBlocks(Xq)).astype(np.float64) @ full.coef_.T + full.intercept_
    np.testing.assert_allclose(probe.decision_function(Xq), logits, atol=1e-3)
    np.testing.assert_array_equal(probe.predict(Xq), full.predict(concatenated_unit_heads(FeatureBlocks(Xq))))


def test_c_is_cross_validated_on_the_support():
    X, y, Xq = make_data(shots=6)
    Cs = (0.01, 1.0, 100.0)
    probe = TunedLogisticProbe(Cs=Cs, folds=3).fit(X, y)
    Z = concatenated_unit_heads(FeatureBlocks(X))
    split = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    expected = [cross_val_score(LogisticRegression(C=c, max_iter=1000), Z, y, cv=split).mean() for c in Cs]
    np.testing.assert_allclose(probe.cv_scores_, expected, atol=1e-9)
    assert probe.C_ == Cs[int(np.argmax(expected))]
    np.testing.assert_array_equal(probe.predict(Xq), LogisticProbe(C=probe.C_).fit(X, y).predict(Xq))


def test_one_shot_falls_back_and_round_trips(tmp_path):
    X, y, Xq = make_data(shots=1)
    with pytest.warns(UserWarning, match="cannot be cross-validated"):
        probe = TunedLogisticProbe(fallback_C=2.0).fit(X, y)
    assert probe.C_ == 2.0 and probe.cv_scores_ == []
    save(probe, tmp_path / "p.safetensors")
    again = load(tmp_path / "p.safetensors")
    assert again.C_ == 2.0
    np.testing.assert_array_equal(again.decision_function(Xq), probe.decision_function(Xq))

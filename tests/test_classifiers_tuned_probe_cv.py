"""The tuned probe's cross-validation is scikit-learn's ``cross_val_score(...).mean()``, number for
number, without its per-fold machinery."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from calm.classifiers.tuned_probe import cross_validated_accuracy


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("C", [0.01, 1.0, 1000.0])
def test_cross_validated_accuracy_is_cross_val_score_mean(seed, C):
    rng = np.random.default_rng(seed)
    n_classes, shots = 3 + seed % 3, 3 + seed % 4
    target = np.repeat(np.arange(n_classes), shots)
    Z = rng.standard_normal((len(target), 12)) + 0.8 * rng.standard_normal((n_classes, 12))[target]
    split = StratifiedKFold(n_splits=min(5, shots), shuffle=True, random_state=0)
    expected = float(cross_val_score(LogisticRegression(C=C, max_iter=1000), Z, target, cv=split).mean())
    assert cross_validated_accuracy(Z, target, list(split.split(Z, target)), C, 1000) == expected

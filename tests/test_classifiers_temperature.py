"""The temperature's bisection stops once its bracket stops shrinking; it must give exactly the
beta (and smoothed NLL) of all 100 bisection steps."""

from __future__ import annotations

import numpy as np
import pytest

from calm.classifiers import temperature
from calm.classifiers.temperature import fit_inverse_temperature, softmax


def _hundred_steps(scores: np.ndarray, labels: np.ndarray) -> float:
    """beta by the definition: 100 bisection steps of the smoothed cross-entropy's slope."""
    n, n_classes = scores.shape
    eps = 1.0 / (n + 1)
    targets = np.full(scores.shape, eps / n_classes)
    targets[np.arange(n), labels] += 1.0 - eps
    target_score = (targets * scores).sum(axis=1)

    def slope(beta: float) -> float:
        return float(np.mean((softmax(beta * scores) * scores).sum(axis=1) - target_score))

    spread = float(np.std(scores - scores.mean(axis=1, keepdims=True))) or 1.0
    low, high = 0.0, 1.0 / spread
    while slope(high) < 0 and high < 1e8 / spread:
        low, high = high, 2 * high
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if slope(middle) < 0 else (low, middle)
    return max(0.5 * (low + high), 1e-8)


@pytest.mark.parametrize("seed", range(40))
def test_early_stop_gives_the_beta_of_all_hundred_steps(seed):
    rng = np.random.default_rng(seed)
    n, n_classes = int(rng.integers(2, 60)), int(rng.integers(2, 12))
    labels = rng.integers(0, n_classes, n)
    scale = [0.01, 1.0, 30.0][seed % 3]
    scores = scale * rng.standard_normal((n, n_classes))
    if seed % 4 == 0:  # separated: the true class always on top
        scores[np.arange(n), labels] += 5 * scale
    if seed % 10 == 1:  # constant scores: no information
        scores[:] = 1.0
    beta, _ = fit_inverse_temperature(scores, labels)
    assert beta == _hundred_steps(scores, labels)


def test_the_bisection_stops_well_before_a_hundred_steps(monkeypatch):
    rng = np.random.default_rng(0)
    scores, labels = rng.standard_normal((30, 5)), rng.integers(0, 5, 30)
    calls = []
    real = temperature.softmax
    monkeypatch.setattr(temperature, "softmax", lambda z: calls.append(1) or real(z))
    fit_inverse_temperature(scores, labels)
    assert len(calls) < 80  # the bracket of doubles collapses after about 60 halvings

"""Temperature scaling of out-of-fold class scores, and the check that it helps at all.

:func:`fit_temperature` picks the class scores (of several sources) and the inverse temperature
beta minimising the smoothed cross-entropy of softmax(beta * scores). :func:`cross_validated_nll`
says what that calibration is worth on clips it was not fitted on: the temperature is refitted
without each fold of the scored support items (only the scalar, never the classifier, so this
costs nothing next to the cross-fit) and scores that fold. :class:`~calm.classifiers.trust.Calibrated`
keeps the raw probabilities unless this beats the raw probabilities' own NLL.
"""

from __future__ import annotations

import numpy as np

PROBA_FLOOR = 1e-6
"""Probabilities are floored here before a log (vote shares can be exactly 0)."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax [N, C] of logits [N, C]."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def nll(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class) of probabilities [N, C], p floored at :data:`PROBA_FLOOR`."""
    return float(-np.mean(np.log(np.maximum(proba[np.arange(len(labels)), labels], PROBA_FLOOR))))


def fit_inverse_temperature(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """beta = 1/T minimising the mean cross-entropy of softmax(beta * scores) against targets
    smoothed by eps = 1/(n+1) (one pseudo-count spread over the classes): without it a support
    set whose out-of-fold scores happen to be perfectly separated would give T = 0 and certainty.
    The loss is convex in beta, so its derivative is bisected. Returns (beta, smoothed NLL)."""
    n, n_classes = scores.shape
    eps = 1.0 / (n + 1)
    targets = np.full(scores.shape, eps / n_classes)
    targets[np.arange(n), labels] += 1.0 - eps
    target_score = (targets * scores).sum(axis=1)

    def slope(beta: float) -> float:
        return float(np.mean((softmax(beta * scores) * scores).sum(axis=1) - target_score))

    def loss(beta: float) -> float:
        z = beta * scores
        top = z.max(axis=1)
        lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
        return float(np.mean(lse - beta * target_score))

    spread = float(np.std(scores - scores.mean(axis=1, keepdims=True))) or 1.0
    low, high = 0.0, 1.0 / spread
    while slope(high) < 0 and high < 1e8 / spread:
        low, high = high, 2 * high
    for _ in range(100):
        middle = 0.5 * (low + high)
        bracket = (middle, high) if slope(middle) < 0 else (low, middle)
        if bracket == (low, high):  # the bracket stopped shrinking: every later step would leave it so
            break
        low, high = bracket
    beta = max(0.5 * (low + high), 1e-8)
    return beta, loss(beta)


def fit_temperature(scores: dict[str, np.ndarray], labels: np.ndarray) -> tuple[str, float]:
    """The source (key of ``scores``, each [n, C]) and beta with the lowest smoothed NLL; on a
    tie, the first source in ``scores``' order."""
    fits = {source: fit_inverse_temperature(s, labels) for source, s in scores.items()}
    source = min(fits, key=lambda name: fits[name][1])
    return source, fits[source][0]


def cross_validated_nll(scores: dict[str, np.ndarray], labels: np.ndarray, folds: np.ndarray) -> float:
    """Mean NLL of each item under the temperature (and source) fitted on the items of the other
    folds (``folds`` [n], one fold per item)."""
    total = 0.0
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        source, beta = fit_temperature({k: s[train] for k, s in scores.items()}, labels[train])
        total += nll(softmax(beta * scores[source][test]), labels[test]) * int(test.sum())
    return total / len(labels)

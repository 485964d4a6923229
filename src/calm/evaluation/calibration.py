"""Metrics of trustworthy predictions, pure numpy: calibration (ECE, NLL, Brier, reliability
bins), open-set detection (AUROC, FPR at 95% TPR) and prediction sets (coverage, mean size).

Probabilities are ``[N, C]`` arrays whose rows sum to 1 and ``labels`` the true class's column
index per item. Open-set scores are higher for items of known classes (the positives).
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15
NLL_FLOOR = 1e-12
"""NLL takes log(max(p, NLL_FLOOR)): an uncalibrated vote share of exactly 0 for the true class
costs 27.6 nats instead of infinity."""


def _check(proba: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proba, labels = np.asarray(proba, dtype=np.float64), np.asarray(labels)
    if proba.ndim != 2 or labels.shape != (proba.shape[0],) or proba.shape[0] == 0:
        raise ValueError(f"need probabilities [N, C] and N labels, got {proba.shape} and {labels.shape}")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= proba.shape[1]:
        raise ValueError("labels must be column indices into the probabilities")
    return proba, labels


def reliability_bins(proba: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin (equal widths on [0, 1]; bin b holds confidences in (b/n, (b+1)/n], the
    first also 0): item count, summed confidence and number correct. Confidence is the largest
    probability, correct means its class is the true one (the first column on a tie)."""
    proba, labels = _check(proba, labels)
    confidence = proba.max(axis=1)
    correct = (np.argmax(proba, axis=1) == labels).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    return count, np.bincount(bins, confidence, n_bins), np.bincount(bins, correct, n_bins)


def ece_from_bins(count: np.ndarray, confidence: np.ndarray, correct: np.ndarray) -> float:
    """sum over bins of (items in bin / all items) * |accuracy - mean confidence| in the bin."""
    return float(np.abs(correct - confidence).sum() / count.sum())


def ece(proba: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-class confidence over ``n_bins`` equal-width bins."""
    return ece_from_bins(*reliability_bins(proba, labels, n_bins))


def nll(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log probability of the true class (natural log; floored at NLL_FLOOR)."""
    proba, labels = _check(proba, labels)
    return float(-np.mean(np.log(np.maximum(proba[np.arange(len(labels)), labels], NLL_FLOOR))))


def brier(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean over items of sum over classes of (p_c - [c is true])^2 (0 best, 2 worst)."""
    proba, labels = _check(proba, labels)
    target = np.zeros_like(proba)
    target[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(((proba - target) ** 2).sum(axis=1)))


def _split(scores: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, known = np.asarray(scores, dtype=np.float64), np.asarray(known, dtype=bool)
    if scores.shape != known.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and known {known.shape} must be the same [N] shape")
    if known.all() or not known.any():
        raise ValueError("open-set metrics need both known-class and unknown items")
    if not np.isfinite(scores).all():
        raise ValueError("open-set scores must be finite")
    return scores[known], scores[~known]


def auroc(scores: np.ndarray, known: np.ndarray) -> float:
    """P(score of a known item > score of an unknown one), ties counting one half (Mann-Whitney U)."""
    positive, negative = _split(scores, known)
    ranks = _average_ranks(np.concatenate([positive, negative]))
    u = ranks[:len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def fpr_at_tpr(scores: np.ndarray, known: np.ndarray, tpr: float = 0.95) -> float:
    """Share of unknown items accepted (score >= t) at the highest threshold t that accepts at
    least ``tpr`` of the known items."""
    positive, negative = _split(scores, known)
    k = math.ceil(tpr * len(positive) - 1e-9)
    threshold = np.sort(positive)[::-1][max(k, 1) - 1]
    return float(np.mean(negative >= threshold))


def coverage(sets: np.ndarray, labels: np.ndarray) -> float:
    """Share of items whose prediction set (boolean mask [N, C]) holds the true class."""
    sets, labels = _check(sets, labels)
    return float(np.mean(sets[np.arange(len(labels)), labels] > 0))


def mean_set_size(sets: np.ndarray) -> float:
    """Mean number of classes per prediction set (boolean mask [N, C])."""
    return float(np.asarray(sets, dtype=np.float64).sum(axis=1).mean())

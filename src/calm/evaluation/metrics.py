"""Evaluation metrics, pure numpy.

Single-label metrics take sequences of class names; a prediction may be None (a zero-shot answer
that maps to no class), which counts as wrong. Multi-label metrics take ``[N, L]`` arrays of 0/1
targets and of scores or decisions (see :func:`multi_hot`). Over seeds, :func:`mean_interval`
gives the mean and the half-width of its 95% t-interval.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np


def _as_objects(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _pair(y_true: Sequence[Hashable], y_pred: Sequence[Hashable | None]) -> tuple[np.ndarray, np.ndarray]:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} targets but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("no items to score")
    return _as_objects(y_true), _as_objects(y_pred)


def _labels(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[Hashable] | None) -> list:
    if labels is not None:
        return list(labels)
    return sorted({*y_true.tolist(), *y_pred.tolist()} - {None}, key=str)


def accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable | None]) -> float:
    """Fraction of items predicted correctly (None never is)."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable | None], labels: Sequence[Hashable] | None = None
) -> np.ndarray:
    """Counts ``[C, C]``: row = true class, column = predicted class, in the order of ``labels``
    (default: sorted classes seen). Predictions outside ``labels`` (e.g. None) fall in no cell,
    so a row can sum to less than its class's item count."""
    t, p = _pair(y_true, y_pred)
    names = _labels(t, p, labels)
    position = {name: k for k, name in enumerate(names)}
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    for true, pred in zip(t.tolist(), p.tolist()):
        if true in position and pred in position:
            matrix[position[true], position[pred]] += 1
    return matrix


def f1_scores(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable | None], labels: Sequence[Hashable] | None = None
) -> np.ndarray:
    """Per-class F1 = 2TP / (2TP + FP + FN) in the order of ``labels``; NaN for a class that is
    neither true nor predicted anywhere (undefined)."""
    t, p = _pair(y_true, y_pred)
    names = _labels(t, p, labels)
    is_true = np.stack([t == name for name in names]).astype(float)
    is_pred = np.stack([p == name for name in names]).astype(float)
    return _f1(is_true.T, is_pred.T)


def macro_f1(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable | None], labels: Sequence[Hashable] | None = None
) -> float:
    """Unweighted mean of the per-class F1 over the classes where it is defined."""
    return float(np.nanmean(f1_scores(y_true, y_pred, labels)))


def balanced_accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable | None]) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (in sorted order: a set of
    strings iterates in another order in each process, which changed the sum's last bit)."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean([np.mean(p[t == name] == name) for name in sorted(set(t.tolist()), key=str)]))


def classification_summary(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable | None], labels: Sequence[Hashable] | None = None
) -> dict[str, float]:
    """accuracy, macro_f1, balanced_accuracy, and ``unmapped``: the fraction of None predictions."""
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, labels),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "unmapped": float(np.mean([p is None for p in y_pred])),
    }


def eer(labels: Sequence[Any], scores: Sequence[float], positive: Any = 1) -> float:
    """Equal error rate of a continuous score where higher means ``positive`` (e.g. ``"bonafide"``).

    Every distinct score is a threshold (accept when score >= threshold), plus one above all
    scores, giving the false-accept rate (negatives accepted) and false-reject rate (positives
    rejected) at each; tied scores move together. The EER is where the two rates are equal: at a
    threshold where they are equal it is that rate, otherwise the two thresholds around the
    crossing are joined by a straight line in (FAR, FRR) and the EER is where it crosses FAR = FRR.
    """
    y = np.asarray([label == positive for label in labels], dtype=bool)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or s.ndim != 1:
        raise ValueError(f"{len(y)} labels but scores of shape {s.shape}")
    if y.all() or not y.any():
        raise ValueError(f"EER needs both positive ({positive!r}) and negative items")
    if not np.isfinite(s).all():
        raise ValueError("EER scores must be finite")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    accepted_pos = np.cumsum(y)[ends]
    accepted_neg = np.cumsum(~y)[ends]
    far = np.r_[0.0, accepted_neg / (~y).sum()]
    frr = np.r_[1.0, 1.0 - accepted_pos / y.sum()]
    gap = frr - far  # starts at 1, ends at -1
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(far[i])
    step = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(far[i - 1] + step * (far[i] - far[i - 1]))


def average_precision(targets: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the precision-recall steps: sum over distinct score thresholds (high to low) of
    (recall gain) x precision, tied scores counted together; NaN when there are no positives."""
    y = np.asarray(targets).astype(bool)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or s.ndim != 1:
        raise ValueError(f"targets of shape {y.shape} but scores of shape {s.shape}")
    if not y.any():
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    hits = np.cumsum(y)[ends]
    precision = hits / (ends + 1)
    recall = hits / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean over labels (columns) of :func:`average_precision`, skipping labels with no positive."""
    targets, scores = np.asarray(targets), np.asarray(scores, dtype=float)
    if targets.shape != scores.shape or targets.ndim != 2:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} must be the same [N, L] shape")
    ap = np.array([average_precision(targets[:, j], scores[:, j]) for j in range(targets.shape[1])])
    if np.isnan(ap).all():
        raise ValueError("mAP: no label has a positive item")
    return float(np.nanmean(ap))


def per_label_f1(targets: np.ndarray, decisions: np.ndarray) -> np.ndarray:
    """F1 of each label (column) of 0/1 ``decisions`` against 0/1 ``targets``; NaN where a label
    is neither true nor decided anywhere."""
    targets, decisions = np.asarray(targets, dtype=float), np.asarray(decisions, dtype=float)
    if targets.shape != decisions.shape or targets.ndim != 2:
        raise ValueError(f"targets {targets.shape} and decisions {decisions.shape} must be the same [N, L] shape")
    return _f1(targets, decisions)


def _f1(is_true: np.ndarray, is_pred: np.ndarray) -> np.ndarray:
    """Column-wise F1 of [N, L] 0/1 arrays, NaN where 2TP + FP + FN = 0."""
    tp = (is_true * is_pred).sum(0)
    denominator = is_true.sum(0) + is_pred.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), np.nan)


def multi_hot(labels: Sequence[str | tuple[str, ...] | None], classes: Sequence[str]) -> np.ndarray:
    """``[N, L]`` 0/1 array: entry (i, j) is 1 when item i carries class j (labels outside
    ``classes`` are ignored)."""
    column = {name: j for j, name in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), dtype=np.int8)
    for i, label in enumerate(labels):
        for name in (label,) if isinstance(label, str) else (label or ()):
            if name in column:
                out[i, column[name]] = 1
    return out


# Two-sided 95% Student t quantiles t_{0.975, df}: df 1..30, then 40, 60, 120 and infinity.
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_T975_TAIL = ((30, 2.0423), (40, 2.0211), (60, 2.0003), (120, 1.9799), (np.inf, 1.9600))


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: a 4-decimal table to df 30, linear in 1/df beyond (error < 1e-4)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= 30:
        return _T975[df - 1]
    inverse = [1 / d for d, _ in _T975_TAIL][::-1]
    return float(np.interp(1 / df, inverse, [t for _, t in _T975_TAIL][::-1]))


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval (``mean ± half``) over e.g. seeds; the half-width
    is NaN for a single value."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_interval of no values")
    if x.size == 1:
        return float(x[0]), float("nan")
    half = t_quantile_975(x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)

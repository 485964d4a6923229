"""Report figures (PNG): a metric against shots per method, CALM's head weights and their mass per
layer, a confusion matrix, a reliability diagram.

matplotlib is imported only to draw, through its object API (no pyplot state, no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Collection, Sequence

import numpy as np

from calm.classifiers import plot_weight_maps
from calm.errors import MissingDependencyError
from calm.evaluation.calibration import ece_from_bins
from calm.features import HeadIndex


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("report plots need matplotlib: pip install 'calm-audio[plots]'") from None
    return Figure(figsize=(width, height), layout="constrained")


def plot_metric_vs_shots(rows: Sequence[dict[str, Any]], metric: str, path: str | os.PathLike,
                         label: str | None = None, dashed: Collection[str] = ()) -> Path:
    """One line per method: mean ``metric`` (in %) against shots, with 95% interval bars, from
    :meth:`~calm.evaluation.report.EvaluationReport.summary_rows`; the methods in ``dashed`` (those
    that read the model's answers) drawn dashed."""
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    shots = sorted({r["shots"] for r in rows})
    from matplotlib import colormaps

    colours = colormaps["tab20"].colors  # 20 distinct colours: more methods than the default cycle's 10
    for n, method in enumerate(methods):
        own = sorted((r for r in rows if r["method"] == method and r[metric] is not None), key=lambda r: r["shots"])
        if not own:
            continue
        x = [r["shots"] for r in own]
        y = [100 * r[metric] for r in own]
        err = [100 * (r[f"{metric}_ci"] or 0.0) for r in own]
        ax.errorbar(x, y, yerr=err, marker="osD^v"[n // 4 % 5], capsize=3, label=method,
                    color=colours[2 * n % 20 + n // 10 % 2],
                    linestyle="--" if method in dashed else "-")
    if len(shots) > 1 and shots[-1] / max(shots[0], 1) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("shots per class")
    ax.set_ylabel(f"{label or metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def plot_class_weights(weights: np.ndarray, classes: Sequence[str], heads: HeadIndex, path: str | os.PathLike,
                       title: str | None = None) -> Path:
    """CALM's head x class weights [K, C] as layer x head heatmaps per class
    (:func:`calm.classifiers.plot_weight_maps`)."""
    source = SimpleNamespace(classes_=np.asarray(classes), weights_=np.asarray(weights), head_index_=heads)
    return plot_weight_maps(source, path, heads=heads, title=title)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | os.PathLike,
                   title: str | None = None) -> Path:
    """A confusion matrix (rows: true class, columns: predicted), row-normalised colours and counts."""
    matrix = np.asarray(matrix)
    n = len(classes)
    size = min(max(3.5, 0.35 * n + 2.0), 20.0)
    fig = _figure(size + 1.0, size)
    ax = fig.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.6 else "black")
    font = 8 if n <= 20 else 5
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=90, fontsize=font)
    ax.set_yticks(range(n), [str(c) for c in classes], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    if title:
        ax.set_title(title)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def plot_reliability(bins: dict[str, dict[str, Any]], path: str | os.PathLike) -> Path:
    """Reliability diagram: accuracy against mean confidence per confidence bin, one line per
    method, before (left) and after (right) calibration, from
    :meth:`~calm.evaluation.trust.TrustRecorder.largest_shot_bins` (bins summed over seeds)."""
    fig = _figure(10.0, 4.6)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key in zip(axes, ("uncalibrated", "calibrated")):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for method, entry in bins.items():
            count, confidence, correct = np.asarray(entry[key], dtype=float)
            used = count > 0
            ax.plot(confidence[used] / count[used], correct[used] / count[used], marker="o", markersize=3,
                    label=f"{method} ({entry['shots']}-shot, ECE {ece_from_bins(count, confidence, correct):.3f})")
        ax.set_title(f"{key} probabilities")
        ax.set_xlabel("confidence (largest probability)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("accuracy")
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path

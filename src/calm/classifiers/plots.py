"""Interpretability: per-class head weights laid out over (layer, head), per site, and a PNG of them.

matplotlib (the ``plots`` extra) is imported only to draw.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from calm.classifiers._prototype import uniform_weights
from calm.errors import MissingDependencyError
from calm.features import HeadIndex


def _weights_and_heads(source: Any, heads: HeadIndex | None) -> tuple[np.ndarray, HeadIndex, list[str]]:
    """Weights [K, C], the head index and class names from a fitted classifier or a [K, C] array."""
    if hasattr(source, "classes_"):
        names = [str(c) for c in source.classes_]
        if hasattr(source, "weights_"):
            weights = np.asarray(source.weights_)
        elif hasattr(source, "heads_"):
            weights = uniform_weights(np.asarray(source.heads_), source.n_heads_in_, len(names))
        else:
            raise ValueError(f"{type(source).__name__} has no per-head weights or selected heads to map")
        heads = heads if heads is not None else getattr(source, "head_index_", None)
    else:
        weights = np.asarray(source, dtype=np.float64)
        names = [str(c) for c in range(weights.shape[-1])] if weights.ndim == 2 else []
    if heads is None:
        raise ValueError("pass heads= (a HeadIndex): the classifier was not fit on HeadFeatures")
    if weights.ndim != 2 or weights.shape[0] != len(heads):
        raise ValueError(f"weights must be [K, C] with K = {len(heads)} heads in the index, got {weights.shape}")
    return weights, heads, names


def weight_maps(source: Any, heads: HeadIndex | None = None) -> dict[str, np.ndarray]:
    """Per site, an array [C, layers, heads] of each class's head weights (NaN where no head exists).

    ``source`` is a fitted classifier with ``weights_`` (CALM, soft votes) or ``heads_`` (SAV: 1/n on
    the voting heads), or a weight array [K, C]. ``heads`` defaults to the classifier's ``head_index_``.
    """
    weights, heads, _ = _weights_and_heads(source, heads)
    sites = np.asarray(heads.sites)
    layers, numbers = np.asarray(heads.layers), np.asarray(heads.heads)
    maps: dict[str, np.ndarray] = {}
    for site in dict.fromkeys(heads.sites):
        rows = np.flatnonzero(sites == site)
        grid = np.full((weights.shape[1], layers[rows].max() + 1, numbers[rows].max() + 1), np.nan)
        grid[:, layers[rows], numbers[rows]] = weights[rows].T
        maps[site] = grid
    return maps


def plot_weight_maps(source: Any, path: str | os.PathLike, heads: HeadIndex | None = None,
                     classes: Sequence[Any] | None = None, title: str | None = None) -> Path:
    """Draw every (class, site) weight map as a layer x head heatmap into a PNG at ``path``.

    Args:
        source, heads: as in :func:`weight_maps`.
        classes: which classes to draw (labels as in ``classes_``; default all).
        title: a figure title.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("plot_weight_maps needs matplotlib: pip install 'calm-audio[plots]'") from None
    weights, index, names = _weights_and_heads(source, heads)
    maps = weight_maps(weights, index)
    if classes is None:
        chosen = list(range(len(names)))
    else:
        unknown = [c for c in classes if str(c) not in names]
        if unknown:
            raise ValueError(f"unknown class(es) {unknown[:5]}; known: {names[:10]}")
        chosen = [names.index(str(c)) for c in classes]
    panels = [(c, site) for c in chosen for site in maps]
    cols = min(len(panels), 6)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(2.6 * cols + 1.0, 2.3 * rows + (0.6 if title else 0.2)), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    top = max(float(np.nanmax(maps[site][chosen])) for site in maps) or 1.0
    image = None
    for ax, (c, site) in zip(axes.flat, panels):
        image = ax.imshow(maps[site][c], origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=top,
                          interpolation="nearest")
        ax.set_title(f"{names[c]} · {site}", fontsize=8)
        ax.set_xlabel("head", fontsize=7)
        ax.set_ylabel("layer", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, shrink=0.8, label="head weight")
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def layer_profile(source: Any, heads: HeadIndex | None = None) -> dict[str, np.ndarray]:
    """Where the weight lives: per site, an array [layers] of the weight mass of each layer's heads,
    averaged over classes (each class's weights sum to 1, so all sites together sum to 1).

    ``source`` and ``heads`` as in :func:`weight_maps`: CALM's reliability weights, SAV's voting
    heads (1/n each), or any [K, C] array (e.g. reliabilities: the mass is then their share).
    """
    weights, heads, _ = _weights_and_heads(source, heads)
    column = weights.sum(axis=0, keepdims=True)
    shares = np.divide(weights, column, out=np.zeros_like(weights), where=column > 0).mean(axis=1)  # [K]
    sites, layers = np.asarray(heads.sites), np.asarray(heads.layers)
    profile: dict[str, np.ndarray] = {}
    n_layers = int(layers.max()) + 1
    for site in dict.fromkeys(heads.sites):
        rows = sites == site
        profile[site] = np.bincount(layers[rows], weights=shares[rows], minlength=n_layers)
    return profile


def plot_layer_profile(source: Any, path: str | os.PathLike, heads: HeadIndex | None = None,
                       title: str | None = None) -> Path:
    """Draw :func:`layer_profile` as grouped bars (one colour per site) over layers into a PNG."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("plot_layer_profile needs matplotlib: pip install 'calm-audio[plots]'") from None
    profile = layer_profile(source, heads)
    n_layers = max(len(v) for v in profile.values())
    fig = Figure(figsize=(max(4.0, 0.35 * n_layers + 2.0), 3.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(profile)
    for i, (site, mass) in enumerate(profile.items()):
        ax.bar(np.arange(len(mass)) + (i - (len(profile) - 1) / 2) * width, mass, width=width, label=site)
    ax.set_xlabel("layer")
    ax.set_ylabel("weight mass")
    ax.set_xticks(range(n_layers))
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path

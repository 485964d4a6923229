"""Where a classifier's head weight sits: its share per layer, for each site (attention stack)."""

from __future__ import annotations

from typing import Any

import numpy as np

from calm.classifiers.plots import weight_maps
from calm.features import HeadIndex


def layer_profile(source: Any, heads: HeadIndex | None = None) -> dict[str, np.ndarray]:
    """Per site, an array [layers] with the share of all head weight in each layer.

    The weights of every class and head of a layer are summed (a class's weights sum to 1, so
    each class counts equally); the shares of all sites and layers together sum to 1.
    ``source`` and ``heads`` are as in :func:`calm.classifiers.weight_maps`.
    """
    mass = {site: np.nansum(grid, axis=(0, 2)) for site, grid in weight_maps(source, heads).items()}
    total = sum(float(m.sum()) for m in mass.values())
    if total <= 0:
        raise ValueError("the classifier puts no weight on any head")
    return {site: m / total for site, m in mass.items()}

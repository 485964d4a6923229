"""Open-set scores: how much a clip looks like one of the known classes (higher: more known).

Two families, compared on the dev sets in docs/trust.md:

* **From the calibrated class scores** s / T of any classifier: ``energy`` (log-sum-exp),
  ``msp`` (largest probability) and ``margin`` (largest minus second probability).
* **From distances in the whitened head space**, whatever the classifier: each head k is whitened
  with the support's shrunk pooled within-class covariance (:class:`~calm.classifiers.whitening.HeadWhitener`,
  OAS lambda, normalised, not centred), so a squared distance there is a Mahalanobis distance and
  heads are on one scale. With z_k(x) a clip's whitened head k, m_kc the whitened class means and
  d_k(x) = min_c |z_k(x) - m_kc|^2:

  - ``whitened``: -sum_k d_k(x), the Mahalanobis distance to the nearest class summed over heads;
  - ``whitened-vote``: the share of heads with d_k(x) <= r_k, r_k the median over the support of
    each item's leave-one-out distance to its own class mean (closed form: (n_c / (n_c - 1))^2
    |z_k - m_kc|^2), i.e. heads voting "as close to a class as a typical support clip";
  - ``knn``: -min_i sum_k |z_k(x) - z_k(s_i)|^2, the squared whitened distance to the nearest
    support clip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from calm.classifiers._base import encode_labels
from calm.classifiers._cosine import FeatureBlocks
from calm.classifiers.temperature import softmax
from calm.classifiers.whitening import WHITENED_DEFAULTS, HeadWhitener, WhitenedBlocks

LOGIT_SCORES = ("energy", "msp", "margin")
DISTANCE_SCORES = ("whitened", "whitened-vote", "knn")
OPEN_SCORES = LOGIT_SCORES + DISTANCE_SCORES


def open_set_score(logits: np.ndarray, kind: str) -> np.ndarray:
    """The open-set score [N] of calibrated class scores [N, C], ``kind`` one of :data:`LOGIT_SCORES`."""
    if kind == "energy":
        top = logits.max(axis=1)
        return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    proba = softmax(logits)
    if kind == "msp":
        return proba.max(axis=1)
    ranked = np.sort(proba, axis=1)
    return ranked[:, -1] - ranked[:, -2]


class HeadDistances:
    """The whitened-space open-set scores (:data:`DISTANCE_SCORES`) of clips against a support set.

    ``fit(X, y)`` keeps the whitener, the whitened class means ``centres_`` [K, C, D], the per-head
    reference distances ``reference_`` [K] and, for ``knn``, the whitened support ``support_`` [N, K, D].
    """

    def fit(self, X: Any, y: Any, keep_support: bool = True) -> HeadDistances:
        features = FeatureBlocks(X)
        _, labels = encode_labels(y, len(features))
        whitener = HeadWhitener(**WHITENED_DEFAULTS).fit(features, labels.numpy())
        self.mean_, self.matrix_ = whitener.mean_, whitener.matrix_
        z = self._whitened(features)  # [N, K, D]
        n_classes = int(labels.max()) + 1
        counts = torch.bincount(labels, minlength=n_classes).to(z.dtype)
        centres = torch.zeros(n_classes, *z.shape[1:], dtype=z.dtype).index_add_(0, labels, z)
        centres /= counts.view(-1, 1, 1)
        inflation = (counts / (counts - 1).clamp_min(1)).square()[labels]  # 1 for one-item classes
        own = (z - centres[labels]).square().sum(-1) * inflation[:, None]  # [N, K]
        self.centres_ = centres.transpose(0, 1).contiguous().numpy()
        self.reference_ = own.median(0).values.numpy()
        self.support_ = z.numpy() if keep_support else None
        return self

    def _whitened(self, features: FeatureBlocks) -> torch.Tensor:
        view = WhitenedBlocks(features, self.mean_, self.matrix_, bool(WHITENED_DEFAULTS["normalize"]))
        out = torch.empty(view.shape, dtype=view.dtype)
        for items, cols, z in view.blocks():
            out[items, cols] = z.transpose(0, 1)
        return out

    def nearest_class(self, X: Any) -> np.ndarray:
        """d_k(x) [N, K]: each head's squared whitened distance to the nearest class mean."""
        z = self._whitened(FeatureBlocks(X)).transpose(0, 1)  # [K, N, D]
        centres = torch.from_numpy(self.centres_).to(z.dtype)  # [K, C, D]
        return torch.cdist(z, centres).square().amin(-1).T.to(torch.float64).numpy()

    def score(self, X: Any, kind: str) -> np.ndarray:
        """The open-set score [N] of ``kind`` (one of :data:`DISTANCE_SCORES`)."""
        if kind == "knn":
            if self.support_ is None:
                raise ValueError("the knn score needs the whitened support clips (fit with keep_support=True)")
            z = self._whitened(FeatureBlocks(X)).flatten(1)
            support = torch.from_numpy(self.support_).to(z.dtype).flatten(1)
            return -torch.cdist(z, support).square().amin(1).to(torch.float64).numpy()
        distances = self.nearest_class(X)
        if kind == "whitened":
            return -distances.sum(axis=1)
        if kind == "whitened-vote":
            return (distances <= self.reference_[None, :]).mean(axis=1)
        raise ValueError(f"unknown distance score {kind!r}; use one of {DISTANCE_SCORES}")

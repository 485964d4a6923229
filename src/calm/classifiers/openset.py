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
  - ``whitened-vote``: each (non-constant) head votes for its nearest class; the score is the
    share of heads that vote for the most voted class (heads agree on a clip of a known class);
  - ``knn``: -min_i sum_k |z_k(x) - z_k(s_i)|^2, the squared whitened distance to the nearest
    support clip.

* **Both**, each part put on a common scale by the support's own out-of-fold values of it (the
  support clips scored by the copies fitted without them):

  - ``energy+knn``: the sum of the energy and the knn score, each standardised by the mean and
    standard deviation of its out-of-fold values;
  - ``energy+heads`` (the default): p_E(x) + mean_k p_k(x), conformal p-values of the energy and of
    each head's distance to its nearest class mean d_k(x) among the n out-of-fold values,
    p_E(x) = (1 + #{i : E_i <= E(x)}) / (n + 1) and p_k(x) = (1 + #{i : d_ik >= d_k(x)}) / (n + 1).
    Each head counts by how unusual its distance is for that head, not by its units, and the
    score needs the whitener and class means but not the support clips.

  The default, chosen by a rule fixed before scoring (on 10 support draws per dev set, the best
  in-domain mean AUROC among the scores that lose to the energy by no more than 0.01 on any
  shifted set); docs/trust.md has every candidate, and where this one loses.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from calm.classifiers._base import encode_labels
from calm.classifiers._cosine import FeatureBlocks
from calm.classifiers.temperature import softmax
from calm.classifiers.whitening import WHITENED_DEFAULTS, HeadWhitener, WhitenedBlocks, whitener_options

LOGIT_SCORES = ("energy", "msp", "margin")
DISTANCE_SCORES = ("whitened", "whitened-vote", "knn")
COMBINED_SCORES = {"energy+knn": ("energy", "knn"), "energy+heads": ("energy", "heads")}
"""A combined score's parts: a logit score and a distance part (a distance score, or ``heads``:
each head's squared whitened distance to its nearest class mean)."""
RANKED_SCORES = ("energy+heads",)
"""Combined scores whose parts are ranked among their out-of-fold values (:func:`rank_scores`);
the others are standardised (:func:`combine`)."""
OPEN_SCORES = LOGIT_SCORES + DISTANCE_SCORES + tuple(COMBINED_SCORES)


def distance_part(kind: str) -> str | None:
    """The distance score that ``kind`` needs (None for a pure logit score)."""
    if kind in DISTANCE_SCORES:
        return kind
    return COMBINED_SCORES[kind][1] if kind in COMBINED_SCORES else None


def standardise(scores: np.ndarray) -> np.ndarray:
    """(mean, standard deviation) [2] of a score over the support's out-of-fold items (sd 1 when 0)."""
    sd = float(np.std(scores))
    return np.array([float(np.mean(scores)), sd if sd > 0 else 1.0])


def combine(parts: list[np.ndarray], standards: np.ndarray) -> np.ndarray:
    """Sum of the parts [N] each standardised by its (mean, sd) row of ``standards`` [P, 2]."""
    return sum((part - mean) / sd for part, (mean, sd) in zip(parts, standards))


def combination_state(kind: str, parts: list[np.ndarray]) -> dict[str, np.ndarray]:
    """What the combined score ``kind`` keeps of the support's out-of-fold part values (``parts``
    empty when no support item was scored): ``open_reference_``, the values themselves [n, 1 + M]
    (:data:`RANKED_SCORES`), or ``open_standards_``, each part's (mean, sd) [P, 2]."""
    if kind in RANKED_SCORES:
        return {"open_reference_": np.column_stack(parts) if parts else np.zeros((0, 1))}
    standards = [standardise(part) for part in parts] or [np.array([0.0, 1.0])] * len(COMBINED_SCORES[kind])
    return {"open_standards_": np.stack(standards)}


def combination_shapes(kind: str, n_scored: int) -> dict[str, tuple[int | None, ...]]:
    """The shapes of :func:`combination_state`'s arrays for ``kind`` ({} for a single score)."""
    if kind in RANKED_SCORES:
        return {"open_reference_": (n_scored, None)}
    return {"open_standards_": (len(COMBINED_SCORES[kind]), 2)} if kind in COMBINED_SCORES else {}


def combined_score(kind: str, parts: list[np.ndarray], state: Mapping[str, np.ndarray],
                   held_out: bool = False) -> np.ndarray:
    """The combined score ``kind`` [N] of its part values, from its :func:`combination_state`
    (``held_out``: the parts are that state's own out-of-fold values, see :func:`rank_scores`)."""
    if kind in RANKED_SCORES:
        return rank_scores(parts, state["open_reference_"], held_out)
    return combine(parts, state["open_standards_"])


def rank_scores(parts: list[np.ndarray], reference: np.ndarray, held_out: bool = False) -> np.ndarray:
    """p_0 + mean_{j >= 1} p_j [N] for the part values [N] (a score) and [N, M] (per head), all
    higher meaning more known, with p_j the conformal p-value of column j among the reference's
    column j (the same columns, [n, 1 + M]): (1 + #{i : r_ij <= v_j}) / (n + 1). ``held_out``: the
    values are the reference rows themselves, each ranked among the other n - 1 (#{i : r_ij <= v_j} / n,
    itself counted once), so a new clip like them is scored as they are."""
    values = np.column_stack(parts)
    ordered = np.sort(reference, axis=0)
    n = len(ordered)
    if n == 0:  # nothing to rank against: every value is as known as can be
        return np.full(len(values), 2.0)
    counts = np.stack([np.searchsorted(ordered[:, j], values[:, j], side="right") for j in range(values.shape[1])],
                      axis=1)
    p = counts / n if held_out else (1.0 + counts) / (n + 1)
    return p[:, 0] + p[:, 1:].mean(axis=1)


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

    ``fit(X, y)`` keeps the whitener (``mean_`` [K, D], ``matrix_`` [K, D, D], zero for constant
    heads), the whitened class means ``centres_`` [K, C, D] and, for ``knn``, the whitened support
    ``support_`` [N, K, D]. :meth:`part_values` also gives the ``heads`` part of a combined score.
    """

    def fit(self, X: Any, y: Any, keep_support: bool = True, like: Any = None) -> HeadDistances:
        """Fit on the support (X, y); ``like``: a classifier fitted on the same (X, y) whose
        whitener, if it has the same options, is taken instead of fitting the same one again."""
        features = FeatureBlocks(X)
        _, labels = encode_labels(y, len(features))
        if whitener_options(getattr(like, "geometry", "cosine")) == WHITENED_DEFAULTS:
            self.mean_, self.matrix_ = like.whiten_mean_, like.whiten_matrix_
        else:
            whitener = HeadWhitener(**WHITENED_DEFAULTS).fit(features, labels.numpy())
            self.mean_, self.matrix_ = whitener.mean_, whitener.matrix_
        z = self._whitened(features)  # [N, K, D]
        n_classes = int(labels.max()) + 1
        counts = torch.bincount(labels, minlength=n_classes).to(z.dtype)
        centres = torch.zeros(n_classes, *z.shape[1:], dtype=z.dtype).index_add_(0, labels, z)
        centres /= counts.view(-1, 1, 1)
        self.centres_ = centres.transpose(0, 1).contiguous().numpy()
        self.support_ = z.numpy() if keep_support else None
        return self

    def _whitened(self, features: FeatureBlocks) -> torch.Tensor:
        view = WhitenedBlocks(features, self.mean_, self.matrix_, bool(WHITENED_DEFAULTS["normalize"]))
        out = torch.empty(view.shape, dtype=view.dtype)
        for items, cols, z in view.blocks():
            out[items, cols] = z.transpose(0, 1)
        return out

    def class_distances(self, X: Any) -> torch.Tensor:
        """|z_k(x) - m_kc|^2 [K, N, C], each head's squared whitened distance to each class mean."""
        z = self._whitened(FeatureBlocks(X)).transpose(0, 1)  # [K, N, D]
        return torch.cdist(z, torch.from_numpy(self.centres_).to(z.dtype)).square()

    def part_values(self, X: Any, part: str) -> np.ndarray:
        """A combined score's distance part: for ``heads`` minus each head's squared distance to its
        nearest class mean [N, K] (higher: more known), else the distance score [N] of ``part``."""
        if part == "heads":
            return -self.class_distances(X).amin(-1).T.to(torch.float64).numpy()
        return self.score(X, part)

    def score(self, X: Any, kind: str) -> np.ndarray:
        """The open-set score [N] of ``kind`` (one of :data:`DISTANCE_SCORES`)."""
        if kind == "knn":
            if self.support_ is None:
                raise ValueError("the knn score needs the whitened support clips (fit with keep_support=True)")
            z = self._whitened(FeatureBlocks(X)).flatten(1)
            support = torch.from_numpy(self.support_).to(z.dtype).flatten(1)
            return -torch.cdist(z, support).square().amin(1).to(torch.float64).numpy()
        distances = self.class_distances(X)
        if kind == "whitened":
            return -distances.amin(-1).sum(0).to(torch.float64).numpy()
        if kind == "whitened-vote":
            live = torch.from_numpy(self.matrix_.any(axis=(1, 2)))
            votes = torch.nn.functional.one_hot(distances[live].argmin(-1), distances.shape[-1]).sum(0)  # [N, C]
            return (votes.amax(-1) / max(int(live.sum()), 1)).to(torch.float64).numpy()
        raise ValueError(f"unknown distance score {kind!r}; use one of {DISTANCE_SCORES}")

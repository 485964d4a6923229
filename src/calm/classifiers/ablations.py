"""Ablations beside SAV and CALM (docs/method.md): uniform soft vote, concatenated-cosine nearest
centroid, top-n soft vote over SAV's heads, and class-agnostic reliability weighting."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from calm.classifiers._base import check_positive
from calm.classifiers._cosine import check_scores, iter_cosines
from calm.classifiers._prototype import EqualVoteClassifier, PrototypeClassifier, SoftVoteClassifier, uniform_weights
from calm.classifiers._reliability import ReliabilitySums, shrink
from calm.classifiers.reliability_vote import ReliabilityVote, check_shrinkage, check_source
from calm.classifiers.sav import check_n_heads, check_scoring, fit_head_ranking


class UniformVoteClassifier(EqualVoteClassifier):
    """Soft vote with equal weights: argmax_c mean_k p_k(c|x) over the non-constant heads.

    Args:
        tau: posterior temperature.
    """

    def __init__(self, tau: float = 0.07, geometry: str | dict = "cosine"):
        self.tau = tau
        self.geometry = geometry


class TopNSoftVoteClassifier(SoftVoteClassifier):
    """Soft vote with equal weights over SAV's top ``n_heads`` heads (SAV's selection, CALM's vote).

    Args:
        n_heads: how many heads vote.
        tau: posterior temperature.
        scoring: how heads are ranked, as in :class:`~calm.classifiers.SAVClassifier`.

    Fitted attributes add ``head_scores_`` and ``heads_`` as in SAV, and ``weights_``.
    """

    def __init__(self, n_heads: int = 20, tau: float = 0.07, scoring: str = "loo", geometry: str | dict = "cosine"):
        self.geometry = geometry
        self.n_heads = n_heads
        self.tau = tau
        self.scoring = scoring

    def _validate_params(self) -> None:
        check_n_heads(self.n_heads)
        check_scoring(self.scoring)
        check_positive("tau", self.tau)

    def fit(self, X: Any, y: Any) -> "TopNSoftVoteClassifier":
        self._validate_params()
        self.head_scores_, self.heads_ = fit_head_ranking(self, X, y, self.scoring, self.n_heads)
        self.weights_ = uniform_weights(self.heads_, self.n_heads_in_, len(self.classes_))
        return self

    def _state_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return {**super()._state_shapes(), "head_scores_": (self.n_heads_in_,), "heads_": (None,)}


class ClassAgnosticCALMClassifier(ReliabilityVote):
    """CALM with one reliability per head: r_k = mean clamped margin over all reliability items
    (every class together), w = softmax_k(r / tau_w), the same weights for every class.

    Args:
        tau, tau_w, shrinkage, reliability: as in :class:`~calm.classifiers.CALMClassifier`
            (shrinkage pulls each r_k toward the mean over heads with N/(N+alpha)).
    """

    def __init__(self, tau: float = 0.07, tau_w: float = 1.0, shrinkage: float = 0.0, reliability: str = "loo",
                 geometry: str | dict = "cosine"):
        self.geometry = geometry
        self.tau = tau
        self.tau_w = tau_w
        self.shrinkage = shrinkage
        self.reliability = reliability

    def _validate_params(self) -> None:
        self._hyperparameters()
        check_shrinkage(self.shrinkage)
        check_source(self.reliability)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"tau": check_positive("tau", self.tau), "tau_w": check_positive("tau_w", self.tau_w),
                "scheme": "margin_clamped", "top_k": None}

    def _set_weights(self, sums: ReliabilitySums, *, tau_w: float, scheme: str, top_k: int | None) -> None:
        active = torch.from_numpy(~self.constant_heads_)
        self.reliability_counts_ = sums.counts.numpy()
        total = sums.counts.sum().view(1)
        r = shrink(sums.sums[scheme].sum(0, keepdim=True) / total, total, check_shrinkage(self.shrinkage), active)
        weights = torch.softmax((r / tau_w).masked_fill(~active, float("-inf")), dim=-1)
        n_classes = len(self.classes_)
        self.reliability_ = np.ascontiguousarray(r.expand(n_classes, -1).T.numpy())
        self.weights_ = np.ascontiguousarray(weights.expand(n_classes, -1).T.numpy())


class ConcatCentroidClassifier(PrototypeClassifier):
    """Nearest centroid on all heads concatenated: each head's query and prototype are unit vectors,
    so the concatenated cosine is the mean over heads of cos_{k,c}(x) (constant heads left out).

    ``decision_function`` gives that mean cosine; ``predict_proba`` softmax(mean cosine / tau).

    Args:
        tau: temperature of ``predict_proba`` only (predictions do not depend on it).
    """

    def __init__(self, tau: float = 0.07, geometry: str | dict = "cosine"):
        self.tau = tau
        self.geometry = geometry

    def _validate_params(self) -> None:
        check_positive("tau", self.tau)

    def fit(self, X: Any, y: Any) -> "ConcatCentroidClassifier":
        self._validate_params()
        self._fit_prototypes(*self._start_fit(X, y))
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Mean cosine over the non-constant heads, [N, C]."""
        features = self._features(X)
        heads = self._heads(~self.constant_heads_)
        protos = self._prototypes(heads)
        scores = torch.zeros(len(self.classes_), len(features), dtype=protos.dtype)
        for items, _, cos in iter_cosines(features, protos, heads=heads):
            scores[:, items] += cos.sum(0)
        return check_scores(scores.T / len(protos), features)

    def predict_proba(self, X: Any) -> np.ndarray:
        """softmax over classes of the mean cosine / tau."""
        return torch.softmax(torch.from_numpy(self.decision_function(X)) / float(self.tau), dim=1).numpy()

    def _state_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return self._base_shapes()

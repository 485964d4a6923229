"""Bases for the prototype classifiers: fitting class prototypes, checking features at predict
time, and the weighted soft vote that CALM and most ablations share."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from calm.classifiers._base import Estimator, check_positive, encode_labels
from calm.classifiers._cosine import (Block, ClassStats, FeatureBlocks, check_scores, iter_cosines, posteriors,
                                      support_pass)
from calm.classifiers.whitening import HeadWhitener, WhitenedBlocks, whitener_options
from calm.features import HeadFeatures
from calm.fingerprint import check_fingerprint


class FeatureClassifier(Estimator):
    """A classifier of [N, K, D] head features: records what it was fit on and checks it at predict time.

    Fitted attributes: ``classes_`` (sorted labels), ``n_heads_in_`` and ``head_dim_in_``, and
    ``fingerprint_`` / ``head_index_`` when fit on :class:`~calm.features.HeadFeatures` (None
    otherwise; predicting on HeadFeatures with another fingerprint raises ValueError).
    """

    def _start_fit(self, X: Any, y: Any) -> tuple[FeatureBlocks, torch.Tensor]:
        features = FeatureBlocks(X)
        self.classes_, labels = encode_labels(y, len(features))
        self.n_heads_in_, self.head_dim_in_ = features.shape[1], features.shape[2]
        self.fingerprint_ = dict(X.fingerprint) if isinstance(X, HeadFeatures) else None
        self.head_index_ = X.heads if isinstance(X, HeadFeatures) else None
        return features, labels

    def _features(self, X: Any) -> FeatureBlocks:
        """The features to predict on, checked against what the classifier was fit on."""
        self._check_fitted()
        features = FeatureBlocks(X)
        expected = (self.n_heads_in_, self.head_dim_in_)
        if features.shape[1:] != expected:
            raise ValueError(f"{type(self).__name__} was fit on features of {expected[0]} heads x {expected[1]} dims, "
                             f"got {features.shape[1]} x {features.shape[2]}")
        if isinstance(X, HeadFeatures) and getattr(self, "fingerprint_", None) and X.fingerprint:
            check_fingerprint(self.fingerprint_, X.fingerprint, type(self).__name__)
        return features


class PrototypeClassifier(FeatureClassifier):
    """Fits per-head class prototypes; subclasses add how heads vote.

    Every subclass takes ``geometry``: ``"cosine"`` (raw head vectors) or ``"whitened"`` (or a dict
    of :class:`~calm.classifiers.whitening.HeadWhitener` options): head vectors are whitened with
    support statistics before prototypes, cosines and votes (:mod:`calm.classifiers.whitening`).

    Fitted attributes besides :class:`FeatureClassifier`'s: ``prototypes_`` [K, C, D] (normalised
    class means, in the chosen geometry) and ``constant_heads_`` [K] (heads that do not vary over
    the support set; they are left out of every vote); when whitened, ``whiten_mean_`` [K, D],
    ``whiten_matrix_`` [K, D, D] and ``whiten_shrinkage_`` [K] (lambda per head).
    """

    def _start_fit(self, X: Any, y: Any) -> tuple[FeatureBlocks, torch.Tensor]:
        """The features (whitened with the support's statistics if the geometry says so) and labels."""
        features, labels = super()._start_fit(X, y)
        options = whitener_options(self.geometry)
        if options is None:
            return features, labels
        whitener = HeadWhitener(**options).fit(features, labels.numpy())
        self.whiten_mean_, self.whiten_matrix_ = whitener.mean_, whitener.matrix_
        self.whiten_shrinkage_ = whitener.shrinkage_
        return self._view(features), labels

    def _view(self, features: FeatureBlocks) -> FeatureBlocks:
        """``features`` in the fitted geometry."""
        options = whitener_options(self.geometry)
        if options is None:
            return features
        return WhitenedBlocks(features, self.whiten_mean_, self.whiten_matrix_, options["normalize"])

    def _features(self, X: Any) -> FeatureBlocks:
        return self._view(super()._features(X))

    def _fit_prototypes(self, features: FeatureBlocks, labels: torch.Tensor, cos: str | None = None,
                        consume: Callable[[Block], None] | None = None) -> ClassStats:
        """Prototypes and constant heads from one pass over the support set, handing each block's
        support cosines (``cos="loo"`` or ``"in-sample"``) to ``consume`` on the way."""
        stats = support_pass(features, labels, len(self.classes_), cos, consume)
        if bool(stats.constant.all()):
            raise ValueError(f"{type(self).__name__}: every head is constant over the support set; "
                             "these features cannot separate classes")
        self.prototypes_ = stats.prototypes().numpy()
        self.constant_heads_ = stats.constant.numpy()
        return stats

    @staticmethod
    def _heads(used: np.ndarray) -> torch.Tensor | None:
        """Indices of the heads marked in ``used`` [K], or None when that is every head (then blocks
        are read as slices rather than gathered)."""
        return None if used.all() else torch.from_numpy(np.flatnonzero(used))

    def _prototypes(self, heads: torch.Tensor | None = None) -> torch.Tensor:
        protos = torch.from_numpy(self.prototypes_)
        return protos if heads is None else protos[heads]

    def _base_shapes(self) -> dict[str, tuple[int | None, ...]]:
        K, C, D = self.n_heads_in_, len(self.classes_), self.head_dim_in_
        shapes: dict[str, tuple[int | None, ...]] = {"prototypes_": (K, C, D), "constant_heads_": (K,)}
        if whitener_options(self.geometry) is not None:
            shapes.update(whiten_mean_=(K, D), whiten_matrix_=(K, D, D), whiten_shrinkage_=(K,))
        return shapes


class SoftVoteClassifier(PrototypeClassifier):
    """Predicts argmax_c sum_k w_{k,c} p_k(c|x) with p_k(c|x) = softmax_c(cos_{k,c}(x) / tau).

    Subclasses set ``weights_`` [K, C] in ``fit``. ``decision_function`` gives the weighted sums;
    ``predict_proba`` the same scores divided by their sum over classes.
    """

    def _vote_tau(self) -> float:
        return float(self.tau)

    def decision_function(self, X: Any) -> np.ndarray:
        """Weighted soft-vote scores [N, C] (only heads with a nonzero weight are computed)."""
        features = self._features(X)
        heads = self._heads(self.weights_.any(axis=1))
        protos = self._prototypes(heads)
        weights = torch.from_numpy(self.weights_).to(protos.dtype)
        weights = (weights if heads is None else weights[heads]).contiguous().unsqueeze(2)  # [K', C, 1]
        scale = 1.0 / self._vote_tau()
        scores = torch.zeros(len(self.classes_), len(features), dtype=protos.dtype)
        for items, cols, logits in iter_cosines(features, protos, heads=heads, scale=scale):
            scores[:, items] += posteriors(logits, 1, inplace=True, bound=scale).mul_(weights[cols]).sum(0)
        return check_scores(scores.T, features)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Soft-vote scores normalised to sum to 1 over classes."""
        scores = self.decision_function(X)
        return scores / scores.sum(axis=1, keepdims=True)

    def _state_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return {**self._base_shapes(), "weights_": (self.n_heads_in_, len(self.classes_))}


def uniform_weights(heads: np.ndarray, n_heads: int, n_classes: int) -> np.ndarray:
    """Weights [K, C]: 1/len(heads) on the given heads for every class, 0 elsewhere."""
    weights = np.zeros((n_heads, n_classes), dtype=np.float64)
    weights[heads] = 1.0 / len(heads)
    return weights


class EqualVoteClassifier(SoftVoteClassifier):
    """Soft vote with equal weights: argmax_c mean_k p_k(c|x) over the non-constant heads. The
    shared base of the uniform-vote ablation and the recommended default; subclasses set ``tau``
    and ``geometry`` in ``__init__``."""

    def _validate_params(self) -> None:
        check_positive("tau", self.tau)

    def fit(self, X: Any, y: Any) -> "EqualVoteClassifier":
        self._validate_params()
        self._fit_prototypes(*self._start_fit(X, y))
        heads = np.flatnonzero(~self.constant_heads_)
        self.weights_ = uniform_weights(heads, self.n_heads_in_, len(self.classes_))
        return self

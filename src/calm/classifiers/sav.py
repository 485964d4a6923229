"""SAV (Sparse Attention Vectors, Mitra et al. 2024, arXiv 2412.00142): majority vote of the
heads whose nearest-centroid vote is most accurate on the support set."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from calm.classifiers._cosine import Block, check_scores, iter_cosines, warn_single_shot
from calm.classifiers._prototype import PrototypeClassifier

SCORINGS = ("loo", "support")


def check_n_heads(n_heads: Any) -> int:
    if isinstance(n_heads, bool) or not isinstance(n_heads, (int, np.integer)) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive integer, got {n_heads!r}")
    return int(n_heads)


def check_scoring(scoring: str) -> str:
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    return scoring


def fit_head_ranking(clf: PrototypeClassifier, X: Any, y: Any, scoring: str,
                     n_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``clf``'s prototypes and, in the same pass, score every head's nearest-centroid vote on
    the support set; returns each head's accuracy [K] and the ``n_heads`` best heads, best first.

    ``scoring="loo"`` scores item i against its own class's prototype built without it (one-item
    classes fall back to in-sample, with a warning); ``"support"`` scores in-sample, as published.
    A vote is correct when the true class's cosine beats every other class's (an exact tie is not).
    Ranking: higher accuracy, then a larger mean margin between the true class's cosine and the
    best other class's, then the lower head index; constant heads are never selected.
    """
    features, labels = clf._start_fit(X, y)
    who = type(clf).__name__
    if scoring == "loo":
        warn_single_shot(who, "head scores", clf.classes_, torch.bincount(labels, minlength=len(clf.classes_)))
    total = features.shape[1]
    correct = torch.zeros(total, dtype=torch.float64)
    margin = torch.zeros(total, dtype=torch.float64)

    def score(block: Block) -> None:
        items, cols, cos = block
        own = labels[items]
        index = own.view(1, 1, -1).expand(cos.shape[0], 1, -1)
        true = cos.gather(1, index).squeeze(1)
        other = cos.scatter_(1, index, float("-inf")).amax(1)  # the block is ours to overwrite
        correct[cols] += (true > other).sum(1, dtype=torch.float64)
        margin[cols] += (true - other).sum(1, dtype=torch.float64)

    clf._fit_prototypes(features, labels, "loo" if scoring == "loo" else "in-sample", score)
    accuracy = (correct / len(features)).numpy()
    order = np.lexsort((np.arange(total), -margin.numpy(), -accuracy))
    return accuracy, select_heads(order, clf.constant_heads_, n_heads, who)


def select_heads(order: np.ndarray, constant: np.ndarray, n_heads: int, who: str) -> np.ndarray:
    """The first ``n_heads`` of ``order`` that are not constant (fewer, with a warning, if need be)."""
    usable = order[~constant[order]]
    if len(usable) < n_heads:
        warnings.warn(f"{who}: asked for {n_heads} heads but only {len(usable)} of the {len(order)} heads vary "
                      f"over the support set; using {len(usable)}", UserWarning, stacklevel=3)
    return usable[:n_heads]


class SAVClassifier(PrototypeClassifier):
    """Sparse attention vectors: the top ``n_heads`` heads by support accuracy vote by majority.

    Each head votes for the class whose prototype has the largest cosine with the query. A tie in
    votes goes to the class with the larger cosine summed over the kept heads (then the first
    class). ``decision_function`` encodes both: the number of votes plus (mean cosine over kept
    heads + 1) / 4, a fraction in [0, 0.5] that can never outweigh a vote. ``predict_proba`` gives
    the vote shares.

    Args:
        n_heads: how many heads vote.
        scoring: ``"loo"`` (default) scores heads by leave-one-out accuracy on the support set;
            ``"support"`` scores them in-sample, as published (every head scores 100% at one shot).

    Fitted attributes (besides the prototype ones): ``head_scores_`` [K] (support accuracy of each
    head's vote) and ``heads_`` (indices of the voting heads, best first; constant heads never vote).
    """

    def __init__(self, n_heads: int = 20, scoring: str = "loo", geometry: str | dict = "cosine"):
        self.n_heads = n_heads
        self.scoring = scoring
        self.geometry = geometry

    def _validate_params(self) -> None:
        check_n_heads(self.n_heads)
        check_scoring(self.scoring)

    def fit(self, X: Any, y: Any) -> "SAVClassifier":
        """Fit prototypes, score every head on the support set, keep the best ``n_heads``."""
        self._validate_params()
        self.head_scores_, self.heads_ = fit_head_ranking(self, X, y, self.scoring, int(self.n_heads))
        return self

    def _votes(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Votes [N, C] of the kept heads and their summed cosines [N, C]."""
        features = self._features(X)
        heads = torch.from_numpy(np.asarray(self.heads_, dtype=np.int64))
        n_classes = len(self.classes_)
        votes = torch.zeros(len(features), n_classes, dtype=torch.float64)
        summed = torch.zeros(len(features), n_classes, dtype=torch.float64)
        for items, _, cos in iter_cosines(features, self._prototypes(heads), heads=heads):
            votes[items] += torch.nn.functional.one_hot(cos.argmax(1), n_classes).sum(0)
            summed[items] += cos.sum(0, dtype=torch.float64).T
        return votes.numpy(), check_scores(summed, features)

    def decision_function(self, X: Any) -> np.ndarray:
        """Votes plus a tie-break fraction: votes + (mean cosine over kept heads + 1) / 4."""
        votes, summed = self._votes(X)
        return votes + (summed / len(self.heads_) + 1.0) / 4.0

    def predict_proba(self, X: Any) -> np.ndarray:
        """Vote shares of the kept heads (rows sum to 1)."""
        votes, _ = self._votes(X)
        return votes / len(self.heads_)

    def _state_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return {**self._base_shapes(), "head_scores_": (self.n_heads_in_,), "heads_": (None,)}

"""CALM (Mehta et al. 2026, arXiv 2602.07077): class-conditional reliability-weighted soft vote, and
the fit it shares with its tuned and class-agnostic variants (:class:`ReliabilityVote`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from calm.classifiers._base import check_positive, index_labels
from calm.classifiers._cosine import FeatureBlocks, iter_cosines, warn_single_shot
from calm.classifiers._prototype import SoftVoteClassifier
from calm.classifiers._reliability import ReliabilitySums, check_scheme, head_weights, shrink

RELIABILITY_SOURCES = ("loo", "support", "holdout")


class ReliabilityVote(SoftVoteClassifier):
    """A soft vote whose head weights come from reliabilities estimated on labelled items.

    Subclasses have the parameters ``shrinkage`` and ``reliability`` and say which tau, tau_w,
    scheme and top_k a fit uses (``_hyperparameters``); how reliability items are chosen
    (``reliability``: leave-one-out, in-sample or a holdout set) is shared.
    """

    shrinkage: float
    reliability: str

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "ReliabilityVote":
        """Fit prototypes on (X, y) and reliability weights on the items chosen by ``reliability``."""
        self._validate_params()
        params = self._hyperparameters()
        source = self._check_validation(X_val, y_val)
        check_shrinkage(self.shrinkage)
        features, labels = self._start_fit(X, y)
        if source == "holdout":
            self._fit_prototypes(features, labels)
            sums = self._holdout_sums(features, X_val, y_val, params["tau"], params["scheme"])
        else:
            if source == "loo":
                counts = torch.bincount(labels, minlength=len(self.classes_))
                warn_single_shot(type(self).__name__, "reliability", self.classes_, counts)
            sums = ReliabilitySums(labels, len(self.classes_), self.n_heads_in_, params["tau"], (params["scheme"],))
            self._fit_prototypes(features, labels, "loo" if source == "loo" else "in-sample", sums.add)
        self._set_weights(sums, tau_w=params["tau_w"], scheme=params["scheme"], top_k=params["top_k"])
        return self

    def _check_validation(self, X_val: Any, y_val: Any) -> str:
        """The reliability source, checked against whether a validation set was passed."""
        source = check_source(self.reliability)
        if (X_val is None) != (y_val is None):
            raise ValueError("pass both X_val and y_val, or neither")
        if source != "holdout" and X_val is not None:
            raise ValueError(f"X_val/y_val are only used with reliability='holdout', not {source!r}")
        if source == "holdout" and X_val is None:
            raise ValueError("reliability='holdout' needs fit(X, y, X_val=..., y_val=...)")
        return source

    def _hyperparameters(self) -> dict[str, Any]:
        raise NotImplementedError

    def _vote_tau(self) -> float:
        return float(self._hyperparameters()["tau"])

    def _holdout_sums(self, features: FeatureBlocks, X_val: Any, y_val: Any, tau: float, scheme: str) -> ReliabilitySums:
        """Reliability sums over a labelled validation set scored against the fitted prototypes."""
        val = self._view(FeatureBlocks(X_val, "X_val"))
        if val.shape[1:] != features.shape[1:]:
            raise ValueError(f"X_val has {val.shape[1]} heads x {val.shape[2]} dims, X has "
                             f"{features.shape[1]} x {features.shape[2]}")
        val_labels = index_labels(y_val, self.classes_, len(val), "y_val")
        sums = ReliabilitySums(val_labels, len(self.classes_), self.n_heads_in_, tau, (scheme,))
        missing = self.classes_[(sums.counts == 0).numpy()]
        if len(missing):
            raise ValueError(f"reliability='holdout': no validation items for class(es) {missing.tolist()[:5]}")
        for block in iter_cosines(val, self._prototypes()):
            sums.add(block)
        return sums

    def _set_weights(self, sums: ReliabilitySums, *, tau_w: float, scheme: str, top_k: int | None) -> None:
        """reliability_ and weights_ from the reliability items' per-class score sums."""
        active = torch.from_numpy(~self.constant_heads_)
        counts = sums.counts
        self.reliability_counts_ = counts.numpy()
        r = shrink(sums.sums[scheme] / counts.unsqueeze(1), counts, check_shrinkage(self.shrinkage), active)
        self.reliability_ = np.ascontiguousarray(r.T.numpy())  # [K, C], C-ordered for fast broadcasting
        self.weights_ = np.ascontiguousarray(head_weights(r, scheme, tau_w, top_k, active).T.numpy())

    def _state_shapes(self) -> dict[str, tuple[int | None, ...]]:
        K, C = self.n_heads_in_, len(self.classes_)
        return {**super()._state_shapes(), "reliability_": (K, C), "reliability_counts_": (C,)}


class CALMClassifier(ReliabilityVote):
    """Class-conditional sparse attention vectors.

    Every head k gives posteriors p_k(c|x) = softmax_c(cos_{k,c}(x) / tau). Its reliability for
    class c, r_{k,c}, is the mean over reliability items of class c of the ``scheme`` score
    (``margin_clamped``: max(0, p(c) - max_{c'!=c} p(c')); ``margin``; ``prob``: p(c);
    ``brier``: 2 p(c) - sum p^2). Optional shrinkage toward the mean reliability (over all classes
    and non-constant heads): r <- r n_c/(n_c+alpha) + mean(r) alpha/(n_c+alpha). Weights per class over heads: for
    margin_clamped r^(1/tau_w) normalised (uniform if the class has no positive reliability), for
    the others softmax_k(r / tau_w); ``top_k`` keeps each class's top_k heads. Prediction:
    argmax_c sum_k w_{k,c} p_k(c|x).

    Args:
        tau: posterior temperature.
        tau_w: weight temperature.
        scheme: reliability score, one of ``margin_clamped``, ``margin``, ``prob``, ``brier``.
        top_k: keep only each class's top_k most reliable heads (None: all).
        shrinkage: alpha >= 0 (0: none).
        reliability: where reliability items come from. ``"loo"`` (default): the support items,
            each scored against prototypes built without it (a class with one item falls back to
            in-sample, with a warning). ``"support"``: the support items in-sample, as published.
            ``"holdout"``: a separate labelled set passed as ``fit(X, y, X_val=..., y_val=...)``.

    Fitted attributes (besides the prototype ones): ``reliability_`` [K, C] (after shrinkage),
    ``weights_`` [K, C] (columns sum to 1; constant heads get 0), ``reliability_counts_`` [C].
    """

    def __init__(self, tau: float = 0.07, tau_w: float = 1.0, scheme: str = "margin_clamped",
                 top_k: int | None = None, shrinkage: float = 0.0, reliability: str = "loo",
                 geometry: str | dict = "cosine"):
        self.tau = tau
        self.tau_w = tau_w
        self.scheme = scheme
        self.top_k = top_k
        self.shrinkage = shrinkage
        self.reliability = reliability
        self.geometry = geometry

    def _validate_params(self) -> None:
        check_hyperparameters(self.tau, self.tau_w, self.scheme, self.top_k)
        check_shrinkage(self.shrinkage)
        check_source(self.reliability)

    def _hyperparameters(self) -> dict[str, Any]:
        """The validated tau, tau_w, scheme and top_k this fit uses."""
        return check_hyperparameters(self.tau, self.tau_w, self.scheme, self.top_k)


def check_source(reliability: str) -> str:
    if reliability not in RELIABILITY_SOURCES:
        raise ValueError(f"reliability must be one of {RELIABILITY_SOURCES}, got {reliability!r}")
    return reliability


def check_shrinkage(alpha: Any) -> float:
    value = float(alpha)
    if not value >= 0:
        raise ValueError(f"shrinkage must be >= 0, got {alpha!r}")
    return value


def check_top_k(top_k: Any) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    return int(top_k)


def check_hyperparameters(tau: Any, tau_w: Any, scheme: str, top_k: Any) -> dict[str, Any]:
    """Validated CALM hyperparameters as a dict (tau, tau_w, scheme, top_k)."""
    return {"tau": check_positive("tau", tau), "tau_w": check_positive("tau_w", tau_w),
            "scheme": check_scheme(scheme), "top_k": check_top_k(top_k)}

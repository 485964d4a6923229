"""The logistic probe baseline: scikit-learn's LogisticRegression on all heads concatenated, each
head L2-normalised."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from calm.classifiers._base import check_positive
from calm.classifiers._cosine import FeatureBlocks, normalise
from calm.classifiers._prototype import FeatureClassifier


def concatenated_unit_heads(features: FeatureBlocks) -> np.ndarray:
    """[N, K*D] float32: every head's vector L2-normalised, heads side by side."""
    n, k, d = features.shape
    out = np.empty((n, k * d), dtype=np.float32)
    for items, cols, x in features.blocks(dtype=torch.float32):
        block = normalise(x).transpose(0, 1)  # [n, heads, D]
        out[items, cols.start * d:cols.stop * d] = block.reshape(block.shape[0], -1).numpy()
    return out


Reflectors = tuple[torch.Tensor, torch.Tensor]
"""A Householder QR of Z^T as LAPACK's geqrf leaves it: reflectors [F, N] and their scales [N]
(what ``torch.ormqr`` applies)."""


def row_space(Z: np.ndarray) -> tuple[np.ndarray, Reflectors | None]:
    """Coordinates of the rows of Z [N, F] in an orthonormal basis Q [F, N] of their span, and Q as
    Householder reflectors (None, and Z itself, unless N is well below F).

    An L2-penalised linear model with an unpenalised intercept has its weights in the span of its
    training rows, and the penalty and every logit are the same in these coordinates, so fitting
    on Z Q and mapping the weights back by Q^T (:func:`from_row_space`) gives the same model as
    fitting on Z, much faster when there are few items and many features. With Z^T = Q R, the
    coordinates Z Q are R^T: the QR's triangle, so Q itself is never formed."""
    if 4 * Z.shape[0] > Z.shape[1]:
        return Z, None
    h, scales = np.linalg.qr(Z.T.astype(np.float64), mode="raw")  # geqrf's output, transposed
    reflectors = torch.from_numpy(h).T
    return np.ascontiguousarray(np.tril(h[:, :Z.shape[0]])), (reflectors, torch.from_numpy(scales))


def from_row_space(coef: np.ndarray, basis: Reflectors | None) -> np.ndarray:
    """Weights [C, F] in the features' space from weights [C, N] on row-space coordinates: coef Q^T."""
    if basis is None:
        return coef
    reflectors, scales = basis
    padded = torch.zeros(reflectors.shape[0], coef.shape[0], dtype=torch.float64)
    padded[:coef.shape[1]] = torch.from_numpy(np.asarray(coef, dtype=np.float64).T)
    return torch.ormqr(reflectors, scales, padded).T.numpy()


class LinearProbe(FeatureClassifier):
    """Base of the logistic probes: a linear model on concatenated per-head unit vectors, computed
    here from ``coef_`` and ``intercept_`` (they equal scikit-learn's): ``decision_function`` gives
    logits [N, C] (for two classes, [0, z]), ``predict_proba`` their softmax."""

    _fitted_meta = ("n_iter_",)

    def _set_model(self, model: Any, basis: Reflectors | None) -> None:
        """coef_, intercept_ and n_iter_ from a fitted LogisticRegression (on row-space coordinates)."""
        self.coef_ = np.ascontiguousarray(from_row_space(model.coef_, basis), dtype=np.float64)
        self.intercept_ = np.ascontiguousarray(model.intercept_, dtype=np.float64)
        self.n_iter_ = int(np.max(model.n_iter_))

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits [N, C]; with two classes the first column is 0. Accumulated head block by head
        block in float64, so the concatenated features are never materialised."""
        features = self._features(X)
        dim = features.shape[2]
        coef = torch.from_numpy(self.coef_)
        z = torch.from_numpy(self.intercept_).expand(len(features), -1).clone()
        for items, cols, x in features.blocks(dtype=torch.float32):
            block = normalise(x).transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64)
            z[items] += block @ coef[:, cols.start * dim:cols.stop * dim].T
        z = z.numpy()
        return np.concatenate([np.zeros_like(z), z], axis=1) if z.shape[1] == 1 else z

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax of the logits (rows sum to 1)."""
        return torch.softmax(torch.from_numpy(self.decision_function(X)), dim=1).numpy()

    def _state_shapes(self) -> dict[str, tuple[int | None, ...]]:
        rows = 1 if len(self.classes_) == 2 else len(self.classes_)
        return {"coef_": (rows, self.n_heads_in_ * self.head_dim_in_), "intercept_": (rows,)}


def check_max_iter(max_iter: Any) -> int:
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    return int(max_iter)


class LogisticProbe(LinearProbe):
    """Multinomial logistic regression on concatenated per-head unit vectors.

    Args:
        C: inverse L2 regularisation strength, as in scikit-learn.
        max_iter: iterations of the lbfgs solver.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000):
        self.C = C
        self.max_iter = max_iter

    def _validate_params(self) -> None:
        check_positive("C", self.C)
        check_max_iter(self.max_iter)

    def fit(self, X: Any, y: Any) -> "LogisticProbe":
        from sklearn.linear_model import LogisticRegression

        self._validate_params()
        features, labels = self._start_fit(X, y)
        Z, basis = row_space(concatenated_unit_heads(features))
        self._set_model(LogisticRegression(C=float(self.C), max_iter=int(self.max_iter)).fit(Z, labels.numpy()), basis)
        return self

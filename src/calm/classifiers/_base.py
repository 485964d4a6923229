"""Estimator manners shared by every classifier: parameters read from ``__init__``'s signature
(``get_params`` / ``set_params``, so ``sklearn.base.clone`` works without scikit-learn at
runtime), label encoding, the fitted check and ``predict`` from ``decision_function``."""

from __future__ import annotations

import inspect
import json
import math
from typing import Any

import numpy as np
import torch


class NotFittedError(ValueError, AttributeError):
    """Raised when a classifier is used before ``fit`` (same bases as scikit-learn's)."""


class Estimator:
    """Base of all calm classifiers: ``__init__`` only stores its arguments under their names.

    Subclasses list their fitted arrays and JSON-able fitted attributes for :mod:`calm.classifiers.io`
    in ``_state_shapes`` (name -> expected shape) and ``_fitted_meta``.
    """

    _fitted_meta: tuple[str, ...] = ()

    @classmethod
    def _param_names(cls) -> list[str]:
        names = []
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must list its parameters explicitly, not *{name}")
            names.append(name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters, by name (``deep`` is accepted for scikit-learn; nothing nests)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "Estimator":
        """Set constructor parameters by name; an unknown name raises ValueError listing the valid ones."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}; valid: {valid}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
        shown = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults.get(k))]
        return f"{type(self).__name__}({', '.join(shown)})"

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")

    def _get_meta(self) -> dict[str, Any]:
        """JSON-able fitted attributes (``_fitted_meta``) for saving."""
        return {name: getattr(self, name) for name in self._fitted_meta}

    def _set_meta(self, meta: dict[str, Any]) -> None:
        for name in self._fitted_meta:
            setattr(self, name, meta[name])

    def _state_shapes(self) -> dict[str, tuple[int | None, ...]]:
        """Fitted numpy arrays by attribute name and their expected shapes (None: any length)."""
        raise NotImplementedError

    def decision_function(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: Any) -> np.ndarray:
        """The class with the largest ``decision_function`` score (the first one on an exact tie)."""
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return False


def to_numpy(a: Any) -> np.ndarray:
    """A numpy view or copy of a numpy array, torch tensor or sequence."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def encode_labels(y: Any, n_items: int) -> tuple[np.ndarray, torch.Tensor]:
    """Sorted unique labels (strings allowed) and each item's class index as an int64 tensor."""
    labels = to_numpy(y)
    if labels.ndim != 1 or len(labels) != n_items:
        raise ValueError(f"y must be one label per item: expected shape ({n_items},), got {labels.shape}")
    try:
        classes, index = np.unique(labels, return_inverse=True)
    except TypeError as error:
        raise ValueError(f"labels must be all strings or all numbers, not a mix ({error})") from None
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes to classify, got {len(classes)}: {classes.tolist()}")
    return classes, torch.from_numpy(index.reshape(-1).astype(np.int64))


def check_fingerprint(expected: Any, got: Any, what: str) -> None:
    """Raise ValueError naming both fingerprints when features come from another backbone or prompt.

    Both are compared in their JSON form, so a tuple and a list with the same items are equal.
    """
    if canonical(expected) != canonical(got):
        raise ValueError(f"{what}: feature fingerprint mismatch (features from another backbone or prompt?)\n"
                         f"  expected: {expected}\n  got:      {got}")


def canonical(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists; unknown types become strings)."""
    return json.loads(json.dumps(value, default=str))


def index_labels(y: Any, classes: np.ndarray, n_items: int, what: str) -> torch.Tensor:
    """Class indices of ``y`` in the fitted ``classes``; a label outside them raises ValueError naming it."""
    labels = to_numpy(y)
    if labels.ndim != 1 or len(labels) != n_items:
        raise ValueError(f"{what}: expected one label per item, shape ({n_items},), got {labels.shape}")
    position = np.searchsorted(classes, labels)
    position = np.clip(position, 0, len(classes) - 1)
    unknown = classes[position] != labels
    if unknown.any():
        raise ValueError(f"{what}: label(s) not among the fitted classes: {sorted(set(labels[unknown].tolist()))[:5]}")
    return torch.from_numpy(position.astype(np.int64))


def check_positive(name: str, value: Any) -> float:
    """A finite positive float, or ValueError naming the parameter."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number

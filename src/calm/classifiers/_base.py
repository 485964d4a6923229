"""Estimator manners shared by every classifier: scikit-learn's own base classes (parameters from
``__init__``'s signature, ``clone``, ``score``, tags), a fit that leaves nothing half-fitted,
label encoding, the fitted check and ``predict`` from ``decision_function``."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

__all__ = ["Estimator", "NotFittedError"]


class Estimator(ClassifierMixin, BaseEstimator):
    """Base of all calm classifiers: ``__init__`` only stores its arguments under their names.

    A real scikit-learn classifier (``score`` is accuracy; ``cross_val_score``, ``GridSearchCV``
    and ``Pipeline`` work) whose input is [N, K, D] head features, not a 2-D matrix. A ``fit``
    that raises leaves the estimator unfitted (no fitted attribute of a failed fit survives).

    Subclasses list their fitted arrays for :mod:`calm.classifiers.io` in ``_state_shapes`` (name
    -> expected shape), their JSON-able fitted attributes in ``_fitted_meta``, and check their
    parameters in ``_validate_params`` (called by ``fit`` and when a file is loaded).
    """

    _fitted_meta: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fit = cls.__dict__.get("fit")
        if fit is not None:
            cls.fit = _forgetting_on_error(fit)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

    def _forget_fit(self) -> None:
        """Drop every fitted attribute (public names ending in ``_``)."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)

    def _validate_params(self) -> None:
        """Raise ValueError naming a parameter whose value is invalid (subclasses check theirs)."""

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


def _forgetting_on_error(fit: Callable[..., Any]) -> Callable[..., Any]:
    """``fit`` that, when it raises, leaves the estimator without fitted attributes."""

    @functools.wraps(fit)
    def wrapper(self: Estimator, *args: Any, **kwargs: Any) -> Any:
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            self._forget_fit()
            raise

    return wrapper


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

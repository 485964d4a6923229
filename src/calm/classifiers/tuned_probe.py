"""The logistic probe with its regularisation chosen on the support set by stratified
cross-validation (scikit-learn's ``LogisticRegressionCV``), so the baseline gets a fair chance."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from calm.classifiers._base import check_positive
from calm.classifiers.probe import LinearProbe, check_max_iter, concatenated_unit_heads, row_space

DEFAULT_CS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


class TunedLogisticProbe(LinearProbe):
    """:class:`~calm.classifiers.LogisticProbe` whose C is chosen inside ``fit`` by stratified
    k-fold cross-validation on the support set (k = min(``folds``, smallest class size); accuracy;
    on a tie the smaller C), then refit on the whole support. With one item in some class no fold
    can hold it out: C falls back to ``fallback_C``, with a warning.

    Args:
        Cs: the values of C to try.
        folds: the most folds to use.
        fallback_C: C when cross-validation is impossible.
        max_iter: iterations of the lbfgs solver.

    Fitted attributes add ``C_`` (the C used) and ``cv_scores_`` (mean fold accuracy per C; empty
    when not tuned).
    """

    _fitted_meta = ("n_iter_", "C_", "cv_scores_")

    def __init__(self, Cs: Sequence[float] = DEFAULT_CS, folds: int = 5, fallback_C: float = 1.0, max_iter: int = 1000):
        self.Cs = Cs
        self.folds = folds
        self.fallback_C = fallback_C
        self.max_iter = max_iter

    def _validate_params(self) -> None:
        if not list(self.Cs):
            raise ValueError("Cs must name at least one value of C")
        for c in self.Cs:
            check_positive("Cs", c)
        check_positive("fallback_C", self.fallback_C)
        check_max_iter(self.max_iter)
        if isinstance(self.folds, bool) or not isinstance(self.folds, (int, np.integer)) or self.folds < 2:
            raise ValueError(f"folds must be an integer >= 2, got {self.folds!r}")

    def fit(self, X: Any, y: Any) -> "TunedLogisticProbe":
        """Cross-validate C on (X, y), then fit the probe with it on all of (X, y)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        self._validate_params()
        Cs = sorted(check_positive("Cs", c) for c in self.Cs)
        features, labels = self._start_fit(X, y)
        Z, basis = row_space(concatenated_unit_heads(features))
        target = labels.numpy()
        folds = min(int(self.folds), int(np.bincount(target).min()))
        self.cv_scores_: list[float] = []
        if folds < 2:
            warnings.warn(f"TunedLogisticProbe: a class has a single support item, so C cannot be cross-validated; "
                          f"using C={self.fallback_C}", UserWarning, stacklevel=2)
            self.C_ = check_positive("fallback_C", self.fallback_C)
        else:
            splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=0).split(Z, target))
            self.cv_scores_ = [cross_validated_accuracy(Z, target, splits, c, int(self.max_iter)) for c in Cs]
            self.C_ = Cs[int(np.argmax(self.cv_scores_))]
        self._set_model(LogisticRegression(C=self.C_, max_iter=int(self.max_iter)).fit(Z, target), basis)
        return self


def cross_validated_accuracy(Z: np.ndarray, target: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                             C: float, max_iter: int) -> float:
    """Mean over ``splits`` (train, test rows) of the accuracy on the test rows of a logistic
    regression fitted on the train rows: scikit-learn's ``cross_val_score(...).mean()``, without
    its per-fold machinery (the same fits and the same number)."""
    from sklearn.linear_model import LogisticRegression

    scores = [LogisticRegression(C=C, max_iter=max_iter).fit(Z[train], target[train]).score(Z[test], target[test])
              for train, test in splits]
    return float(np.asarray(scores).mean())

"""Predictions a user can trust, for any calm classifier: calibrated probabilities, an "unknown"
answer for clips of classes the classifier was never shown, and prediction sets with a coverage
guarantee. Everything is fitted from the support set alone.

:class:`Calibrated` wraps an estimator (anything with ``fit`` / ``decision_function`` /
``predict_proba`` / ``classes_``). Its ``fit`` fits the estimator on the whole support set and
cross-fits it: the support items of each class are dealt into ``n_folds`` folds, a copy of the
estimator is fitted without each fold and scores it (with 2 to ``n_folds`` shots this is
leave-one-out per class). Those out-of-fold class scores, the only honest scores a few-shot
support set has, give

* the **temperature**: one number T, and which class scores it divides (``decision_function`` or
  the log of ``predict_proba``, whichever has the lower out-of-fold NLL at its best T), chosen by
  minimising the out-of-fold negative log-likelihood; ``predict_proba`` is then softmax(scores / T).
* the **rejection threshold**: the out-of-fold open-set scores of the (all known) support items,
  and the threshold below which a clip is called unknown, so that at most ``target_frr`` of
  known-class clips are rejected (split-conformal quantile, valid for exchangeable clips).
* the **conformal scores** 1 - p(true class), whose ranks give prediction sets at any level.

It also keeps a small sketch of every support clip (:mod:`calm.classifiers.typicality`), so that
new clips can be checked for looking like the support at all: the premise of everything above.

``predict`` is the estimator's own. Classes with a single support item cannot be cross-fitted:
their items are not scored (with a warning); with no scored item at all the probabilities stay
uncalibrated (T = 1) and rejection and sets raise ValueError.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn.base import clone

from calm.classifiers._base import Estimator, NotFittedError, encode_labels
from calm.classifiers.conformal import conformal_p_values, rejection_threshold, tiebreak
from calm.classifiers.typicality import SKETCH_DIM, ShiftCheck, shift_check, sketch, typicality
from calm.features import HeadFeatures

LOGIT_SOURCES = ("decision", "log_proba")
OPEN_SCORES = ("msp", "energy", "margin")
PROBA_FLOOR = 1e-6
"""log(predict_proba) is taken of probabilities floored here (vote shares can be exactly 0)."""


def take_rows(X: Any, rows: np.ndarray) -> Any:
    """Rows ``rows`` of features X (HeadFeatures, numpy array, memory map or torch tensor)."""
    if isinstance(X, HeadFeatures):
        return X.select([X.ids[i] for i in rows])
    if isinstance(X, np.ndarray):
        return np.asarray(X[rows])
    return X[rows]


def fold_assignment(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each item [N] (-1: not held out): each class with >= 2 items dealt round-robin, in
    random order, over min(n_folds, its largest class size) folds, so every fold leaves every
    class at least one training item."""
    counts = np.bincount(labels)
    folds = np.full(len(labels), -1, dtype=np.int64)
    if counts.max() < 2:
        return folds
    n = max(2, min(int(n_folds), int(counts.max())))
    rng = np.random.default_rng(seed)
    for c in np.flatnonzero(counts >= 2):
        members = rng.permutation(np.flatnonzero(labels == c))
        folds[members] = np.arange(len(members)) % min(n, len(members))
    return folds


def class_scores(estimator: Any, X: Any, source: str) -> np.ndarray:
    """The class scores [N, C] that the temperature divides."""
    if source == "decision":
        return np.asarray(estimator.decision_function(X), dtype=np.float64)
    proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    return np.log(np.clip(proba, PROBA_FLOOR, None))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def fit_inverse_temperature(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """beta = 1/T minimising the mean cross-entropy of softmax(beta * scores) against targets
    smoothed by eps = 1/(n+1) (one pseudo-count spread over the classes): without it a support
    set whose out-of-fold scores happen to be perfectly separated would give T = 0 and certainty.
    The loss is convex in beta, so its derivative is bisected. Returns (beta, smoothed NLL)."""
    n, n_classes = scores.shape
    eps = 1.0 / (n + 1)
    targets = np.full(scores.shape, eps / n_classes)
    targets[np.arange(n), labels] += 1.0 - eps
    target_score = (targets * scores).sum(axis=1)

    def slope(beta: float) -> float:
        return float(np.mean((softmax(beta * scores) * scores).sum(axis=1) - target_score))

    def loss(beta: float) -> float:
        z = beta * scores
        top = z.max(axis=1)
        lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
        return float(np.mean(lse - beta * target_score))

    spread = float(np.std(scores - scores.mean(axis=1, keepdims=True))) or 1.0
    low, high = 0.0, 1.0 / spread
    while slope(high) < 0 and high < 1e8 / spread:
        low, high = high, 2 * high
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if slope(middle) < 0 else (low, middle)
    beta = max(0.5 * (low + high), 1e-8)
    return beta, loss(beta)


class Calibrated(Estimator):
    """A calm classifier with calibrated probabilities, open-set rejection and prediction sets.

    Args:
        estimator: an unfitted calm classifier (its class and parameters are copied; it is not fitted itself).
        target_frr: share of known-class clips that rejection may turn away (default 5%).
        open_score: the "is it one of these classes?" score, higher meaning more known: ``energy``
            (default: log-sum-exp of the calibrated class scores; the best of the three for CALM
            at 16 shots on every multiclass dev set, see docs/trust.md), ``msp`` (largest
            calibrated probability) or ``margin`` (largest minus second calibrated probability).
        n_folds: most folds of the cross-fitting.
        random_state: seed of the fold assignment.

    Fitted attributes: ``estimator_`` (fitted on every support item), ``classes_``,
    ``temperature_``, ``logit_source_``, ``n_calibration_`` (support items scored out of fold),
    ``held_out_accuracy_`` (their accuracy: an estimate for clips like the support, a little
    pessimistic since each fold model saw fewer shots; None when nothing was scored),
    ``threshold_`` (None when nothing was scored), ``conformity_scores_`` [n] and
    ``open_scores_`` [n] (the out-of-fold 1 - p(true class) and open-set scores, sorted), and
    ``support_sketch_`` [N, SKETCH_DIM] (None in files saved before calm 0.3).
    """

    _fitted_meta = ("temperature_", "logit_source_", "n_calibration_", "threshold_", "held_out_accuracy_")

    def _get_meta(self) -> dict[str, Any]:
        """As saved: a threshold of -inf (too few items to reject anything) as the string "-inf"."""
        meta = super()._get_meta()
        if meta["threshold_"] is not None and not math.isfinite(meta["threshold_"]):
            meta["threshold_"] = str(meta["threshold_"])
        return meta

    def _set_meta(self, meta: dict[str, Any]) -> None:
        super()._set_meta({"held_out_accuracy_": None, **meta})  # absent from version 2 files
        if isinstance(self.threshold_, str):
            self.threshold_ = float(self.threshold_)

    def __init__(self, estimator: Any, target_frr: float = 0.05, open_score: str = "energy", n_folds: int = 5,
                 random_state: int = 0):
        self.estimator = estimator
        self.target_frr = target_frr
        self.open_score = open_score
        self.n_folds = n_folds
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> Calibrated:
        """Fit the estimator on (X, y), then the temperature, threshold and conformal scores out of fold."""
        check_settings(self.target_frr, self.open_score, self.n_folds)
        n_items = len(X) if isinstance(X, HeadFeatures) else int(X.shape[0])
        classes, index = encode_labels(y, n_items)
        labels = index.numpy()
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.support_sketch_ = sketch(X)
        scored, scores = self._cross_fit(X, y, labels, classes)
        self.n_calibration_ = int(scored.sum())
        if self.n_calibration_ == 0:
            self.temperature_, self.logit_source_, self.threshold_ = 1.0, "decision", None
            self.held_out_accuracy_ = None
            self.conformity_scores_ = np.zeros(0)
            self.open_scores_ = np.zeros(0)
            return self
        truth = labels[scored]
        fits = {source: fit_inverse_temperature(s[scored], truth) for source, s in scores.items()}
        self.logit_source_ = min(fits, key=lambda source: fits[source][1])
        beta = fits[self.logit_source_][0]
        self.temperature_ = 1.0 / beta
        logits = scores[self.logit_source_][scored] * beta
        proba = softmax(logits)
        self.held_out_accuracy_ = float((np.argmax(logits, axis=1) == truth).mean())
        self.conformity_scores_ = np.sort(1.0 - proba[np.arange(len(truth)), truth])
        self.open_scores_ = np.sort(open_set_score(logits, self.open_score))
        self.threshold_ = rejection_threshold(self.open_scores_, float(self.target_frr))
        return self

    def _cross_fit(self, X: Any, y: Any, labels: np.ndarray, classes: np.ndarray
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Which items were scored out of fold [N] and their class scores per source [N, C]."""
        who = f"Calibrated({type(self.estimator).__name__})"
        folds = fold_assignment(labels, self.n_folds, int(self.random_state))
        single = classes[np.bincount(labels, minlength=len(classes)) < 2]
        if len(single):
            warnings.warn(f"{who}: {len(single)} class(es) have a single support item (e.g. {single[0]!r}); their "
                          "items cannot be scored out of fold and do not inform the calibration", stacklevel=3)
        scores = {source: np.zeros((len(labels), len(classes))) for source in LOGIT_SOURCES}
        y = np.asarray(y)
        for fold in range(folds.max() + 1):
            held, kept = np.flatnonzero(folds == fold), np.flatnonzero(folds != fold)
            try:
                with warnings.catch_warnings():  # the refits repeat the final fit's warnings, with fewer shots
                    warnings.simplefilter("ignore")
                    model = clone(self.estimator).fit(take_rows(X, kept), y[kept])
            except ValueError as error:
                warnings.warn(f"{who}: cannot fit without a fold of the support set ({error}); the probabilities "
                              "stay uncalibrated and rejection and prediction sets are unavailable", stacklevel=3)
                return np.zeros(len(labels), dtype=bool), scores
            if not np.array_equal(model.classes_, classes):
                raise AssertionError("a fold lost a class")  # fold_assignment keeps one item of each class
            part = take_rows(X, held)
            for source in LOGIT_SOURCES:
                scores[source][held] = class_scores(model, part, source)
        return folds >= 0, scores

    def __getattr__(self, name: str) -> Any:
        """Public attributes of the wrapped estimator (fitted ones such as ``fingerprint_``,
        ``head_index_``, ``weights_``, and its parameters) read through, so a calibrated classifier
        stands in for its estimator."""
        inner = self.__dict__.get("estimator_", self.__dict__.get("estimator"))
        if inner is None or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(inner, name)

    # ---- prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "estimator_"):
            raise NotFittedError("this Calibrated classifier is not fitted yet; call fit(X, y) first")

    def predict(self, X: Any) -> np.ndarray:
        """The wrapped estimator's prediction, unchanged."""
        self._check_fitted()
        return self.estimator_.predict(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """The wrapped estimator's class scores, unchanged."""
        self._check_fitted()
        return self.estimator_.decision_function(X)

    def calibrated_logits(self, X: Any) -> np.ndarray:
        """Class scores divided by the temperature, [N, C]."""
        self._check_fitted()
        return class_scores(self.estimator_, X, self.logit_source_) / self.temperature_

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities [N, C]: softmax of the class scores over the temperature."""
        return softmax(self.calibrated_logits(X))

    def predict_open(self, X: Any, unknown: Any = "unknown") -> tuple[np.ndarray, np.ndarray]:
        """Labels [N] (object array: :meth:`predict`'s label, or ``unknown`` where the open-set
        score is below ``threshold_``) and the open-set scores [N]. Every item keeps its row."""
        self._require_calibration("rejection")
        score = open_set_score(self.calibrated_logits(X), self.open_score)
        labels = np.empty(len(score), dtype=object)
        labels[:] = self.predict(X).tolist()
        labels[score < self.threshold_] = unknown
        return labels, score

    def predict_sets(self, X: Any, coverage: float = 0.9, smooth: bool = True) -> list[tuple[Any, ...]]:
        """Per item, its conformal prediction set: the classes c whose score 1 - p(c) has a conformal
        p-value above 1 - ``coverage`` among the support's out-of-fold scores 1 - p(true class).
        Over clips like the support's, the true class is in the set with probability ``coverage``
        (marginal, not per class). ``smooth`` breaks rank ties with a number drawn from a hash of
        the clip's probabilities, which makes the coverage exact rather than at least ``coverage``,
        and the same clip always gets the same set; ``smooth=False`` gives the conservative sets,
        which hold every class when fewer than 1/(1 - coverage) - 1 support items were scored. A
        set may be empty: no class fits."""
        return [tuple(self.classes_[row].tolist()) for row in self.set_mask(X, coverage, smooth)]

    def set_mask(self, X: Any, coverage: float = 0.9, smooth: bool = True) -> np.ndarray:
        """Prediction sets as a boolean mask [N, C] (see :meth:`predict_sets`)."""
        self._require_calibration("prediction sets")
        if not 0 < coverage < 1:
            raise ValueError(f"coverage must be a level strictly between 0 and 1, got {coverage!r}")
        proba = self.predict_proba(X)
        p_values = conformal_p_values(self.conformity_scores_, 1.0 - proba, tiebreak(proba) if smooth else 1.0)
        return p_values > 1.0 - coverage

    def typicality(self, X: Any) -> np.ndarray:
        """Per clip [N], how much it looks like the support clips: a conformal p-value in (0, 1]
        that needs no model (see :mod:`calm.classifiers.typicality`). Low values (<= 0.1) mark
        clips farther from every support clip than support clips lie from each other."""
        self._check_fitted()
        if self.support_sketch_ is None:
            raise ValueError("this classifier was saved without a sketch of its support set (before calm 0.3); "
                             "refit it to check new clips against the support")
        return typicality(self.support_sketch_, sketch(X))

    def check_shift(self, X: Any) -> ShiftCheck:
        """Whether the clips X, as a batch, still look like the support set (see
        :class:`~calm.classifiers.typicality.ShiftCheck`; its ``message()`` explains it)."""
        return shift_check(self.typicality(X), len(self.support_sketch_))

    def _require_calibration(self, what: str) -> None:
        self._check_fitted()
        if self.threshold_ is None:
            raise ValueError(f"{what}: the classifier has no support items scored out of fold; fit it with at least "
                             "2 items per class")

    # ---- saving (see calm.classifiers.io)
    def _state_shapes(self) -> dict[str, tuple[int | None, ...]]:
        n = self.n_calibration_
        shapes: dict[str, tuple[int | None, ...]] = {"conformity_scores_": (n,), "open_scores_": (n,)}
        if getattr(self, "support_sketch_", None) is not None:
            shapes["support_sketch_"] = (None, SKETCH_DIM)
        return shapes


def open_set_score(logits: np.ndarray, kind: str) -> np.ndarray:
    """The open-set score [N] of calibrated class scores [N, C] (higher: more like a known class)."""
    if kind == "energy":
        top = logits.max(axis=1)
        return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    proba = softmax(logits)
    if kind == "msp":
        return proba.max(axis=1)
    ranked = np.sort(proba, axis=1)
    return ranked[:, -1] - ranked[:, -2]


def check_settings(target_frr: Any, open_score: str, n_folds: Any) -> None:
    """ValueError naming the first invalid setting of :class:`Calibrated`."""
    if not (isinstance(target_frr, (int, float)) and 0 <= target_frr < 1 and math.isfinite(target_frr)):
        raise ValueError(f"target_frr must be a rate in [0, 1), got {target_frr!r}")
    if open_score not in OPEN_SCORES:
        raise ValueError(f"open_score must be one of {OPEN_SCORES}, got {open_score!r}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")


def describe(classifier: Any) -> str:
    """The classifier's name for people: its estimator's class, with "(calibrated)" when it is
    wrapped in :class:`Calibrated`."""
    if isinstance(classifier, Calibrated) and hasattr(classifier, "estimator_"):
        return f"{type(classifier.estimator_).__name__} (calibrated)"
    return type(classifier).__name__

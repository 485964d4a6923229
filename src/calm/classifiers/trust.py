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
their items are not scored (with a warning). The probabilities stay the estimator's own
(``calibration_status_`` says "uncalibrated" and why) when no item could be scored (one shot:
rejection and sets then raise ValueError), or when the temperature, refitted without each fold of
the scored items, does not lower their NLL below the raw probabilities' own
(:func:`calm.classifiers.temperature.cross_validated_nll`): calibration never makes the support's
own held-out estimate worse.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any

import numpy as np
from sklearn.base import clone

from calm.classifiers._base import Estimator, NotFittedError, encode_labels, to_numpy
from calm.classifiers.conformal import conformal_p_values, rejection_threshold, tiebreak
from calm.classifiers.openset import (COMBINED_SCORES, DISTANCE_SCORES, OPEN_SCORES, HeadDistances,
                                     combination_shapes, combination_state, combined_score, distance_part,
                                     open_set_score)
from calm.classifiers.temperature import PROBA_FLOOR, cross_validated_nll, fit_temperature, nll, softmax
from calm.classifiers.typicality import SKETCH_DIM, ShiftCheck, shift_check, sketch, typicality
from calm.features import HeadFeatures

LOGIT_SOURCES = ("decision", "log_proba")
DEFAULT_OPEN_SCORE = "energy+heads"
CALIBRATED = "calibrated"
SINGLE_SHOT = ("uncalibrated: no class has two support clips, so no clip can be held out to calibrate on; "
               "the probabilities are the classifier's own")


def take_rows(X: Any, rows: np.ndarray) -> Any:
    """Rows ``rows`` of features X (HeadFeatures, numpy array, memory map or torch tensor)."""
    if isinstance(X, HeadFeatures):
        return X.select([X.ids[i] for i in rows])
    if isinstance(X, np.ndarray):
        return np.asarray(X[rows])
    return X[rows]


def canonical_order(X: Any, labels: np.ndarray) -> np.ndarray:
    """A row order [N] that depends only on what the rows hold, not where they stand: by class
    index, then by a hash of the row's features (then its id, for HeadFeatures), so a support
    set given in any order is fitted in the same order."""
    data = X.X if isinstance(X, HeadFeatures) else X
    ids = X.ids if isinstance(X, HeadFeatures) else [""] * len(labels)
    keys = [(int(labels[i]), hashlib.blake2b(np.ascontiguousarray(to_numpy(data[i])).tobytes(), digest_size=16)
             .digest(), ids[i]) for i in range(len(labels))]
    return np.array(sorted(range(len(labels)), key=keys.__getitem__), dtype=np.int64)


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


class Calibrated(Estimator):
    """A calm classifier with calibrated probabilities, open-set rejection and prediction sets.

    Args:
        estimator: an unfitted calm classifier (its class and parameters are copied; it is not fitted itself).
        target_frr: share of known-class clips that rejection may turn away (default 5%).
        open_score: the "is it one of these classes?" score, higher meaning more known, one of
            :data:`~calm.classifiers.openset.OPEN_SCORES` (:mod:`calm.classifiers.openset`): the
            default ``energy+heads`` (how unusual the energy of the calibrated class scores and each
            head's whitened distance to its nearest class are among the support's out-of-fold values;
            chosen on the dev sets, docs/trust.md), ``energy+knn``, ``energy``, ``msp``, ``margin``,
            ``whitened``, ``whitened-vote`` or ``knn``.
        n_folds: most folds of the cross-fitting.
        random_state: seed of the fold assignment.

    Fitted attributes: ``estimator_`` (fitted on every support item), ``classes_``,
    ``temperature_``, ``logit_source_``, ``n_calibration_`` (support items scored out of fold),
    ``held_out_accuracy_`` (their accuracy: an estimate for clips like the support, a little
    pessimistic since each fold model saw fewer shots; None when nothing was scored),
    ``threshold_`` (None when nothing was scored), ``conformity_scores_`` [n] and
    ``open_scores_`` [n] (the out-of-fold 1 - p(true class) and open-set scores, sorted),
    ``calibration_status_`` ("calibrated", or "uncalibrated: " and why the probabilities are the
    estimator's own), ``support_sketch_`` [N, SKETCH_DIM] (None in files saved before calm 0.3), and
    for the whitened-distance scores the ``open_*`` arrays of :class:`~calm.classifiers.openset.HeadDistances`.
    """

    _fitted_meta = ("temperature_", "logit_source_", "n_calibration_", "threshold_", "held_out_accuracy_",
                    "calibration_status_")

    def _get_meta(self) -> dict[str, Any]:
        """As saved: a threshold of -inf (too few items to reject anything) as the string "-inf"."""
        meta = super()._get_meta()
        if meta["threshold_"] is not None and not math.isfinite(meta["threshold_"]):
            meta["threshold_"] = str(meta["threshold_"])
        return meta

    def _set_meta(self, meta: dict[str, Any]) -> None:
        status = CALIBRATED if meta.get("n_calibration_") else SINGLE_SHOT  # absent from older files
        super()._set_meta({"held_out_accuracy_": None, "calibration_status_": status, **meta})  # and 0.3
        if isinstance(self.threshold_, str):
            self.threshold_ = float(self.threshold_)

    def __init__(self, estimator: Any, target_frr: float = 0.05, open_score: str = DEFAULT_OPEN_SCORE,
                 n_folds: int = 5, random_state: int = 0):
        self.estimator = estimator
        self.target_frr = target_frr
        self.open_score = open_score
        self.n_folds = n_folds
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> Calibrated:
        """Fit the estimator on (X, y), then the temperature, threshold and conformal scores out of
        fold. Rows are first put in :func:`canonical_order`: the same support in any order gives the
        same fit."""
        check_settings(self.target_frr, self.open_score, self.n_folds)
        n_items = len(X) if isinstance(X, HeadFeatures) else int(X.shape[0])
        classes, index = encode_labels(y, n_items)
        order = canonical_order(X, index.numpy())
        X, y, labels = take_rows(X, order), to_numpy(y)[order], index.numpy()[order]
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.support_sketch_ = sketch(X)
        part = distance_part(self.open_score)
        if part is not None:
            self._set_distances(HeadDistances().fit(X, labels, part == "knn", like=self.estimator_))
        folds, scores, raw, open_held, failure = self._cross_fit(X, y, labels, classes)
        scored = folds >= 0
        self.n_calibration_ = int(scored.sum())
        self.temperature_, self.logit_source_ = 1.0, "log_proba"
        if self.n_calibration_ == 0:
            self.threshold_ = self.held_out_accuracy_ = None
            self.calibration_status_ = failure or SINGLE_SHOT
            self.conformity_scores_ = np.zeros(0)
            self.open_scores_ = np.zeros(0)
            if self.open_score in COMBINED_SCORES:
                self.__dict__.update(combination_state(self.open_score, []))
            return self
        truth = labels[scored]
        held = {source: s[scored] for source, s in scores.items()}
        source, beta = fit_temperature(held, truth)
        raw_nll, calibrated_nll = nll(raw[scored], truth), cross_validated_nll(held, truth, folds[scored])
        if calibrated_nll < raw_nll:
            self.calibration_status_, self.logit_source_, self.temperature_ = CALIBRATED, source, 1.0 / beta
            logits = held[source] * beta
            proba = softmax(logits)
        else:
            self.calibration_status_ = (f"uncalibrated: calibrating did not lower the held-out NLL on the support "
                                        f"(raw {raw_nll:.3f}, calibrated {calibrated_nll:.3f}); the probabilities "
                                        "are the classifier's own")
            logits, proba = held["log_proba"], raw[scored]
        self.held_out_accuracy_ = float((np.argmax(logits, axis=1) == truth).mean())
        self.conformity_scores_ = np.sort(1.0 - proba[np.arange(len(truth)), truth])
        distance = None if open_held is None else open_held[scored]
        self.open_scores_ = np.sort(self._held_out_open_scores(logits, distance))
        self.threshold_ = rejection_threshold(self.open_scores_, float(self.target_frr))
        return self

    def _held_out_open_scores(self, logits: np.ndarray, distance: np.ndarray | None) -> np.ndarray:
        """The open-set scores [n] of the scored items from their out-of-fold calibrated logits and
        distance scores (and, for a combined score, the standards of its parts, set here)."""
        if self.open_score in DISTANCE_SCORES:
            return distance
        if self.open_score not in COMBINED_SCORES:
            return open_set_score(logits, self.open_score)
        parts = [open_set_score(logits, COMBINED_SCORES[self.open_score][0]), distance]
        self.__dict__.update(combination_state(self.open_score, parts))
        return combined_score(self.open_score, parts, vars(self), held_out=True)

    def _cross_fit(self, X: Any, y: np.ndarray, labels: np.ndarray, classes: np.ndarray
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray | None, str | None]:
        """Each item's fold [N] (-1: not scored out of fold), its out-of-fold class scores per
        source [N, C], raw probabilities [N, C] and, for a distance part, its values [N] (or [N, K]);
        and why nothing could be scored, if a fold could not be fitted."""
        who = f"Calibrated({type(self.estimator).__name__})"
        folds = fold_assignment(labels, self.n_folds, int(self.random_state))
        single = classes[np.bincount(labels, minlength=len(classes)) < 2]
        if len(single):
            warnings.warn(f"{who}: {len(single)} class(es) have a single support item (e.g. {single[0]!r}); their "
                          "items cannot be scored out of fold and do not inform the calibration", stacklevel=3)
        scores = {source: np.zeros((len(labels), len(classes))) for source in LOGIT_SOURCES}
        raw = np.zeros((len(labels), len(classes)))
        part = distance_part(self.open_score)
        open_held = None
        for fold in range(folds.max() + 1):
            held, kept = np.flatnonzero(folds == fold), np.flatnonzero(folds != fold)
            try:
                with warnings.catch_warnings():  # the refits repeat the final fit's warnings, with fewer shots
                    warnings.simplefilter("ignore")
                    model = clone(self.estimator).fit(take_rows(X, kept), y[kept])
            except ValueError as error:
                reason = f"cannot fit without a fold of the support set ({error})"
                warnings.warn(f"{who}: {reason}; the probabilities stay uncalibrated and rejection and prediction "
                              "sets are unavailable", stacklevel=3)
                return np.full(len(labels), -1), scores, raw, open_held, f"uncalibrated: {reason}"
            if not np.array_equal(model.classes_, classes):
                raise AssertionError("a fold lost a class")  # fold_assignment keeps one item of each class
            rows = take_rows(X, held)
            scores["decision"][held] = np.asarray(model.decision_function(rows), dtype=np.float64)
            raw[held] = np.asarray(model.predict_proba(rows), dtype=np.float64)
            scores["log_proba"][held] = np.log(np.clip(raw[held], PROBA_FLOOR, None))
            if part is not None:
                fold_distances = HeadDistances().fit(take_rows(X, kept), labels[kept], part == "knn", like=model)
                values = fold_distances.part_values(rows, part)
                open_held = np.zeros((len(labels), *values.shape[1:])) if open_held is None else open_held
                open_held[held] = values
        return folds, scores, raw, open_held, None

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
        """Calibrated probabilities [N, C]: softmax of the class scores over the temperature; the
        estimator's own probabilities where calibration did not help (``calibration_status_``)."""
        self._check_fitted()
        if self.calibration_status_ != CALIBRATED:
            return np.asarray(self.estimator_.predict_proba(X), dtype=np.float64)
        return softmax(self.calibrated_logits(X))

    def open_set_scores(self, X: Any) -> np.ndarray:
        """The open-set score [N] of ``open_score`` (higher: more like a known class)."""
        self._check_fitted()
        if self.open_score in DISTANCE_SCORES:
            return self.head_distances().score(X, self.open_score)
        if self.open_score not in COMBINED_SCORES:
            return open_set_score(self.calibrated_logits(X), self.open_score)
        logit_kind, part = COMBINED_SCORES[self.open_score]
        parts = [open_set_score(self.calibrated_logits(X), logit_kind), self.head_distances().part_values(X, part)]
        return combined_score(self.open_score, parts, vars(self))

    def predict_open(self, X: Any, unknown: Any = "unknown") -> tuple[np.ndarray, np.ndarray]:
        """Labels [N] (object array: :meth:`predict`'s label, or ``unknown`` where the open-set
        score is below ``threshold_``) and the open-set scores [N]. Every item keeps its row."""
        self._require_calibration("rejection")
        score = self.open_set_scores(X)
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

    def _set_distances(self, distances: HeadDistances) -> None:
        self.open_mean_, self.open_matrix_ = distances.mean_, distances.matrix_
        self.open_centres_ = distances.centres_
        if distances.support_ is not None:
            self.open_support_ = distances.support_

    def head_distances(self) -> HeadDistances:
        """The fitted whitened-distance scorer of a distance or combined ``open_score``."""
        distances = HeadDistances()
        distances.mean_, distances.matrix_ = self.open_mean_, self.open_matrix_
        distances.centres_ = self.open_centres_
        distances.support_ = getattr(self, "open_support_", None)
        return distances

    # ---- saving (see calm.classifiers.io)
    def _state_shapes(self) -> dict[str, tuple[int | None, ...]]:
        n = self.n_calibration_
        shapes: dict[str, tuple[int | None, ...]] = {"conformity_scores_": (n,), "open_scores_": (n,)}
        if getattr(self, "support_sketch_", None) is not None:
            shapes["support_sketch_"] = (None, SKETCH_DIM)
        part = distance_part(self.open_score)
        if part is not None:  # sizes are the estimator's, which io restores after these
            shapes.update(open_mean_=(None, None), open_matrix_=(None, None, None), open_centres_=(None, None, None))
            if part == "knn":
                shapes["open_support_"] = (None, None, None)
        shapes.update(combination_shapes(self.open_score, n))
        return shapes


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
    wrapped in :class:`Calibrated` and calibration helped, "(uncalibrated)" when it did not (the
    reason is ``calibration_status_``)."""
    if isinstance(classifier, Calibrated) and hasattr(classifier, "estimator_"):
        state = CALIBRATED if classifier.calibration_status_ == CALIBRATED else "uncalibrated"
        return f"{type(classifier.estimator_).__name__} ({state})"
    return type(classifier).__name__

"""Trust metrics in the evaluation protocol: calibration, prediction sets and open-set rejection
of each method, per episode, from its :class:`~calm.classifiers.trust.Calibrated` form.

Which apply where:

* ``multiclass``: all. Calibration (whether calibration was kept, 1.0, or the probabilities stayed
  raw, 0.0, as at one shot; ECE over 15 bins, NLL, Brier, before and after calibration)
  and 90% prediction sets (empirical coverage, mean size) on the episode's queries. Open set
  (with at least 3 classes): per seed, a fixed share of the classes (:data:`OPEN_SET_SHARE`, at
  least one, leaving at least two) is dropped from the support set; the method is fitted and
  calibrated on the rest and scores every query, the dropped classes' queries being the unknowns:
  AUROC and FPR at 95% TPR of the open-set score, and the shares of known and unknown queries
  rejected at the support-chosen threshold; and the AUROC of the candidate scores (the
  :mod:`calm.classifiers.openset` logit and distance scores, the classifier's own and typicality), to compare them.
* ``spoof``: calibration and prediction sets; no open set (with two classes, holding one out
  leaves nothing to classify, and a new attack is still "spoof", not "unknown").
* all but ``multilabel``: the shift check of the queries against the support set (share of
  atypical queries, and whether the batch is flagged as unlike the support; 1.0 = flagged).
* ``multilabel``: none. The one-vs-rest yes/no classifiers could be calibrated label by label,
  but ECE, sets and rejection of a single label per clip do not describe a multi-label answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from calm.evaluation import calibration

if TYPE_CHECKING:  # calm.classifiers imports torch: only when a method is scored
    from calm.classifiers.trust import Calibrated

OPEN_SET_SHARE = 0.25
SET_LEVEL = 0.9
TRUST_METRICS = ("calibrated", "ece", "ece_uncalibrated", "nll", "nll_uncalibrated", "brier", "brier_uncalibrated",
                 "coverage_90", "set_size_90", "auroc", "fpr_at_95_tpr", "unknown_rejected", "known_rejected",
                 "atypical", "shifted")
"""What :class:`TrustRecorder` reports per episode (the open-set ones only where they apply)."""


def held_out_classes(classes: Sequence[Any], seed: int, share: float = OPEN_SET_SHARE) -> list[Any]:
    """The classes an open-set episode drops from the support: round(share * C) of them (at
    least one, at most C - 2), drawn with ``seed``."""
    n_out = min(max(1, round(share * len(classes))), len(classes) - 2)
    rng = np.random.default_rng(seed)
    return sorted(np.asarray(classes, dtype=object)[rng.choice(len(classes), n_out, replace=False)].tolist())


def column_index(clf: Any, labels: Sequence[Any]) -> np.ndarray:
    """Each label's column in ``clf.classes_``."""
    column = {c: j for j, c in enumerate(clf.classes_.tolist())}
    return np.array([column[label] for label in labels], dtype=np.int64)


class TrustRecorder:
    """Scores one method on one episode and keeps the reliability bins of each method's largest
    shot count (summed over seeds) for the reliability diagram."""

    def __init__(self, task: str, classes: list[Any]):
        self.task = task
        self.classes = classes
        self.bins: dict[str, dict[int, dict[str, np.ndarray]]] = {}

    @property
    def open_set(self) -> bool:
        return self.task == "multiclass" and len(self.classes) >= 3

    def score(self, name: str, shots: int, seed: int, calibrated: Calibrated, make: Callable[[], Any],
              Xs: Any, ys: Sequence[Any], Xq: Any, y_true: Sequence[Any]) -> dict[str, Any]:
        """Trust metrics of a fitted ``calibrated`` on the queries; ``make`` gives a new, unfitted
        estimator of the method for the open-set episode (calibrated with the same open-set score)."""
        from calm.classifiers.trust import take_rows
        from calm.classifiers.typicality import shift_check, sketch, typicality

        known = np.isin(np.asarray(y_true, dtype=object), np.asarray(calibrated.classes_, dtype=object))
        if not known.all():  # pseudo-labels can miss a class: score the queries of the classes it has
            Xq, y_true = take_rows(Xq, np.flatnonzero(known)), [y for y, k in zip(y_true, known) if k]
        labels = column_index(calibrated, y_true)
        raw = np.asarray(calibrated.estimator_.predict_proba(Xq), dtype=np.float64)
        proba = calibrated.predict_proba(Xq)
        out: dict[str, Any] = {
            "ece": calibration.ece(proba, labels), "ece_uncalibrated": calibration.ece(raw, labels),
            "nll": calibration.nll(proba, labels), "nll_uncalibrated": calibration.nll(raw, labels),
            "brier": calibration.brier(proba, labels), "brier_uncalibrated": calibration.brier(raw, labels),
            "temperature": calibrated.temperature_, "calibration_items": calibrated.n_calibration_,
            "threshold": calibrated.threshold_, "calibrated": float(calibrated.calibration_status_ == "calibrated"),
        }
        self._add_bins(name, shots, raw, proba, labels)
        queries = sketch(Xq)  # once: the shift check and the open set's typicality share it
        check = shift_check(typicality(calibrated.support_sketch_, queries), len(calibrated.support_sketch_))
        out["atypical"], out["shifted"] = check.atypical / check.clips, float(check.shifted)
        if calibrated.threshold_ is None:
            return out
        sets = calibrated.set_mask(Xq, SET_LEVEL)
        out["coverage_90"] = calibration.coverage(sets, labels)
        out["set_size_90"] = calibration.mean_set_size(sets)
        if self.open_set:
            out.update(self._open_set(seed, make, Xs, ys, Xq, queries, y_true, calibrated.open_score))
        return out

    def _open_set(self, seed: int, make: Callable[[], Any], Xs: Any, ys: Sequence[Any], Xq: Any,
                  queries: np.ndarray, y_true: Sequence[Any], open_score: str) -> dict[str, Any]:
        """Fit on the support without the held-out classes; their queries (sketched: ``queries``)
        are the unknowns."""
        from calm.classifiers.openset import (DISTANCE_SCORES, LOGIT_SCORES, HeadDistances, distance_part,
                                             open_set_score)
        from calm.classifiers.trust import Calibrated, take_rows
        from calm.classifiers.typicality import typicality

        dropped = set(held_out_classes(self.classes, seed))
        kept = np.array([y not in dropped for y in ys])
        if len({y for y in ys if y not in dropped}) < 2:
            return {}
        support, labels = take_rows(Xs, np.flatnonzero(kept)), np.asarray(ys)[kept]
        clf = Calibrated(make(), open_score=open_score).fit(support, labels)
        if clf.threshold_ is None:
            return {}
        known = np.array([y not in dropped for y in y_true])
        if known.all() or not known.any():  # every query of a class was drawn into the support
            return {}
        score = clf.open_set_scores(Xq)
        rejected = score < clf.threshold_
        out = {"auroc": calibration.auroc(score, known), "fpr_at_95_tpr": calibration.fpr_at_tpr(score, known),
               "unknown_rejected": float(rejected[~known].mean()), "known_rejected": float(rejected[known].mean()),
               "held_out_classes": sorted(dropped)}
        shared = distance_part(clf.open_score) == "knn"  # the classifier's own distances, or fit them
        distances = clf.head_distances() if shared else HeadDistances().fit(support, labels, like=clf.estimator_)
        logits = clf.calibrated_logits(Xq)
        out["auroc_by_score"] = {kind: calibration.auroc(open_set_score(logits, kind), known) for kind in LOGIT_SCORES}
        out["auroc_by_score"].update({kind: calibration.auroc(distances.score(Xq, kind), known)
                                      for kind in DISTANCE_SCORES})
        out["auroc_by_score"][clf.open_score] = out["auroc"]  # a combined score needs its own support standards
        out["auroc_by_score"]["typicality"] = calibration.auroc(typicality(clf.support_sketch_, queries), known)
        return out

    def _add_bins(self, name: str, shots: int, raw: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> None:
        own = self.bins.setdefault(name, {}).setdefault(shots, {})
        for key, p in (("uncalibrated", raw), ("calibrated", proba)):
            binned = np.stack(calibration.reliability_bins(p, labels))
            own[key] = own.get(key, 0) + binned

    def largest_shot_bins(self) -> dict[str, dict[str, Any]]:
        """Method -> {"shots", "uncalibrated", "calibrated"}: bins [3, 15] (count, summed
        confidence, correct) at the method's largest shot count, summed over seeds."""
        return {name: {"shots": max(by), **by[max(by)]} for name, by in self.bins.items()}

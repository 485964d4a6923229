"""How the evaluation runs each kind of method on one episode (a method's ``strategy`` in
:mod:`calm.methods`): fit an estimator on the support, map the model's greedy answers
(zero-shot), or fit on the model's own confident labels (pseudo-label). Multi-label tasks fit one
yes/no classifier per label (one-vs-rest).

A strategy reads the episode and the evaluation's :class:`TaskContext` and returns an
:class:`Outcome`: its predictions and what it fitted. It never records anything; the
:class:`~calm.evaluation.runner.Runner` scores and records every outcome alike. A new kind of
method is a strategy class (in its own file) named by its :class:`calm.methods.Method`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from calm.classifiers import Calibrated
from calm.data.items import Item, label_tuple
from calm.evaluation.answers import AnswerMatch, match_answer
from calm.evaluation.zeroshot import ModelAnswers, pseudo_label
from calm.features import HeadFeatures
from calm.methods import Method


@dataclass
class EpisodeData:
    """One episode as a method sees it: shots, support and query items and their features."""

    shots: int
    seed: int
    support: list[Item]
    query: list[Item]
    Xs: HeadFeatures
    Xq: HeadFeatures

    @property
    def y_true(self) -> list[Any]:
        return [i.label for i in self.query]


@dataclass
class TaskContext:
    """What every strategy of one evaluation reads: the task, its classes, the model's answers
    (None without a chat model) and whether classifiers are calibrated for the trust metrics."""

    task: str
    classes: list[str]
    answers: ModelAnswers | None
    trust: bool
    _matches: dict[str, AnswerMatch | None] = field(default_factory=dict, repr=False)

    def match(self, item_id: str) -> AnswerMatch | None:
        """How the item's greedy answer maps (None: no answer); cached."""
        if item_id not in self._matches:
            self._matches[item_id] = answer_match(self.answers, item_id, self.classes)
        return self._matches[item_id]


@dataclass
class Outcome:
    """One method on one episode, as its strategy found it; the runner scores and records it.

    Attributes:
        pred: hard predictions of the queries (single-label tasks; an element None: unmapped).
            None: no classifier could be fitted, so every query counts as wrong.
        score: a continuous score of ``bonafide`` per query (spoof tasks: the EER).
        multilabel: (scores, 0/1 decisions), both [Nq, L] (multi-label tasks).
        fitted: the fitted classifier (reports show CALM's weights).
        calibrated: the classifier wrapped in :class:`~calm.classifiers.Calibrated` (trust runs).
        fitted_on: the features and labels ``calibrated`` was fitted on (trust's open-set episode).
        extra: reported with the metrics as they are (``unmapped``, ``pseudo`` ...).
    """

    pred: list[Any] | None = None
    score: np.ndarray | None = None
    multilabel: tuple[np.ndarray, np.ndarray] | None = None
    fitted: Any = None
    calibrated: Calibrated | None = None
    fitted_on: tuple[HeadFeatures, list[Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class EstimatorStrategy:
    """Fit the method's estimator on the support, predict the query."""

    answers: ClassVar[str | None] = None
    """Which of the model's answers it reads (:class:`~calm.evaluation.zeroshot.ModelAnswers`):
    ``"greedy"`` (of the queries), ``"sampled"`` (of the supports), or None."""

    def __init__(self, method: Method, context: TaskContext) -> None:
        self.method = method
        self.context = context

    def run(self, data: EpisodeData, params: dict[str, Any], options: dict[str, Any]) -> Outcome:
        return self.fit(data, data.Xs, [i.label for i in data.support], params)

    def fit(self, data: EpisodeData, Xs: HeadFeatures, ys: list[Any], params: dict[str, Any],
            extra: dict[str, Any] | None = None) -> Outcome:
        """Fit on (Xs, ys) and predict the query."""
        context, extra = self.context, dict(extra or {})
        if context.task == "multilabel":
            scores, decisions, skipped = self.one_vs_rest(Xs, ys, data.Xq, params)
            if skipped:
                extra["labels_without_classifier"] = skipped
            return Outcome(multilabel=(scores, decisions), extra=extra)
        calibrated = None
        if context.trust:
            calibrated = Calibrated(self.method.make(**params)).fit(Xs, np.asarray(ys))
            clf = calibrated.estimator_
        else:
            clf = self.method.make(**params).fit(Xs, np.asarray(ys))
        pred = clf.predict(data.Xq).tolist()
        score = difference(clf, data.Xq, "bonafide", "spoof") if context.task == "spoof" else None
        return Outcome(pred=pred, score=score, fitted=clf, calibrated=calibrated, fitted_on=(Xs, ys), extra=extra)

    def one_vs_rest(self, Xs: HeadFeatures, ys: list[Any], Xq: HeadFeatures,
                    params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Scores and 0/1 decisions [Nq, L]: per label, a yes/no classifier of the method."""
        classes = self.context.classes
        scores = np.zeros((len(Xq), len(classes)))
        decisions = np.zeros((len(Xq), len(classes)), dtype=np.int8)
        skipped = []
        for j, name in enumerate(classes):
            target = np.array(["yes" if name in label_tuple(y) else "no" for y in ys])
            if len(set(target.tolist())) < 2:
                skipped.append(name)
                continue
            clf = self.method.make(**params).fit(Xs, target)
            scores[:, j] = difference(clf, Xq, "yes", "no")
            decisions[:, j] = clf.predict(Xq) == "yes"
        return scores, decisions, skipped


class ZeroShotStrategy(EstimatorStrategy):
    """The model's greedy answer to a question naming every class, mapped to a class (unmappable: wrong)."""

    answers = "greedy"

    def run(self, data: EpisodeData, params: dict[str, Any], options: dict[str, Any]) -> Outcome:
        matches = [self.context.match(i.id) for i in data.query]
        pred = [m.label if m is not None else None for m in matches]
        return Outcome(pred=pred, extra={"unmapped": sum(p is None for p in pred)})


class PseudoLabelStrategy(EstimatorStrategy):
    """The estimator fitted on the support items the model labelled itself, confidently."""

    answers = "sampled"

    def run(self, data: EpisodeData, params: dict[str, Any], options: dict[str, Any]) -> Outcome:
        kept, ys, info = self.pseudo_labels(data.support, float(options["threshold"]))
        if info["classes_kept"] < 2:
            info["note"] = "fewer than 2 classes kept: no classifier, every query counts as wrong"
            return Outcome(extra={"pseudo": info})
        return self.fit(data, data.Xs.select(kept), ys, params, {"pseudo": info})

    def pseudo_labels(self, support: list[Item], threshold: float) -> tuple[list[str], list[Any], dict[str, Any]]:
        """Ids of the support items kept, their pseudo-labels, and what to report about them."""
        context = self.context
        keep, labels, correct = [], [], 0
        for item in support:
            guess = pseudo_label(context.answers.sampled.get(item.id, []), context.classes)
            if guess.confident(threshold):
                keep.append(item.id)
                labels.append((guess.label,) if context.task == "multilabel" else guess.label)
                correct += guess.label in item.labels
        info = {"kept": len(keep), "support": len(support), "threshold": threshold,
                "label_accuracy": correct / len(keep) if keep else None,
                "classes_kept": len({c for y in labels for c in label_tuple(y)})}
        return keep, labels, info


def difference(clf: Any, X: HeadFeatures, positive: str, negative: str) -> np.ndarray:
    """A continuous score for ``positive``: its decision value minus ``negative``'s."""
    decision = np.asarray(clf.decision_function(X), dtype=np.float64)
    column = {c: j for j, c in enumerate(clf.classes_.tolist())}
    return decision[:, column[positive]] - decision[:, column[negative]]


def answer_match(answers: Any, item_id: str, classes: list[str]) -> AnswerMatch | None:
    """How the item's greedy answer maps (None: no answer)."""
    text = answers.greedy.get(item_id)
    return None if text is None else match_answer(text, classes)

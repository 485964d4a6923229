"""How the evaluation runs each kind of method on one episode (a method's ``strategy`` in
:mod:`calm.methods`): fit an estimator on the support, map the model's greedy answers
(zero-shot), or fit on the model's own confident labels (pseudo-label). Multi-label tasks fit one
yes/no classifier per label (one-vs-rest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from calm.data.items import Item, label_tuple
from calm.evaluation.answers import AnswerMatch, match_answer
from calm.evaluation.zeroshot import pseudo_label
from calm.features import HeadFeatures
from calm.methods import Method

if TYPE_CHECKING:
    from calm.evaluation.runner import Runner


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


class EstimatorStrategy:
    """Fit the method's estimator on the support, predict the query."""

    def __init__(self, method: Method, runner: Runner) -> None:
        self.method = method
        self.runner = runner

    def run(self, data: EpisodeData, params: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        return self.fit_and_score(data, data.Xs, [i.label for i in data.support], params)

    def fit_and_score(self, data: EpisodeData, Xs: HeadFeatures, ys: list[Any], params: dict[str, Any],
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Fit on (Xs, ys), score the query: ``{"metrics": ..., **extra}``."""
        runner, extra = self.runner, dict(extra or {})
        if runner.task == "multilabel":
            scores, decisions, skipped = self.one_vs_rest(Xs, ys, data.Xq, params)
            if skipped:
                extra["labels_without_classifier"] = skipped
            return {"metrics": runner.multilabel_metrics(data.y_true, scores, decisions), **extra}
        if runner.trust is not None:
            from calm.classifiers import Calibrated

            calibrated = Calibrated(self.method.make(**params)).fit(Xs, np.asarray(ys))
            clf = calibrated.estimator_
            extra["trust"] = runner.trust.score(self.method.name, data.shots, data.seed, calibrated,
                                                lambda: self.method.make(**params), Xs, ys, data.Xq, data.y_true)
        else:
            clf = self.method.make(**params).fit(Xs, np.asarray(ys))
        pred = clf.predict(data.Xq).tolist()
        score = difference(clf, data.Xq, "bonafide", "spoof") if runner.task == "spoof" else None
        runner.record_fit(self.method.name, data.shots, clf)
        runner.add_confusion(self.method.name, data.shots, data.y_true, pred)
        return {"metrics": runner.score(data.y_true, pred, score), **extra}

    def one_vs_rest(self, Xs: HeadFeatures, ys: list[Any], Xq: HeadFeatures,
                    params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Scores and 0/1 decisions [Nq, L]: per label, a yes/no classifier of the method."""
        classes = self.runner.classes
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

    def run(self, data: EpisodeData, params: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        runner = self.runner
        matches = [runner.match(i.id) for i in data.query]
        pred = [m.label if m is not None else None for m in matches]
        runner.add_confusion(self.method.name, data.shots, data.y_true, pred)
        return {"metrics": runner.score(data.y_true, pred, None), "unmapped": sum(p is None for p in pred)}


class PseudoLabelStrategy(EstimatorStrategy):
    """The estimator fitted on the support items the model labelled itself, confidently."""

    def run(self, data: EpisodeData, params: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        kept, ys, info = self.pseudo_labels(data.support, float(options["threshold"]))
        if info["classes_kept"] < 2:
            info["note"] = "fewer than 2 classes kept: no classifier, every query counts as wrong"
            return {"metrics": self.runner.score(data.y_true, [None] * len(data.query), None), "pseudo": info}
        return self.fit_and_score(data, data.Xs.select(kept), ys, params, {"pseudo": info})

    def pseudo_labels(self, support: list[Item], threshold: float) -> tuple[list[str], list[Any], dict[str, Any]]:
        """Ids of the support items kept, their pseudo-labels, and what to report about them."""
        runner = self.runner
        keep, labels, correct = [], [], 0
        for item in support:
            guess = pseudo_label(runner.answers.sampled.get(item.id, []), runner.classes)
            if guess.confident(threshold):
                keep.append(item.id)
                labels.append((guess.label,) if runner.task == "multilabel" else guess.label)
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

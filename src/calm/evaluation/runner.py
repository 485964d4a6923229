"""Running an evaluation: every method on every episode, collecting metrics, confusion counts,
CALM's weights and notes. How a method runs is its strategy (:mod:`calm.evaluation.strategies`),
which returns an :class:`~calm.evaluation.strategies.Outcome`; the runner alone scores and records
outcomes."""

from __future__ import annotations

import copy
import time
import warnings
from collections import Counter
from typing import Any

import numpy as np

from calm import methods as registry
from calm.data.episodes import Episode
from calm.evaluation import metrics
from calm.evaluation.notes import Notes
from calm.evaluation.strategies import EpisodeData, Outcome, TaskContext
from calm.evaluation.trust import TrustRecorder
from calm.evaluation.zeroshot import ModelAnswers
from calm.features import HeadFeatures

Settings = dict[str, tuple[dict[str, Any], dict[str, Any]]]
"""Method name -> (estimator parameters, method options)."""


class Runner:
    """Fits and scores methods episode by episode, collecting results, confusion counts and notes."""

    def __init__(self, task: str, classes: list[str], answers: ModelAnswers | None, features: HeadFeatures,
                 settings: Settings, trust: bool = False) -> None:
        self.task = task
        self.classes = classes
        self.answers = answers
        self.features = features
        self.settings = settings
        self.trust = TrustRecorder(task, classes) if trust and task != "multilabel" else None
        self.context = TaskContext(task, classes, answers, self.trust is not None)
        self.strategies = {name: registry.get(name).strategy_class()(registry.get(name), self.context)
                           for name in settings}
        self.results: list[dict[str, Any]] = []
        self.confusion: dict[str, dict[int, np.ndarray]] = {}
        self.calm_weights: dict[int, list[np.ndarray]] = {}
        self._notes = Notes()

    def note(self, caught: list[warnings.WarningMessage], method: str | None = None, shots: int | None = None) -> None:
        """Move caught warnings into the notes (grouped by kind, :class:`~calm.evaluation.notes.Notes`),
        as raised by ``method``'s fit at ``shots`` (None: by the run as a whole)."""
        for w in caught:
            self._notes.add(str(w.message), method, shots)
        caught.clear()

    def add_note(self, message: str) -> None:
        self._notes.add(message)

    @property
    def notes(self) -> list[str]:
        """The notes, one line per kind of warning."""
        return self._notes.lines()

    def episode(self, episode: Episode, shots: int, caught: list[warnings.WarningMessage], bar: Any = None) -> None:
        """Every method on one episode. A method that cannot run on it (too few shots to tune, a
        missing optional package ...) is reported as not evaluated, with the reason; the others go on."""
        support, query = episode
        data = EpisodeData(shots, episode.seed, support, query, self.features.select([i.id for i in support]),
                           self.features.select([i.id for i in query]))
        for name, (params, options) in self.settings.items():
            started = time.perf_counter()
            try:
                row = self.record(name, data, self.strategies[name].run(data, params, options), params)
            except (ValueError, ImportError) as error:
                row = {"metrics": {}, "error": str(error)}
                warnings.warn(f"not evaluated: {error}")
            self.results.append({"method": name, "shots": shots, "seed": episode.seed, "query_fold": episode.query_fold,
                                 "n_support": len(support), "n_query": len(query), **row,
                                 "seconds": round(time.perf_counter() - started, 4)})
            self.note(caught, name, shots)
            if bar is not None:
                bar.update(1)

    def merge(self, other: Runner) -> None:
        """Add what ``other`` (a runner of the same evaluation, on later episodes) collected, in the
        order a single runner would have: the same numbers, bit for bit, however episodes were shared out."""
        self.results += other.results
        for name, by_shots in other.confusion.items():
            mine = self.confusion.setdefault(name, {})
            for shots, counts in by_shots.items():
                mine[shots] = mine.get(shots, 0) + counts
        for shots, weights in other.calm_weights.items():
            self.calm_weights.setdefault(shots, []).extend(weights)
        self._notes.extend(other._notes)
        if self.trust is not None and other.trust is not None:
            for name, by_shots in other.trust.bins.items():
                for shots, bins in by_shots.items():
                    mine = self.trust.bins.setdefault(name, {}).setdefault(shots, {})
                    for key, binned in bins.items():
                        mine[key] = mine.get(key, 0) + binned

    def detached(self) -> Runner:
        """What :meth:`merge` takes, without the features and answers (small to send between processes)."""
        twin = copy.copy(self)
        twin.features, twin.answers, twin.strategies, twin.context = None, None, {}, None
        return twin

    # ---- recording what a strategy returned
    def record(self, name: str, data: EpisodeData, outcome: Outcome, params: dict[str, Any]) -> dict[str, Any]:
        """The result row's ``metrics`` (and the outcome's ``extra``, and ``trust`` where it ran) of one
        method on one episode; its confusion counts and the weights reports show are kept."""
        if outcome.multilabel is not None:
            return {"metrics": self.multilabel_metrics(data.y_true, *outcome.multilabel), **outcome.extra}
        if outcome.pred is None:  # no classifier: every query counts as wrong
            return {"metrics": self.score(data.y_true, [None] * len(data.query), None), **outcome.extra}
        row = {"metrics": self.score(data.y_true, outcome.pred, outcome.score), **outcome.extra}
        if outcome.calibrated is not None and self.trust is not None:
            method = registry.get(name)
            Xs, ys = outcome.fitted_on
            row["trust"] = self.trust.score(name, data.shots, data.seed, outcome.calibrated,
                                            lambda: method.make(**params), Xs, ys, data.Xq, data.y_true)
        if name == registry.FIGURE_METHOD and hasattr(outcome.fitted, "weights_"):
            self.calm_weights.setdefault(data.shots, []).append(_weights_by_class(outcome.fitted, self.classes))
        self.add_confusion(name, data.shots, data.y_true, outcome.pred)
        return row

    def score(self, y_true: list[Any], pred: list[Any], score: np.ndarray | None) -> dict[str, Any]:
        """Metrics of hard predictions (None: unmapped or no classifier), plus the EER of ``score``."""
        if self.task == "multilabel":
            decisions = metrics.multi_hot(pred, self.classes)
            return self.multilabel_metrics(y_true, decisions.astype(float), decisions)
        out = metrics.classification_summary(y_true, pred, labels=self.classes)
        del out["unmapped"]
        if score is not None:
            out["eer"] = metrics.eer(y_true, score, positive="bonafide")
        return out

    def multilabel_metrics(self, y_true: list[Any], scores: np.ndarray, decisions: np.ndarray) -> dict[str, Any]:
        """mAP over the labels present in the query, macro-F1 and the per-label F1."""
        targets = metrics.multi_hot(y_true, self.classes)
        f1 = metrics.per_label_f1(targets, decisions)
        present = targets.any(axis=0)
        return {"map": metrics.mean_average_precision(targets[:, present], scores[:, present]),
                "macro_f1": float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan"),
                "per_label_f1": {c: None if np.isnan(v) else float(v) for c, v in zip(self.classes, f1)}}

    def add_confusion(self, name: str, shots: int, y_true: list[Any], pred: list[Any]) -> None:
        if self.task != "multilabel":
            by_shots = self.confusion.setdefault(name, {})
            by_shots[shots] = by_shots.get(shots, 0) + metrics.confusion_matrix(y_true, pred, labels=self.classes)

    # ---- summaries
    def mean_calm_weights(self) -> tuple[int, np.ndarray] | None:
        """(shots, CALM's weights [K, C] averaged over seeds) at the largest shot count, if CALM ran."""
        if not self.calm_weights:
            return None
        shots = max(self.calm_weights)
        return shots, np.mean(self.calm_weights[shots], axis=0)

    def zero_shot_summary(self) -> dict[str, Any] | None:
        """The question, how answers mapped (by rule), and examples of unmappable ones."""
        if self.answers is None or not self.answers.greedy:
            return None
        matches = {i: self.context.match(i) for i in sorted(self.answers.greedy)}
        unmapped = [{"id": i, "answer": self.answers.greedy[i]} for i, m in matches.items() if m.label is None]
        return {"prompt": self.answers.prompt, "answered": len(matches), "unmapped": len(unmapped),
                "unmapped_examples": unmapped[:5], "rules": dict(Counter(m.rule for m in matches.values())),
                "failed": dict(self.answers.failed)}


def _weights_by_class(clf: Any, classes: list[str]) -> np.ndarray:
    """A classifier's ``weights_`` [K, C] with columns in the order of ``classes`` (zeros for a class it lacks)."""
    weights = np.zeros((clf.weights_.shape[0], len(classes)))
    column = {c: j for j, c in enumerate(clf.classes_.tolist())}
    for j, name in enumerate(classes):
        if name in column:
            weights[:, j] = clf.weights_[:, column[name]]
    return weights

"""The evaluation protocol: every method on the same few-shot episodes, scored per seed.

For each shot count K and seed, :func:`calm.data.episodes.episodes` draws a K-shot support set
and a query set disjoint from it (official folds or splits where the dataset has them). Every
method is fitted on the support only (tuned methods tune on the support only, by leave-one-out)
and scored on the query; :class:`~calm.evaluate.report.EvaluationReport` gives the mean and 95%
interval over seeds.

Tasks (detected from the labels unless given):

* ``multiclass``: one label per item; accuracy, macro-F1, balanced accuracy.
* ``spoof``: labels ``bonafide``/``spoof``; also the EER of a continuous score: the classifier's
  decision value for ``bonafide`` minus that for ``spoof`` (a monotone function of the bonafide
  probability for the soft-vote classifiers and the probe). Zero-shot text has no score, so no EER.
* ``multilabel``: tuple labels (AudioSet). Every label gets its own one-vs-rest classifier of the
  method, fitted on the support (positives: items that carry the label); its decision value
  scores the queries (mAP) and its prediction decides the label (per-label F1, macro-F1 = their mean).

Methods (:data:`METHODS`): the feature classifiers of :mod:`calm.classifiers`, and two that need
the model's answers (:class:`~calm.evaluate.zeroshot.ModelAnswers`, made by :func:`evaluate`):
``zero-shot`` (the greedy answer mapped to a class; unmappable answers count as wrong) and
``pseudo-label`` (CALM fitted on the support items the model itself labelled confidently; the
support's true labels are used only for the class-balanced draw that all methods share and to
report the pseudo-labels' accuracy).
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from calm.data.episodes import Episode, episodes
from calm.data.items import Item
from calm.evaluate import metrics
from calm.evaluate.answers import AnswerMatch, match_answer, warn_label_leaks
from calm.evaluate.report import EvaluationReport
from calm.evaluate.zeroshot import ModelAnswers, answer_prompt, generate_answers, pseudo_label
from calm.features import HeadFeatures

if TYPE_CHECKING:
    from calm.backbones.base import Backbone

TASKS = ("multiclass", "spoof", "multilabel")
SPOOF_LABELS = ("bonafide", "spoof")


@dataclass(frozen=True)
class Method:
    """A method of the evaluation: the :mod:`calm.classifiers` estimator it fits (by class name;
    None for zero-shot), its own ``options`` (parameters that are not the estimator's, with their
    defaults), whether it needs the model's answers, and estimator parameters it sets by default."""

    estimator: str | None
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    needs_model: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)

    def split(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``params`` as (estimator parameters, options with defaults filled in)."""
        options = {k: params.get(k, v) for k, v in self.options.items()}
        return {k: v for k, v in params.items() if k not in self.options}, options

    def make(self, **params: Any) -> Any:
        """A new, unfitted estimator with these parameters (others at their defaults)."""
        import calm.classifiers

        if self.estimator is None:
            raise ValueError(f"{self.description!r} fits no estimator")
        return getattr(calm.classifiers, self.estimator)(**{**self.defaults, **params})


METHODS: dict[str, Method] = {
    "zero-shot": Method(None, "greedy answer to a question naming every class, mapped to a class", needs_model=True),
    "sav": Method("SAVClassifier", "SAV: majority vote of the top-n heads (LOO head scores)"),
    "calm": Method("CALMClassifier", "CALM: class-conditional reliability-weighted soft vote (LOO reliability)"),
    "calm-tuned": Method("TunedCALMClassifier", "CALM with tau, tau_w, scheme, top_k chosen by LOO on the support"),
    "uniform": Method("UniformVoteClassifier", "ablation: soft vote with equal head weights"),
    "centroid": Method("ConcatCentroidClassifier", "ablation: nearest centroid on concatenated per-head cosines"),
    "topn-soft": Method("TopNSoftVoteClassifier", "ablation: equal-weight soft vote over SAV's top-n heads"),
    "agnostic": Method("ClassAgnosticCALMClassifier", "ablation: class-agnostic reliability weights"),
    "probe": Method("LogisticProbe", "logistic regression on all heads concatenated"),
    "probe-tuned": Method("TunedLogisticProbe", "logistic probe with C chosen by cross-validation on the support"),
    "sav-white": Method("SAVClassifier", "SAV on whitened heads", defaults={"geometry": "whitened"}),
    "calm-white": Method("CALMClassifier", "CALM on whitened heads", defaults={"geometry": "whitened"}),
    "calm-tuned-white": Method("TunedCALMClassifier", "tuned CALM, whitened heads", defaults={"geometry": "whitened"}),
    "auto": Method("DefaultClassifier", "the recommended method: soft vote of all whitened heads"),
    "pseudo-label": Method("CALMClassifier", "CALM fitted on the support clips the model labelled itself: majority "
                           "of sampled answers, kept when its share of the samples >= threshold",
                           {"threshold": 0.6}, needs_model=True),
}
"""Method name -> :class:`Method`, in the order reports list them."""

FEATURE_METHODS: tuple[str, ...] = tuple(name for name, m in METHODS.items() if not m.needs_model)
MODEL_METHODS: tuple[str, ...] = tuple(name for name, m in METHODS.items() if m.needs_model)


def detect_task(items: Sequence[Item]) -> str:
    """``multilabel`` if any label is a tuple, ``spoof`` if the labels are bonafide/spoof, else ``multiclass``."""
    labels = [i.label for i in items if i.label is not None]
    if any(isinstance(label, tuple) for label in labels):
        return "multilabel"
    return "spoof" if set(labels) == set(SPOOF_LABELS) else "multiclass"


def evaluate(
    backbone: Backbone,
    items: Sequence[Item],
    *,
    prompt: str,
    shots: Sequence[int] = (1, 5),
    seeds: int | Iterable[int] = 5,
    methods: Sequence[str] | None = None,
    task: str | None = None,
    batch_size: int = 8,
    store: Any = None,
    zero_shot: bool = True,
    pseudo_label: bool = True,
    progress: bool = True,
    query_fold: str | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    answer_template: str | None = None,
    samples: int = 5,
    temperature: float = 1.0,
    max_new_tokens: int = 16,
) -> EvaluationReport:
    """Extract once, then evaluate every method on the same episodes.

    Args:
        backbone: from :func:`calm.load_backbone`.
        items: labelled clips (see :func:`calm.load_dataset`).
        prompt: the feature prompt (it should name no classes; a label leak warns).
        shots, seeds, methods, task, query_fold, params: as in :func:`evaluate_features`;
            ``methods`` (default: every feature method) may also name ``zero-shot``/``pseudo-label``.
        batch_size, store: for :func:`calm.heads.extract` (a store makes reruns skip extraction).
        zero_shot, pseudo_label: add (True) or leave out (False) the methods that need the model.
        answer_template: the question both ask (default by task, see :func:`~calm.evaluate.zeroshot.answer_prompt`).
        samples, temperature: sampled answers per support clip for the pseudo-labels.
        max_new_tokens: answer length limit.

    Items whose files cannot be loaded are left out and listed in the report's ``failed``.
    """
    from calm.heads import extract  # torch: only where a model runs

    chosen = _resolve_methods(methods, zero_shot=zero_shot, pseudo_label=pseudo_label)
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]  # drawn twice below
    labelled = [i for i in items if i.label is not None]
    task = _check_task(task, labelled)
    warn_label_leaks(prompt, labelled)
    features = extract(backbone, labelled, prompt, batch_size=batch_size, store=store, on_error="record",
                       progress=progress, order="store")  # episodes select rows by id
    answers = None
    if any(METHODS[m].needs_model for m in chosen):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # evaluate_features draws the same episodes and records them
            plan = _plan(features, labelled, shots, seeds, query_fold)
        answers = ModelAnswers(answer_prompt(_classes(labelled), task, answer_template),
                               params={"template": answer_template, "max_new_tokens": max_new_tokens})
        by_id = {i.id: i for i in labelled}
        common = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
        if "zero-shot" in chosen:
            queries = [by_id[i] for i in _unique_ids(ep.query for eps in plan.values() for ep in eps)]
            greedy, failed = generate_answers(backbone, queries, answers.prompt, **common)
            answers.greedy = {item_id: texts[0] for item_id, texts in greedy.items()}
            answers.failed.update(failed)
        if "pseudo-label" in chosen:
            supports = [by_id[i] for i in _unique_ids(ep.support for eps in plan.values() for ep in eps)]
            answers.sampled, failed = generate_answers(backbone, supports, answers.prompt, samples=samples,
                                                       do_sample=True, temperature=temperature, **common)
            answers.failed.update(failed)
            answers.params.update(samples=samples, temperature=temperature)
    return evaluate_features(features, labelled, shots=shots, seeds=seeds, methods=chosen, task=task,
                             query_fold=query_fold, progress=progress, answers=answers, params=params)


def evaluate_features(
    features: HeadFeatures,
    items: Sequence[Item],
    *,
    shots: Sequence[int] = (1, 5),
    seeds: int | Iterable[int] = 5,
    methods: Sequence[str] | None = None,
    task: str | None = None,
    query_fold: str | None = None,
    progress: bool = False,
    answers: ModelAnswers | None = None,
    params: dict[str, dict[str, Any]] | None = None,
) -> EvaluationReport:
    """Evaluate methods on precomputed features (no model runs).

    Args:
        features: head features of the labelled items; items listed in ``features.failed`` are
            left out and reported.
        items: the dataset (labels, folds); unlabelled items are ignored.
        shots: support sizes per class (K).
        seeds: number of seeds (0..n-1) or the seeds themselves.
        methods: names from :data:`METHODS` (default: every feature method).
        task: ``multiclass``, ``spoof`` or ``multilabel`` (default: :func:`detect_task`).
        query_fold: hold out this fold as the query for every seed (default: the dataset's split,
            or folds rotating with the seed; see :mod:`calm.data.episodes`).
        progress: show a progress bar.
        answers: the model's answers, needed by ``zero-shot`` and ``pseudo-label``.
        params: method name -> parameters overriding its defaults (e.g. ``{"calm": {"tau": 0.1}}``).
    """
    chosen = _resolve_methods(methods)
    params = params or {}
    unknown = set(params) - set(METHODS)
    if unknown:
        raise ValueError(f"params for unknown method(s) {sorted(unknown)}; known: {list(METHODS)}")
    needing = [m for m in chosen if METHODS[m].needs_model]
    if needing and answers is None:
        raise ValueError(f"method(s) {needing} need the model's answers: use calm.evaluate.protocol.evaluate "
                         "(or pass answers=ModelAnswers(...))")
    labelled = [i for i in items if i.label is not None]
    task = _check_task(task, labelled)
    settings = {name: METHODS[name].split(params.get(name, {})) for name in chosen}
    runner = _Runner(task, _classes(labelled), answers, features)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = _plan(features, labelled, shots, seeds, query_fold)
        runner.note(caught, "episodes")
        steps = sum(len(eps) for eps in plan.values()) * len(chosen)
        with tqdm(total=steps, desc="evaluate", unit="fit", disable=not progress) as bar:
            for k, eps in plan.items():
                for episode in eps:
                    runner.episode(episode, k, settings, caught, bar)
    for message in runner.notes:
        warnings.warn(message, stacklevel=2)
    return EvaluationReport(
        task=task, classes=runner.classes, heads=features.heads,
        config=_config(features, labelled, plan, settings, task, answers),
        results=runner.results, confusion=runner.confusion, calm_weights=runner.mean_calm_weights(),
        zero_shot=runner.zero_shot_summary(), notes=runner.notes,
    )


# ------------------------------------------------------------------------------------ planning


def _resolve_methods(methods: Sequence[str] | None, *, zero_shot: bool | None = None,
                     pseudo_label: bool | None = None) -> list[str]:
    """Method names in :data:`METHODS` order; ``zero_shot``/``pseudo_label`` add or remove those."""
    names = list(FEATURE_METHODS) if methods is None else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    wanted = set(names)
    for name, switch in (("zero-shot", zero_shot), ("pseudo-label", pseudo_label)):
        if switch is True:
            wanted.add(name)
        elif switch is False:
            wanted.discard(name)
    if not wanted:
        raise ValueError("no methods to evaluate")
    return [m for m in METHODS if m in wanted]


def _check_task(task: str | None, items: Sequence[Item]) -> str:
    if not items:
        raise ValueError("no labelled items to evaluate")
    detected = detect_task(items)
    if task is None:
        return detected
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "spoof" and detected != "spoof":
        found = sorted({str(i.label) for i in items})[:5]
        raise ValueError(f"task 'spoof' needs exactly the labels {SPOOF_LABELS}, got {found}")
    if task != "multilabel" and detected == "multilabel":
        raise ValueError(f"task {task!r} needs one label per item, but some items have several")
    return task


def _labels(label: Any) -> tuple[str, ...]:
    """A label (class name or tuple of them) as a tuple."""
    return label if isinstance(label, tuple) else (label,)


def _classes(items: Sequence[Item]) -> list[str]:
    return sorted({c for i in items for c in _labels(i.label)})


def _unique_ids(groups: Iterable[list[Item]]) -> list[str]:
    """Sorted unique ids of the items in several groups."""
    return sorted({i.id for group in groups for i in group})


def _plan(features: HeadFeatures, items: Sequence[Item], shots: Iterable[int], seeds: int | Iterable[int],
          query_fold: str | None) -> dict[int, list[Episode]]:
    """Episodes per shot count (ascending) over the items that have features."""
    have = set(features.ids)
    missing = [i.id for i in items if i.id not in have and i.id not in features.failed]
    if missing:
        raise ValueError(f"{len(missing)} item(s) have no features and are not listed as failed, e.g. {missing[:3]}")
    usable = [i for i in items if i.id in have]
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    shot_list = sorted({int(k) for k in shots})
    if not seed_list or not shot_list:
        raise ValueError("need at least one shot count and one seed")
    plan = {}
    for k in shot_list:
        plan[k] = list(episodes(usable, k, seed_list, query_fold=query_fold))
        for ep in plan[k]:
            shared = {i.id for i in ep.support} & {i.id for i in ep.query}
            assert not shared, f"{k}-shot, seed {ep.seed}: support and query share {sorted(shared)[:3]}"
            if not ep.query:
                raise ValueError(f"{k}-shot, seed {ep.seed}: the query set is empty")
    return plan


# ------------------------------------------------------------------------------------ running


class _Runner:
    """Fits and scores methods episode by episode, collecting results, confusion counts and notes."""

    def __init__(self, task: str, classes: list[str], answers: ModelAnswers | None, features: HeadFeatures) -> None:
        self.task = task
        self.classes = classes
        self.answers = answers
        self.features = features
        self.results: list[dict[str, Any]] = []
        self.confusion: dict[str, dict[int, np.ndarray]] = {}
        self.calm_weights: dict[int, list[np.ndarray]] = {}
        self.notes: list[str] = []
        self._matches: dict[str, AnswerMatch] = {}

    def note(self, caught: list[warnings.WarningMessage], where: str) -> None:
        """Move caught warnings into the notes (each message once)."""
        for w in caught:
            message = f"{where}: {w.message}"
            if message not in self.notes:
                self.notes.append(message)
        caught.clear()

    def episode(self, episode: Episode, k: int, settings: dict[str, tuple[dict[str, Any], dict[str, Any]]],
                caught: list[warnings.WarningMessage], bar: Any) -> None:
        """Every method on one episode."""
        support, query = episode
        Xs = self.features.select([i.id for i in support])
        Xq = self.features.select([i.id for i in query])
        for name, (params, options) in settings.items():
            started = time.perf_counter()
            try:
                outcome = self.run(name, k, params, options, support, query, Xs, Xq)
            except ValueError as error:  # e.g. tuning by LOO needs 2 shots: report it, go on
                outcome = {"metrics": {}, "error": str(error)}
                warnings.warn(f"not evaluated: {error}")
            self.results.append({"method": name, "shots": k, "seed": episode.seed, "query_fold": episode.query_fold,
                                 "n_support": len(support), "n_query": len(query), **outcome,
                                 "seconds": round(time.perf_counter() - started, 4)})
            self.note(caught, f"{name} ({k}-shot)")
            bar.update(1)

    def run(self, name: str, k: int, params: dict[str, Any], options: dict[str, Any], support: list[Item],
            query: list[Item], Xs: HeadFeatures, Xq: HeadFeatures) -> dict[str, Any]:
        """One method on one episode: ``{"metrics": {...}, ...extras}``."""
        y_true = [i.label for i in query]
        if name == "zero-shot":
            return self._zero_shot(k, query, y_true)
        method = METHODS[name]
        ys: list[Any] = [i.label for i in support]
        extra: dict[str, Any] = {}
        if name == "pseudo-label":
            kept, ys, extra["pseudo"] = self._pseudo_labels(support, float(options["threshold"]))
            Xs = Xs.select(kept)
            if extra["pseudo"]["classes_kept"] < 2:
                extra["pseudo"]["note"] = "fewer than 2 classes kept: no classifier, every query counts as wrong"
                return {"metrics": self._score(y_true, [None] * len(query), None), **extra}
        if self.task == "multilabel":
            scores, decisions, skipped = self._one_vs_rest(method, params, Xs, ys, Xq)
            if skipped:
                extra["labels_without_classifier"] = skipped
            return {"metrics": self._multilabel_metrics(y_true, scores, decisions), **extra}
        clf = method.make(**params).fit(Xs, np.asarray(ys))
        pred = clf.predict(Xq).tolist()
        score = None
        if self.task == "spoof":
            score = _difference(clf, Xq, "bonafide", "spoof")
        if name == "calm":
            self.calm_weights.setdefault(k, []).append(_weights_by_class(clf, self.classes))
        self._add_confusion(name, k, y_true, pred)
        return {"metrics": self._score(y_true, pred, score), **extra}

    # ---- methods that use the model's answers
    def _match(self, item_id: str) -> AnswerMatch | None:
        """How the item's greedy answer maps (None: no answer)."""
        if item_id not in self._matches and item_id in self.answers.greedy:
            self._matches[item_id] = match_answer(self.answers.greedy[item_id], self.classes)
        return self._matches.get(item_id)

    def _zero_shot(self, k: int, query: list[Item], y_true: list[Any]) -> dict[str, Any]:
        matches = [self._match(i.id) for i in query]
        pred = [m.label if m is not None else None for m in matches]
        self._add_confusion("zero-shot", k, y_true, pred)
        return {"metrics": self._score(y_true, pred, None), "unmapped": sum(p is None for p in pred)}

    def _pseudo_labels(self, support: list[Item], threshold: float) -> tuple[list[str], list[Any], dict[str, Any]]:
        """Ids of the support items kept, their pseudo-labels, and what to report about them."""
        keep, labels, correct = [], [], 0
        for item in support:
            guess = pseudo_label(self.answers.sampled.get(item.id, []), self.classes)
            if guess.confident(threshold):
                keep.append(item.id)
                labels.append((guess.label,) if self.task == "multilabel" else guess.label)
                correct += guess.label in _labels(item.label)
        info = {"kept": len(keep), "support": len(support), "threshold": threshold,
                "label_accuracy": correct / len(keep) if keep else None,
                "classes_kept": len({c for y in labels for c in _labels(y)})}
        return keep, labels, info

    # ---- multilabel: one-vs-rest
    def _one_vs_rest(self, method: Method, params: dict[str, Any], Xs: HeadFeatures, ys: list[Any],
                     Xq: HeadFeatures) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Scores and 0/1 decisions [Nq, L]: per label, a yes/no classifier of the method."""
        scores = np.zeros((len(Xq), len(self.classes)))
        decisions = np.zeros((len(Xq), len(self.classes)), dtype=np.int8)
        skipped = []
        for j, name in enumerate(self.classes):
            target = np.array(["yes" if name in _labels(y) else "no" for y in ys])
            if len(set(target.tolist())) < 2:
                skipped.append(name)
                continue
            clf = method.make(**params).fit(Xs, target)
            scores[:, j] = _difference(clf, Xq, "yes", "no")
            decisions[:, j] = clf.predict(Xq) == "yes"
        return scores, decisions, skipped

    def _multilabel_metrics(self, y_true: list[Any], scores: np.ndarray, decisions: np.ndarray) -> dict[str, Any]:
        """mAP over the labels present in the query, macro-F1 and the per-label F1."""
        targets = metrics.multi_hot(y_true, self.classes)
        f1 = metrics.per_label_f1(targets, decisions)
        present = targets.any(axis=0)
        return {"map": metrics.mean_average_precision(targets[:, present], scores[:, present]),
                "macro_f1": float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan"),
                "per_label_f1": {c: None if np.isnan(v) else float(v) for c, v in zip(self.classes, f1)}}

    # ---- scoring
    def _score(self, y_true: list[Any], pred: list[Any], score: np.ndarray | None) -> dict[str, Any]:
        """Metrics of hard predictions (None: unmapped or no classifier), plus the EER of ``score``."""
        if self.task == "multilabel":
            decisions = metrics.multi_hot(pred, self.classes)
            return self._multilabel_metrics(y_true, decisions.astype(float), decisions)
        out = metrics.classification_summary(y_true, pred, labels=self.classes)
        del out["unmapped"]
        if score is not None:
            out["eer"] = metrics.eer(y_true, score, positive="bonafide")
        return out

    def _add_confusion(self, name: str, k: int, y_true: list[Any], pred: list[Any]) -> None:
        if self.task != "multilabel":
            by_shots = self.confusion.setdefault(name, {})
            by_shots[k] = by_shots.get(k, 0) + metrics.confusion_matrix(y_true, pred, labels=self.classes)

    def mean_calm_weights(self) -> tuple[int, np.ndarray] | None:
        """(shots, CALM's weights [K, C] averaged over seeds) at the largest shot count, if CALM ran."""
        if not self.calm_weights:
            return None
        k = max(self.calm_weights)
        return k, np.mean(self.calm_weights[k], axis=0)

    def zero_shot_summary(self) -> dict[str, Any] | None:
        """The question, how answers mapped (by rule), and examples of unmappable ones."""
        if self.answers is None or not self.answers.greedy:
            return None
        matches = {i: self._match(i) for i in sorted(self.answers.greedy)}
        unmapped = [{"id": i, "answer": self.answers.greedy[i]} for i, m in matches.items() if m.label is None]
        return {"prompt": self.answers.prompt, "answered": len(matches), "unmapped": len(unmapped),
                "unmapped_examples": unmapped[:5], "rules": dict(Counter(m.rule for m in matches.values())),
                "failed": dict(self.answers.failed)}


def _difference(clf: Any, X: HeadFeatures, positive: str, negative: str) -> np.ndarray:
    """A continuous score for ``positive``: its decision value minus ``negative``'s."""
    decision = np.asarray(clf.decision_function(X), dtype=np.float64)
    column = {c: j for j, c in enumerate(clf.classes_.tolist())}
    return decision[:, column[positive]] - decision[:, column[negative]]


def _weights_by_class(clf: Any, classes: list[str]) -> np.ndarray:
    """CALM's ``weights_`` [K, C] with columns in the order of ``classes`` (zeros for a class it lacks)."""
    weights = np.zeros((clf.weights_.shape[0], len(classes)))
    column = {c: j for j, c in enumerate(clf.classes_.tolist())}
    for j, name in enumerate(classes):
        if name in column:
            weights[:, j] = clf.weights_[:, column[name]]
    return weights


# ------------------------------------------------------------------------------------ configuration


def constant_heads(features: HeadFeatures, chunk: int = 256) -> list[int]:
    """Heads that do not vary over the items, by the classifiers' rule: the mean of the items' unit
    vectors has length >= 1 - :data:`calm.classifiers.CONSTANT_TOL` (all point the same way), or
    every vector is zero. The classifiers leave such heads out of every vote."""
    from calm.classifiers import CONSTANT_TOL

    n, k, _ = features.X.shape
    if n == 0:
        return []
    resultant = np.zeros(features.X.shape[1:])
    nonzero = np.zeros(k, dtype=bool)
    for start in range(0, n, chunk):
        x = np.asarray(features.X[start:start + chunk], dtype=np.float64)
        norms = np.linalg.norm(x, axis=-1, keepdims=True)
        resultant += np.divide(x, norms, out=np.zeros_like(x), where=norms > 0).sum(axis=0)
        nonzero |= (norms[..., 0] > 0).any(axis=0)
    length = np.linalg.norm(resultant, axis=-1) / n
    return np.flatnonzero((length >= 1.0 - CONSTANT_TOL) | ~nonzero).tolist()


def _config(features: HeadFeatures, items: Sequence[Item], plan: dict[int, list[Episode]],
            settings: dict[str, tuple[dict[str, Any], dict[str, Any]]], task: str, answers: ModelAnswers | None
            ) -> dict[str, Any]:
    """Everything that produced the numbers."""
    import calm

    used = [i for i in items if i.id in set(features.ids)]
    methods = {}
    for name, (params, options) in settings.items():
        method = METHODS[name]
        entry: dict[str, Any] = {"description": method.description, "estimator": method.estimator}
        if method.estimator is not None:
            entry["params"] = method.make(**params).get_params()
        entry.update(options)
        methods[name] = entry
    first = next(iter(plan.values()))
    return {
        "calm_version": calm.__version__,
        "task": task,
        "fingerprint": features.fingerprint,
        "prompt": features.fingerprint.get("prompt"),
        "answer_prompt": answers.prompt if answers is not None else None,
        "generation": answers.params if answers is not None else None,
        "shots": list(plan),
        "seeds": [ep.seed for ep in first],
        "methods": methods,
        "protocol": {
            "name": first[0].protocol,
            "support_query_disjoint": all({i.id for i in ep.support}.isdisjoint(i.id for i in ep.query)
                                          for eps in plan.values() for ep in eps),
            "episodes": [{"shots": k, "seed": ep.seed, "query_fold": ep.query_fold, "n_support": len(ep.support),
                          "n_query": len(ep.query), "support": sorted(i.id for i in ep.support)}
                         for k, eps in plan.items() for ep in eps],
        },
        "counts": {"items": len(items), "evaluated": len(used), "failed": len(features.failed),
                   "classes": dict(sorted(Counter(c for i in used for c in _labels(i.label)).items()))},
        "failed": dict(features.failed),
        "heads": {"count": len(features.heads), "head_dim": int(features.X.shape[2]),
                  "constant": [features.heads.label(k) for k in constant_heads(features)]},
    }

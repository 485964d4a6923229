"""The evaluation protocol: every method on the same few-shot episodes, scored per seed.

For each shot count K and seed, :func:`calm.data.episodes.episodes` draws a K-shot support set
and a query set disjoint from it (official folds or splits where the dataset has them). Every
method is fitted on the support only (tuned methods tune on the support only, by leave-one-out)
and scored on the query; :class:`~calm.evaluation.report.EvaluationReport` gives the mean and 95%
interval over seeds.

Tasks (detected from the labels unless given):

* ``multiclass``: one label per item; accuracy, macro-F1, balanced accuracy.
* ``spoof``: labels ``bonafide``/``spoof``; also the EER of a continuous score: the classifier's
  decision value for ``bonafide`` minus that for ``spoof`` (a monotone function of the bonafide
  probability for the soft-vote classifiers and the probe). Zero-shot text has no score, so no EER.
* ``multilabel``: tuple labels (AudioSet). Every label gets its own one-vs-rest classifier of the
  method, fitted on the support (positives: items that carry the label); its decision value
  scores the queries (mAP) and its prediction decides the label (per-label F1, macro-F1 = their mean).

Methods (the registry, :mod:`calm.methods`): the feature classifiers of :mod:`calm.classifiers`, and two
that need a chat model's answers (:class:`~calm.evaluation.zeroshot.ModelAnswers`, made by :func:`evaluate`):
``zero-shot`` (the greedy answer mapped to a class; unmappable answers count as wrong) and
``pseudo-label`` (CALM fitted on the support items the model itself labelled confidently; the
support's true labels are used only for the class-balanced draw that all methods share and to
report the pseudo-labels' accuracy). On a backbone that answers no questions (Whisper) they are
skipped, with a note.

Trust (``trust=True``, the default): every single-label method is also wrapped in
:class:`~calm.classifiers.Calibrated` (calibrated from its support alone) and scored for
calibration, 90% prediction sets and, on multiclass tasks, open-set rejection; see
:mod:`calm.evaluation.trust` for which metrics apply to which task.

Identical clips (same content hash) never sit on both sides of an episode: a query that duplicates
a support clip is left out, with a note.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from tqdm.auto import tqdm

from calm import methods as registry
from calm.data.conflicts import check_label_conflicts
from calm.data.items import Item
from calm.errors import InputError
from calm.config import configured
from calm.evaluation.answers import warn_label_leaks
from calm.evaluation.config import EvaluationConfig
from calm.evaluation.planning import (check_evaluation, check_task, classes_of, duplicate_groups, plan, quiet_plan,
                                      resolve_methods)
from calm.evaluation.provenance import configuration
from calm.evaluation.report import EvaluationReport
from calm.evaluation.runner import Runner
from calm.evaluation.workers import run_units
from calm.evaluation.zeroshot import GenerationConfig, ModelAnswers, answer_prompt, generate_answers
from calm.features import HeadFeatures
from calm.heads import extract, item_content

if TYPE_CHECKING:
    from calm.backbones.base import Backbone


def evaluate(backbone: Backbone, items: Sequence[Item], *, prompt: str, config: EvaluationConfig | None = None,
             store: Any = None, progress: bool = True, **options: Any) -> EvaluationReport:
    """Extract once, then evaluate every method on the same episodes.

    Args:
        backbone: from :func:`calm.load_backbone`.
        items: labelled clips (see :func:`calm.load_dataset`).
        prompt: the feature prompt (it should name no classes; a label leak warns).
        config: how the evaluation runs (:class:`~calm.evaluation.config.EvaluationConfig`), or
            leave it out and give its fields as keyword ``options`` (``shots=(1, 5)``, ``seeds=5``,
            ``methods=...``, ``zero_shot=False`` ...). ``methods`` (default: every feature method)
            may also name ``zero-shot``/``pseudo-label``; ``zero_shot`` and ``pseudo_label`` add
            (True, the default) or leave out (False) the methods that need a chat model: on a
            backbone that answers no questions they are skipped with a note either way.
        store: for :func:`calm.heads.extract` (a directory or an open feature store: reruns skip extraction).
        progress: show progress bars.

    Items whose files cannot be loaded are left out and listed in the report's ``failed``.
    """
    config = configured(EvaluationConfig, config, options, "evaluate")
    chosen = resolve_methods(config.methods, config.switches())
    notes: list[str] = []
    chat = [m for m in chosen if registry.get(m).needs_chat_model]
    if chat and not backbone.answers_questions:
        chosen = [m for m in chosen if m not in chat]
        notes.append(f"skipped {', '.join(chat)}: they need a chat model's answers, and {backbone.family} "
                     "backbones answer no questions")
        if not chosen:
            raise InputError(f"nothing to evaluate: {', '.join(chat)} need a chat model (e.g. Qwen2-Audio), "
                             f"not {backbone.family}")
    config = replace(config, methods=tuple(chosen), seeds=tuple(config.seed_list()))
    labelled = [i for i in items if i.label is not None]
    task = check_evaluation(labelled, shots=config.shots, seeds=config.seeds, methods=chosen, task=config.task,
                            query_fold=config.query_fold)
    config = replace(config, task=task)
    warn_label_leaks(prompt, labelled)
    check_label_conflicts(labelled)  # one file under two labels: refused; two identical files: a warning
    features = extract(backbone, labelled, prompt, batch_size=config.batch_size, store=store, on_error="record",
                       progress=progress, order="store")  # episodes select rows by id
    unhashed = [i for i in labelled if i.id not in features.failed and i.id not in features.content]
    content = {**item_content(unhashed), **features.content}  # the store's hashes are not read again
    answers = None
    if any(registry.get(m).needs_chat_model for m in chosen):
        episodes_plan = quiet_plan(features, labelled, config.shots, config.seeds, config.query_fold, content)
        answers = _model_answers(backbone, labelled, episodes_plan, config, progress)
    return evaluate_features(features, labelled, config=config, progress=progress, answers=answers, content=content,
                             notes=notes)


def _model_answers(backbone: Backbone, labelled: list[Item], episodes_plan: dict, config: EvaluationConfig,
                   progress: bool) -> ModelAnswers:
    """The answers the chosen methods' strategies read (:attr:`EstimatorStrategy.answers`): greedy
    answers of the queries (zero-shot), sampled answers of the supports (pseudo-labels)."""
    read = {registry.get(m).strategy_class().answers for m in config.methods}
    template = config.answer_template
    answers = ModelAnswers(answer_prompt(classes_of(labelled), config.task, template),
                           params={"template": template, "max_new_tokens": config.max_new_tokens})
    by_id = {i.id: i for i in labelled}

    def unique(side: str) -> list[Item]:
        return [by_id[i] for i in sorted({item.id for eps in episodes_plan.values() for ep in eps
                                           for item in getattr(ep, side)})]

    run = dict(batch_size=config.batch_size, progress=progress)
    if "greedy" in read:
        greedy, failed = generate_answers(backbone, unique("query"), answers.prompt,
                                          GenerationConfig(max_new_tokens=config.max_new_tokens), **run)
        answers.greedy = {item_id: texts[0] for item_id, texts in greedy.items()}
        answers.failed.update(failed)
    if "sampled" in read:
        sampling = GenerationConfig(samples=config.samples, do_sample=True, temperature=config.temperature,
                                    max_new_tokens=config.max_new_tokens)
        answers.sampled, failed = generate_answers(backbone, unique("support"), answers.prompt, sampling, **run)
        answers.failed.update(failed)
        answers.params.update(samples=config.samples, temperature=config.temperature)
    return answers


def evaluate_features(features: HeadFeatures, items: Sequence[Item], *, config: EvaluationConfig | None = None,
                      progress: bool = False, answers: ModelAnswers | None = None,
                      content: Mapping[str, str] | None = None, notes: Sequence[str] = (),
                      **options: Any) -> EvaluationReport:
    """Evaluate methods on precomputed features (no model runs).

    Args:
        features: head features of the labelled items; items listed in ``features.failed`` are
            left out and reported.
        items: the dataset (labels, folds); unlabelled items are ignored.
        config: how the evaluation runs (:class:`~calm.evaluation.config.EvaluationConfig`: shots,
            seeds, methods, task, query fold, parameters, trust, workers), or leave it out and give
            its fields as keyword ``options`` (``shots=(1, 3), seeds=3, methods=["calm"]`` ...).
            Its ``zero_shot``/``pseudo_label`` switches are :func:`evaluate`'s, unused here.
        progress: show a progress bar.
        answers: the model's answers, needed by ``zero-shot`` and ``pseudo-label``.
        content: item id -> content hash; identical clips are kept on one side of every episode.
        notes: notes to start the report's notes with.
    """
    config = configured(EvaluationConfig, config, options, "evaluate_features")
    chosen = resolve_methods(config.methods)
    params = config.params
    for name in params:
        registry.get(name)
    needing = [m for m in chosen if registry.get(m).needs_chat_model]
    if needing and answers is None:
        raise InputError(f"method(s) {needing} need the model's answers: use calm.evaluate "
                         "(or pass answers=ModelAnswers(...))")
    labelled = [i for i in items if i.label is not None]
    task = check_task(config.task, labelled)
    config = replace(config, methods=tuple(chosen), task=task)
    settings = {name: registry.get(name).split(params.get(name, {})) for name in chosen}
    runner_args = (task, classes_of(labelled), answers, features, settings, config.trust)
    runner = Runner(*runner_args)
    for message in notes:
        runner.add_note(message)
    if content is not None:
        groups = duplicate_groups({i.id: content[i.id] for i in labelled if i.id in content})
        if groups:
            runner.add_note(f"{len(groups)} group(s) of items have identical audio, e.g. {groups[0][:3]}; "
                            "they are kept on one side of every episode")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        episodes_plan = plan(features, labelled, config.shots, config.seeds, config.query_fold, content)
        for w in caught:
            runner.add_note(f"episodes: {w.message}")
        caught.clear()
    units = [(shots_per_class, episode) for shots_per_class, eps in episodes_plan.items() for episode in eps]
    with tqdm(total=len(units) * len(chosen), desc="evaluate", unit="fit", disable=not progress) as bar:
        run_units(runner, runner_args, units, config.workers, bar)
    for message in runner.notes:
        warnings.warn(message, stacklevel=2)
    return EvaluationReport(
        task=task, classes=runner.classes, heads=features.heads,
        config=configuration(features, labelled, episodes_plan, settings, answers, config),
        results=runner.results, confusion=runner.confusion, calm_weights=runner.mean_calm_weights(),
        zero_shot=runner.zero_shot_summary(), notes=runner.notes,
        reliability=runner.trust.largest_shot_bins() if runner.trust is not None else {},
    )

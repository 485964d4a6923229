"""Fit a classifier on your own labelled clips, and label new files with it.

    >>> backbone = calm.load_backbone("Qwen/Qwen2-Audio-7B-Instruct")
    >>> clf = fit_classifier(backbone, calm.load_dataset("my_clips/"), prompt="What sound is this?")
    >>> calm.classifiers.save(clf, "clf.safetensors")       # heads and fingerprint recorded at fit
    >>> rows = predict_files(backbone, calm.classifiers.load("clf.safetensors"), ["new.wav"])
    >>> rows = predict_files(backbone, clf, ["new.wav"], reject=True, sets=0.9)  # "unknown", prediction sets

:func:`fit_classifier` calibrates by default (:class:`~calm.classifiers.Calibrated`): the
probabilities are calibrated on the support set, and rejection and prediction sets are available.

The classifier records the feature fingerprint (model, revision, dtype, prompt, sites) it was fit
on; :func:`predict_files` reads the prompt from it and refuses a backbone that would produce other
features.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from calm import methods as registry
from calm.backbones import loading
from calm.backbones.base import Backbone
from calm.backbones.options import BackboneOptions
from calm.classifiers.conformal import warn_large_sets
from calm.classifiers.threads import one_thread
from calm.classifiers.trust import Calibrated, check_settings
from calm.classifiers.typicality import ShiftWarning, shift_check
from calm.data.conflicts import check_label_conflicts
from calm.data.items import Item
from calm.data.loaders import media_item
from calm.evaluation import metrics
from calm.evaluation.answers import warn_label_leaks
from calm.fingerprint import check_fingerprint
from calm.heads import extract, feature_fingerprint, media_path
from calm.media import duration


@dataclass(frozen=True)
class Prediction:
    """One file's result: ``label`` and per-class ``probabilities``, or ``error``, why the file
    could not be read (label None).

    With rejection, ``label`` may be the unknown label and ``score`` is the open-set score (higher:
    more like a known class); with prediction sets, ``prediction_set`` lists the set's classes.
    With a calibrated classifier, ``typicality`` says how much the clip looks like the support
    clips (a conformal p-value; <= 0.1: farther from all of them than they are from each other).
    """

    path: str
    label: str | None
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    score: float | None = None
    prediction_set: tuple[str, ...] | None = None
    typicality: float | None = None


def fit_classifier(
    backbone: Backbone,
    items: Sequence[Item],
    prompt: str,
    method: str = registry.DEFAULT_METHOD,
    *,
    batch_size: int = 8,
    store: Any = None,
    on_error: str = "raise",
    progress: bool = False,
    calibrate: bool = True,
    target_frr: float = 0.05,
    **params: Any,
) -> Any:
    """Extract features of the labelled ``items`` under ``prompt`` and fit ``method`` on all of them.

    Args:
        method: a registered feature method (:mod:`calm.methods`: ``calm``, ``sav``, ``calm-tuned``,
            ``probe`` ...); default :data:`calm.methods.DEFAULT_METHOD`.
        batch_size, store, on_error, progress: as in :func:`calm.heads.extract` (with
            ``on_error="record"`` unreadable clips are left out, with a warning naming them).
        calibrate: wrap the estimator in :class:`~calm.classifiers.Calibrated` (calibrated
            probabilities, rejection at ``target_frr``, prediction sets), fitted on these items.
        params: the estimator's parameters (e.g. ``tau=0.1``).

    Returns:
        The fitted estimator; it carries ``head_index_``, ``fingerprint_`` (with the prompt) and
        ``support_seconds_`` (the support clips' lengths, from which ``calm.scan`` sizes its
        windows), so ``calm.classifiers.save(clf, path)`` records them.
    """
    check_fit(method, params, calibrate, target_frr)
    labelled = labelled_items(items, stacklevel=3)
    warn_label_leaks(prompt, labelled)
    check_label_conflicts(labelled)  # one file under two labels: refused; two identical files: a warning
    features = extract(backbone, labelled, prompt, batch_size=batch_size, store=store, on_error=on_error,
                       progress=progress, order="store")
    if features.failed:
        first = next(iter(sorted(features.failed.items())))
        warnings.warn(f"{len(features.failed)} clip(s) could not be loaded and were left out, e.g. {first[0]}: "
                      f"{first[1]}", stacklevel=2)
    label = {i.id: i.label for i in labelled}
    estimator = registry.get(method).make(**params)
    if calibrate:
        estimator = Calibrated(estimator, target_frr=target_frr)
    with one_thread():  # the model above ran on every core; the estimator's small products are faster on one
        fitted = estimator.fit(features, [label[i] for i in features.ids])
    items_by_id = {i.id: i for i in labelled}
    fitted.support_seconds_ = [round(duration(media_path(items_by_id[i])), 3) for i in features.ids]  # calm scan
    return fitted


def check_fit(method: str, params: Mapping[str, Any], calibrate: bool = True, target_frr: float = 0.05) -> None:
    """What :func:`fit_classifier` checks before any work: the method fits an estimator, its
    parameters' names and values, and the calibration's rejection rate (ValueError naming them)."""
    if method not in registry.names(feature_only=True):
        raise ValueError(f"method must be one of {registry.names(feature_only=True)}, got {method!r}")
    registry.get(method).check_params(params)
    if calibrate:
        defaults = Calibrated(None, target_frr=target_frr)
        check_settings(defaults.target_frr, defaults.open_score, defaults.n_folds)


def labelled_items(items: Sequence[Item], stacklevel: int = 2) -> list[Item]:
    """The items a classifier is fit on: those with one label (a warning counts those without
    one); ValueError when none has a label or some have several."""
    labelled = [i for i in items if i.label is not None]
    if not labelled:
        raise ValueError(f"none of the {len(items)} item(s) has a label: a CSV needs a 'label' (or 'class') column "
                         "with a value per row, a folder one subfolder per class")
    unlabelled = [i.id for i in items if i.label is None]
    if unlabelled:
        warnings.warn(f"{len(unlabelled)} of {len(items)} item(s) have no label and are left out, e.g. "
                      f"{', '.join(unlabelled[:3])}", stacklevel=stacklevel)
    multi = [i.id for i in labelled if isinstance(i.label, tuple)]
    if multi:
        raise ValueError(f"fit takes one label per item; {len(multi)} item(s) have several, e.g. {multi[0]!r}")
    return labelled


def load_backbone_for(classifier: Any, model: str | None = None, *, store: Any = None, prompt: str | None = None,
                      **options: Any) -> Backbone:
    """The backbone a saved classifier was fit with: its model and the options recorded in its
    fingerprint (dtype, Whisper's encoder window, compile). ``model`` (a path or name of the same
    model) and ``options`` (device, fast ...) override; a backbone that would give other features
    is refused later, by :func:`predict_files`. With a feature store root ``store`` that already
    holds features of this model and prompt (default: the classifier's), the weights load only
    when a file is not in it (:func:`calm.backbones.loading.load_backbone_deferred`)."""
    recorded = getattr(classifier, "fingerprint_", None) or {}
    name = model or recorded.get("model_id")
    if not name:
        raise ValueError("the classifier records no model (fit on plain arrays?); name one (calm predict --model)")
    from_file = BackboneOptions.recorded_in(recorded)
    chosen = BackboneOptions(**{**from_file, **{k: v for k, v in options.items() if v is not None}})
    prompt = prompt or recorded.get("prompt")
    if store is not None and prompt is not None:
        return loading.load_backbone_deferred(name, chosen, store=store, prompt=prompt)
    return loading.load_backbone(name, chosen)


def predict_files(
    backbone: Backbone,
    classifier: Any,
    paths: Sequence[str | os.PathLike],
    prompt: str | None = None,
    *,
    batch_size: int = 8,
    store: Any = None,
    on_error: str = "raise",
    progress: bool = False,
    reject: bool = False,
    unknown_label: str = "unknown",
    sets: float | None = None,
) -> list[Prediction]:
    """Label audio (or video) files with a fitted classifier, one :class:`Prediction` per path, in order.

    Args:
        classifier: fitted by :func:`fit_classifier` (or loaded with :func:`calm.classifiers.load`).
        prompt: default: the one in the classifier's fingerprint. Features under another prompt
            or from another backbone than the classifier's raise ValueError naming both.
        store: a feature store root (or open store), as in :func:`calm.heads.extract`: files
            already in it are not run again, new ones are added (keyed by path and content).
        on_error: ``"raise"``: a file that cannot be loaded raises an error naming it;
            ``"record"``: its row has ``error`` set and no label (never dropped).
        reject: label a file ``unknown_label`` when its open-set score is below the classifier's
            threshold (the row stays, with its score and probabilities).
        sets: a coverage level (e.g. 0.9): also give each file's conformal prediction set.
        Rejection and sets need a calibrated classifier (:class:`~calm.classifiers.Calibrated`).

    A calibrated classifier also gives each file its typicality and checks the files, as a batch,
    against its support set: when they do not look like it, a :class:`ShiftWarning` says so,
    since the calibrated probabilities, rejection rate and set coverage assume clips like the support.
    """
    if (reject or sets is not None) and not hasattr(classifier, "predict_open"):
        raise ValueError("rejection and prediction sets need a calibrated classifier; refit it with calm fit "
                         "(which calibrates by default) or wrap it in calm.classifiers.Calibrated")
    recorded = getattr(classifier, "fingerprint_", None) or {}
    if prompt is None:
        if "prompt" not in recorded:
            raise ValueError("the classifier records no prompt (fit on plain arrays?); pass prompt= "
                             "(calm predict --prompt)")
        prompt = recorded["prompt"]
    if recorded:
        check_fingerprint(recorded, feature_fingerprint(backbone, prompt), "the classifier")
    items = [media_item(p, Path(p), None) for p in dict.fromkeys(str(p) for p in paths)]  # id: the path
    features = extract(backbone, items, prompt, batch_size=batch_size, store=store, on_error=on_error,
                       progress=progress)
    rows: dict[str, Prediction] = {}
    if len(features):
        with one_thread():  # as in fit_classifier: the model ran on every core, the classifier's products need one
            labels = classifier.predict(features)
            probabilities = classifier.predict_proba(features)
            scores = [None] * len(labels)
            if reject:
                labels, scores = classifier.predict_open(features, unknown=unknown_label)
            members = [None] * len(labels)
            if sets is not None:
                members = [tuple(str(c) for c in s) for s in classifier.predict_sets(features, sets)]
                warn_large_sets(classifier, members, sets)
            typical = _typicality(classifier, features)
            names = [str(c) for c in classifier.classes_]
            columns = zip(features.ids, labels, probabilities, scores, members, typical)
            for item_id, label, p, score, in_set, t in columns:
                rows[item_id] = Prediction(item_id, str(label), {c: float(v) for c, v in zip(names, p)},
                                           score=None if score is None else float(score), prediction_set=in_set,
                                           typicality=None if t is None else float(t))
    for item_id, reason in features.failed.items():
        rows[item_id] = Prediction(item_id, None, {}, reason.removeprefix(f"{item_id}: "))
    return [rows[str(p)] for p in paths]


def score_predictions(rows: Sequence[Prediction], truth: Mapping[str, Any]) -> dict[str, Any]:
    """How predictions compare with known labels (``truth``: path -> label), over the readable
    rows with a label: ``accuracy``, ``macro_f1`` (mean F1 of the true classes; a rejected clip
    counts as wrong), ``confusion`` [C, C] (row: true class, column: predicted, in the order of
    ``classes``: the true and predicted labels, sorted), ``n`` (rows scored) and ``unreadable``
    (rows with an error, not scored)."""
    scored = [row for row in rows if row.error is None and truth.get(row.path) is not None]
    if not scored:
        raise ValueError("no readable file has a label to compare with")
    y_true = [str(truth[row.path]) for row in scored]
    y_pred = [row.label for row in scored]
    classes = sorted(set(y_true) | set(y_pred))
    return {"accuracy": metrics.accuracy(y_true, y_pred),
            "macro_f1": metrics.macro_f1(y_true, y_pred, sorted(set(y_true))),
            "confusion": metrics.confusion_matrix(y_true, y_pred, classes), "classes": classes, "n": len(scored),
            "unreadable": sum(row.error is not None for row in rows)}


def _typicality(classifier: Any, features: Any) -> list[float | None]:
    """Each clip's typicality (None for a classifier without a support sketch), with a
    :class:`ShiftWarning` when the clips as a batch do not look like the support set."""
    if getattr(classifier, "support_sketch_", None) is None:  # not calibrated, or saved before the sketch
        return [None] * len(features)
    p_values = classifier.typicality(features)
    check = shift_check(p_values, len(classifier.support_sketch_))
    if check.shifted:
        warnings.warn(check.message(), ShiftWarning, stacklevel=3)
    return p_values.tolist()

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
from typing import Any, Sequence

from calm.backbones.base import Backbone
from calm.data.items import Item
from calm.data.loaders import media_item
from calm.evaluate.answers import warn_label_leaks
from calm.evaluate.protocol import FEATURE_METHODS, METHODS
from calm.heads import extract, feature_fingerprint


@dataclass(frozen=True)
class Prediction:
    """One file's result: ``label`` and per-class ``probabilities``, or ``error`` (label None).

    With rejection, ``label`` may be the unknown label and ``score`` is the open-set score (higher:
    more like a known class); with prediction sets, ``prediction_set`` lists the set's classes.
    """

    path: str
    label: str | None
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    score: float | None = None
    prediction_set: tuple[str, ...] | None = None


def fit_classifier(
    backbone: Backbone,
    items: Sequence[Item],
    prompt: str,
    method: str = "calm",
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
        method: a feature method of :data:`calm.evaluate.protocol.METHODS` (``calm``, ``sav``,
            ``calm-tuned``, ``probe`` ...).
        batch_size, store, on_error, progress: as in :func:`calm.heads.extract` (with
            ``on_error="record"`` unreadable clips are left out, with a warning naming them).
        calibrate: wrap the estimator in :class:`~calm.classifiers.Calibrated` (calibrated
            probabilities, rejection at ``target_frr``, prediction sets), fitted on these items.
        params: the estimator's parameters (e.g. ``tau=0.1``).

    Returns:
        The fitted estimator; it carries ``head_index_`` and ``fingerprint_`` (with the prompt),
        so ``calm.classifiers.save(clf, path)`` records them.
    """
    if method not in FEATURE_METHODS:
        raise ValueError(f"method must be one of {list(FEATURE_METHODS)}, got {method!r}")
    labelled = [i for i in items if i.label is not None]
    if not labelled:
        raise ValueError("no labelled items to fit on")
    multi = [i.id for i in labelled if isinstance(i.label, tuple)]
    if multi:
        raise ValueError(f"fit takes one label per item; {len(multi)} item(s) have several, e.g. {multi[0]!r}")
    warn_label_leaks(prompt, labelled)
    features = extract(backbone, labelled, prompt, batch_size=batch_size, store=store, on_error=on_error,
                       progress=progress, order="store")
    if features.failed:
        first = next(iter(sorted(features.failed.items())))
        warnings.warn(f"{len(features.failed)} clip(s) could not be loaded and were left out, e.g. {first[0]}: "
                      f"{first[1]}", stacklevel=2)
    label = {i.id: i.label for i in labelled}
    estimator = METHODS[method].make(**params)
    if calibrate:
        from calm.classifiers import Calibrated

        estimator = Calibrated(estimator, target_frr=target_frr)
    return estimator.fit(features, [label[i] for i in features.ids])


def predict_files(
    backbone: Backbone,
    classifier: Any,
    paths: Sequence[str | os.PathLike],
    prompt: str | None = None,
    *,
    batch_size: int = 8,
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
        on_error: ``"raise"``: a file that cannot be loaded raises an error naming it;
            ``"record"``: its row has ``error`` set and no label (never dropped).
        reject: label a file ``unknown_label`` when its open-set score is below the classifier's
            threshold (the row stays, with its score and probabilities).
        sets: a coverage level (e.g. 0.9): also give each file's conformal prediction set.
        Rejection and sets need a calibrated classifier (:class:`~calm.classifiers.Calibrated`).
    """
    if (reject or sets is not None) and not hasattr(classifier, "predict_open"):
        raise ValueError("rejection and prediction sets need a calibrated classifier; refit it with `calm fit` "
                         "(which calibrates by default) or wrap it in calm.classifiers.Calibrated")
    recorded = getattr(classifier, "fingerprint_", None) or {}
    if prompt is None:
        if "prompt" not in recorded:
            raise ValueError("the classifier records no prompt (fit on plain arrays?); pass prompt=")
        prompt = recorded["prompt"]
    if recorded:
        check_same_features(recorded, feature_fingerprint(backbone, prompt))
    items = [media_item(str(n), Path(p), None) for n, p in enumerate(paths)]
    features = extract(backbone, items, prompt, batch_size=batch_size, on_error=on_error, progress=progress)
    rows: dict[str, Prediction] = {}
    if len(features):
        labels = classifier.predict(features)
        probabilities = classifier.predict_proba(features)
        scores = [None] * len(labels)
        if reject:
            labels, scores = classifier.predict_open(features, unknown=unknown_label)
        names = [str(c) for c in classifier.classes_]
        members = [None] * len(labels)
        if sets is not None:
            members = [tuple(str(c) for c in s) for s in classifier.predict_sets(features, sets)]
        for item_id, label, p, score, members_ in zip(features.ids, labels, probabilities, scores, members):
            rows[item_id] = Prediction(str(paths[int(item_id)]), str(label), {c: float(v) for c, v in zip(names, p)},
                                       score=None if score is None else float(score), prediction_set=members_)
    for item_id, reason in features.failed.items():
        rows[item_id] = Prediction(str(paths[int(item_id)]), None, {}, reason)
    return [rows[item.id] for item in items]


def check_same_features(recorded: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise ValueError naming every field (model, revision, dtype, prompt, sites ...) in which the
    classifier's recorded feature fingerprint and the current backbone + prompt differ."""
    keys = sorted(set(recorded) | set(current))
    differ = [k for k in keys if recorded.get(k) != current.get(k)]
    if differ:
        lines = [f"  {k}: classifier {recorded.get(k)!r}, now {current.get(k)!r}" for k in differ]
        raise ValueError("the classifier was fit on features from another backbone or prompt; refit it, or use the "
                         "same model, dtype and prompt:\n" + "\n".join(lines))

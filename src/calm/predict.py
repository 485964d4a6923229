"""Fit a classifier on your own labelled clips, and label new files with it.

    >>> backbone = calm.load_backbone("Qwen/Qwen2-Audio-7B-Instruct")
    >>> clf = fit_classifier(backbone, calm.load_dataset("my_clips/"), prompt="What sound is this?")
    >>> calm.classifiers.save(clf, "clf.safetensors")       # heads and fingerprint recorded at fit
    >>> rows = predict_files(backbone, calm.classifiers.load("clf.safetensors"), ["new.wav"])

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
    """One file's result: ``label`` and per-class ``probabilities``, or ``error`` (label None)."""

    path: str
    label: str | None
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def fit_classifier(
    backbone: Backbone,
    items: Sequence[Item],
    prompt: str,
    method: str = "auto",
    *,
    batch_size: int = 8,
    store: Any = None,
    on_error: str = "raise",
    progress: bool = False,
    **params: Any,
) -> Any:
    """Extract features of the labelled ``items`` under ``prompt`` and fit ``method`` on all of them.

    Args:
        method: a feature method of :data:`calm.evaluate.protocol.METHODS` (default ``auto``, the
            recommended :class:`~calm.classifiers.DefaultClassifier`; ``calm``, ``sav``,
            ``calm-tuned``, ``probe`` ...).
        batch_size, store, on_error, progress: as in :func:`calm.heads.extract` (with
            ``on_error="record"`` unreadable clips are left out, with a warning naming them).
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
    return METHODS[method].make(**params).fit(features, [label[i] for i in features.ids])


def predict_files(
    backbone: Backbone,
    classifier: Any,
    paths: Sequence[str | os.PathLike],
    prompt: str | None = None,
    *,
    batch_size: int = 8,
    on_error: str = "raise",
    progress: bool = False,
) -> list[Prediction]:
    """Label audio (or video) files with a fitted classifier, one :class:`Prediction` per path, in order.

    Args:
        classifier: fitted by :func:`fit_classifier` (or loaded with :func:`calm.classifiers.load`).
        prompt: default: the one in the classifier's fingerprint. Features under another prompt
            or from another backbone than the classifier's raise ValueError naming both.
        on_error: ``"raise"``: a file that cannot be loaded raises an error naming it;
            ``"record"``: its row has ``error`` set and no label (never dropped).
    """
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
        names = [str(c) for c in classifier.classes_]
        for item_id, label, p in zip(features.ids, labels, probabilities):
            rows[item_id] = Prediction(str(paths[int(item_id)]), str(label),
                                       {c: float(v) for c, v in zip(names, p)})
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

"""Save and load fitted classifiers as safetensors (arrays) + JSON metadata; never pickle.

The metadata records the file format and version, the estimator class and its parameters, the
classes, the head index and the fingerprint of the backbone and prompt that produced the
features. Loading checks all of it: an unreadable file, another format or version, an unknown
estimator, arrays of the wrong shape, or a fingerprint that differs from the one asked for
raise ValueError saying which.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from calm.classifiers._base import Estimator, check_fingerprint
from calm.classifiers.ablations import (ClassAgnosticCALMClassifier, ConcatCentroidClassifier,
                                        TopNSoftVoteClassifier, UniformVoteClassifier)
from calm.classifiers.calm import CALMClassifier
from calm.classifiers.default import DefaultClassifier
from calm.classifiers.probe import LogisticProbe
from calm.classifiers.sav import SAVClassifier
from calm.classifiers.tuned_probe import TunedLogisticProbe
from calm.classifiers.tuning import TunedCALMClassifier
from calm.features import HeadIndex

FORMAT = "calm-classifier"
VERSION = 1
ESTIMATORS: dict[str, type[Estimator]] = {cls.__name__: cls for cls in (
    SAVClassifier, CALMClassifier, TunedCALMClassifier, UniformVoteClassifier, TopNSoftVoteClassifier,
    ClassAgnosticCALMClassifier, ConcatCentroidClassifier, LogisticProbe)}
ESTIMATORS["TunedLogisticProbe"] = TunedLogisticProbe
ESTIMATORS["DefaultClassifier"] = DefaultClassifier


def _json_round_trip(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be JSON-serialisable: {error}") from None


def save(clf: Estimator, path: str | os.PathLike, heads: HeadIndex | None = None,
         fingerprint: Mapping[str, Any] | None = None) -> Path:
    """Write a fitted classifier to ``path`` (a .safetensors file), atomically.

    Args:
        clf: a fitted calm classifier.
        heads: the head index of the features (default: the one recorded at fit, if any).
        fingerprint: what produced the features, e.g. ``HeadFeatures.fingerprint`` (default: the
            one recorded at fit, if any); :func:`load` can then refuse features from elsewhere.
    """
    name = type(clf).__name__
    if ESTIMATORS.get(name) is not type(clf):
        raise ValueError(f"cannot save a {name}; known classifiers: {sorted(ESTIMATORS)}")
    clf._check_fitted()
    heads = heads if heads is not None else getattr(clf, "head_index_", None)
    fingerprint = fingerprint if fingerprint is not None else getattr(clf, "fingerprint_", None)
    if heads is not None and len(heads) != clf.n_heads_in_:
        raise ValueError(f"the head index names {len(heads)} heads but {name} was fit on {clf.n_heads_in_}")
    arrays = {key: np.ascontiguousarray(getattr(clf, key)) for key in clf._state_shapes()}
    meta = {
        "format": FORMAT, "version": VERSION, "estimator": name,
        "params": _json_round_trip(clf.get_params(), f"{name}'s parameters"),
        "classes": clf.classes_.tolist(), "classes_dtype": clf.classes_.dtype.str,
        "n_heads": int(clf.n_heads_in_), "head_dim": int(clf.head_dim_in_),
        "heads": None if heads is None else heads.to_dict(),
        "fingerprint": None if fingerprint is None else _json_round_trip(dict(fingerprint), "the fingerprint"),
        "fitted": _json_round_trip(clf._get_meta(), f"{name}'s fitted metadata"),
    }
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(arrays, tmp, metadata={"calm": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load(path: str | os.PathLike, fingerprint: Mapping[str, Any] | None = None,
         estimator: type[Estimator] | None = None) -> Estimator:
    """Read a classifier written by :func:`save`.

    Args:
        fingerprint: if given, the stored fingerprint must equal it (else ValueError naming both).
        estimator: if given, the file must hold this classifier class.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no classifier file at {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = handle.metadata() or {}
            arrays = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises several types for damaged files
        raise ValueError(f"{path}: not a readable safetensors file (corrupted or truncated?): {error}") from None
    if "calm" not in header:
        raise ValueError(f"{path}: a safetensors file, but not a calm classifier (no 'calm' metadata)")
    try:
        meta = json.loads(header["calm"])
        version, name = meta["version"], meta["estimator"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: damaged calm metadata: {error}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if version != VERSION:
        raise ValueError(f"{path}: classifier file format version {version}; this calm reads version {VERSION}")
    cls = ESTIMATORS.get(name)
    if cls is None:
        raise ValueError(f"{path}: unknown classifier {name!r}; known: {sorted(ESTIMATORS)}")
    if estimator is not None and cls is not estimator:
        raise ValueError(f"{path}: holds a {name}, not a {estimator.__name__}")
    clf = _restore(cls, meta, arrays, path)
    if fingerprint is not None:
        if clf.fingerprint_ is None:
            raise ValueError(f"{path}: the file records no feature fingerprint to check against {dict(fingerprint)}")
        check_fingerprint(clf.fingerprint_, _json_round_trip(dict(fingerprint), "the fingerprint"), str(path))
    return clf


def _restore(cls: type[Estimator], meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> Estimator:
    try:
        clf = cls(**meta["params"])
        clf.classes_ = np.asarray(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
        clf.n_heads_in_, clf.head_dim_in_ = int(meta["n_heads"]), int(meta["head_dim"])
        clf.head_index_ = None if meta["heads"] is None else HeadIndex.from_dict(meta["heads"])
        clf.fingerprint_ = meta["fingerprint"]
        clf._set_meta(meta["fitted"])
    except (TypeError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: damaged calm metadata for {cls.__name__}: {error!r}") from None
    expected = clf._state_shapes()
    if set(arrays) != set(expected):
        raise ValueError(f"{path}: arrays {sorted(arrays)} do not match a {cls.__name__} ({sorted(expected)})")
    for key, shape in expected.items():
        got = arrays[key].shape
        if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
            want = tuple("any" if e is None else e for e in shape)
            raise ValueError(f"{path}: array {key!r} has shape {got}, expected {want}")
        if arrays[key].dtype.kind == "f" and not np.isfinite(arrays[key]).all():
            raise ValueError(f"{path}: array {key!r} holds NaN or inf")
        setattr(clf, key, np.array(arrays[key], order="C"))  # an aligned, writeable copy
    heads = arrays.get("heads_")
    if heads is not None and (heads.size == 0 or heads.min() < 0 or heads.max() >= clf.n_heads_in_):
        raise ValueError(f"{path}: selected heads out of range 0..{clf.n_heads_in_ - 1}")
    return clf

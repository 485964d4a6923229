"""Save and load fitted classifiers as safetensors (arrays) + JSON metadata; never pickle.

The metadata records the file format and version, the estimator class and its parameters, the
classes, the head index, the fingerprint of the backbone and prompt that produced the features, and
a SHA-256 ``checksum`` over all of that metadata (canonical JSON, less the checksum itself) and
every array, so that no edit of anything that decides a prediction loads. A
:class:`~calm.classifiers.trust.Calibrated` classifier is its fitted estimator's file plus a
``calibration`` entry (settings, temperature, threshold) and its arrays under ``calibration.``.
Loading checks all of it: an unreadable file, another format or version, an unknown estimator,
invalid parameters, a head index of the wrong length, arrays of the wrong shape, a checksum that
differs (an edited file), or a fingerprint that differs from the one asked for raise ValueError
naming the file and saying which.

Older files: version 2 and 3 files checksummed only their arrays (field ``sha256``); they load
when that checksum holds and they carry no field of version 4 (a ``checksum``), so a current
file whose version field is set back is refused. Version 1 files had no checksum at all and
cannot be told from an edited file: they are refused, with the advice to fit again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from sklearn.base import clone

from calm.classifiers._base import Estimator
from calm.classifiers.trust import LOGIT_SOURCES, Calibrated, check_settings
from calm.features import HeadIndex
from calm.fingerprint import as_json, canonical_json, check_fingerprint
from calm.methods import estimator_classes

FORMAT = "calm-classifier"
VERSION = 4
"""Version 2 added the arrays' checksum and calibration, version 3 the support sketch of a
calibrated classifier, version 4 the checksum over metadata and arrays; versions 2 and 3 still
load (a version 2 calibrated file without its sketch)."""
READABLE_VERSIONS = (2, 3, 4)
CALIBRATION_PREFIX = "calibration."


def save(clf: Estimator, path: str | os.PathLike, heads: HeadIndex | None = None,
         fingerprint: Mapping[str, Any] | None = None) -> Path:
    """Write a fitted classifier to ``path`` (a .safetensors file), atomically.

    Args:
        clf: a fitted calm classifier.
        heads: the head index of the features (default: the one recorded at fit, if any).
        fingerprint: what produced the features, e.g. ``HeadFeatures.fingerprint`` (default: the
            one recorded at fit, if any); :func:`load` can then refuse features from elsewhere.
    """
    calibrated = clf if isinstance(clf, Calibrated) else None
    support_seconds = getattr(clf, "support_seconds_", None)  # the support clips' lengths (calm scan's window)
    if calibrated is not None:
        calibrated._check_fitted()
        clf = calibrated.estimator_
    name = type(clf).__name__
    known = estimator_classes()
    if known.get(name) is not type(clf):
        raise ValueError(f"cannot save a {name}: not the estimator of a registered method ({sorted(known)})")
    clf._check_fitted()
    heads = heads if heads is not None else getattr(clf, "head_index_", None)
    fingerprint = fingerprint if fingerprint is not None else getattr(clf, "fingerprint_", None)
    if heads is not None and len(heads) != clf.n_heads_in_:
        raise ValueError(f"the head index names {len(heads)} heads but {name} was fit on {clf.n_heads_in_}")
    arrays = {key: np.ascontiguousarray(getattr(clf, key)) for key in clf._state_shapes()}
    meta = {
        "format": FORMAT, "version": VERSION, "estimator": name,
        "params": as_json(clf.get_params(), f"{name}'s parameters"),
        "classes": clf.classes_.tolist(), "classes_dtype": clf.classes_.dtype.str,
        "n_heads": int(clf.n_heads_in_), "head_dim": int(clf.head_dim_in_),
        "heads": None if heads is None else heads.to_dict(),
        "fingerprint": None if fingerprint is None else as_json(dict(fingerprint), "the fingerprint"),
        "fitted": as_json(clf._get_meta(), f"{name}'s fitted metadata"),
        "support_seconds": as_json(support_seconds, "the support clip lengths"),
    }
    if calibrated is not None:
        settings = {k: v for k, v in calibrated.get_params(deep=False).items() if k != "estimator"}
        meta["calibration"] = {"params": as_json(settings, "the calibration settings"),
                               "fitted": as_json(calibrated._get_meta(), "the calibration")}
        arrays.update({CALIBRATION_PREFIX + key: np.ascontiguousarray(getattr(calibrated, key))
                       for key in calibrated._state_shapes()})
    meta = as_json(meta, "the classifier's metadata")
    meta["checksum"] = _checksum(arrays, meta)
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
    try:
        with open(path, "rb"):  # safetensors says "No such file" for a file it may not read
            pass
    except FileNotFoundError:
        raise FileNotFoundError(f"no classifier file at {path}") from None
    except OSError as error:
        from calm.media import os_reason

        raise ValueError(f"{path}: {os_reason(error)}") from None
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
    if version not in READABLE_VERSIONS:
        advice = "; it has no checksum, so an edit cannot be told from the file: fit it again" if version == 1 else ""
        raise ValueError(f"{path}: classifier file format version {version}; this calm reads versions "
                         f"{', '.join(map(str, READABLE_VERSIONS))}{advice}")
    known = estimator_classes()
    cls = known.get(name)
    if cls is None:
        raise ValueError(f"{path}: unknown classifier {name!r}; known: {sorted(known)}")
    if estimator is not None and cls is not estimator:
        raise ValueError(f"{path}: holds a {name}, not a {estimator.__name__}")
    calibration = {k[len(CALIBRATION_PREFIX):]: v for k, v in arrays.items() if k.startswith(CALIBRATION_PREFIX)}
    plain = {k: v for k, v in arrays.items() if not k.startswith(CALIBRATION_PREFIX)}
    clf = _restore(cls, meta, plain, path)  # names a wrong shape first: the more telling error
    _check_integrity(path, meta, arrays)
    clf.support_seconds_ = meta.get("support_seconds")  # optional: absent from files of calm <= 0.3.0
    if fingerprint is not None:
        if clf.fingerprint_ is None:
            raise ValueError(f"{path}: the file records no feature fingerprint to check against {dict(fingerprint)}")
        check_fingerprint(clf.fingerprint_, fingerprint, str(path))
    if "calibration" in meta:
        return _restore_calibration(clf, meta["calibration"], calibration, path)
    if calibration:
        raise ValueError(f"{path}: calibration arrays without calibration metadata (edited or damaged file)")
    return clf


def _restore(cls: type[Estimator], meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> Estimator:
    try:
        clf = cls(**meta["params"])
        clf.classes_ = np.asarray(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
        clf.n_heads_in_, clf.head_dim_in_ = int(meta["n_heads"]), int(meta["head_dim"])
        clf.head_index_ = None if meta["heads"] is None else HeadIndex.from_dict(meta["heads"])
        clf.fingerprint_ = meta["fingerprint"]
        clf._set_meta(meta["fitted"])
        clf._validate_params()
    except (TypeError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: damaged calm metadata for {cls.__name__}: {error}") from None
    if clf.head_index_ is not None and len(clf.head_index_) != clf.n_heads_in_:
        raise ValueError(f"{path}: the head index names {len(clf.head_index_)} heads, the arrays have {clf.n_heads_in_}")
    expected = clf._state_shapes()
    if set(arrays) != set(expected):
        raise ValueError(f"{path}: arrays {sorted(arrays)} do not match a {cls.__name__} ({sorted(expected)})")
    for key, shape in expected.items():
        setattr(clf, key, _checked_array(path, "array", key, arrays[key], shape))
    heads = arrays.get("heads_")
    if heads is not None and (heads.size == 0 or heads.min() < 0 or heads.max() >= clf.n_heads_in_):
        raise ValueError(f"{path}: selected heads out of range 0..{clf.n_heads_in_ - 1}")
    return clf


def _restore_calibration(estimator: Estimator, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                         path: Path) -> Calibrated:
    """The Calibrated wrapper around a restored estimator, its settings and arrays checked."""
    try:
        clf = Calibrated(clone(estimator), **meta["params"])
        check_settings(clf.target_frr, clf.open_score, clf.n_folds)
        clf._set_meta(meta["fitted"])
        clf.n_calibration_ = int(clf.n_calibration_)
        clf.temperature_ = float(clf.temperature_)
        if not (clf.temperature_ > 0 and np.isfinite(clf.temperature_)) or clf.logit_source_ not in LOGIT_SOURCES:
            raise ValueError(f"temperature {clf.temperature_!r}, scores {clf.logit_source_!r}")
        if (clf.threshold_ is None) != (clf.n_calibration_ == 0):
            raise ValueError("a rejection threshold needs calibration items, and calibration items give one")
    except (TypeError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: damaged calibration metadata: {error!r}") from None
    clf.support_sketch_ = arrays.get("support_sketch_")  # absent from version 2 files
    expected = clf._state_shapes()
    if set(arrays) != set(expected):
        raise ValueError(f"{path}: calibration arrays {sorted(arrays)}, expected {sorted(expected)}")
    for key, shape in expected.items():
        setattr(clf, key, _checked_array(path, "calibration array", key, arrays[key], shape))
    clf.estimator_, clf.classes_ = estimator, estimator.classes_
    return clf


def _checked_array(path: Path, what: str, key: str, array: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    """An aligned, writeable copy of ``array``, or ValueError naming the file when its shape differs
    from ``shape`` (None: any length) or it holds NaN or inf."""
    got = array.shape
    if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
        want = tuple("any" if e is None else e for e in shape)
        raise ValueError(f"{path}: {what} {key!r} has shape {got}, expected {want}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{path}: {what} {key!r} holds NaN or inf")
    return np.array(array, order="C")


def _check_integrity(path: Path, meta: dict[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """ValueError naming ``path`` unless its checksum holds: version 4's over metadata and arrays,
    or an older version's over the arrays (and then no version 4 field may be present)."""
    if meta["version"] >= 4:
        if "checksum" not in meta:
            raise ValueError(f"{path}: no checksum in the metadata (edited or damaged file)")
        if meta["checksum"] != _checksum(arrays, {k: v for k, v in meta.items() if k != "checksum"}):
            raise ValueError(f"{path}: the metadata or arrays do not match the checksum (edited or damaged file)")
        return
    if "checksum" in meta:
        raise ValueError(f"{path}: claims format version {meta['version']} but carries a version 4 checksum "
                         "(its version was set back: an edited file)")
    if meta.get("sha256") != _checksum(arrays):
        raise ValueError(f"{path}: the arrays do not match the checksum in the metadata (edited or damaged file)")


def _checksum(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> str:
    """SHA-256 over ``meta`` as canonical JSON (when given; version 4), then the arrays' names,
    dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    if meta is not None:
        digest.update(canonical_json(meta).encode("utf-8", "surrogatepass") + b"\n")
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()

"""Saving and loading classifiers, estimator manners (clone, parameters, fitted checks) and the
feature fingerprint."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from calm.classifiers import (CALMClassifier, ClassAgnosticCALMClassifier, ConcatCentroidClassifier, LogisticProbe,
                              NotFittedError, SAVClassifier, TopNSoftVoteClassifier, TunedCALMClassifier,
                              UniformVoteClassifier, load, save)
from calm.features import HeadFeatures, HeadIndex

ESTIMATORS = [
    lambda: SAVClassifier(n_heads=3),
    lambda: CALMClassifier(tau=0.1, top_k=4, shrinkage=1.0),
    lambda: TunedCALMClassifier(grid={"tau": [0.05, 0.2], "tau_w": [0.3, 1.0]}),
    lambda: UniformVoteClassifier(),
    lambda: TopNSoftVoteClassifier(n_heads=3),
    lambda: ClassAgnosticCALMClassifier(tau_w=0.5),
    lambda: ConcatCentroidClassifier(),
    lambda: LogisticProbe(C=0.5),
]
FINGERPRINT = {"model_id": "tiny-whisper", "revision": "abc", "prompt": "What sound is this?", "sites": ("self_attn",)}


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(3, 6, 4))
    y = np.repeat(np.arange(3), 4)
    X = (means[y] + rng.normal(size=(12, 6, 4))).astype(np.float32)
    Xq = (means[[0, 1, 2, 2, 1]] + rng.normal(size=(5, 6, 4))).astype(np.float32)
    names = np.array(["bird", "car", "rain"])
    return X, names[y], Xq


def features(X: np.ndarray, fingerprint=FINGERPRINT) -> HeadFeatures:
    heads = HeadIndex.from_tuples([("self_attn", layer, head) for layer in range(2) for head in range(3)])
    return HeadFeatures(X, heads, [f"item{i}" for i in range(len(X))], dict(fingerprint))


@pytest.mark.parametrize("make", ESTIMATORS)
def test_save_load_round_trip(make, tmp_path) -> None:
    X, y, Xq = data()
    clf = make().fit(X, y)
    path = save(clf, tmp_path / "clf.safetensors", heads=features(X).heads, fingerprint=FINGERPRINT)
    loaded = load(path, fingerprint=FINGERPRINT)
    assert type(loaded) is type(clf) and loaded.get_params() == json.loads(json.dumps(clf.get_params()))
    assert loaded.classes_.tolist() == ["bird", "car", "rain"] and loaded.classes_.dtype == clf.classes_.dtype
    assert loaded.predict(Xq).tolist() == clf.predict(Xq).tolist()
    np.testing.assert_array_equal(loaded.predict_proba(Xq), clf.predict_proba(Xq))
    np.testing.assert_array_equal(loaded.decision_function(Xq), clf.decision_function(Xq))
    assert loaded.head_index_ == features(X).heads
    assert loaded.fingerprint_["prompt"] == FINGERPRINT["prompt"]


def test_fit_on_head_features_records_and_checks_the_fingerprint(tmp_path) -> None:
    X, y, Xq = data()
    clf = CALMClassifier().fit(features(X), y)
    assert clf.fingerprint_ == FINGERPRINT and clf.head_index_ == features(X).heads
    assert clf.predict(features(Xq)).tolist() == clf.predict(Xq).tolist()
    other = dict(FINGERPRINT, model_id="another-model")
    with pytest.raises(ValueError, match="another backbone(.|\n)*tiny-whisper(.|\n)*another-model"):
        clf.predict(features(Xq, other))
    path = save(clf, tmp_path / "clf.safetensors")  # heads and fingerprint recorded at fit
    assert load(path).fingerprint_ == json.loads(json.dumps(FINGERPRINT))
    with pytest.raises(ValueError, match="another backbone(.|\n)*tiny-whisper(.|\n)*another-model"):
        load(path, fingerprint=other)
    with pytest.raises(ValueError, match="another backbone"):
        load(path).predict(features(Xq, other))
    bare = save(CALMClassifier().fit(X, y), tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match="records no feature fingerprint"):
        load(bare, fingerprint=FINGERPRINT)


def test_damaged_and_mismatched_files_raise_clear_errors(tmp_path) -> None:
    X, y, _ = data()
    path = save(CALMClassifier().fit(X, y), tmp_path / "clf.safetensors", fingerprint=FINGERPRINT)
    raw = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load(garbage)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.safetensors")

    arrays = load_file(str(path))
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as handle:
        meta = json.loads(handle.metadata()["calm"])

    def rewrite(name: str, new_meta: dict, new_arrays: dict | None = None):
        target = tmp_path / name
        save_file(new_arrays or arrays, str(target), metadata={"calm": json.dumps(new_meta)})
        return target

    with pytest.raises(ValueError, match="format version 99; this calm reads version"):
        load(rewrite("v99.safetensors", dict(meta, version=99)))
    with pytest.raises(ValueError, match="unknown classifier 'Pickle'"):
        load(rewrite("est.safetensors", dict(meta, estimator="Pickle")))
    with pytest.raises(ValueError, match="holds a CALMClassifier, not a SAVClassifier"):
        load(path, estimator=SAVClassifier)
    wrong = dict(arrays, weights_=arrays["weights_"][:3])
    with pytest.raises(ValueError, match=r"array 'weights_' has shape \(3, 3\), expected \(6, 3\)"):
        load(rewrite("shape.safetensors", meta, wrong))
    with pytest.raises(ValueError, match=r"array 'prototypes_' has shape \(6, 3, 4\), expected \(7, 3, 4\)"):
        load(rewrite("heads.safetensors", dict(meta, n_heads=7)))
    with pytest.raises(ValueError, match="not a calm classifier"):
        save_file(arrays, str(tmp_path / "plain.safetensors"))
        load(tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="damaged calm metadata"):
        save_file(arrays, str(tmp_path / "bad.safetensors"), metadata={"calm": "{not json"})
        load(tmp_path / "bad.safetensors")


def test_save_refuses_unfitted_and_mismatched_head_index(tmp_path) -> None:
    X, y, _ = data()
    with pytest.raises(NotFittedError, match="not fitted yet"):
        save(CALMClassifier(), tmp_path / "x.safetensors")
    heads = HeadIndex.from_tuples([("self_attn", 0, h) for h in range(4)])
    with pytest.raises(ValueError, match="names 4 heads but CALMClassifier was fit on 6"):
        save(CALMClassifier().fit(X, y), tmp_path / "x.safetensors", heads=heads)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("make", ESTIMATORS)
def test_clone_params_and_unfitted_use(make) -> None:
    clone = pytest.importorskip("sklearn.base").clone
    clf = make()
    copy = clone(clf)
    assert type(copy) is type(clf) and copy.get_params() == clf.get_params() and copy is not clf
    with pytest.raises(NotFittedError):
        copy.predict(np.zeros((1, 6, 4)))
    name = sorted(clf.get_params())[0]
    assert copy.set_params(**{name: clf.get_params()[name]}) is copy
    with pytest.raises(ValueError, match="Invalid parameter 'nonsense'"):
        copy.set_params(nonsense=1)
    assert repr(clf).startswith(type(clf).__name__ + "(")


@pytest.mark.parametrize("make", ESTIMATORS)
def test_string_labels_and_probabilities(make) -> None:
    X, y, Xq = data(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = make().fit(X, y)
    proba = clf.predict_proba(Xq)
    assert proba.shape == (5, 3) and np.allclose(proba.sum(1), 1.0) and (proba >= 0).all()
    assert set(clf.predict(Xq).tolist()) <= {"bird", "car", "rain"}
    assert clf.predict(Xq).tolist() == clf.classes_[clf.decision_function(Xq).argmax(1)].tolist()

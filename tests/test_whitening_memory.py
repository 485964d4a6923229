"""HeadWhitener remembers its last fits: the same options on the same features and labels give
the remembered arrays, bit for bit what a fresh fit computes, and copies of them; anything else
is fitted anew; the memory holds at most FIT_MEMORY bytes of arrays. An evaluation's report is the
same with and without the memory."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from calm.classifiers import whitening
from calm.classifiers.whitening import HeadWhitener
from calm.evaluation.protocol import evaluate_features
from test_evaluate import synthetic


@pytest.fixture
def counted(monkeypatch):
    """The number of fits actually computed, with an empty memory."""
    monkeypatch.setattr(whitening, "_memory", type(whitening._memory)())
    computed = []
    real = HeadWhitener._fit_statistics
    monkeypatch.setattr(HeadWhitener, "_fit_statistics", lambda self, *a: computed.append(1) or real(self, *a))
    return computed


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((12, 5, 8)).astype(np.float16), np.repeat(np.array(["a", "b", "c"]), 4)


def _fitted(w: HeadWhitener) -> dict:
    return {name: getattr(w, name) for name in whitening._FITTED}


def test_a_remembered_fit_is_bit_for_bit_a_fresh_one(counted, monkeypatch):
    X, y = _data()
    first = HeadWhitener().fit(X, y)
    again = HeadWhitener().fit(X.copy(), y.copy())  # equal bytes, other objects
    assert len(counted) == 1
    monkeypatch.setattr(whitening, "FIT_MEMORY", 0)
    fresh = HeadWhitener().fit(X, y)
    assert len(counted) == 2
    for name, value in _fitted(fresh).items():
        for other in (first, again):
            mine = getattr(other, name)
            assert type(mine) is type(value)
            if isinstance(value, np.ndarray):
                assert mine.dtype == value.dtype and mine.tobytes() == value.tobytes(), name
            else:
                assert mine == value, name


def test_changing_a_fitted_array_does_not_change_the_memory(counted):
    X, y = _data()
    first = HeadWhitener().fit(X, y)
    kept = first.matrix_.copy()
    first.matrix_[:] = 7.0
    assert np.array_equal(HeadWhitener().fit(X, y).matrix_, kept)


@pytest.mark.parametrize("change", ["data", "labels", "shrinkage", "center", "normalize", "dtype"])
def test_other_features_labels_or_options_are_fitted_anew(counted, change):
    X, y = _data()
    HeadWhitener().fit(X, y)
    options = {}
    if change == "data":
        X = X.copy()
        X[0, 0, 0] += 1
    elif change == "labels":
        y = np.array(["a", "b", "c"] * 4)
    elif change == "dtype":
        X = X.astype(np.float32)
    else:
        options = {"shrinkage": 0.3, "center": True, "normalize": False}
        options = {change: options[change]}
    HeadWhitener(**options).fit(X, y)
    assert len(counted) == 2


def test_the_memory_keeps_at_most_fit_memory_bytes_of_the_latest_fits(counted, monkeypatch):
    one = whitening._size(_fitted(HeadWhitener().fit(*_data(9))))
    monkeypatch.setattr(whitening, "FIT_MEMORY", 3 * one + one // 2)  # room for three fits
    for seed in range(5):
        HeadWhitener().fit(*_data(seed))
    assert len(whitening._memory) == 3
    HeadWhitener().fit(*_data(4))  # the latest is kept
    HeadWhitener().fit(*_data(0))  # the oldest was dropped
    assert len(counted) == 7  # the sizing fit, five, and the dropped one again


def _report(labels: list[str]) -> str:
    features, items = synthetic(labels, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate_features(features, items, shots=(3,), seeds=2, methods=["calm", "sav-white", "auto"])
    data = report.to_dict()
    for row in data["results"]:
        row.pop("seconds")
    return json.dumps(data, sort_keys=True, default=str)


def test_an_evaluation_is_the_same_with_and_without_the_memory(counted, monkeypatch):
    labels = ["dog", "cat", "bird", "cow"] * 6
    remembered = _report(labels)
    shared = len(counted)
    monkeypatch.setattr(whitening, "FIT_MEMORY", 0)
    assert _report(labels) == remembered
    assert len(counted) - shared > 2 * shared  # without the memory, the methods fitted the same whiteners again

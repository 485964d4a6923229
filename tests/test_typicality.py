"""Typicality and the shift check: the count sketch equals a hand-built one, the p-values equal a
brute-force full-conformal computation and are valid, the beta-binomial tail is exact, a shifted
batch is flagged and a like one is not, and a calibrated classifier keeps its sketch through
save -> load (older files without one load and say so)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from calm.classifiers import Calibrated, CALMClassifier, load, save
from calm.classifiers.typicality import SKETCH_DIM, SKETCH_SEED, shift_check, sketch, typicality

K, D = 6, 8


def clips(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    base = np.random.default_rng(7).standard_normal((K, D))
    return (base + shift + np.random.default_rng(seed).standard_normal((n, K, D))).astype(np.float32)


def test_sketch_is_the_count_sketch_of_the_normalised_heads():
    X = clips(5, seed=0)
    rng = np.random.default_rng(SKETCH_SEED)
    bucket, sign = rng.integers(0, SKETCH_DIM, (K, D)), rng.choice(np.array([-1.0, 1.0]), (K, D))
    unit = X / np.linalg.norm(X, axis=2, keepdims=True) * sign
    expected = np.zeros((5, SKETCH_DIM))
    for k in range(K):
        for d in range(D):
            expected[:, bucket[k, d]] += unit[:, k, d] / math.sqrt(K)
    assert np.abs(sketch(X) - expected).max() < 1e-6
    assert np.array_equal(sketch(torch.from_numpy(X)), sketch(X))
    assert np.array_equal(sketch(X[2:3]), sketch(X)[2:3])  # a clip's sketch depends on it alone
    scaled = X * np.arange(1, K + 1, dtype=np.float32)[None, :, None]  # head norms do not count
    assert np.abs(sketch(scaled) - sketch(X)).max() < 1e-6


def brute_force_typicality(support: np.ndarray, query: np.ndarray) -> float:
    """The full-conformal p-value from its definition: the bag with the query added, each member's
    squared distance to its nearest other member, and the query's rank among them."""
    bag = np.vstack([support, query[None]])
    d = ((bag[:, None] - bag[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    strangeness = d.min(1)
    return float((strangeness >= strangeness[-1]).sum() / len(bag))


def test_typicality_equals_the_full_conformal_definition():
    rng = np.random.default_rng(0)
    support, queries = rng.standard_normal((12, 5)), rng.standard_normal((20, 5)) * 1.5
    got = typicality(support, queries)
    assert got == pytest.approx([brute_force_typicality(support, q) for q in queries])
    assert typicality(support, support[:1])[0] == 1.0  # a support clip itself is typical


def test_typicality_is_valid_for_exchangeable_clips():
    rng = np.random.default_rng(1)
    p = np.array([typicality(bag[:9], bag[9:])[0] for bag in rng.standard_normal((3000, 10, 4))])
    assert abs((p <= 0.1).mean() - 0.1) < 0.02  # 9 support clips: p <= 0.1 means rank 1 of 10
    assert 0.4 < (p <= 0.5).mean() < 0.5 + 0.03  # at most the level: mutual nearest neighbours tie


def test_shift_check_tail_is_the_beta_binomial_by_hand():
    n_support, m = 19, 10  # k = floor(0.1 * 20) = 2, Beta(2, 18)
    p = np.array([0.05] * 4 + [0.5] * 6)

    def pmf(x: int, a: float, b: float) -> float:
        log_beta = math.lgamma(x + a) + math.lgamma(m - x + b) - math.lgamma(m + a + b)
        return math.comb(m, x) * math.exp(log_beta - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))

    check = shift_check(p, n_support)
    assert check.atypical == 4 and check.expected == pytest.approx(0.1)
    assert check.tail == pytest.approx(sum(pmf(x, 2, 18) for x in range(4, m + 1)))
    assert shift_check(np.full(50, 0.01), 8).shifted is False  # 8 support clips cannot flag anything


def test_a_shifted_batch_is_flagged_and_a_like_one_is_not():
    support = sketch(clips(30, seed=1))
    like = shift_check(typicality(support, sketch(clips(200, seed=2))), 30)
    shifted = shift_check(typicality(support, sketch(clips(200, seed=3, shift=1.5))), 30)
    assert not like.shifted and like.atypical < 0.2 * 200
    assert shifted.shifted and shifted.atypical > 0.5 * 200 and shifted.tail < 1e-6
    assert "unlike the support set" in shifted.message() and "unlike" not in like.message()


def fitted(X: np.ndarray) -> Calibrated:
    y = np.array([f"c{i % 3}" for i in range(len(X))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Calibrated(CALMClassifier()).fit(X, y)


def test_calibrated_keeps_its_sketch_through_save_and_load(tmp_path):
    X, new = clips(15, seed=4), clips(10, seed=5, shift=0.5)
    clf = fitted(X)
    assert clf.support_sketch_.shape == (15, SKETCH_DIM)
    back = load(save(clf, tmp_path / "c.safetensors"))
    assert np.array_equal(back.typicality(new), clf.typicality(new))
    assert back.check_shift(new) == clf.check_shift(new)


def test_a_file_without_the_sketch_loads_and_says_what_is_missing(tmp_path):
    path = save(fitted(clips(15, seed=4)), tmp_path / "c.safetensors")
    with safe_open(str(path), framework="numpy") as handle:
        meta = json.loads(handle.metadata()["calm"])
        arrays = {key: handle.get_tensor(key) for key in handle.keys() if key != "calibration.support_sketch_"}  # noqa: SIM118
    from calm.classifiers.io import _checksum

    meta["version"], meta["sha256"] = 2, _checksum(arrays)  # as calm 0.2 wrote it
    del meta["checksum"]  # version 4's checksum over metadata and arrays
    del meta["calibration"]["fitted"]["held_out_accuracy_"]
    save_file(arrays, str(tmp_path / "old.safetensors"), metadata={"calm": json.dumps(meta)})
    old = load(tmp_path / "old.safetensors")
    assert old.held_out_accuracy_ is None
    assert old.predict_sets(clips(3, seed=6), 0.9)  # everything else still works
    with pytest.raises(ValueError, match="without a sketch of its support set"):
        old.typicality(clips(3, seed=6))

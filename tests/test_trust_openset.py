"""The default open-set score ``energy+heads``: equal to its definition computed by brute force
(conformal ranks of the energy and of each head's whitened nearest-class distance among the
support's out-of-fold values), independent of the support's row order, the same after save ->
load, and its threshold turns away about ``target_frr`` of known-class clips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calm.classifiers import Calibrated, DefaultClassifier, load, save
from calm.classifiers.conformal import rejection_threshold
from calm.classifiers.openset import HeadDistances, rank_scores
from calm.classifiers.trust import DEFAULT_OPEN_SCORE, canonical_order, class_scores, fold_assignment
from calm.evaluation import calibration
from test_trust import draw, quiet_fit


def brute_p(reference: np.ndarray, value: float) -> float:
    """(1 + #{r <= value}) / (n + 1), by counting."""
    return (1 + sum(1 for r in reference if r <= value)) / (len(reference) + 1)


def brute_rank_score(reference: np.ndarray, row: np.ndarray) -> float:
    p = [brute_p(reference[:, j], row[j]) for j in range(reference.shape[1])]
    return p[0] + sum(p[1:]) / (len(p) - 1)


def brute_heads(matrix: np.ndarray, mean: np.ndarray, centres: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Minus each head's squared distance to its nearest whitened class mean [N, K], by loops."""
    out = np.zeros((len(X), X.shape[1]))
    for i, clip in enumerate(X.astype(np.float64)):
        for k, head in enumerate(clip):
            z = matrix[k] @ (head / np.linalg.norm(head) - mean[k])
            out[i, k] = -min(float(np.sum((z - c) ** 2)) for c in centres[k])
    return out


def energy(logits: np.ndarray) -> np.ndarray:
    return np.array([math.log(sum(math.exp(v) for v in row)) for row in logits])


def test_rank_scores_by_hand():
    reference = np.array([[1.0, -3.0, 0.5], [2.0, -1.0, 0.1], [3.0, -2.0, 0.3]])
    values = [np.array([2.0, 0.0, 9.0]), np.array([[-2.0, 0.2], [-9.0, -9.0], [0.0, 1.0]])]
    # first clip: energy 2 is >= 2 of 3 references (p 3/4); head 1: -2 >= -3, -2 (3/4); head 2: 0.2 >= 0.1 (2/4)
    expected = [3 / 4 + (3 / 4 + 2 / 4) / 2, 1 / 4 + (1 / 4 + 1 / 4) / 2, 1 + (1 + 1) / 2]
    assert rank_scores(values, reference) == pytest.approx(expected)
    for row, want in zip(np.column_stack(values), expected):
        assert brute_rank_score(reference, row) == pytest.approx(want)
    # held out: each reference row ranked among the other two, itself counted once, over n = 3
    held = rank_scores([reference[:, 0], reference[:, 1:]], reference, held_out=True)
    assert held == pytest.approx([1 / 3 + (1 / 3 + 3 / 3) / 2, 2 / 3 + (3 / 3 + 1 / 3) / 2,
                                  3 / 3 + (2 / 3 + 2 / 3) / 2])


def test_default_score_equals_its_brute_force_definition():
    assert DEFAULT_OPEN_SCORE == "energy+heads"
    Xs, ys = draw(3, seed=11)
    Xq, _ = draw(2, seed=12)
    clf = quiet_fit(Calibrated(DefaultClassifier()), Xs, ys)
    assert clf.open_score == "energy+heads"
    # the reference: every support clip scored by a copy fitted without its fold
    order = canonical_order(Xs, np.unique(ys, return_inverse=True)[1])
    X, y = Xs[order], ys[order]
    labels = np.unique(y, return_inverse=True)[1]
    folds = fold_assignment(labels, clf.n_folds, clf.random_state)
    reference = np.zeros((len(y), 1 + Xs.shape[1]))
    for fold in range(folds.max() + 1):
        held, kept = folds == fold, folds != fold
        model = DefaultClassifier().fit(X[kept], y[kept])
        reference[held, 0] = energy(class_scores(model, X[held], clf.logit_source_) / clf.temperature_)
        part = HeadDistances().fit(X[kept], labels[kept], like=model)
        reference[held, 1:] = brute_heads(part.matrix_, part.mean_, part.centres_, X[held])
    assert np.allclose(clf.open_reference_, reference, rtol=1e-5, atol=1e-6)
    # the support's own scores: each reference row ranked among the others; the threshold from them
    held_scores = []
    for i in range(len(y)):
        others = np.delete(reference, i, axis=0)
        p = [(1 + sum(1 for r in others[:, j] if r <= reference[i, j])) / len(y) for j in range(reference.shape[1])]
        held_scores.append(p[0] + sum(p[1:]) / (len(p) - 1))
    assert np.allclose(clf.open_scores_, np.sort(held_scores))
    assert clf.threshold_ == rejection_threshold(np.array(held_scores), clf.target_frr)
    # a new clip: energy of its calibrated scores and its heads' distances, ranked among the reference
    whitened = clf.head_distances()
    centres = np.zeros_like(whitened.centres_, dtype=np.float64)  # class means of the whitened support, by loops
    for c in range(centres.shape[1]):
        for i in np.flatnonzero(labels == c):
            for k in range(Xs.shape[1]):
                head = X[i, k].astype(np.float64)
                centres[k, c] += whitened.matrix_[k] @ (head / np.linalg.norm(head)) / np.sum(labels == c)
    assert np.allclose(whitened.centres_, centres, atol=1e-5)
    rows = np.column_stack([energy(clf.calibrated_logits(Xq)),
                            brute_heads(whitened.matrix_, whitened.mean_, centres, Xq)])
    expected = [brute_rank_score(clf.open_reference_, row) for row in rows]
    assert np.allclose(clf.open_set_scores(Xq), expected)


def test_score_does_not_depend_on_the_support_row_order_and_survives_saving(tmp_path):
    Xs, ys = draw(4, seed=13)
    Xq, _ = draw(3, seed=14)
    order = np.random.default_rng(5).permutation(len(ys))
    first = quiet_fit(Calibrated(DefaultClassifier()), Xs, ys)
    second = quiet_fit(Calibrated(DefaultClassifier()), Xs[order], ys[order])
    assert np.array_equal(first.open_reference_, second.open_reference_)
    assert np.array_equal(first.open_set_scores(Xq), second.open_set_scores(Xq))
    again = load(save(first, tmp_path / "a.safetensors"))
    assert again.open_score == "energy+heads" and not hasattr(again, "open_support_")  # no support clips kept
    assert np.array_equal(again.open_reference_, first.open_reference_)
    assert np.array_equal(again.open_set_scores(Xq), first.open_set_scores(Xq))
    labels, scores = again.predict_open(Xq)
    assert np.array_equal(labels, first.predict_open(Xq)[0]) and again.threshold_ == first.threshold_


def test_one_shot_fit_with_the_default_score_saves_and_refuses_to_reject(tmp_path):
    Xs, ys = draw(1, seed=15)
    clf = quiet_fit(Calibrated(DefaultClassifier()), Xs, ys)
    again = load(save(clf, tmp_path / "one.safetensors"))
    assert again.open_reference_.shape[0] == 0 and again.threshold_ is None
    with pytest.raises(ValueError, match="at least 2 items per class"):
        again.predict_open(Xs)


def test_an_unseen_class_scores_lower_and_known_clips_are_rejected_at_about_the_target_rate():
    rejected, aurocs = [], []
    for seed in range(6):
        Xs, ys = draw(8, seed=20 + seed, classes=6, noise=1.2)
        known = ys != "c5"
        Xq, yq = draw(40, seed=40 + seed, classes=6, noise=1.2)
        clf = quiet_fit(Calibrated(DefaultClassifier(), target_frr=0.1), Xs[known], ys[known])
        labels, score = clf.predict_open(Xq)
        aurocs.append(calibration.auroc(score, yq != "c5"))
        rejected.append((labels[yq != "c5"] == "unknown").mean())
    assert np.mean(aurocs) > 0.9
    assert np.mean(rejected) <= 0.1 + 0.04  # the support's own held-out clips set the threshold

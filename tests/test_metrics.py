"""Metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from calm.evaluation.metrics import (accuracy, average_precision, balanced_accuracy, classification_summary,
                                     confusion_matrix, eer, f1_scores, macro_f1, mean_average_precision, mean_interval,
                                     multi_hot, per_label_f1, t_quantile_975)


def test_single_label_metrics_by_hand() -> None:
    y_true = ["cat", "cat", "cat", "dog", "dog", "owl"]
    y_pred = ["cat", "cat", "dog", "dog", None, "cat"]
    assert accuracy(y_true, y_pred) == pytest.approx(3 / 6)
    # recalls: cat 2/3, dog 1/2, owl 0
    assert balanced_accuracy(y_true, y_pred) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # F1 = 2TP/(2TP+FP+FN): cat 4/(4+1+1), dog 2/(2+1+1), owl 0/(0+0+1)
    assert f1_scores(y_true, y_pred).tolist() == pytest.approx([4 / 6, 2 / 4, 0.0])
    assert macro_f1(y_true, y_pred) == pytest.approx((4 / 6 + 2 / 4) / 3)
    cm = confusion_matrix(y_true, y_pred, labels=["cat", "dog", "owl"])
    assert cm.tolist() == [[2, 1, 0], [0, 1, 0], [1, 0, 0]]  # the None answer falls in no cell
    summary = classification_summary(y_true, y_pred)
    assert summary["unmapped"] == pytest.approx(1 / 6) and summary["accuracy"] == pytest.approx(0.5)
    # a listed class that is neither true nor predicted has no F1 and does not drag the mean
    assert np.isnan(f1_scores(y_true, y_pred, labels=["cat", "dog", "owl", "yak"])[3])
    with pytest.raises(ValueError, match="2 targets but 1 predictions"):
        accuracy(["a", "b"], ["a"])


@pytest.mark.parametrize(
    "labels, scores, expected",
    [
        ([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], 0.0),  # separable
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 1.0),  # inverted
        # thresholds .9/.8/.7: (FAR, FRR) = (0, 2/3), (0, 1/3), (1/2, 1/3): the crossing lies on the
        # segment from (0, 1/3) to (1/2, 1/3), where FAR = FRR = 1/3
        ([1, 1, 0, 1, 0], [0.9, 0.8, 0.7, 0.3, 0.2], 1 / 3),
        # (FAR, FRR) at .8/.4/.35: (0, 1/2), (1/2, 1/2) -> exactly equal at 1/2
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.5),
        ([1, 0], [0.5, 0.5], 0.5),  # a tie moves both rates at once: (0, 1) -> (1, 0)
    ],
)
def test_eer_by_hand(labels, scores, expected) -> None:
    assert eer(labels, scores) == pytest.approx(expected)


def test_eer_with_named_positive_and_errors() -> None:
    labels = ["bonafide", "bonafide", "spoof", "bonafide", "spoof"]
    assert eer(labels, [0.9, 0.8, 0.7, 0.3, 0.2], positive="bonafide") == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="both positive"):
        eer(["spoof", "spoof"], [0.1, 0.2], positive="bonafide")


def test_average_precision_and_map_by_hand() -> None:
    # ranks: hit, miss, hit -> precision 1 at recall 1/2, 2/3 at recall 1
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # ties share one threshold: {hit, miss} together then hit -> 1/2 * 1/2 + 1/2 * 2/3
    assert average_precision([1, 0, 1], [0.9, 0.9, 0.7]) == pytest.approx(0.25 + 1 / 3)
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    scores = np.array([[0.9, 0.1, 0.3], [0.8, 0.2, 0.2], [0.7, 0.9, 0.1]])
    # label 0: 5/6 as above; label 1: ranks miss, hit, miss -> 1/2; label 2 has no positive: skipped
    assert mean_average_precision(targets, scores) == pytest.approx((5 / 6 + 1 / 2) / 2)


def test_multilabel_f1_and_multi_hot() -> None:
    classes = ["Dog", "Music", "Speech"]
    targets = multi_hot([("Speech", "Dog"), ("Music",), None, "Dog"], classes)
    assert targets.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0]]
    decisions = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
    # Dog: TP 2, FP 1 -> 4/5; Music: 2/2; Speech: TP 0, FN 1 -> 0
    assert per_label_f1(targets, decisions).tolist() == pytest.approx([4 / 5, 1.0, 0.0])


def test_mean_interval() -> None:
    mean, half = mean_interval([0.7, 0.8, 0.9])
    # std = 0.1, t(2) = 4.3027: half = 4.3027 * 0.1 / sqrt(3)
    assert mean == pytest.approx(0.8) and half == pytest.approx(4.3027 * 0.1 / np.sqrt(3))
    assert np.isnan(mean_interval([0.5])[1])
    assert t_quantile_975(1000) == pytest.approx(1.9623, abs=1e-3)


def test_agrees_with_scikit_learn_on_random_cases() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = np.r_[0, 1, rng.integers(0, 2, 30)]
        s = np.round(rng.normal(size=y.size) + y, 1)  # rounded: many ties
        assert average_precision(y, s) == pytest.approx(sklearn_metrics.average_precision_score(y, s))
        y_true, y_pred = rng.choice(list("abc"), 30), rng.choice(list("abc"), 30)
        assert macro_f1(y_true, y_pred) == pytest.approx(sklearn_metrics.f1_score(y_true, y_pred, average="macro"))

"""Trust, second round: at one shot (or whenever calibration does not help on the support's own
held-out clips) the probabilities are the estimator's own and the file and ``calm fit`` say
"uncalibrated"; a fit does not depend on the order of the support rows or classes; the
whitened-distance open-set scores separate clips of unseen classes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from calm.classifiers import Calibrated, CALMClassifier, DefaultClassifier, LogisticProbe, SAVClassifier, load, save
from calm.classifiers._base import Estimator, encode_labels
from calm.classifiers.conformal import LargeSetWarning, set_size_note, warn_large_sets
from calm.classifiers.openset import DISTANCE_SCORES, LOGIT_SCORES, HeadDistances
from calm.classifiers.temperature import cross_validated_nll, fit_temperature, nll, softmax
from calm.classifiers.trust import CALIBRATED, DEFAULT_OPEN_SCORE, describe
from calm.evaluation import calibration
from calm.evaluation.trust import TrustRecorder
from calm.features import HeadFeatures, HeadIndex
from test_trust import C, D, K, draw, quiet_fit


# ---------------------------------------------------------------- one shot: raw, and said so


@pytest.mark.parametrize("base", [DefaultClassifier(), CALMClassifier(), SAVClassifier(n_heads=3)],
                         ids=lambda b: type(b).__name__)
def test_one_shot_keeps_the_estimators_probabilities_and_says_why(base, tmp_path):
    Xs, ys = draw(1, seed=1)
    Xq, _ = draw(5, seed=2)
    clf = quiet_fit(Calibrated(base), Xs, ys)
    plain = quiet_fit(type(base)(**base.get_params()), Xs, ys)
    assert clf.calibration_status_.startswith("uncalibrated: no class has two support clips")
    assert describe(clf) == f"{type(base).__name__} (uncalibrated)"
    assert np.array_equal(clf.predict_proba(Xq), plain.predict_proba(Xq).astype(np.float64))
    again = load(save(clf, tmp_path / "one.safetensors"))
    assert again.calibration_status_ == clf.calibration_status_
    assert np.array_equal(again.predict_proba(Xq), clf.predict_proba(Xq))


def test_five_shots_are_calibrated_and_say_so():
    Xs, ys = draw(5, seed=1)
    clf = quiet_fit(Calibrated(CALMClassifier()), Xs, ys)
    assert clf.calibration_status_ == CALIBRATED and describe(clf) == "CALMClassifier (calibrated)"


class NoiseScores(Estimator):
    """Class scores that are the features themselves (noise, unrelated to the labels) and uniform
    probabilities: a temperature fitted to such scores can only overfit them."""

    def fit(self, X, y):
        self.classes_, _ = encode_labels(y, len(X))
        self.n_heads_in_, self.head_dim_in_ = X.shape[1], X.shape[2]
        return self

    def decision_function(self, X):
        return np.asarray(X[:, 0, :len(self.classes_)], dtype=np.float64)

    def predict_proba(self, X):
        return np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))


def test_calibration_that_does_not_lower_the_held_out_nll_is_not_kept():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 1, 4)).astype(np.float32)
    y = np.array([f"c{i}" for i in np.repeat(np.arange(4), 10)])
    clf = quiet_fit(Calibrated(NoiseScores()), X, y)
    assert clf.calibration_status_.startswith("uncalibrated: calibrating did not lower the held-out NLL")
    assert np.array_equal(clf.predict_proba(X[:3]), np.full((3, 4), 0.25))
    assert clf.threshold_ is not None  # rejection and sets still work, on the raw probabilities
    assert np.allclose(clf.conformity_scores_, 0.75)


def test_cross_validated_nll_refits_the_temperature_without_each_fold():
    rng = np.random.default_rng(3)
    scores = {"a": rng.standard_normal((12, 3)), "b": rng.standard_normal((12, 3))}
    labels = np.tile(np.arange(3), 4)
    folds = np.repeat(np.arange(2), 6)
    expected = 0.0
    for fold in (0, 1):
        train = folds != fold
        source, beta = fit_temperature({k: s[train] for k, s in scores.items()}, labels[train])
        expected += nll(softmax(beta * scores[source][~train]), labels[~train]) * 6
    assert cross_validated_nll(scores, labels, folds) == pytest.approx(expected / 12)


# ---------------------------------------------------------------- order invariance


@pytest.mark.parametrize("base", [DefaultClassifier(), CALMClassifier(), SAVClassifier(n_heads=3), LogisticProbe()],
                         ids=lambda b: type(b).__name__)
def test_shuffled_support_rows_and_classes_give_the_same_file_and_probabilities(base, tmp_path):
    Xs, ys = draw(5, seed=4)
    Xq, _ = draw(3, seed=5)
    order = np.random.default_rng(9).permutation(len(ys))  # rows, hence the order classes first appear in
    first = quiet_fit(Calibrated(base), Xs, ys)  # the default open-set score keeps out-of-fold reference values
    second = quiet_fit(Calibrated(base), Xs[order], ys[order])
    a, b = save(first, tmp_path / "a.safetensors"), save(second, tmp_path / "b.safetensors")
    assert a.read_bytes() == b.read_bytes()
    assert np.array_equal(first.predict_proba(Xq), second.predict_proba(Xq))
    assert np.array_equal(first.open_set_scores(Xq), second.open_set_scores(Xq))
    assert first.held_out_accuracy_ == second.held_out_accuracy_


def test_head_features_in_another_order_give_the_same_file(tmp_path):
    Xs, ys = draw(4, seed=6)
    heads = HeadIndex.from_tuples(("self", layer, head) for layer in range(2) for head in range(3))
    ids = [f"clip{i:02d}" for i in range(len(ys))]
    features = HeadFeatures(Xs, heads, ids, {"model": "m"})
    order = np.random.default_rng(2).permutation(len(ys))
    shuffled = HeadFeatures(Xs[order], heads, [ids[i] for i in order], {"model": "m"})
    first = quiet_fit(Calibrated(CALMClassifier()), features, ys)
    second = quiet_fit(Calibrated(CALMClassifier()), shuffled, ys[order])
    assert save(first, tmp_path / "a.safetensors").read_bytes() == save(second, tmp_path / "b.safetensors").read_bytes()


# ---------------------------------------------------------------- whitened-distance open-set scores


def test_whitened_distance_by_hand_with_identity_whitening():
    # one item per class: no within-class spread, lambda = 1, so z is the L2-normalised head
    X = np.zeros((2, 1, 2), dtype=np.float64)
    X[0, 0], X[1, 0] = [1.0, 0.0], [0.0, 1.0]
    distances = HeadDistances().fit(X, np.array(["a", "b"]))
    query = np.array([[[1.0, 1.0]]])  # normalised: (0.707, 0.707); squared distance to either class 2 - sqrt 2
    assert distances.score(query, "whitened") == pytest.approx([-(2 - np.sqrt(2))])
    assert distances.score(query, "knn") == pytest.approx([-(2 - np.sqrt(2))])
    assert distances.score(X, "whitened") == pytest.approx([0.0, 0.0])


@pytest.mark.parametrize("kind", ["whitened", "whitened-vote", "knn"])
def test_whitened_distances_separate_an_unseen_class(kind):
    Xs, ys = draw(6, seed=7, classes=6, noise=0.8)
    known = ys != "c5"
    Xq, yq = draw(10, seed=8, classes=6, noise=0.8)
    score = HeadDistances().fit(Xs[known], ys[known]).score(Xq, kind)
    assert calibration.auroc(score, yq != "c5") > 0.9


def test_rejection_uses_the_chosen_open_set_score_and_survives_saving(tmp_path):
    Xs, ys = draw(6, seed=7, classes=6, noise=0.8)
    known = ys != "c5"
    Xq, yq = draw(10, seed=8, classes=6, noise=0.8)
    clf = quiet_fit(Calibrated(DefaultClassifier(), open_score="whitened", target_frr=0.1), Xs[known], ys[known])
    labels, score = clf.predict_open(Xq)
    order = np.argsort(ys[known], kind="stable")
    direct = HeadDistances().fit(Xs[known][order], ys[known][order]).score(Xq, "whitened")
    assert np.allclose(score, direct, rtol=1e-5, atol=1e-4)
    assert ((labels == "unknown") == (score < clf.threshold_)).all()
    assert (labels[yq == "c5"] == "unknown").mean() > 0.5
    again = load(save(clf, tmp_path / "w.safetensors"))
    assert np.array_equal(again.open_set_scores(Xq), score)


# ---------------------------------------------------------------- what large sets mean


def test_large_sets_are_explained_and_small_ones_are_not():
    assert set_size_note([6, 7, 5, 6], 10, 0.9, 50) == (
        "With 5 support clips per class, the 90% prediction sets hold 6.0 of 10 classes on average here: the true "
        "class is in its set 90% of the time because the sets are wide; add labelled clips to narrow them")
    assert set_size_note([1, 2, 1, 3], 10, 0.9, 50) is None  # 1.75 of 10: informative
    assert set_size_note([1, 1], 2, 0.8) is None  # one class per set is never "large"
    assert set_size_note([2, 2], 3, 0.9).startswith("The 90% prediction sets hold 2.0 of 3 classes")


def test_predict_sets_warns_when_the_sets_are_large():
    Xs, ys = draw(3, seed=1, noise=6.0)  # hardly separable: wide sets
    clf = quiet_fit(Calibrated(CALMClassifier()), Xs, ys)
    sets = clf.predict_sets(draw(5, seed=2, noise=6.0)[0], 0.9)
    assert np.mean([len(s) for s in sets]) > 0.3 * C
    with pytest.warns(LargeSetWarning, match=r"With 3 support clips per class, the 90% prediction sets hold"):
        warn_large_sets(clf, sets, 0.9)


# ---------------------------------------------------------------- evaluation


def test_evaluation_reports_one_shot_rows_as_raw_and_every_open_set_candidate():
    classes = [f"c{i}" for i in range(8)]
    recorder = TrustRecorder("multiclass", classes)
    Xq, yq = draw(6, seed=3, classes=8, noise=0.8)
    Xs, ys = draw(1, seed=1, classes=8, noise=0.8)
    one = recorder.score("auto", 1, 0, quiet_fit(Calibrated(DefaultClassifier()), Xs, ys), DefaultClassifier,
                         Xs, ys.tolist(), Xq, yq.tolist())
    assert one["calibrated"] == 0.0 and one["ece"] == one["ece_uncalibrated"] and one["nll"] == one["nll_uncalibrated"]
    Xs, ys = draw(4, seed=1, classes=8, noise=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        four = recorder.score("auto", 4, 0, quiet_fit(Calibrated(DefaultClassifier()), Xs, ys), DefaultClassifier,
                              Xs, ys.tolist(), Xq, yq.tolist())
    assert four["calibrated"] == 1.0
    assert set(four["auroc_by_score"]) == {*LOGIT_SCORES, *DISTANCE_SCORES, DEFAULT_OPEN_SCORE, "typicality"}
    assert four["auroc_by_score"]["energy+heads"] == four["auroc"] > 0.8

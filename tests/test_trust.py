"""Trustworthy predictions: the metrics equal hand-computed values; Calibrated is fitted from the
support alone, works for every classifier, never drops an item when rejecting, and survives
save -> load; the evaluation reports the trust metrics where they apply."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from calm.classifiers import (
    Calibrated,
    CALMClassifier,
    ConcatCentroidClassifier,
    LogisticProbe,
    SAVClassifier,
    TunedCALMClassifier,
    UniformVoteClassifier,
    load,
    save,
)
from calm.classifiers.conformal import conformal_p_values, rejection_threshold, tiebreak
from calm.classifiers.io import _checksum
from calm.classifiers.temperature import fit_inverse_temperature
from calm.classifiers.trust import canonical_order, fold_assignment
from calm.data.items import Item
from calm.evaluation import calibration
from calm.evaluation.protocol import evaluate_features
from calm.evaluation.trust import held_out_classes
from calm.features import HeadFeatures, HeadIndex

PROBA = np.array([[0.9, 0.1], [0.65, 0.35], [0.3, 0.7], [0.75, 0.25]])
LABELS = np.array([0, 1, 1, 0])


# ---------------------------------------------------------------- metrics, by hand


def test_ece_by_hand():
    # confidences .9 (right), .65 (wrong), .7 (right), .75 (right), each alone in its 1/15 bin
    assert calibration.ece(PROBA, LABELS) == pytest.approx((0.1 + 0.65 + 0.3 + 0.25) / 4)
    # two items in one bin (13/15, 14/15]: accuracy 1/2, mean confidence .91
    assert calibration.ece(np.array([[0.9, 0.1], [0.92, 0.08]]), np.array([0, 1])) == pytest.approx(0.41)
    count, confidence, correct = calibration.reliability_bins(PROBA, LABELS)
    assert count.sum() == 4 and count[13] == 1 and confidence[13] == pytest.approx(0.9) and correct[9] == 0


def test_nll_and_brier_by_hand():
    assert calibration.nll(PROBA, LABELS) == pytest.approx(-(math.log(0.9) + math.log(0.35) + math.log(0.7)
                                                             + math.log(0.75)) / 4)
    # squared errors per item: .01+.01, .65^2*2, .3^2*2, .25^2*2
    assert calibration.brier(PROBA, LABELS) == pytest.approx((0.02 + 2 * 0.4225 + 0.18 + 0.125) / 4)
    assert calibration.nll(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-math.log(1e-12))
    with pytest.raises(ValueError, match="column indices"):
        calibration.nll(PROBA, np.array([0, 1, 2, 0]))


def test_auroc_and_fpr_at_95_tpr_by_hand():
    scores = np.array([3.0, 2.0, 1.0, 2.0, 0.0])
    known = np.array([True, True, True, False, False])
    # pairs known > unknown: 3 beats both, 2 beats 0 and ties 2 (1/2), 1 beats 0: 4.5 of 6
    assert calibration.auroc(scores, known) == pytest.approx(0.75)
    known_scores = np.arange(1.0, 21.0)  # 20 known: 95% of them are the 19 scores >= 2
    unknown_scores = np.array([0.5, 19.5, 20.5, 3.0])
    both = np.r_[known_scores, unknown_scores]
    is_known = np.r_[np.ones(20, bool), np.zeros(4, bool)]
    assert calibration.fpr_at_tpr(both, is_known) == pytest.approx(0.75)
    # known items above each unknown: 0.5 -> 20, 19.5 -> 1, 20.5 -> 0, 3.0 -> 17 and a tie
    assert calibration.auroc(both, is_known) == pytest.approx((20 + 1 + 0 + 17.5) / 80)
    with pytest.raises(ValueError, match="both known"):
        calibration.auroc(scores, np.ones(5, bool))


def test_coverage_and_set_size():
    sets = np.array([[True, False], [True, False], [True, True], [False, False]])
    assert calibration.coverage(sets, LABELS) == pytest.approx(0.5)
    assert calibration.mean_set_size(sets) == pytest.approx(1.0)


def test_conformal_p_values_and_rejection_threshold_ranks():
    scores = np.arange(9.0, 0.0, -1.0)  # 1..9, unsorted
    # conservative: (#{s_i > s} + #{s_i = s} + 1) / (n + 1)
    assert conformal_p_values(scores, np.array([9.0, 9.5, 5.0, 0.0])).tolist() == [0.2, 0.1, 0.6, 1.0]
    assert conformal_p_values(scores[:8], 100.0) == pytest.approx(1 / 9)  # never <= 0.1 with 8 scores
    assert conformal_p_values(scores[:8], 100.0, tiebreak=0.5) == pytest.approx(0.5 / 9)  # smoothed
    assert conformal_p_values(scores, 5.0, tiebreak=0.5) == pytest.approx((4 + 0.5 * 2) / 10)  # a tie
    assert rejection_threshold(np.arange(19.0), 0.05) == 0.0  # rank floor(20 * .05) = 1
    assert rejection_threshold(np.arange(18.0), 0.05) == -math.inf  # rank 0: reject nothing
    with pytest.raises(ValueError, match="no calibration scores"):
        conformal_p_values(np.zeros(0), 1.0)


def test_smoothed_p_values_are_exactly_uniform_and_conservative_ones_are_not():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(20000, 9))  # 8 calibration scores and a new one, exchangeable
    u = rng.random(20000)
    smooth = np.array([conformal_p_values(row[:8], row[8], tiebreak=t) for row, t in zip(draws, u)])
    plain = np.array([conformal_p_values(row[:8], row[8]) for row in draws])
    assert abs((smooth <= 0.1).mean() - 0.1) < 0.01  # exact level, even with 8 scores
    assert (plain <= 0.1).mean() == 0.0  # 8 scores never reach 0.1: the full set
    assert abs((plain <= 0.5).mean() - 4 / 9) < 0.015  # floor(0.5 * 9) / 9


def test_tiebreak_is_a_fixed_uniform_number_per_row():
    rows = np.random.default_rng(1).random((2000, 3))
    u = tiebreak(rows)
    assert u.shape == (2000, 1) and (u >= 0).all() and (u < 1).all()
    assert np.array_equal(u, tiebreak(rows.copy())) and np.array_equal(tiebreak(rows[5:6]), u[5:6])
    assert abs(u.mean() - 0.5) < 0.02 and abs((u < 0.1).mean() - 0.1) < 0.02


def test_temperature_minimises_the_smoothed_nll():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((40, 4))
    labels = rng.integers(0, 4, 40)
    scores[np.arange(40), labels] += 1.0
    beta, loss = fit_inverse_temperature(scores, labels)
    for other in (beta * 0.9, beta * 1.1):
        assert fit_inverse_temperature(scores, labels)[1] <= _smoothed_nll(other, scores, labels) + 1e-12
    assert loss == pytest.approx(_smoothed_nll(beta, scores, labels))


def _smoothed_nll(beta, scores, labels):
    n, c = scores.shape
    eps = 1 / (n + 1)
    z = beta * scores
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    targets = np.full(scores.shape, eps / c)
    targets[np.arange(n), labels] += 1 - eps
    return float(-(targets * log_p).sum(1).mean())


def test_folds_leave_every_class_a_training_item():
    labels = np.array([0] * 2 + [1] * 7 + [2])
    folds = fold_assignment(labels, 5, seed=0)
    assert (folds[labels == 2] == -1).all()  # one item: never held out
    for fold in range(folds.max() + 1):
        kept = labels[folds != fold]
        assert {0, 1, 2} <= set(kept.tolist())
    assert sorted(folds[labels == 1].tolist()) == [0, 0, 1, 1, 2, 3, 4]


# ---------------------------------------------------------------- Calibrated

C, K, D = 4, 6, 8


def draw(shots: int, seed: int, classes: int = C, noise: float = 1.6) -> tuple[np.ndarray, np.ndarray]:
    means = np.random.default_rng(123).standard_normal((classes, K, D))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), shots)
    X = means[y] + noise * rng.standard_normal((len(y), K, D))
    return X.astype(np.float32), np.array([f"c{i}" for i in y])


def quiet_fit(clf, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clf.fit(X, y)


@pytest.mark.parametrize("base", [CALMClassifier(), SAVClassifier(n_heads=3), ConcatCentroidClassifier(),
                                  UniformVoteClassifier(), LogisticProbe(), TunedCALMClassifier(grid={"tau": (0.05,
                                                                                                     0.1)})],
                         ids=lambda b: type(b).__name__)
def test_every_classifier_calibrates_and_keeps_its_predictions(base):
    Xs, ys = draw(6, seed=1)
    Xq, _ = draw(10, seed=2)
    clf = quiet_fit(Calibrated(base), Xs, ys)
    plain = quiet_fit(type(base)(**base.get_params()), Xs, ys)
    assert np.array_equal(clf.predict(Xq), plain.predict(Xq))  # predict is unchanged
    proba = clf.predict_proba(Xq)
    assert proba.shape == (len(Xq), C) and np.allclose(proba.sum(1), 1)
    assert clf.n_calibration_ == len(ys) and clf.temperature_ > 0 and np.isfinite(clf.threshold_)
    labels, scores = clf.predict_open(Xq)
    assert len(labels) == len(scores) == len(Xq)  # a rejected clip keeps its row
    kept = labels != "unknown"
    assert np.array_equal(labels[kept], plain.predict(Xq)[kept])
    assert np.array_equal(labels == "unknown", scores < clf.threshold_)
    sets = clf.predict_sets(Xq, 0.8)
    assert len(sets) == len(Xq) and all(set(s) <= set(clf.classes_.tolist()) for s in sets)


def test_calibration_uses_the_support_only():
    Xs, ys = draw(5, seed=1)
    a = quiet_fit(Calibrated(CALMClassifier()), Xs, ys)
    b = quiet_fit(Calibrated(CALMClassifier()), Xs.copy(), ys.copy())
    assert a.temperature_ == b.temperature_ and a.threshold_ == b.threshold_
    assert np.array_equal(a.conformity_scores_, b.conformity_scores_)


def test_queries_permuted_give_the_same_calibration_in_the_evaluation():
    X, y = draw(12, seed=3)
    folds = ["query" if i % 12 >= 8 else "train" for i in range(len(y))]
    heads = HeadIndex.from_tuples(("self_attn", 0, h) for h in range(K))
    features = HeadFeatures(X.astype(np.float16), heads, [f"i{i:03d}" for i in range(len(y))], {"model_id": "x"})
    items = [Item(f"i{i:03d}", None, str(label), fold=fold) for i, (label, fold) in enumerate(zip(y, folds))]
    query = [i for i, fold in enumerate(folds) if fold == "query"]
    shuffled = list(items)
    for i, j in zip(query, np.random.default_rng(0).permutation(query)):
        shuffled[i] = Item(items[i].id, None, items[j].label, fold="query")
    reports = [quiet_evaluate(features, its, shots=(4,), seeds=2, methods=["calm"], query_fold="query")
               for its in (items, shuffled)]
    rows = [[r["trust"] for r in report.results] for report in reports]
    for first, second in zip(*rows):
        for key in ("temperature", "threshold", "calibration_items"):
            assert first[key] == second[key]
    assert [r["ece"] for r in rows[0]] != [r["ece"] for r in rows[1]]  # the queries did change


def test_held_out_accuracy_is_the_cross_fitted_accuracy():
    Xs, ys = draw(3, seed=5, noise=2.5)
    clf = quiet_fit(Calibrated(CALMClassifier()), Xs, ys)
    order = canonical_order(Xs, np.unique(ys, return_inverse=True)[1])  # the folds are dealt in this order
    Xs, ys = Xs[order], ys[order]
    folds = fold_assignment(np.unique(ys, return_inverse=True)[1], 5, seed=0)
    hits = []
    for fold in range(folds.max() + 1):
        model = quiet_fit(CALMClassifier(), Xs[folds != fold], ys[folds != fold])
        hits += (model.predict(Xs[folds == fold]) == ys[folds == fold]).tolist()
    assert 0 < np.mean(hits) < 1  # a case where the estimate says something
    assert clf.held_out_accuracy_ == pytest.approx(np.mean(hits))


def test_one_shot_cannot_calibrate_and_says_so():
    Xs, ys = draw(1, seed=1)
    with pytest.warns(UserWarning, match="single support item"):
        clf = Calibrated(CALMClassifier()).fit(Xs, ys)
    assert clf.temperature_ == 1.0 and clf.threshold_ is None and clf.held_out_accuracy_ is None
    with pytest.raises(ValueError, match="at least 2 items per class"):
        clf.predict_open(Xs)
    with pytest.raises(ValueError, match="target_frr"):
        Calibrated(CALMClassifier(), target_frr=1.5).fit(Xs, ys)


def test_save_load_keeps_calibration_and_threshold(tmp_path):
    Xs, ys = draw(5, seed=1)
    Xq, _ = draw(8, seed=2)
    clf = quiet_fit(Calibrated(SAVClassifier(n_heads=3), target_frr=0.2), Xs, ys)
    path = save(clf, tmp_path / "c.safetensors")
    back = load(path)
    assert isinstance(back, Calibrated) and isinstance(back.estimator_, SAVClassifier)
    for name in ("temperature_", "threshold_", "logit_source_", "n_calibration_", "held_out_accuracy_", "target_frr",
                 "open_score"):
        assert getattr(back, name) == getattr(clf, name)
    assert np.array_equal(back.predict_proba(Xq), clf.predict_proba(Xq))
    assert np.array_equal(back.predict_open(Xq)[0], clf.predict_open(Xq)[0])
    assert back.predict_sets(Xq, 0.9) == clf.predict_sets(Xq, 0.9)
    plain = save(clf.estimator_, tmp_path / "plain.safetensors")  # a plain classifier has no calibration entry
    with safe_open(str(plain), framework="numpy") as handle:
        assert "calibration" not in json.loads(handle.metadata()["calm"])
    assert isinstance(load(plain), SAVClassifier)

    with safe_open(str(path), framework="numpy") as handle:
        meta = json.loads(handle.metadata()["calm"])
        arrays = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    meta["calibration"]["fitted"]["temperature_"] = -1.0  # checksummed again: the check behind the checksum
    save_file(arrays, str(tmp_path / "bad.safetensors"), metadata={"calm": json.dumps(restamped(meta, arrays))})
    with pytest.raises(ValueError, match="damaged calibration metadata"):
        load(tmp_path / "bad.safetensors")
    del meta["calibration"]
    save_file(arrays, str(tmp_path / "bad2.safetensors"), metadata={"calm": json.dumps(restamped(meta, arrays))})
    with pytest.raises(ValueError, match="calibration arrays without calibration metadata"):
        load(tmp_path / "bad2.safetensors")


def restamped(meta: dict, arrays: dict) -> dict:
    """``meta`` with the checksum a file with these arrays would carry (format 4)."""
    bare = {k: v for k, v in meta.items() if k != "checksum"}
    return {**bare, "checksum": _checksum(arrays, bare)}


# ---------------------------------------------------------------- evaluation


def quiet_evaluate(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_features(*args, **kwargs)


def test_evaluation_reports_trust_and_open_set(tmp_path):
    X, y = draw(10, seed=4, classes=5, noise=1.2)
    heads = HeadIndex.from_tuples(("self_attn", 0, h) for h in range(K))
    ids = [f"i{i:03d}" for i in range(len(y))]
    features = HeadFeatures(X.astype(np.float16), heads, ids, {"model_id": "x"})
    items = [Item(i, None, str(label)) for i, label in zip(ids, y)]
    report = quiet_evaluate(features, items, shots=(1, 4), seeds=2, methods=["sav", "calm"])
    by_shots = {(r["method"], r["shots"]): r for r in report.trust_rows()}
    four = by_shots["calm", 4]
    assert 0 <= four["ece"] <= 1 and four["coverage_90"] is not None and 0.5 < four["auroc"] <= 1
    assert by_shots["calm", 1]["coverage_90"] is None  # one shot: nothing to calibrate sets or rejection on
    row = next(r for r in report.results if r["method"] == "calm" and r["shots"] == 4)
    assert row["trust"]["held_out_classes"] == held_out_classes(report.classes, row["seed"])
    paths = report.write(tmp_path)
    assert paths["reliability_plot"].stat().st_size > 0
    assert "open-set AUROC" in paths["markdown"].read_text()
    saved = json.loads(paths["json"].read_text())
    assert saved["trust"] and set(saved["reliability"]) == {"sav", "calm"}
    assert quiet_evaluate(features, items, shots=(4,), seeds=1, methods=["calm"], trust=False).trust_rows() == []


def test_open_set_is_skipped_when_no_query_is_of_a_held_out_class():
    from calm.evaluation.trust import TrustRecorder

    Xs, ys = draw(4, seed=1)
    Xq, yq = draw(3, seed=2)
    classes = sorted(set(ys.tolist()))
    dropped = set(held_out_classes(classes, 0))
    keep = np.array([label not in dropped for label in yq])  # every query of those classes went to the support
    clf = quiet_fit(Calibrated(CALMClassifier()), Xs, ys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = TrustRecorder("multiclass", classes).score("calm", 4, 0, clf, CALMClassifier, Xs, ys.tolist(),
                                                          Xq[keep], yq[keep].tolist())
    assert "auroc" not in out and out["coverage_90"] is not None


def test_held_out_classes_share_and_bounds():
    assert len(held_out_classes(list("abcdefgh"), 0)) == 2
    assert len(held_out_classes(list("abc"), 0)) == 1
    assert held_out_classes(list("abcdefgh"), 3) == held_out_classes(list("abcdefgh"), 3)

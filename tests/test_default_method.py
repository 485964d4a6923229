"""The recommended method: what it is, save -> load -> identical outputs, registration, and that
every choice made inside fit (lambda, C, tau) sees the support only."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from calm.classifiers import DefaultClassifier, HeadWhitener, UniformVoteClassifier, load, save
from calm.data.episodes import episodes
from calm.data.items import Item
from calm.evaluation.protocol import evaluate_features
from calm.methods import get as registered
from calm.features import HeadFeatures, HeadIndex


def make_data(seed=0, classes=3, shots=5, heads=6, dim=8, queries=12):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, heads, dim))
    y = np.repeat(np.arange(classes), shots)
    yq = np.arange(queries) % classes
    X = means[y] + rng.normal(size=(len(y), heads, dim))
    Xq = means[yq] + rng.normal(size=(queries, heads, dim))
    names = np.array(["bird", "car", "rain"])
    return X.astype(np.float32), names[y], Xq.astype(np.float32), names[yq]


def test_default_is_the_whitened_uniform_vote():
    X, y, Xq, _ = make_data()
    default = DefaultClassifier().fit(X, y)
    plain = UniformVoteClassifier().fit(HeadWhitener(shrinkage="oas").fit(X, y).transform(X), y)
    np.testing.assert_allclose(default.decision_function(Xq),
                               plain.decision_function(HeadWhitener(shrinkage="oas").fit(X, y).transform(Xq)),
                               atol=1e-6)
    assert registered("auto").make().get_params() == DefaultClassifier().get_params()


def test_save_load_predict_identical(tmp_path):
    X, y, Xq, _ = make_data(seed=1)
    heads = HeadIndex.from_tuples([("self_attn", layer, h) for layer in range(3) for h in range(2)])
    fingerprint = {"model_id": "tiny", "prompt": "p"}
    clf = DefaultClassifier().fit(HeadFeatures(X, heads, [f"s{i}" for i in range(len(X))], fingerprint), y)
    path = save(clf, tmp_path / "auto.safetensors")
    again = load(path, fingerprint=fingerprint, estimator=DefaultClassifier)
    assert again.get_params() == clf.get_params()
    np.testing.assert_array_equal(again.predict(Xq), clf.predict(Xq))
    np.testing.assert_array_equal(again.predict_proba(Xq), clf.predict_proba(Xq))
    np.testing.assert_array_equal(again.decision_function(Xq), clf.decision_function(Xq))


def dataset(permute_queries: bool) -> tuple[HeadFeatures, list[Item]]:
    X, y, Xq, yq = make_data(seed=2, shots=6, queries=15)
    if permute_queries:
        yq = np.random.default_rng(0).permutation(yq)
    ids = [f"s{i}" for i in range(len(X))] + [f"q{i}" for i in range(len(Xq))]
    folds = ["support"] * len(X) + ["query"] * len(Xq)
    items = [Item(i, None, str(label), fold=fold) for i, label, fold in zip(ids, [*y, *yq], folds)]
    heads = HeadIndex.from_tuples([("self_attn", 0, h) for h in range(X.shape[1])])
    return HeadFeatures(np.concatenate([X, Xq]), heads, ids), items


@pytest.mark.parametrize("method", ["auto", "probe-tuned", "calm-tuned-white", "sav-white"])
def test_choices_use_support_only(method):
    """Permuting the query labels changes neither what is fitted nor what is predicted."""
    fitted = []
    for permute in (False, True):
        features, items = dataset(permute)
        (support, query), = episodes(items, 4, [0])
        Xs = features.select([i.id for i in support])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = registered(method).make().fit(Xs, np.array([i.label for i in support]))
        choices = {k: getattr(clf, k) for k in ("whiten_shrinkage_", "C_", "best_params_", "heads_") if hasattr(clf, k)}
        fitted.append((choices, clf.predict(features.select([i.id for i in query]))))
    (first, pred_a), (second, pred_b) = fitted
    assert first.keys() == second.keys() and first
    for key in first:
        np.testing.assert_array_equal(np.asarray(first[key], dtype=object), np.asarray(second[key], dtype=object))
    np.testing.assert_array_equal(pred_a, pred_b)


def test_evaluate_reports_the_default_beside_the_others():
    features, items = dataset(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SAV asks for more heads than the 6 here
        report = evaluate_features(features, items, shots=(2,), seeds=2, methods=["sav", "auto", "probe-tuned"])
    methods = {row["method"] for row in report.summary_rows()}
    assert methods == {"sav", "auto", "probe-tuned"}
    assert report.config["methods"]["auto"]["estimator"] == "DefaultClassifier"

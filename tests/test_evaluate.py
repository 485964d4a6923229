"""The evaluation protocol and report: on synthetic features (pure, fast) every task's numbers, the
zero-shot and pseudo-label bookkeeping; end to end, ``calm evaluate`` on a generated ESC-50 folder
with a tiny random Qwen2-Audio writes every file with every method."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile

import calm.methods
from calm.cli import main
from calm.data.items import Item
from calm.evaluation.metrics import eer, mean_interval
from calm.evaluation.planning import detect_task
from calm.evaluation.protocol import evaluate_features
from calm.evaluation.provenance import constant_heads
from calm.evaluation.zeroshot import ModelAnswers, pseudo_label
from calm.features import HeadFeatures, HeadIndex

HEADS = HeadIndex.from_tuples(("self_attn", layer, head) for layer in range(2) for head in range(3))


def synthetic(labels: list, noise: float = 0.6, seed: int = 0, folds: list | None = None
              ) -> tuple[HeadFeatures, list[Item]]:
    """Features [N, 6, 4]: a random centre per class and head plus noise; multi-label items sum
    their labels' centres. Head 0 is the same for every item (constant)."""
    rng = np.random.default_rng(seed)
    names = sorted({c for label in labels for c in (label if isinstance(label, tuple) else (label,))})
    centres = {c: rng.standard_normal((len(HEADS), 4)) for c in names}
    X = np.stack([sum(centres[c] for c in (label if isinstance(label, tuple) else (label,)))
                  + noise * rng.standard_normal((len(HEADS), 4)) for label in labels])
    X[:, 0] = 0.5
    items = [Item(f"item{i:03d}", None, label, fold=None if folds is None else folds[i]) for i, label in enumerate(labels)]
    fingerprint = {"model_id": "synthetic", "dtype": "float16", "prompt": "What sound is this?"}
    return HeadFeatures(X.astype(np.float16), HEADS, [i.id for i in items], fingerprint), items


def quiet_evaluate(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_features(*args, **kwargs)


def test_detect_task():
    assert detect_task([Item("a", None, "dog"), Item("b", None, "cat")]) == "multiclass"
    assert detect_task([Item("a", None, "bonafide"), Item("b", None, "spoof")]) == "spoof"
    assert detect_task([Item("a", None, ("dog", "cat")), Item("b", None, "cat")]) == "multilabel"


def test_multiclass_report_numbers_and_disjoint_episodes(tmp_path):
    features, items = synthetic(["dog", "cat", "bird"] * 8)
    report = quiet_evaluate(features, items, shots=(1, 3), seeds=3, methods=["calm", "sav"])
    assert [(r["method"], r["shots"]) for r in report.summary_rows()] == [("sav", 1), ("calm", 1), ("sav", 3),
                                                                           ("calm", 3)]
    assert len(report.results) == 2 * 2 * 3
    protocol = report.config["protocol"]
    assert protocol["name"] == "random" and protocol["support_query_disjoint"] is True
    by_id = {i.id: i for i in items}
    for episode in protocol["episodes"]:
        assert episode["n_support"] == 3 * episode["shots"]
        assert episode["n_support"] + episode["n_query"] == len(items)
        assert all(by_id[i].label for i in episode["support"])
    # the summary is the mean and t-interval of the per-seed numbers
    calm_3 = [r["metrics"]["accuracy"] for r in report.results if r["method"] == "calm" and r["shots"] == 3]
    row = next(r for r in report.summary_rows() if r["method"] == "calm" and r["shots"] == 3)
    assert (row["accuracy"], row["accuracy_ci"] or 0.0) == pytest.approx(mean_interval(calm_3), nan_ok=True)
    assert row["accuracy"] > 0.9  # well-separated classes
    # constant head found and reported by name
    assert constant_heads(features) == [0]
    assert report.config["heads"]["constant"] == ["self_attn L0 H0"]
    # confusion counts: every query of every seed, summed
    assert report.confusion["calm"][3].sum() == sum(r["n_query"] for r in report.results
                                                    if r["method"] == "calm" and r["shots"] == 3)
    shots, weights = report.calm_weights
    assert shots == 3 and weights.shape == (len(HEADS), 3)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-6)
    assert report.config["methods"]["calm"]["params"]["tau"] == 0.07
    paths = report.write(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["config"]["seeds"] == [0, 1, 2] and data["config"]["shots"] == [1, 3]
    assert len(data["results"]) == 12 and data["calm_weights"]["heads"][0] == "self_attn L0 H0"
    assert "| calm | 3 |" in paths["markdown"].read_text()
    for name in ("accuracy_vs_shots.png", "calm_weights.png", "confusion_calm.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_row_order_of_the_features_changes_nothing():
    """Episodes select rows by id, so features in another order (a store's) give the same report."""
    features, items = synthetic(["dog", "cat", "bird"] * 8)
    order = np.random.default_rng(1).permutation(len(items))
    shuffled = HeadFeatures(features.X[order], features.heads, [features.ids[i] for i in order], features.fingerprint)
    methods = ["sav", "calm", "centroid", "probe"]
    a = quiet_evaluate(features, items, shots=(1, 3), seeds=2, methods=methods)
    b = quiet_evaluate(shuffled, items, shots=(1, 3), seeds=2, methods=methods)
    assert a.summary_rows() == b.summary_rows()


def test_method_params_reach_the_estimator_and_the_report():
    features, items = synthetic(["dog", "cat"] * 6)
    report = quiet_evaluate(features, items, shots=(2,), seeds=1, methods=["calm"], params={"calm": {"tau": 0.5}})
    assert report.config["methods"]["calm"]["params"]["tau"] == 0.5
    with pytest.raises(ValueError, match="unknown method"):
        evaluate_features(features, items, methods=["nope"])
    with pytest.raises(ValueError, match="need the model's answers"):
        evaluate_features(features, items, methods=["zero-shot"])


def test_tuning_impossible_at_one_shot_is_reported_not_hidden():
    features, items = synthetic(["dog", "cat"] * 6)
    report = quiet_evaluate(features, items, shots=(1, 2), seeds=2, methods=["calm-tuned"])
    one = [r for r in report.results if r["shots"] == 1]
    assert all("error" in r and r["metrics"] == {} for r in one)
    assert any(note.startswith("not evaluated") and "(2 fits: calm-tuned; 1-shot)" in note for note in report.notes)
    rows = {r["shots"]: r for r in report.summary_rows()}
    assert rows[1]["accuracy"] is None and rows[2]["accuracy"] is not None
    assert "| calm-tuned | 1 | — | — | — |" in report.markdown()


def test_spoof_report_has_eer_from_the_bonafide_score():
    labels = ["bonafide", "spoof", "spoof"] * 8
    features, items = synthetic(labels, noise=1.5, folds=["train"] * 12 + ["eval"] * 12)
    answers = ModelAnswers("Is it bonafide or spoof?", greedy={i.id: "spoof" for i in items})
    report = quiet_evaluate(features, items, shots=(2,), seeds=2, methods=["calm", "sav", "zero-shot"],
                            answers=answers)
    assert report.task == "spoof" and report.metrics[-1] == "eer"
    assert report.config["protocol"]["name"] == "split"
    for row in report.results:
        if row["method"] == "zero-shot":  # text has no continuous score
            assert "eer" not in row["metrics"]
            assert row["metrics"]["accuracy"] == pytest.approx(2 / 3)
        else:
            assert 0.0 <= row["metrics"]["eer"] <= 1.0
            assert row["n_query"] == 12
    # the recorded EER is the EER of CALM's bonafide-minus-spoof decision on the query
    from calm.classifiers import CALMClassifier

    episode = next(e for e in report.config["protocol"]["episodes"] if e["seed"] == 0)
    query = [i for i in items if i.fold == "eval"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = CALMClassifier().fit(features.select(episode["support"]),
                                   [next(i.label for i in items if i.id == s) for s in episode["support"]])
    decision = clf.decision_function(features.select([i.id for i in query]))
    column = list(clf.classes_)
    score = decision[:, column.index("bonafide")] - decision[:, column.index("spoof")]
    expected = eer([i.label for i in query], score, positive="bonafide")
    got = next(r for r in report.results if r["method"] == "calm" and r["seed"] == 0)["metrics"]["eer"]
    assert got == pytest.approx(expected)
    assert "EER (%)" in report.markdown()


def test_multilabel_report_has_map_and_per_label_f1():
    labels = [("dog",), ("cat",), ("bird",), ("dog", "cat"), ("cat", "bird"), ("dog", "bird")] * 4
    features, items = synthetic(labels, noise=0.3)
    report = quiet_evaluate(features, items, shots=(2,), seeds=2, methods=["calm", "probe"])
    assert report.task == "multilabel" and report.metrics == ("map", "macro_f1")
    for row in report.results:
        assert 0.0 <= row["metrics"]["map"] <= 1.0
        assert set(row["metrics"]["per_label_f1"]) == {"bird", "cat", "dog"}
    assert next(r for r in report.summary_rows() if r["method"] == "calm")["map"] > 0.8
    assert report.confusion == {}
    assert "mAP (%)" in report.markdown()


def test_zero_shot_maps_answers_and_counts_unmappable_as_wrong():
    features, items = synthetic(["dog", "cat"] * 5)
    greedy = {}
    for n, item in enumerate(items):  # correct (with noise around the name), wrong, or unmappable
        greedy[item.id] = [f"A {item.label}.", "cat", "I am not sure", "DOGS!"][n % 4]
    report = quiet_evaluate(features, items, shots=(1,), seeds=2, methods=["zero-shot"],
                            answers=ModelAnswers("Which: cat, dog?", greedy=greedy))
    truth = {i.id: i.label for i in items}
    mapped = {i: {"A dog.": "dog", "A cat.": "cat", "cat": "cat", "DOGS!": "dog"}.get(a) for i, a in greedy.items()}
    for row, episode in zip(report.results, report.config["protocol"]["episodes"]):
        query = [i.id for i in items if i.id not in episode["support"]]
        assert row["metrics"]["accuracy"] == pytest.approx(np.mean([mapped[i] == truth[i] for i in query]))
        assert row["unmapped"] == sum(mapped[i] is None for i in query)
    summary = report.zero_shot
    assert summary["unmapped"] == sum(v is None for v in mapped.values())
    assert summary["unmapped_examples"][0]["answer"] == "I am not sure"
    assert "named no class" in report.markdown()


def test_pseudo_label_majority_and_threshold():
    classes = ["cat", "dog"]
    assert pseudo_label(["dog", "a dog", "cat", "hmm"], classes).label == "dog"
    assert pseudo_label(["dog", "a dog", "cat", "hmm"], classes).agreement == 0.5
    assert pseudo_label(["dog", "cat"], classes).label is None  # a tie names no class
    assert pseudo_label(["?", "??"], classes).label is None
    assert not pseudo_label(["dog", "cat", "dog", "x", "y"], classes).confident(0.6)
    assert pseudo_label(["dog", "dog", "dog", "x", "y"], classes).confident(0.6)


def test_pseudo_label_fits_on_the_model_labels_not_the_truth():
    features, items = synthetic(["dog", "cat", "bird"] * 6)
    truth = {i.id: i.label for i in items}
    # the "model" is right on dogs and cats, unsure on birds, and swaps one cat for a dog
    sampled = {}
    for item in items:
        if item.label == "bird":
            sampled[item.id] = ["bird", "cat", "dog"]
        else:
            sampled[item.id] = [item.label] * 3
    swapped = next(i.id for i in items if i.label == "cat")
    sampled[swapped] = ["dog"] * 3
    report = quiet_evaluate(features, items, shots=(3,), seeds=2, methods=["pseudo-label"],
                            answers=ModelAnswers("Which: bird, cat, dog?", sampled=sampled))
    for row, episode in zip(report.results, report.config["protocol"]["episodes"]):
        pseudo = row["pseudo"]
        support = episode["support"]
        kept = [i for i in support if truth[i] != "bird"]
        assert pseudo["support"] == 9 and pseudo["kept"] == len(kept) == 6
        wrong = int(swapped in support)
        assert pseudo["label_accuracy"] == pytest.approx((6 - wrong) / 6)
        assert pseudo["classes_kept"] == 2
        assert row["metrics"]["accuracy"] <= 2 / 3 + 1e-9  # birds can never be predicted
    assert report.config["methods"]["pseudo-label"]["threshold"] == 0.6
    assert "Pseudo-labels at 3-shot: 67% of the support kept" in report.markdown()


def test_failed_items_are_left_out_and_listed():
    features, items = synthetic(["dog", "cat"] * 6)
    kept = [i.id for i in items[1:]]
    partial = features.select(kept)
    partial.failed[items[0].id] = "broken.wav: not a decodable audio file"
    report = quiet_evaluate(partial, items, shots=(2,), seeds=1, methods=["calm"])
    assert report.config["failed"] == {items[0].id: "broken.wav: not a decodable audio file"}
    assert report.config["counts"]["evaluated"] == len(items) - 1
    with pytest.raises(ValueError, match="have no features"):
        evaluate_features(features.select(kept), items, methods=["calm"])


# ---------------------------------------------------------------------------- end to end, CLI


def write_esc50(root: Path, classes: dict[str, float], per_fold: int = 1, seconds: float = 0.5) -> Path:
    """An ESC-50 layout: ``meta/esc50.csv`` and ``audio/*.wav`` tones of a class-specific frequency."""
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    t = np.arange(int(16000 * seconds)) / 16000
    for target, (name, hz) in enumerate(classes.items()):
        for fold in range(1, 6):
            for take in range(per_fold):
                filename = f"{fold}-{target}{take}-A-{target}.wav"
                tone = 0.3 * np.sin(2 * np.pi * hz * (1 + 0.02 * take) * t) + 0.01 * rng.standard_normal(len(t))
                soundfile.write(root / "audio" / filename, tone.astype(np.float32), 16000)
                rows.append(f"{filename},{fold},{target},{name},False,{target}{take},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def test_cli_evaluate_on_esc50_layout_writes_every_method(tmp_path, capsys):
    data = write_esc50(tmp_path / "esc50", {"dog": 300.0, "rain": 900.0, "siren": 2000.0})
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(["evaluate", "--data", str(data), "--model", "tiny:qwen2_audio", "--shots", "1", "2",
                       "--seeds", "2", "--out", str(out), "--batch-size", "8", "--samples", "2",
                       "--max-new-tokens", "3", "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| method | shots | accuracy (%)")
    report = json.loads((out / "report.json").read_text())
    methods = calm.methods.names()
    assert list(report["config"]["methods"]) == methods
    assert {(r["method"], r["shots"]) for r in report["summary"]} == {(m, k) for m in methods for k in (1, 2)}
    # only tuning at 1 shot cannot run (LOO needs 2 items of a class); it is reported, not dropped
    assert {(r["method"], r["shots"]) for r in report["results"] if "error" in r} == {("calm-tuned", 1),
                                                                                     ("calm-tuned-white", 1)}
    assert report["config"]["fingerprint"]["model_id"] == "tiny:qwen2_audio"
    assert "dog, rain, siren" in report["config"]["answer_prompt"]  # every class, in a fixed order
    protocol = report["config"]["protocol"]
    assert protocol["name"] == "folds" and protocol["support_query_disjoint"] is True
    # ESC-50: the query of seed i is fold i+1; support comes from the other folds only
    fold_of = {line.split(",")[0].removesuffix(".wav"): line.split(",")[1]
               for line in (data / "meta" / "esc50.csv").read_text().splitlines()[1:]}
    for episode in protocol["episodes"]:
        assert episode["query_fold"] == str(episode["seed"] + 1) and episode["n_query"] == 3
        assert all(fold_of[i] != episode["query_fold"] for i in episode["support"])
    assert report["zero_shot"]["answered"] == 6  # the query folds 1 and 2, answered once each
    pseudo = [r for r in report["results"] if r["method"] == "pseudo-label"]
    assert len(pseudo) == 4 and all(r["pseudo"]["support"] == 3 * r["shots"] for r in pseudo)
    markdown = (out / "report.md").read_text()
    for method in methods:
        assert f"| {method} | 2 |" in markdown
    for name in ("accuracy_vs_shots.png", "calm_weights.png", "calm_layer_profile.png", "confusion_calm.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

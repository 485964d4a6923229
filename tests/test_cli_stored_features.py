"""Stored features need no weights: a deferred backbone gives the fingerprint, sites and heads a
loaded one gives (tiny models, a local folder, the offline Whisper) and extracts stored items
without loading; ``calm predict --store`` reuses and fills a store, ``--data`` scores against
labels; ``--quiet`` is quiet; the encoder-window hint."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import calm.backbones
import calm.backbones.loading
from calm.backbones import BackboneOptions, load_backbone
from calm.backbones.loading import DeferredBackbone, load_backbone_deferred
from calm.backbones.tiny import tiny_backbone
from calm.cli import main
from calm.cli._prepare import encoder_window_hint
from calm.heads import extract, feature_fingerprint
from calm.predict import Prediction, score_predictions
from test_cli_fit_predict import TONES, tone

PROMPT = "What is it?"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stored")
    for name, hz in TONES.items():
        (root / name).mkdir()
        for k in range(3):
            tone(root / name / f"{name}{k}.wav", hz * (1 + 0.03 * k), seed=k)
    return root


def _clips(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.wav"))


def _same_without_weights(name: str, options: BackboneOptions, clips: list[Path], store: Path, monkeypatch) -> None:
    loaded = load_backbone(name, options)
    stored = extract(loaded, clips, PROMPT, store=store)
    deferred = load_backbone_deferred(name, options, store=store, prompt=PROMPT)
    assert isinstance(deferred, DeferredBackbone) and not deferred.loaded
    assert feature_fingerprint(deferred, PROMPT) == feature_fingerprint(loaded, PROMPT)
    assert deferred.head_index() == loaded.head_index()
    with monkeypatch.context() as patch:
        patch.setattr(calm.backbones.loading, "load_backbone", lambda *a, **k: pytest.fail("weights were loaded"))
        again = extract(deferred, clips, PROMPT, store=store)
    assert not deferred.loaded and again.fingerprint == stored.fingerprint
    np.testing.assert_array_equal(np.asarray(again.X), np.asarray(stored.X))
    assert load_backbone_deferred(name, options, store=store, prompt="another prompt").__class__ is type(loaded)


@pytest.mark.parametrize("name, options", [("tiny:whisper", BackboneOptions()),
                                           ("tiny:whisper", BackboneOptions(encoder_seconds=2.0)),
                                           ("tiny:qwen2_audio", BackboneOptions()),
                                           ("tiny:qwen2_5_omni", BackboneOptions())])
def test_a_deferred_tiny_backbone_is_the_loaded_one_without_weights(name, options, folder, tmp_path, monkeypatch):
    _same_without_weights(name, options, _clips(folder)[:4], tmp_path, monkeypatch)


def test_a_deferred_local_folder_is_the_loaded_one_without_weights(folder, tmp_path, monkeypatch):
    backbone = tiny_backbone("whisper")
    backbone.model.save_pretrained(tmp_path / "model")
    backbone.processor.save_pretrained(tmp_path / "model")
    _same_without_weights(str(tmp_path / "model"), BackboneOptions(), _clips(folder)[:3], tmp_path / "store",
                          monkeypatch)


def test_a_deferred_offline_whisper_is_the_loaded_one_without_weights(folder, tmp_path, monkeypatch):
    _same_without_weights("whisper-tiny.en", BackboneOptions(encoder_seconds=1.0), _clips(folder)[:2], tmp_path,
                          monkeypatch)


def test_a_deferred_backbone_loads_when_a_feature_is_missing(folder, tmp_path):
    clips = _clips(folder)
    first = extract(tiny_backbone("whisper"), clips[:2], PROMPT, store=tmp_path)
    deferred = load_backbone_deferred("tiny:whisper", BackboneOptions(), store=tmp_path, prompt=PROMPT)
    more = extract(deferred, clips[:3], PROMPT, store=tmp_path)
    assert deferred.loaded and len(more) == 3 and more.fingerprint == first.fingerprint


def _predict(capsys, *args: str) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(["predict", *args, "--quiet"])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture(scope="module")
def classifier(folder, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", "--data", str(folder), "--model", "tiny:whisper", "--out", str(path), "--quiet",
                     "--prompt", PROMPT]) == 0
    return path


def test_predict_store_second_run_extracts_nothing(classifier, folder, tmp_path, capsys, monkeypatch):
    clips = [str(p) for p in _clips(folder)[:4]]
    status, first, _ = _predict(capsys, "--classifier", str(classifier), *clips, "--store", str(tmp_path))
    assert status == 0
    monkeypatch.setattr(calm.backbones.loading, "load_backbone", lambda *a, **k: pytest.fail("weights were loaded"))
    monkeypatch.setattr(calm.backbones, "load_backbone", lambda *a, **k: pytest.fail("weights were loaded"))
    status, second, _ = _predict(capsys, "--classifier", str(classifier), *reversed(clips), "--store", str(tmp_path))
    assert status == 0
    assert sorted(first.splitlines()[1:]) == sorted(second.splitlines()[1:])  # same rows, any order of files


def test_predict_data_reports_accuracy_f1_and_confusion_as_computed_by_hand(classifier, folder, tmp_path, capsys):
    status, out, err = _predict(capsys, "--classifier", str(classifier), "--data", str(folder))
    assert status == 0
    rows = [line.split(",") for line in out.splitlines()[1:]]
    truth = [Path(path).parent.name for path, *_ in rows]
    labels = [row[1] for row in rows]
    correct = sum(t == p for t, p in zip(truth, labels))
    f1 = []
    for name in sorted(set(truth)):
        tp = sum(t == p == name for t, p in zip(truth, labels))
        fp = sum(p == name != t for t, p in zip(truth, labels))
        fn = sum(t == name != p for t, p in zip(truth, labels))
        f1.append(2 * tp / (2 * tp + fp + fn))
    assert err.splitlines()[0] == (f"accuracy {correct / len(rows):.1%} of {len(rows)} labelled clip(s), "
                                   f"macro-F1 {sum(f1) / len(f1):.1%}")
    assert err.splitlines()[1] == "confusion (row: true class, column: predicted):"


def test_score_predictions_against_a_hand_computation():
    rows = [Prediction(p, label) for p, label in [("a1", "a"), ("a2", "b"), ("b1", "b"), ("b2", "b"),
                                                   ("c1", "unknown")]]
    rows.append(Prediction("bad", None, error="unreadable"))
    scores = score_predictions(rows, {"a1": "a", "a2": "a", "b1": "b", "b2": "b", "c1": "c", "bad": "c"})
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)  # a, b, c; 'unknown' is no true class
    assert scores["classes"] == ["a", "b", "c", "unknown"]
    np.testing.assert_array_equal(scores["confusion"], [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert (scores["n"], scores["unreadable"]) == (5, 1)


def test_fit_quiet_on_a_tiny_model_folder_writes_nothing_to_stderr(folder, tmp_path):
    backbone = tiny_backbone("whisper")
    backbone.model.save_pretrained(tmp_path / "model")  # loaded with from_pretrained: transformers' bars
    backbone.processor.save_pretrained(tmp_path / "model")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-m", "calm", "fit", "--data", str(folder), "--model",
                           str(tmp_path / "model"), "--out", str(tmp_path / "c.safetensors"), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "DefaultClassifier" in done.stdout


def test_the_encoder_window_hint_for_short_clips_on_whisper_s_full_window(folder):
    clips = _clips(folder)
    full = load_backbone("whisper-tiny.en")
    hint = encoder_window_hint(full, clips)
    assert hint is not None and "at most 0.4 s" in hint and "--encoder-seconds 1" in hint
    assert "30x less" in hint and "changes the features" in hint.lower()
    assert encoder_window_hint(full.with_options(encoder_seconds=5.0), clips) is None
    assert encoder_window_hint(tiny_backbone("qwen2_audio"), clips) is None


def test_evaluate_and_fit_on_a_complete_store_load_no_weights(folder, tmp_path, capsys, monkeypatch):
    common = ["--data", str(folder), "--model", "tiny:whisper", "--store", str(tmp_path / "store"), "--quiet"]
    evaluate = ["evaluate", *common, "--methods", "auto", "sav", "--shots", "1", "--seeds", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*evaluate, "--out", str(tmp_path / "first")]) == 0
        monkeypatch.setattr(calm.backbones.loading, "load_backbone", lambda *a, **k: pytest.fail("weights loaded"))
        assert main([*evaluate, "--out", str(tmp_path / "second")]) == 0
        assert main(["fit", *common, "--out", str(tmp_path / "clf.safetensors")]) == 0
    first, second = ((tmp_path / name / "report.md").read_text() for name in ("first", "second"))
    assert first == second

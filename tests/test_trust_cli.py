"""``calm fit`` calibrates; ``calm predict --reject`` and ``--sets`` work end to end on a tiny
random model: every file keeps its row, rejected rows carry the unknown label and their score,
sets are JSON lists of known classes, and an uncalibrated file is refused with a clear error."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile

from calm.classifiers import Calibrated, load
from calm.cli import main

TONES = {"low": 250.0, "mid": 1000.0, "high": 3000.0}


def tone(path: Path, hz: float, seed: int) -> Path:
    t = np.arange(6400) / 16000
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32), 16000)
    return path


def cli(*args: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main([*args, "--quiet"])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, list[str]]:
    """A calibrated classifier on 3 classes x 5 tones, and 6 new files (two far from every class)."""
    root = tmp_path_factory.mktemp("trust")
    for name, hz in TONES.items():
        (root / "train" / name).mkdir(parents=True)
        for k in range(5):
            tone(root / "train" / name / f"{name}{k}.wav", hz * (1 + 0.02 * k), seed=k)
    new = [tone(root / f"new{j}.wav", hz, seed=20 + j) for j, hz in enumerate([260.0, 990.0, 3100.0, 90.0, 6500.0])]
    soundfile.write(root / "noise.wav", np.random.default_rng(0).standard_normal(6400).astype(np.float32), 16000)
    model = root / "clf.safetensors"
    assert cli("fit", "--data", str(root / "train"), "--model", "tiny:qwen2_audio", "--out", str(model),
               "--target-frr", "0.25") == 0
    return model, [*map(str, new), str(root / "noise.wav")]


def test_reject_labels_unknown_below_the_threshold_and_drops_nothing(fitted, tmp_path):
    model, files = fitted
    clf = load(model)
    assert isinstance(clf, Calibrated) and clf.target_frr == 0.25 and np.isfinite(clf.threshold_)
    plain, rejecting = tmp_path / "plain.csv", tmp_path / "reject.csv"
    assert cli("predict", "--classifier", str(model), "--model", "tiny:qwen2_audio", *files, "--out", str(plain)) == 0
    assert cli("predict", "--classifier", str(model), "--model", "tiny:qwen2_audio", *files, "--reject",
               "--unknown-label", "none-of-these", "--out", str(rejecting)) == 0
    before, after = (list(csv.DictReader(p.read_text().splitlines())) for p in (plain, rejecting))
    assert [r["path"] for r in after] == [r["path"] for r in before] == files  # nothing dropped, same order
    for old, new in zip(before, after):
        rejected = float(new["score"]) < clf.threshold_
        assert new["label"] == ("none-of-these" if rejected else old["label"])
        assert all(new[f"p_{c}"] == old[f"p_{c}"] for c in TONES)  # probabilities stay
    assert "score" not in before[0]


def test_sets_are_json_lists_of_classes(fitted, capsys):
    model, files = fitted
    assert cli("predict", "--classifier", str(model), "--model", "tiny:qwen2_audio", *files, "--sets", "0.9",
               "--format", "jsonl") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(files)
    for line in lines:
        p = line["probabilities"]
        assert set(line["set"]) <= set(TONES)
        if line["set"]:  # a set holds every class at least as probable as its least probable member
            floor = min(p[c] for c in line["set"])
            assert set(line["set"]) == {c for c in TONES if p[c] >= floor}
    assert load(model).n_calibration_ == 15
    with pytest.raises(SystemExit):
        cli("predict", "--classifier", str(model), "--model", "tiny:qwen2_audio", files[0], "--sets", "1.5")


def test_uncalibrated_file_is_refused_for_reject(fitted, tmp_path, capsys):
    model, files = fitted
    plain = tmp_path / "plain.safetensors"
    train = model.parent / "train"
    assert cli("fit", "--data", str(train), "--model", "tiny:qwen2_audio", "--out", str(plain), "--no-calibrate") == 0
    assert not isinstance(load(plain), Calibrated)
    capsys.readouterr()
    assert cli("predict", "--classifier", str(plain), "--model", "tiny:qwen2_audio", files[0], "--reject") == 1
    assert "need a calibrated classifier" in capsys.readouterr().err


def test_typicality_column_and_a_warning_when_the_files_are_unlike_the_support(fitted, tmp_path, capsys):
    model, files = fitted
    noise = []
    for j in range(6):
        noise.append(tmp_path / f"noise{j}.wav")
        soundfile.write(noise[-1], np.random.default_rng(50 + j).standard_normal(6400).astype(np.float32), 16000)
    out = tmp_path / "typical.csv"
    capsys.readouterr()
    assert main(["predict", "--classifier", str(model), "--model", "tiny:qwen2_audio", *files[:3], "--sets", "0.9",
                 "--out", str(out)]) == 0
    assert "unlike the support set" not in capsys.readouterr().err  # three tones like the support's
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert all(0 < float(r["typicality"]) <= 1 for r in rows)
    assert main(["predict", "--classifier", str(model), "--model", "tiny:qwen2_audio", *map(str, noise), "--reject",
                 "--out", str(out)]) == 0
    assert "unlike the support set" in capsys.readouterr().err  # all noise: flagged, still labelled
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == 6 and all(float(r["typicality"]) <= 0.1 and r["label"] for r in rows)


def test_fit_reports_the_held_out_accuracy(fitted, tmp_path, capsys):
    model, _ = fitted
    capsys.readouterr()
    assert cli("fit", "--data", str(model.parent / "train"), "--model", "tiny:qwen2_audio", "--out",
               str(tmp_path / "again.safetensors")) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("held-out accuracy")]
    accuracy = load(tmp_path / "again.safetensors").held_out_accuracy_
    assert line == [(f"held-out accuracy on the support: {accuracy:.1%} of 15 clips, each classified by a copy "
                     "fitted without it (an estimate for new clips like these)")]


def test_fit_on_one_clip_per_class_says_uncalibrated(fitted, tmp_path, capsys):
    model, _ = fitted
    for name in TONES:
        (tmp_path / "one" / name).mkdir(parents=True)
        (tmp_path / "one" / name / "a.wav").write_bytes((model.parent / "train" / name / f"{name}0.wav").read_bytes())
    capsys.readouterr()
    assert cli("fit", "--data", str(tmp_path / "one"), "--model", "tiny:qwen2_audio", "--out",
               str(tmp_path / "one.safetensors")) == 0
    out = capsys.readouterr().out
    assert "DefaultClassifier (uncalibrated) on 3 classes" in out
    assert "probabilities: uncalibrated: no class has two support clips" in out
    assert load(tmp_path / "one.safetensors").calibration_status_.startswith("uncalibrated")

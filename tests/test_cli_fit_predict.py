"""``calm fit`` then ``calm predict`` give what the Python API gives; bad files and a mismatched
model or prompt give clear errors; ``--on-error record`` lists failed files as rows."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile

from calm.backbones.tiny import tiny_backbone
from calm.classifiers import load
from calm.cli import main
from calm.cli._common import DEFAULT_PROMPT
from calm.data.loaders import load_dataset
from calm.predict import fit_classifier, predict_files

TONES = {"low": 250.0, "mid": 1000.0, "high": 3000.0}


def tone(path: Path, hz: float, seconds: float = 0.4, seed: int = 0) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32), 16000)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A folder of 3 classes x 3 labelled tones, and 4 new unlabelled files."""
    root = tmp_path_factory.mktemp("fitdata")
    for name, hz in TONES.items():
        (root / "train" / name).mkdir(parents=True)
        for k in range(3):
            tone(root / "train" / name / f"{name}{k}.wav", hz * (1 + 0.03 * k), seed=k)
    (root / "new").mkdir()
    new = [tone(root / "new" / f"new{j}.wav", hz * 1.01, seed=10 + j) for j, hz in enumerate([*TONES.values(), 500.0])]
    return root / "train", new


def cli(*args: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main([*args, "--quiet"])


def test_fit_then_predict_equals_the_python_api(clips, tmp_path, capsys):
    train, new = clips
    model = tmp_path / "clf.safetensors"
    assert cli("fit", "--data", str(train), "--model", "tiny:qwen2_audio", "--out", str(model),
               "--param", "tau=0.1") == 0
    assert "3 classes (high, low, mid)" in capsys.readouterr().out
    assert cli("predict", "--classifier", str(model), "--model", "tiny:qwen2_audio", *map(str, new),
               "--out", str(tmp_path / "p.csv")) == 0
    assert cli("predict", "--classifier", str(model), "--model", "tiny:qwen2_audio", *map(str, new),
               "--format", "jsonl") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    with open(tmp_path / "p.csv", newline="") as handle:
        table = list(csv.DictReader(handle))

    backbone = tiny_backbone("qwen2_audio")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = fit_classifier(backbone, load_dataset(train), DEFAULT_PROMPT, tau=0.1)
    rows = predict_files(backbone, clf, new)

    saved = load(model)
    assert saved.tau == 0.1 and saved.fingerprint_["prompt"] == DEFAULT_PROMPT
    assert [r.path for r in rows] == [row["path"] for row in table] == [line["path"] for line in lines]
    assert [r.label for r in rows] == [row["label"] for row in table] == [line["label"] for line in lines]
    assert [r.label for r in rows[:3]] == ["low", "mid", "high"]  # even a tiny random model tells tones apart
    for r, row, line in zip(rows, table, lines):
        assert row["error"] == "" and line["error"] is None
        assert sum(r.probabilities.values()) == pytest.approx(1.0)
        for name in TONES:
            assert float(row[f"p_{name}"]) == pytest.approx(r.probabilities[name], abs=1e-5)
            assert line["probabilities"][name] == pytest.approx(r.probabilities[name], abs=1e-6)


@pytest.fixture(scope="module")
def saved(clips, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    assert cli("fit", "--data", str(clips[0]), "--model", "tiny:qwen2_audio", "--out", str(path), "--method", "sav") == 0
    return path


def test_bad_file_is_named_or_recorded_never_dropped(clips, saved, tmp_path, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_text("not audio")
    files = [str(clips[1][0]), str(bad), str(clips[1][1])]
    assert cli("predict", "--classifier", str(saved), "--model", "tiny:qwen2_audio", *files) == 1
    err = capsys.readouterr().err
    assert "broken.wav" in err and "--on-error record" in err
    assert cli("predict", "--classifier", str(saved), "--model", "tiny:qwen2_audio", *files,
               "--on-error", "record", "--format", "jsonl") == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["path"] for line in lines] == files
    assert lines[1]["label"] is None and lines[1]["path"].endswith("broken.wav") and lines[1]["probabilities"] == {}
    assert "not a decodable audio file" in lines[1]["error"]
    assert lines[0]["label"] in TONES and lines[2]["label"] in TONES
    assert "1 of 3 file(s) could not be read" in captured.err


def test_other_model_or_prompt_is_refused(clips, saved, capsys):
    assert cli("predict", "--classifier", str(saved), "--model", "tiny:whisper", str(clips[1][0])) == 1
    err = capsys.readouterr().err
    assert "another backbone, options or prompt" in err
    assert "model_id: expected 'tiny:qwen2_audio', got 'tiny:whisper'" in err
    with pytest.raises(ValueError, match="prompt: expected 'What sound is in this audio clip.', got 'Other'"):
        predict_files(tiny_backbone("qwen2_audio"), load(saved), clips[1][:1], prompt="Other")


def test_fit_errors_are_clear(tmp_path, capsys):
    assert cli("fit", "--data", str(tmp_path / "nowhere"), "--model", "tiny:qwen2_audio",
               "--out", str(tmp_path / "c.safetensors")) == 1
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(ValueError, match="method must be one of"):
        fit_classifier(None, [], "p", method="zero-shot")

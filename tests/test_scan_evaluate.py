"""``calm evaluate --task detection`` end to end on a tiny model: per seed, the K-shot support of
``calm evaluate``'s draw is fitted, the long files the reference names are scanned and their events
scored, exactly as calm.scan and score_scan give them; the windows are extracted once; what can be
checked before a model loads is, in one line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile

import calm.scanning.features as scan_features
from calm.backbones.tiny import tiny_backbone
from calm.cli import main
from calm.cli._common import DEFAULT_PROMPT
from calm.data.episodes import sample_support
from calm.data.loaders import load_dataset
from calm.predict import fit_classifier
from calm.scanning import ScanOptions, scan
from calm.scanning.evaluation import DetectionSetup, evaluate_detection
from calm.scanning.scoring import score_scan

RATE = 16000
PROMPT = DEFAULT_PROMPT  # calm evaluate's default
TONES = {"low": 300.0, "high": 2500.0}


def tone(hz: float, seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.01 * np.random.default_rng(seed).standard_normal(int(RATE * seconds))).astype(np.float32)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, Path]:
    """Clips (3 per tone class, 3 of noise) and two long files with a reference CSV."""
    root = tmp_path_factory.mktemp("detection")
    for name, hz in TONES.items():
        (root / "clips" / name).mkdir(parents=True)
        for k in range(3):
            soundfile.write(root / "clips" / name / f"{k}.wav", tone(hz * (1 + 0.02 * k), 0.5, k), RATE)
    (root / "clips" / "noise").mkdir()
    for k in range(3):
        soundfile.write(root / "clips" / "noise" / f"{k}.wav", noise(0.5, 10 + k), RATE)
    (root / "long").mkdir()
    rows = ["file,onset,offset,label"]
    for f, (first, second) in enumerate((("low", "high"), ("high", "low"))):
        audio = np.concatenate([noise(1, 20 + f), tone(TONES[first], 1, 30 + f), noise(1, 40 + f),
                                tone(TONES[second], 1, 50 + f), noise(1, 60 + f)])
        soundfile.write(root / "long" / f"rec{f}.wav", audio, RATE)
        rows += [f"rec{f}.wav,1.0,2.0,{first}", f"rec{f}.wav,3.0,4.0,{second}"]
    (root / "long" / "reference.csv").write_text("\n".join(rows) + "\n")
    return root / "clips", root / "long" / "reference.csv"


def test_each_seed_is_the_scan_of_its_own_draw_scored_and_the_windows_are_extracted_once(bench, tmp_path,
                                                                                      monkeypatch):
    clips, reference = bench
    computed = []
    forward = scan_features.forward_heads
    monkeypatch.setattr(scan_features, "forward_heads", lambda b, c, inputs: computed.append(1) or forward(b, c, inputs))
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(["evaluate", "--task", "detection", "--data", str(clips), "--reference", str(reference),
                       "--model", "tiny:whisper", "--shots", "2", "--seeds", "3", "--methods", "sav", "--background",
                       "noise", "--threshold", "0", "--hop", "0.25", "--batch-size", "64", "--out", str(out),
                       "--quiet"])
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    assert computed == [1, 1]  # one batch per long file (17 windows each), for the first seed only
    config = report["config"]
    assert (config["window"], config["hop"], config["events"], config["background"]) == (0.5, 0.25, 4, "noise")
    assert [(r["method"], r["shots"], r["seed"]) for r in report["runs"]] == [("sav", 2, s) for s in range(3)]

    backbone = tiny_backbone("whisper")
    items = load_dataset(str(clips))
    files = sorted(str(p.resolve()) for p in reference.parent.glob("rec*.wav"))
    store = tmp_path / "store"  # features as the evaluation keeps them (float16)
    for run in report["runs"]:
        clf = fit_classifier(backbone, sample_support(items, 2, run["seed"]), PROMPT, "sav", store=store)
        scanned = scan(backbone, clf, files, ScanOptions(window=0.5, hop=0.25, threshold=0.0, background="noise"),
                       store=store)
        expected = score_scan(scanned, reference).as_dict()
        assert {k: run[k] for k in expected} == expected
    (summary,) = report["summary"]
    assert summary["f1"] == pytest.approx(np.mean([r["f1"] for r in report["runs"]]))
    assert summary["f1_std"] == pytest.approx(np.std([r["f1"] for r in report["runs"]]))
    markdown = (out / "report.md").read_text()
    assert "| sav | 2 | " in markdown and "onset collar 0.5 s" in markdown


def test_the_library_call_takes_a_setup_and_names_a_class_without_enough_clips(bench):
    clips, reference = bench
    items = load_dataset(str(clips))
    with pytest.raises(ValueError, match="class 'high' has 3 item\\(s\\) to draw from, 4-shot needs 4"):
        evaluate_detection(tiny_backbone("whisper"), items, reference, DetectionSetup(shots=(4,)), prompt=PROMPT)


def test_bad_detection_requests_fail_before_a_model_loads(bench, tmp_path, capsys, no_model):
    clips, reference = bench
    no_files = tmp_path / "nofile.csv"
    no_files.write_text("onset,offset,label\n1,2,low\n")
    base = ["evaluate", "--data", str(clips), "--model", "tiny:whisper", "--out", str(tmp_path / "r")]
    for extra, error in (
        (["--task", "detection"], "--task detection needs --reference CSV (file,onset,offset,label of the long files' "
                                  "events)"),
        (["--reference", str(reference)], "--reference scores event detection: use it with --task detection"),
        (["--task", "detection", "--reference", str(reference), "--query-fold", "1"],
         "--task detection does not use --query-fold"),
        (["--task", "detection", "--reference", str(reference), "--background", "hiss"],
         "background class 'hiss' has no clips among the labelled clips (high, low, noise)"),
        (["--task", "detection", "--reference", str(reference), "--shots", "5"],
         "class 'high' has 3 item(s) to draw from, 5-shot needs 5"),
        (["--task", "detection", "--reference", str(reference), "--methods", "zero-shot"],
         "method 'zero-shot' does not fit on head features; detection needs one of "),
        (["--task", "detection", "--reference", str(no_files)],
         f"{no_files}:2: no 'file' column, and no recording named for these events"),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status = main(base + extra)
        err = capsys.readouterr().err.strip()
        assert status == 1 and len(err.splitlines()) == 1 and err.startswith(f"calm evaluate: {error}"), extra

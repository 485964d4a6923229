"""calm scan's outputs: exact columns of the CSV, the Audacity label track and the Raven selection
table; the timeline PNG is drawn; the CLI writes them all and names a bad argument."""

from __future__ import annotations

import csv
import io
import json
import warnings

import numpy as np
import pytest
import soundfile

from calm.cli import main
from calm.scanning.events import Event
from calm.scanning.outputs import as_json, audacity_labels, file_stems, raven_table, write_csv, write_windows
from calm.scanning.run import FileScan
from calm.scanning.timeline import plot_timeline
from calm.scanning.windows import plan_windows


@pytest.fixture
def result() -> FileScan:
    windows = plan_windows(8 * 16000, 16000, window=1.0, hop=0.5)
    p = np.tile([[0.8, 0.2]], (len(windows), 1))
    events = [Event("rec.wav", 0.25, 1.75, "bird", 0.9, 0.85), Event("rec.wav", 3.0, 4.5, "frog", 0.7, 0.61234)]
    return FileScan("dir/rec.wav", ["bird", "frog"], windows, p, ["bird"] * len(windows), events=events,
                    rejected=np.arange(len(windows)) % 3 == 0)


def test_audacity_label_track(result):
    assert audacity_labels(result) == "0.250000\t1.750000\tbird\n3.000000\t4.500000\tfrog\n"


def test_raven_selection_table(result):
    lines = raven_table(result).splitlines()
    assert lines[0].split("\t") == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                                    "High Freq (Hz)", "Annotation", "Peak Score", "Mean Score"]
    assert lines[1].split("\t") == ["1", "Spectrogram 1", "1", "0.250000", "1.750000", "0", "8000", "bird", "0.9000",
                                    "0.8500"]
    assert lines[2].split("\t")[0] == "2" and len(lines) == 3


def test_csv_and_json(result, tmp_path):
    with open(tmp_path / "e.csv", "w", newline="") as handle:
        write_csv([result], handle)
    rows = list(csv.reader(open(tmp_path / "e.csv")))
    assert rows == [["file", "onset", "offset", "label", "peak", "mean"],
                    ["rec.wav", "0.250", "1.750", "bird", "0.9000", "0.8500"],
                    ["rec.wav", "3.000", "4.500", "frog", "0.7000", "0.6123"]]
    data = as_json([result, FileScan("bad.wav", ["bird", "frog"], error="no such file")], {"window": 1.0})
    assert data["files"][0]["seconds"] == 8.0 and data["files"][1] == {"path": "bad.wav", "seconds": 0.0,
                                                                      "error": "no such file", "events": []}
    assert data["files"][0]["events"][1] == {"onset": 3.0, "offset": 4.5, "label": "frog", "peak": 0.7, "mean": 0.6123}


def test_window_rows(result):
    result.scores = np.linspace(0, 1, len(result.windows))
    handle = io.StringIO()
    write_windows(result, handle, unknown_label="?")
    rows = list(csv.reader(io.StringIO(handle.getvalue())))
    assert rows[0] == ["onset", "offset", "label", "score", "p_bird", "p_frog"] and len(rows) == len(result.windows) + 1
    assert rows[1] == ["0.000", "0.750", "?", "0.0000", "0.8000", "0.2000"]  # window 0 is rejected
    assert rows[2][:3] == ["0.750", "1.250", "bird"] and rows[-1][1] == "8.000"


def test_file_stems_are_distinct():
    scans = [FileScan(p, []) for p in ("a/rec.wav", "b/rec.flac", "c/other.wav")]
    assert file_stems(scans) == ["rec", "rec-2", "other"]


def test_the_timeline_is_drawn(result, tmp_path):
    path = plot_timeline(result, tmp_path / "t.png", threshold=0.5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="bad.wav: nothing to draw"):
        plot_timeline(FileScan("bad.wav", [], error="no such file"), tmp_path / "u.png")


def cli(*args: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main([*args, "--quiet"])


def test_fit_then_scan_writes_every_output(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for label, hz in (("low", 300.0), ("high", 2500.0)):
        (tmp_path / "clips" / label).mkdir(parents=True)
        for k in range(3):
            t = np.arange(8000) / 16000
            soundfile.write(tmp_path / "clips" / label / f"{k}.wav",
                            (0.3 * np.sin(2 * np.pi * hz * (1 + 0.02 * k) * t)).astype(np.float32), 16000)
    (tmp_path / "long").mkdir()
    soundfile.write(tmp_path / "long" / "rec.wav", (0.01 * rng.standard_normal(16000 * 4)).astype(np.float32), 16000)
    assert cli("fit", "--data", str(tmp_path / "clips"), "--model", "tiny:whisper",
               "--out", str(tmp_path / "clf.safetensors")) == 0
    out = tmp_path / "scan"
    assert cli("scan", "--classifier", str(tmp_path / "clf.safetensors"), str(tmp_path / "long"), "--out", str(out),
               "--timeline", "--windows", "--threshold", "0") == 0
    assert "in 1 file(s), 0.00 h of audio (window 0.5 s, hop 0.25 s)" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"events.csv", "events.json", "rec.audacity.txt",
                                               "rec.Table.1.selections.txt", "rec.timeline.png", "rec.windows.csv"}
    data = json.loads((out / "events.json").read_text())
    assert data["settings"]["window"] == 0.5 and data["files"][0]["seconds"] == 4.0
    events = data["files"][0]["events"]
    assert events and events[0]["onset"] == 0.0 and events[-1]["offset"] == 4.0  # threshold 0: all of it is events
    (tmp_path / "ref.csv").write_text("onset,offset,label\n0.3,1.0,low\n2.0,3.0,nothing\n")
    assert cli("scan", "--classifier", str(tmp_path / "clf.safetensors"), str(tmp_path / "long"), "--out", str(out),
               "--threshold", "0", "--reference", str(tmp_path / "ref.csv")) == 0
    scores = json.loads((out / "detection.json").read_text())
    assert scores["tp"] + scores["fn"] == 2 and scores["tp"] + scores["fp"] == len(events) and scores["collar"] == 0.5
    assert "(onset collar 0.5 s): F1" in capsys.readouterr().out
    assert cli("scan", "--classifier", str(tmp_path / "clf.safetensors"), str(tmp_path / "long"),
               "--out", str(out), "--background", "noise") == 1
    assert "background class 'noise' is not one of the classifier's classes" in capsys.readouterr().err
    for bad in (("--hop", "-1"), ("--collar", "-0.1"), ("--merge-gap", "x"), ("--threshold", "1.5")):
        with pytest.raises(SystemExit):
            cli("scan", "--classifier", str(tmp_path / "clf.safetensors"), str(tmp_path / "long"), *bad)
        assert f"argument {bad[0]}" in capsys.readouterr().err

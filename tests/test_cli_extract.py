"""``calm extract`` on generated wav files with a tiny random Qwen2-Audio."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from calm.cli import main


@pytest.fixture
def dataset(tmp_path):
    """A folder of class subfolders with two tones each."""
    root = tmp_path / "data"
    for label, freq in (("low", 220.0), ("high", 880.0)):
        (root / label).mkdir(parents=True)
        for i in range(2):
            t = np.arange(int(16000 * (0.3 + 0.2 * i))) / 16000
            soundfile.write(root / label / f"{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    return root


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _store(out):
    (path,) = out.iterdir()
    key = (path / "key.json").read_text()
    assert '"prompt": "What is it?"' in key and '"model_id": "tiny:qwen2_audio"' in key
    return path


def test_extract_then_rerun_skips(tmp_path, dataset, capsys):
    out = tmp_path / "store"
    argv = ["extract", "--model", "tiny:qwen2_audio", "--data", str(dataset), "--out", str(out),
            "--prompt", "What is it?", "--batch-size", "2", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "done: 4 (computed 4, already stored 0); failed: 0" in printed
    path = _store(out)
    assert str(path) in printed
    assert main(argv) == 0
    assert "done: 4 (computed 0, already stored 4)" in capsys.readouterr().out
    rows = (path / "journal.jsonl").read_text().count('"start"')
    assert rows == 2  # two batches of two, none rewritten by the rerun


def test_bad_file_raise_or_record(tmp_path, dataset, capsys):
    bad = dataset / "low" / "broken.wav"
    bad.write_text("not audio\n")
    out = tmp_path / "store"
    argv = ["extract", "--model", "tiny:qwen2_audio", "--data", str(dataset), "--out", str(out),
            "--prompt", "What is it?", "--quiet"]
    assert main(argv) == 1
    assert f"{bad}: not a decodable audio file" in capsys.readouterr().err
    assert main(argv + ["--on-error", "record"]) == 0
    printed = capsys.readouterr().out
    assert "done: 4 (computed 4, already stored 0); failed: 1" in printed
    assert f"failed low/broken.wav: {bad}: not a decodable audio file" in printed
    assert '"id": "low/broken.wav"' in (_store(out) / "journal.jsonl").read_text()  # recorded in the store

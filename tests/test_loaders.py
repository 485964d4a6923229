"""Each loader reads a tiny fixture in its real layout; malformed rows and missing files are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calm.data.loaders import DatasetError, detect_layout, load_csv, load_dataset, load_folder


def write_audio(path: Path, seconds: float = 0.05, sample_rate: int = 8000) -> Path:
    """A short sine tone at ``path`` (format from the suffix: .wav or .flac)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sf.write(path, 0.1 * np.sin(2 * np.pi * 440 * t), sample_rate)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- folder of classes


def test_folder_of_classes(tmp_path: Path) -> None:
    for name in ("dog/a.wav", "dog/b.flac", "cat/c.wav", "cat/sub/d.wav"):
        write_audio(tmp_path / name)
    write_text(tmp_path / "cat/notes.txt", "not audio")
    write_audio(tmp_path / "stray.wav")  # files at the root carry no class
    items = load_folder(tmp_path)
    assert {i.id: i.label for i in items} == {"cat/c.wav": "cat", "cat/sub/d.wav": "cat", "dog/a.wav": "dog", "dog/b.flac": "dog"}
    assert all(i.fold is None and i.audio.is_file() for i in items)
    assert load_dataset(tmp_path) == items
    assert load_dataset(f"folder:{tmp_path}") == items


def test_folder_with_split_level(tmp_path: Path) -> None:
    for name in ("train/dog/a.wav", "train/cat/b.wav", "test/dog/c.wav"):
        write_audio(tmp_path / name)
    items = load_folder(tmp_path)
    assert {(i.id, i.label, i.fold) for i in items} == {
        ("train/dog/a.wav", "dog", "train"),
        ("train/cat/b.wav", "cat", "train"),
        ("test/dog/c.wav", "dog", "test"),
    }


def test_folder_without_audio_is_an_error(tmp_path: Path) -> None:
    write_text(tmp_path / "dog/readme.txt", "x")
    with pytest.raises(DatasetError, match="no audio files"):
        load_folder(tmp_path)


# ---------------------------------------------------------------------------- CSV


def test_csv(tmp_path: Path) -> None:
    write_audio(tmp_path / "clips/a.wav")
    write_audio(tmp_path / "clips/b.wav")
    write_audio(tmp_path / "clips/c.wav")
    csv_path = write_text(
        tmp_path / "data.csv",
        "path,label,split,speaker\nclips/a.wav,dog,support,s1\nclips/b.wav,cat,query,s2\n\nclips/c.wav,,query,s3\n",
    )
    items = load_csv(csv_path)
    assert [(i.id, i.label, i.fold, i.meta) for i in items] == [
        ("clips/a.wav", "dog", "support", {"speaker": "s1"}),
        ("clips/b.wav", "cat", "query", {"speaker": "s2"}),
        ("clips/c.wav", None, "query", {"speaker": "s3"}),
    ]
    assert items[0].audio == tmp_path / "clips/a.wav"
    assert load_dataset(csv_path) == items
    assert load_dataset(tmp_path) == items  # a folder holding one CSV is that CSV
    assert detect_layout(csv_path) == ("csv", csv_path)


def test_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    write_audio(tmp_path / "a.wav")
    bad = write_text(tmp_path / "bad.csv", "path,label\na.wav,dog\nmissing.wav,cat\n")
    with pytest.raises(DatasetError, match=r"bad\.csv:3: file not found: .*missing\.wav"):
        load_csv(bad)
    short = write_text(tmp_path / "short.csv", "path,label\na.wav,dog\na.wav\n")
    with pytest.raises(DatasetError, match=r"short\.csv:3: 1 field"):
        load_csv(short)
    nopath = write_text(tmp_path / "nopath.csv", "name,label\na.wav,dog\n")
    with pytest.raises(DatasetError, match=r"nopath\.csv:1: no path column"):
        load_csv(nopath)
    dup = write_text(tmp_path / "dup.csv", "path,label\na.wav,dog\na.wav,cat\n")
    with pytest.raises(DatasetError, match="duplicate item id 'a.wav'"):
        load_csv(dup)


def test_load_dataset_unknown_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_dataset(tmp_path / "nowhere")

"""Hugging Face datasets on disk (calm.data.hf) read into the same items and features as a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from calm.data.loaders import DatasetError, load_dataset
from calm.heads import extract
from calm.backbones.tiny import tiny_backbone

datasets = pytest.importorskip("datasets", reason="the Hugging Face loader needs the hf extra: pip install 'calm-audio[hf]'")

CLASSES = ["high", "low"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Audio bytes are written under $CALM_CACHE: a fresh one per test."""
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """root/<class>/clipN.wav: tones of different lengths and pitches."""
    root = tmp_path_factory.mktemp("folder")
    for i in range(6):
        t = np.arange(int(16000 * (0.2 + 0.1 * i))) / 16000
        path = root / CLASSES[i % 2] / f"clip{i}.wav"
        path.parent.mkdir(exist_ok=True)
        soundfile.write(path, (0.4 * np.sin(2 * np.pi * (200 + 90 * i) * t)).astype(np.float32), 16000)
    return root


def _dataset(folder: Path, *, class_label: bool = True, with_bytes: bool = True) -> "datasets.Dataset":
    """The folder as a Hugging Face dataset: an id column (the folder's ids), audio as {bytes, path}
    (path relative to ``folder``; with bytes, datasets keeps only its file name)."""
    paths = sorted(folder.rglob("*.wav"))
    rel = [p.relative_to(folder).as_posix() for p in paths]
    audio = [{"bytes": p.read_bytes() if with_bytes else None, "path": r} for p, r in zip(paths, rel)]
    labels = [CLASSES.index(p.parent.name) if class_label else p.parent.name for p in paths]
    dataset = datasets.Dataset.from_dict({"id": rel, "audio": audio, "label": labels})
    # cast, not encode: encoding Audio in datasets needs torchcodec, which calm does not use
    dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
    return dataset.cast_column("label", datasets.ClassLabel(names=CLASSES)) if class_label else dataset


def _summary(items):
    return sorted((item.id, item.label, item.fold) for item in items)


def _features(items):
    features = extract(tiny_backbone("qwen2_audio"), items, "What sound is this?", batch_size=2, dtype=np.float32)
    return dict(zip(features.ids, features.X))


def test_save_to_disk_and_parquet_give_the_folders_items_and_features(tmp_path, folder):
    _dataset(folder).save_to_disk(str(tmp_path / "saved"))
    _dataset(folder, class_label=False).to_parquet(str(tmp_path / "clips.parquet"))
    expected = load_dataset(folder)
    saved, parquet = load_dataset(f"hf:{tmp_path / 'saved'}"), load_dataset(f"hf:{tmp_path / 'clips.parquet'}")
    assert _summary(saved) == _summary(parquet) == _summary(expected)
    assert all(item.audio.parent == tmp_path / "cache" / "hf-audio" for item in saved)  # bytes, cached by hash
    reference = _features(expected)
    for items in (saved, parquet):
        got = _features(items)
        assert set(got) == set(reference)
        for item_id, row in reference.items():
            np.testing.assert_array_equal(got[item_id], row)  # bit for bit: the same bytes decoded the same way


def test_dataset_dict_splits_become_folds_and_one_can_be_chosen(tmp_path, folder):
    whole = _dataset(folder)
    datasets.DatasetDict({"train": whole.select(range(4)), "test": whole.select(range(4, 6))}).save_to_disk(
        str(tmp_path / "dict"))
    items = load_dataset(f"hf:{tmp_path / 'dict'}")
    assert _summary(items) == sorted((item.id, item.label, "train" if n < 4 else "test")
                                     for n, item in enumerate(sorted(load_dataset(folder), key=lambda i: i.audio)))
    test = load_dataset(f"hf:{tmp_path / 'dict'}:test")
    assert [item.fold for item in test] == ["test", "test"]
    with pytest.raises(DatasetError, match="no split 'valid'"):
        load_dataset(f"hf:{tmp_path / 'dict'}:valid")


def test_audio_paths_are_read_relative_to_the_dataset(tmp_path, folder, monkeypatch):
    monkeypatch.chdir(folder)  # datasets looks at relative audio paths when writing
    dataset = _dataset(folder, with_bytes=False)
    dataset.to_parquet(str(folder / "paths.parquet"))
    try:
        items = load_dataset(f"hf:{folder / 'paths.parquet'}")
    finally:
        (folder / "paths.parquet").unlink()
    assert _summary(items) == _summary(load_dataset(folder))
    assert sorted(item.audio for item in items) == sorted(folder.rglob("*.wav"))


def test_malformed_rows_are_errors_naming_the_row(tmp_path, folder, monkeypatch):
    monkeypatch.chdir(folder)  # datasets looks at relative audio paths when writing
    dataset = _dataset(folder, with_bytes=False)
    dataset.to_parquet(str(tmp_path / "elsewhere.parquet"))  # paths relative to the wrong folder
    with pytest.raises(DatasetError, match=r"elsewhere.parquet: row 0: .*: no such file"):
        load_dataset(f"hf:{tmp_path / 'elsewhere.parquet'}")
    rows = datasets.Dataset.from_dict({"audio": [(folder / "high/clip0.wav").read_bytes(), None], "label": ["a", "b"]})
    rows.to_parquet(str(tmp_path / "empty.parquet"))
    with pytest.raises(DatasetError, match=r"empty.parquet: row 1: no audio"):
        load_dataset(f"hf:{tmp_path / 'empty.parquet'}")
    with pytest.raises(DatasetError, match="no column 'sound'"):
        load_dataset(f"hf:{tmp_path / 'empty.parquet'}", audio_column="sound")


def test_bytes_only_rows_are_named_by_row(tmp_path, folder):
    clips = sorted(folder.rglob("*.wav"))[:2]
    datasets.Dataset.from_dict({"audio": [c.read_bytes() for c in clips], "label": ["x", "y"]}).to_parquet(
        str(tmp_path / "bare.parquet"))
    items = load_dataset(f"hf:{tmp_path / 'bare.parquet'}")
    assert [(item.id, item.label) for item in items] == [("row/0", "x"), ("row/1", "y")]
    assert [item.audio.read_bytes() for item in items] == [c.read_bytes() for c in clips]

"""Integrity and bad input, answered (issue 25): edited classifier files, unreadable ones,
non-UTF-8 file names, damaged or read-only feature stores, Hugging Face rows that do not decode,
dangling links, folders with files calm did not take, and the same audio under two labels. Every
fixture is made here, offline; the models are tiny random ones."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
from safetensors import safe_open
from safetensors.numpy import save_file

from calm.classifiers import Calibrated, CALMClassifier, load, save
from calm.classifiers.io import _checksum
from test_bad_input import deny_open

RATE = 16000
FINGERPRINT = {"model_id": "tiny:qwen2_audio", "prompt": "What sound is this?"}


def tone(path: Path, freq: float, seconds: float = 0.5, fmt: str = "WAV") -> Path:
    t = np.arange(int(RATE * seconds)) / RATE
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(os.fsencode(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE, format=fmt)
    return path


def fitted(calibrated: bool = False):
    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 4, 5))
    y = np.repeat(np.array(["bird", "car", "rain"]), 5)
    X = (means[np.repeat(np.arange(3), 5)] + 0.3 * rng.normal(size=(15, 4, 5))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = (Calibrated(CALMClassifier()) if calibrated else CALMClassifier()).fit(X, y)
    return clf, X


def parts(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="numpy") as handle:
        return json.loads(handle.metadata()["calm"]), {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118


def rewrite(path: Path, meta: dict, arrays: dict) -> Path:
    save_file(arrays, str(path), metadata={"calm": json.dumps(meta)})
    return path


# 1: classifier files -------------------------------------------------------------------------------
def _swap_classes(meta, arrays):
    meta["classes"] = meta["classes"][::-1]


def _edit_prompt(meta, arrays):
    meta["fingerprint"]["prompt"] = "Is this a car?"


def _cool(meta, arrays):
    meta["calibration"]["fitted"]["temperature_"] = 1e-6


def _negate(meta, arrays):
    arrays["weights_"] = -arrays["weights_"]


def _downgrade_and_negate(meta, arrays):
    meta["version"] = 1
    _negate(meta, arrays)


def _back_to_3_and_negate(meta, arrays):
    meta["version"] = 3
    _negate(meta, arrays)


@pytest.mark.parametrize("edit, message", [
    (_swap_classes, "the metadata or arrays do not match the checksum"),
    (_edit_prompt, "the metadata or arrays do not match the checksum"),
    (_cool, "the metadata or arrays do not match the checksum"),
    (_negate, "the metadata or arrays do not match the checksum"),
    (_downgrade_and_negate, "format version 1; this calm reads versions 2, 3, 4; it has no checksum"),
    (_back_to_3_and_negate, "claims format version 3 but carries a version 4 checksum"),
])
def test_every_edit_of_a_classifier_file_is_refused_naming_it(tmp_path, edit, message):
    clf, X = fitted(calibrated=True)
    path = save(clf, tmp_path / "clf.safetensors", fingerprint=FINGERPRINT)
    assert load(path).predict(X).tolist() == clf.predict(X).tolist()
    meta, arrays = parts(path)
    edit(meta, arrays)
    edited = rewrite(tmp_path / "edited.safetensors", meta, arrays)
    with pytest.raises(ValueError, match=f"^{edited}: .*{message}"):
        load(edited)


def _as_written_by(version: int, meta: dict, arrays: dict) -> dict:
    """``meta`` as calm wrote it at ``version`` (2 or 3): an array checksum, no metadata checksum."""
    old = {k: v for k, v in meta.items() if k != "checksum"}
    old["version"], old["sha256"] = version, _checksum(arrays)
    return old


@pytest.mark.parametrize("version", [2, 3])
def test_genuine_version_2_and_3_files_load_and_their_arrays_are_still_checked(tmp_path, version):
    clf, X = fitted()
    meta, arrays = parts(save(clf, tmp_path / "clf.safetensors"))
    old = rewrite(tmp_path / "old.safetensors", _as_written_by(version, meta, arrays), arrays)
    assert load(old).predict(X).tolist() == clf.predict(X).tolist()
    edited = rewrite(tmp_path / "edited.safetensors", _as_written_by(version, meta, arrays),
                     dict(arrays, weights_=-arrays["weights_"]))
    with pytest.raises(ValueError, match=f"^{edited}: the arrays do not match the checksum"):
        load(edited)


def test_a_file_whose_checksum_was_removed_is_refused(tmp_path):
    meta, arrays = parts(save(fitted()[0], tmp_path / "clf.safetensors"))
    del meta["checksum"]
    path = rewrite(tmp_path / "bare.safetensors", meta, arrays)
    with pytest.raises(ValueError, match=f"^{path}: no checksum in the metadata"):
        load(path)


# 2: a classifier file this user may not read -------------------------------------------------------
def test_an_unreadable_classifier_file_says_permission_denied(tmp_path, monkeypatch):
    path = save(fitted()[0], tmp_path / "clf.safetensors")
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads any file: deny it as the kernel would another user
        deny_open(monkeypatch, "calm.classifiers.io", path)
    with pytest.raises(ValueError, match=f"^{path}: cannot read file \\(Permission denied\\)$"):
        load(path)


# 3: non-UTF-8 file names ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen():
    from calm.backbones.tiny import tiny_backbone

    return tiny_backbone("qwen2_audio")


def classes(root: Path, per_class: int = 2) -> Path:
    for label, freq in (("low", 220.0), ("high", 1760.0)):
        for i in range(per_class):
            tone(root / label / f"{label}{i}.wav", freq * (1 + 0.05 * i), 0.5 + 0.1 * i)
    return root


def test_a_non_utf8_file_name_is_extracted_stored_resumed_and_named_in_outputs(tmp_path, qwen, capsys):
    from calm.cli import main
    from calm.data.loaders import load_dataset
    from calm.heads import extract

    root = classes(tmp_path / "data")
    odd = Path(os.fsdecode(bytes(root / "low") + b"/\xff\xfe.wav"))
    tone(odd, 250.0)
    broken = Path(os.fsdecode(bytes(root / "high") + b"/\xfe.wav"))
    broken.write_bytes(b"not audio at all")
    items = load_dataset(root)
    assert {item.id for item in items} >= {os.fsdecode(b"low/\xff\xfe.wav"), os.fsdecode(b"high/\xfe.wav")}
    store = tmp_path / "store"
    features = extract(qwen, items, "What sound is this?", store=store, on_error="record")
    assert os.fsdecode(b"low/\xff\xfe.wav") in features.ids and len(features.ids) == 5
    assert "not a decodable audio file" in features.failed[os.fsdecode(b"high/\xfe.wav")]
    journal = next(store.glob("*/journal.jsonl")).read_bytes()
    assert journal.isascii() and b"\\udcff\\udcfe.wav" in journal  # JSON escapes: os.fsencode gives the bytes
    again = extract(qwen, items, "What sound is this?", store=store, on_error="record")
    assert next(store.glob("*/journal.jsonl")).read_bytes() == journal  # resumed: nothing computed again
    assert again.ids == features.ids and np.array_equal(again.X, features.X)

    clf, out = tmp_path / "clf.safetensors", tmp_path / "p.csv"
    assert main(["fit", "--data", str(root), "--model", "tiny:qwen2_audio", "--out", str(clf), "--store", str(store),
                 "--on-error", "record", "--quiet"]) == 0
    assert main(["predict", "--classifier", str(clf), str(odd), str(broken), "--out", str(out), "--on-error", "record",
                 "--quiet"]) == 0
    rows = out.read_bytes().splitlines()
    assert rows[1].startswith(bytes(odd) + b",") and rows[2].startswith(bytes(broken) + b",,")


# 4: the feature store: damaged data, read-only file systems ---------------------------------------
PROMPT = "What sound is this?"


def _clips(tmp_path: Path, n: int = 6) -> list:
    from calm.data.items import Item

    return [Item(f"c{i}", tone(tmp_path / f"c{i}.wav", 300.0 + 70 * i)) for i in range(n)]


def _flip(data: Path, row: int, row_bytes: int, count: int = 8) -> None:
    raw = bytearray(data.read_bytes())
    at = row * row_bytes + 4
    raw[at : at + count] = bytes(b ^ 0xFF for b in raw[at : at + count])
    data.write_bytes(bytes(raw))


def test_flipped_bytes_in_the_store_fail_their_batch_by_name_and_are_extracted_again(tmp_path, qwen):
    from calm.heads import extract
    from calm.store import StoreError

    items, store = _clips(tmp_path), tmp_path / "store"
    first = np.array(extract(qwen, items, PROMPT, batch_size=3, store=store).X)  # batches c0-c2, c3-c5
    _flip(next(store.glob("*/data.f16")), row=4, row_bytes=first[0].nbytes)
    with pytest.raises(StoreError, match=r"data.f16: the stored features of c3, c4, c5 \(rows 3..5\) do not match "
                                         r"their checksum in the journal"):
        extract(qwen, items, PROMPT, batch_size=3, store=store)
    damaged = extract(qwen, items, PROMPT, batch_size=3, store=store, on_error="record")
    assert damaged.ids == ["c0", "c1", "c2"] and sorted(damaged.failed) == ["c3", "c4", "c5"]
    assert np.array_equal(damaged.X, first[:3])
    assert "extracting again recomputes them" in damaged.failed["c4"]
    again = extract(qwen, items, PROMPT, batch_size=3, store=store, on_error="record")
    assert again.ids == [item.id for item in items] and not again.failed
    assert np.array_equal(again.X, first)


def test_a_store_written_before_checksums_still_reads_and_non_finite_rows_fail(tmp_path, qwen):
    from calm.heads import extract, feature_fingerprint
    from calm.store import FeatureStore

    items, store = _clips(tmp_path), tmp_path / "store"
    first = np.array(extract(qwen, items, PROMPT, batch_size=3, store=store).X)
    journal = next(store.glob("*/journal.jsonl"))
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "sha256"}) + "\n" for r in lines))
    reopened = FeatureStore.open(store, feature_fingerprint(qwen, PROMPT), qwen.head_index())
    assert np.array_equal(reopened.read().X, first)  # old stores read as they are
    raw = bytearray(next(store.glob("*/data.f16")).read_bytes())
    raw[first[0].nbytes : first[0].nbytes + 2] = np.array([np.nan], dtype=np.float16).tobytes()
    next(store.glob("*/data.f16")).write_bytes(bytes(raw))
    read = FeatureStore.open(store, feature_fingerprint(qwen, PROMPT), qwen.head_index()).read()
    assert read.ids == ["c3", "c4", "c5"] and "hold NaN or inf, which a store never keeps" in read.failed["c1"]


def test_a_complete_store_on_a_read_only_file_system_is_read(tmp_path, qwen, monkeypatch):
    import errno

    from calm.heads import extract
    from calm.store import StoreError

    items, store = _clips(tmp_path), tmp_path / "store"
    first = extract(qwen, items[:4], PROMPT, store=store)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # what a read-only mount answers
        if str(path).startswith(str(store)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    again = extract(qwen, items[:4], PROMPT, store=store)
    assert again.ids == first.ids and np.array_equal(np.asarray(again.X), np.asarray(first.X))
    with pytest.raises(StoreError, match="cannot write the feature store \\(Read-only file system\\)"):
        extract(qwen, items, PROMPT, store=store)  # two new items: their features cannot be stored


# 6: a dangling symbolic link, one message everywhere -----------------------------------------------
def test_a_dangling_link_gets_one_message_in_extract_fit_predict_and_a_csv(tmp_path, qwen, capsys):
    from calm.cli import main
    from calm.data.loaders import DatasetError, load_dataset
    from calm.heads import extract

    root = classes(tmp_path / "data")
    gone = root / "low" / "gone.wav"
    gone.symlink_to(tmp_path / "nowhere.wav")
    message = f"{gone}: dangling symbolic link"
    items = load_dataset(root)
    with_store = extract(qwen, items, PROMPT, store=tmp_path / "store", on_error="record")  # hashed first
    without = extract(qwen, items, PROMPT, on_error="record")  # decoded first
    assert with_store.failed["low/gone.wav"] == without.failed["low/gone.wav"] == message
    clf = tmp_path / "clf.safetensors"
    assert main(["fit", "--data", str(root), "--model", "tiny:qwen2_audio", "--out", str(clf), "--quiet"]) == 1
    assert f"calm fit: {message}\n" in capsys.readouterr().err
    assert main(["fit", "--data", str(root), "--model", "tiny:qwen2_audio", "--out", str(clf), "--quiet",
                 "--on-error", "record"]) == 0
    assert main(["predict", "--classifier", str(clf), str(gone), "--quiet"]) == 1
    assert f"calm predict: {message} (checked before loading the model" in capsys.readouterr().err
    table = tmp_path / "list.csv"
    table.write_text(f"path,label\n{gone},low\n")
    with pytest.raises(DatasetError, match=f"^{table}:2: {message}$"):
        load_dataset(table)


# 7: what a folder of classes takes, and what it says about the rest --------------------------------
def test_a_folder_takes_libsndfile_formats_bare_audio_and_linked_folders_and_names_the_rest(tmp_path):
    from calm.data.loaders import load_dataset
    from calm.media import load_audio

    root = classes(tmp_path / "data")
    for name, fmt in (("a.au", "AU"), ("b.caf", "CAF"), ("c.w64", "W64"), ("bare", "WAV")):
        tone(root / "low" / name, 300.0, fmt=fmt)
    elsewhere = tmp_path / "more"
    tone(elsewhere / "m0.wav", 400.0)
    tone(elsewhere / "m1.flac", 410.0, fmt="FLAC")
    (root / "high" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(elsewhere, target_is_directory=True)  # followed once, not forever
    (root / "low" / "notes.txt").write_text("recorded on a Tuesday")
    (root / "low" / "README").write_text("not audio, no suffix")
    tone(root / "stray.wav", 500.0)  # no class folder: no label
    with pytest.warns(UserWarning) as caught:
        items = load_dataset(root)
    ids = {item.id for item in items}
    assert {"low/a.au", "low/b.caf", "low/c.w64", "low/bare", "high/linked/m0.wav", "high/linked/m1.flac"} <= ids
    assert len(items) == 4 + 4 + 2 and not any("loop" in i for i in ids)
    for item in items:
        assert load_audio(item.audio, RATE).size > 0
    [warning] = [str(w.message) for w in caught]
    assert warning.startswith(f"{root}: left out 4 file(s), e.g. ")
    assert "high/linked/loop (a link to a folder already read (a loop, or the same folder twice))" in warning
    assert "low/README (no suffix, and soundfile does not read it as audio)" in warning
    assert "low/notes.txt ('.txt' is not an audio or video suffix)" in warning


# 8: the same audio under two labels ----------------------------------------------------------------
def test_one_file_under_two_labels_is_refused_and_identical_files_warn(tmp_path):
    from calm.data.conflicts import check_label_conflicts
    from calm.data.items import Item
    from calm.data.loaders import DatasetError, load_dataset

    root = classes(tmp_path / "data")
    table = tmp_path / "conflict.csv"
    table.write_text(f"id,path,label\none,{root / 'low' / 'low0.wav'},low\ntwo,{root / 'low' / 'low0.wav'},high\n")
    with pytest.raises(DatasetError, match=f"^{root / 'low' / 'low0.wav'}: one file with 2 labels \\(high, low; "
                                           "items one, two\\)"):
        check_label_conflicts(load_dataset(table))
    (root / "high" / "copy.wav").write_bytes((root / "low" / "low1.wav").read_bytes())
    items = load_dataset(root)
    with pytest.warns(UserWarning, match="^1 group\\(s\\) of identical audio files carry different labels, e.g. "
                                         "high/copy.wav \\(high\\) = low/low1.wav \\(low\\); both labels are kept"):
        check_label_conflicts(items)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = [item for item in items if item.id != "high/copy.wav"]
        check_label_conflicts(plain)  # no clash: no word
        check_label_conflicts(plain + [Item("again", root / "low" / "low1.wav", "low")])  # same label twice


def test_fit_and_evaluate_say_so(tmp_path, capsys):
    from calm.cli import main

    root = classes(tmp_path / "data", per_class=3)
    (root / "high" / "copy.wav").write_bytes((root / "low" / "low1.wav").read_bytes())
    args = ["--data", str(root), "--model", "tiny:qwen2_audio"]
    assert main(["fit", *args, "--out", str(tmp_path / "c.safetensors")]) == 0
    assert "identical audio files carry different labels, e.g. high/copy.wav (high)" in capsys.readouterr().err
    assert main(["evaluate", *args, "--out", str(tmp_path / "r"), "--shots", "1", "--seeds", "1",
                 "--methods", "sav"]) == 0
    assert "identical audio files carry different labels" in capsys.readouterr().err
    table = tmp_path / "conflict.csv"
    table.write_text(f"id,path,label\none,{root / 'low' / 'low0.wav'},low\ntwo,{root / 'low' / 'low0.wav'},high\n")
    assert main(["fit", "--data", str(table), "--model", "tiny:qwen2_audio", "--out", str(tmp_path / "d.st")]) == 1
    assert f"calm fit: {root / 'low' / 'low0.wav'}: one file with 2 labels" in capsys.readouterr().err


# 5: a Hugging Face row whose audio does not decode -------------------------------------------------
def test_a_parquet_row_that_does_not_decode_is_named_by_file_and_row(tmp_path, qwen, monkeypatch):
    datasets = pytest.importorskip("datasets", reason="the Hugging Face loader needs the hf extra")
    from calm.data.loaders import load_dataset
    from calm.heads import extract

    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    good = tone(tmp_path / "good.wav", 300.0).read_bytes()
    audio = [{"bytes": good, "path": "good.wav"}, {"bytes": b"RIFF\x00\x00garbage", "path": "bad.wav"}]
    table = datasets.Dataset.from_dict({"audio": audio, "label": ["a", "b"]})
    table = table.cast_column("audio", datasets.Audio(decode=False))
    parquet = tmp_path / "train-00000-of-00001.parquet"
    table.to_parquet(str(parquet))
    features = extract(qwen, load_dataset(f"hf:{parquet}"), PROMPT, on_error="record")
    assert features.ids == ["good.wav"]
    reason = features.failed["bad.wav"]
    assert reason.startswith(f"{parquet}: row 1 (its audio, cached as {tmp_path / 'cache'}")
    assert "not a decodable audio file" in reason


def test_evaluate_on_a_damaged_store_leaves_the_damaged_items_out_and_the_next_run_restores_them(tmp_path, capsys):
    from calm.cli import main

    root, store = classes(tmp_path / "data", per_class=4), tmp_path / "store"
    args = ["evaluate", "--data", str(root), "--model", "tiny:qwen2_audio", "--store", str(store), "--shots", "1",
            "--seeds", "1", "--methods", "sav", "--batch-size", "2", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "r0")]) == 0
    data = next(store.glob("*/data.f16"))
    _flip(data, row=5, row_bytes=data.stat().st_size // 8)
    assert main([*args, "--out", str(tmp_path / "r1")]) == 0
    report = json.loads((tmp_path / "r1" / "report.json").read_text())
    assert report["config"]["counts"]["failed"] == 2  # rows 4..5, one batch
    assert all("do not match their checksum in the journal" in r for r in report["config"]["failed"].values())
    assert report["results"] and all(row["metrics"] and "error" not in row for row in report["results"])
    assert main([*args, "--out", str(tmp_path / "r2")]) == 0
    assert json.loads((tmp_path / "r2" / "report.json").read_text())["config"]["counts"]["failed"] == 0

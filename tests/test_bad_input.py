"""Bad input, answered: each of the 20 failures a hostile user and a new user found (issue 14), as
a test. Every fixture is made here, offline; the models are tiny random ones."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile

import calm
import calm.methods
from calm.backbones.tiny import tiny_backbone
from calm.classifiers import CALMClassifier, load, save
from calm.cli import main
from calm.data.items import Item
from calm.data.loaders import load_dataset
from calm.heads import extract, feature_fingerprint
from calm.media import MediaLoadError, load_audio
from calm.store import FeatureStore, StoreError

PROMPT = "What sound is in this audio clip?"
RATE = 16000


def tone(path: Path, freq: float, seconds: float = 0.6, rate: int = RATE, scale: float = 0.3,
         subtype: str | None = None) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(int(freq)).standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, (scale * np.sin(2 * np.pi * freq * t) + 0.01 * noise).astype(np.float32), rate,
                    subtype=subtype)
    return path


def classes(root: Path, per_class: int = 3) -> Path:
    for label, freq in (("low", 220.0), ("high", 1760.0)):
        for i in range(per_class):
            tone(root / label / f"{label}{i}.wav", freq * (1 + 0.05 * i), 0.5 + 0.1 * i)
    return root


@pytest.fixture(scope="module")
def qwen():
    return tiny_backbone("qwen2_audio")


def cli(*args: str) -> int:
    return main(list(args))


# 1 ------------------------------------------------------------------------------------------------
def test_01_huge_float_samples_fail_alone_and_the_batch_is_stored(tmp_path, qwen):
    good = [tone(tmp_path / f"good{i}.wav", 300.0 + 100 * i) for i in range(3)]
    huge = tone(tmp_path / "huge.wav", 500.0, scale=1e19, subtype="FLOAT")
    items = [Item(p.stem, p) for p in [*good, huge]]
    store = tmp_path / "store"
    features = extract(qwen, items, PROMPT, batch_size=4, store=store, on_error="record")
    assert features.ids == ["good0", "good1", "good2"]
    assert "huge.wav" in features.failed["huge"] and "probably corrupt" in features.failed["huge"]
    extract(qwen, items, PROMPT, batch_size=4, store=store, on_error="record")  # a rerun retries it
    journal = next(store.glob("*/journal.jsonl")).read_text().splitlines()
    assert sum('"failed"' in line for line in journal) == 1  # the same failure is not written twice


def test_01_non_finite_features_fail_their_item_only(tmp_path, qwen, monkeypatch):
    clips = [Item(f"c{i}", tone(tmp_path / f"c{i}.wav", 300.0 + 50 * i)) for i in range(3)]
    from calm.capture import HeadCapture

    collect = HeadCapture.collect

    def poisoned(self):
        X = collect(self)
        X[1, 0, 0] = float("inf")
        return X

    monkeypatch.setattr(HeadCapture, "collect", poisoned)
    features = extract(qwen, clips, PROMPT, batch_size=3, store=tmp_path / "store", on_error="record")
    assert len(features.ids) == 2 and len(features.failed) == 1
    assert "not finite" in next(iter(features.failed.values()))


# 2 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fast", [True, False])
def test_02_clips_under_the_minimum_are_padded_and_empty_ones_fail(tmp_path, fast):
    backbone = tiny_backbone("qwen2_audio").with_options(fast=fast)
    shorts = [Item(f"s{i}", tone(tmp_path / f"s{i}.wav", 400.0 * (i + 1), seconds=0.02)) for i in range(3)]
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), RATE)
    good = Item("good", tone(tmp_path / "good.wav", 400.0))
    with pytest.warns(UserWarning, match=r"3 clip\(s\) are shorter than 0.1 s.*padded with silence to it: .*s0\.wav"):
        features = extract(backbone, [*shorts, Item("empty", empty), good], PROMPT, batch_size=5, on_error="record")
    assert features.ids == ["s0", "s1", "s2", "good"]
    assert "empty.wav" in features.failed["empty"] and "no audio samples" in features.failed["empty"]
    X = features.X.astype(np.float32)
    assert not np.allclose(X[0], X[1]) and not np.allclose(X[1], X[2])  # the padded clips' features differ
    padded = tmp_path / "padded.wav"  # the same clip padded by hand gives the same features
    soundfile.write(padded, np.pad(soundfile.read(shorts[0].audio, dtype="float32")[0], (0, 1600 - 320)), RATE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = extract(backbone, [Item("s0", shorts[0].audio), Item("padded", padded)], PROMPT, batch_size=1)
    assert np.allclose(alone.X[0].astype(np.float32), alone.X[1].astype(np.float32), atol=1e-3)
    with pytest.raises(MediaLoadError, match=r"empty.wav: holds no audio samples"):
        extract(backbone, [Item("empty", empty)], PROMPT)


# 3 ------------------------------------------------------------------------------------------------
def test_03_a_wav_truncated_mid_data_is_refused(tmp_path):
    whole = tone(tmp_path / "whole.wav", 440.0, seconds=1.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: 44 + 5000])
    with pytest.raises(MediaLoadError, match=r"cut.wav: truncated: the WAV header declares 32000 data bytes, the file holds 5000"):
        load_audio(cut, RATE)
    assert len(load_audio(whole, RATE)) == RATE


# 4 ------------------------------------------------------------------------------------------------
def test_04_clips_longer_than_the_window_warn_once(tmp_path, qwen):
    window = qwen.window_seconds  # the tiny models' window is 5 s (real ones: 30 s)
    long = [Item(f"long{i}", tone(tmp_path / f"long{i}.wav", 300.0, seconds=window + 1)) for i in range(2)]
    with pytest.warns(UserWarning, match=r"2 clip\(s\) are longer than the model's 5 s window and were cut") as caught:
        extract(qwen, [*long, Item("short", tone(tmp_path / "short.wav", 300.0))], PROMPT, batch_size=1)
    assert sum("window" in str(w.message) for w in caught) == 1


# 5 ------------------------------------------------------------------------------------------------
def deny_open(monkeypatch: pytest.MonkeyPatch, module: str, path: Path) -> None:
    """``open`` in ``module`` raises PermissionError for ``path``, as the kernel does for a file
    this user may not read (root reads any file, so chmod alone cannot test it)."""
    real_open = open

    def deny(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(f"{module}.open", deny, raising=False)


def test_05_an_unreadable_file_says_so(tmp_path, monkeypatch):
    path = tone(tmp_path / "locked.wav", 440.0)
    deny_open(monkeypatch, "calm.media", path)
    with pytest.raises(MediaLoadError, match=r"locked.wav: cannot read file \(Permission denied\)"):
        load_audio(path, RATE)


# 6 ------------------------------------------------------------------------------------------------
def test_06_dangling_and_looping_symlinks_are_items_that_fail_by_name(tmp_path, qwen):
    root = classes(tmp_path / "data", per_class=1)
    (root / "low" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    (root / "high" / "a.wav").symlink_to(root / "high" / "b.wav")
    (root / "high" / "b.wav").symlink_to(root / "high" / "a.wav")
    items = load_dataset(root)
    assert {"low/gone.wav", "high/a.wav", "high/b.wav"} <= {i.id for i in items}
    features = extract(qwen, items, PROMPT, on_error="record")
    assert "gone.wav: dangling symbolic link" in features.failed["low/gone.wav"]
    assert "symbolic links" in features.failed["high/a.wav"]
    assert len(features.ids) == 2


# 7 ------------------------------------------------------------------------------------------------
def test_07_identical_audio_stays_on_one_side_of_every_episode(tmp_path, qwen):
    root = classes(tmp_path / "data", per_class=4)
    for i in range(2):  # copies under other names
        (root / "low" / f"copy{i}.wav").write_bytes((root / "low" / f"low{i}.wav").read_bytes())
    items = load_dataset(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = calm.evaluate(qwen, items, prompt=PROMPT, shots=(2,), seeds=4, methods=["sav"], progress=False)
    assert any("identical audio" in note for note in report.notes)
    same = {f"low/low{i}.wav": f"low/copy{i}.wav" for i in range(2)}
    same |= {v: k for k, v in same.items()}
    for episode in report.config["protocol"]["episodes"]:
        support = set(episode["support"])
        run = next(r for r in report.results if r["seed"] == episode["seed"])
        assert run["n_query"] == len(items) - len(support) - sum(same.get(i) is not None for i in support)


# 8 ------------------------------------------------------------------------------------------------
def test_08_csv_without_labels_and_empty_labels_are_named(tmp_path, capsys):
    root = classes(tmp_path / "data", per_class=2)
    rows = [f"{p.relative_to(root)}" for p in sorted(root.rglob("*.wav"))]
    (root / "nolabel.csv").write_text("path\n" + "\n".join(rows) + "\n")
    assert cli("fit", "--data", str(root / "nolabel.csv"), "--model", "tiny:qwen2_audio",
               "--out", str(tmp_path / "c.safetensors")) == 1
    assert "none of the 4 item(s) has a label: a CSV needs a 'label' (or 'class') column" in capsys.readouterr().err
    labels = ["low", "", "high", "high"]
    (root / "some.csv").write_text("path,label\n" + "\n".join(f"{r},{lab}" for r, lab in zip(rows, labels)) + "\n")
    assert cli("fit", "--data", str(root / "some.csv"), "--model", "tiny:qwen2_audio",
               "--out", str(tmp_path / "c.safetensors"), "--method", "sav") == 0
    assert "1 of 4 item(s) have no label and are left out, e.g. " in capsys.readouterr().err


# 9 ------------------------------------------------------------------------------------------------
def _edit_metadata(path: Path, edit) -> None:
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    meta = json.loads(header["__metadata__"]["calm"])
    edit(meta)
    header["__metadata__"]["calm"] = json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size:])


def test_09_an_edited_classifier_file_is_refused_on_load(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 4, 3)), ["a", "b"] * 4
    edits = {
        "params": (lambda m: m["params"].update(tau=-1.0), "tau must be a positive number"),
        "heads": (lambda m: m.__setitem__("heads", {"sites": ["self_attn"], "layers": [0], "heads": [0]}),
                  "the head index names 1 heads, the arrays have 4"),
        "checksum": (lambda m: m.__setitem__("sha256", "0" * 64), "do not match the checksum"),
    }
    for name, (edit, message) in edits.items():
        path = save(CALMClassifier().fit(X, y), tmp_path / f"{name}.safetensors",
                    heads=calm.HeadIndex.from_tuples(("self_attn", 0, h) for h in range(4)))
        _edit_metadata(path, edit)
        with pytest.raises(ValueError, match=f"{name}.safetensors: .*{message}"):
            load(path)


# 10 -----------------------------------------------------------------------------------------------
def test_10_predict_takes_model_and_prompt_from_the_classifier(tmp_path, capsys):
    root = classes(tmp_path / "data")
    clf = tmp_path / "clf.safetensors"
    assert cli("fit", "--data", str(root), "--model", "tiny:qwen2_audio", "--out", str(clf), "--quiet") == 0
    new = str(root / "low" / "low0.wav")
    capsys.readouterr()
    assert cli("predict", "--classifier", str(clf), new, "--quiet") == 0  # no --model
    assert capsys.readouterr().out.splitlines()[1].startswith(f"{new},low,")
    assert cli("predict", "--classifier", str(clf), "--model", "tiny:whisper", new) == 1
    assert "model_id: expected 'tiny:qwen2_audio', got 'tiny:whisper'" in capsys.readouterr().err
    bare = save(CALMClassifier().fit(np.random.default_rng(0).standard_normal((6, 8, 8)), ["a", "b"] * 3),
                tmp_path / "bare.safetensors")
    assert cli("predict", "--classifier", str(bare), "--model", "tiny:qwen2_audio", new) == 1
    assert "records no prompt" in capsys.readouterr().err
    assert cli("predict", "--classifier", str(bare), "--model", "tiny:qwen2_audio", "--prompt", PROMPT, new) == 0


# 11 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, message", [
    ("tiny:nosuchfamily", "no tiny model for family 'nosuchfamily'"),
    ("/nonexistent/model", "/nonexistent/model: no such model folder"),
])
def test_11_unknown_models_are_one_line(tmp_path, capsys, model, message):
    root = classes(tmp_path / "data", per_class=1)
    assert cli("extract", "--data", str(root), "--model", model, "--out", str(tmp_path / "s")) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_11_unwritable_store_and_full_disk_are_one_line(tmp_path, capsys, monkeypatch):
    root = classes(tmp_path / "data", per_class=1)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli("extract", "--data", str(root), "--model", "tiny:qwen2_audio", "--out", str(blocker / "s")) == 1
    assert f"{blocker / 's'}: the feature store cannot be written there" in capsys.readouterr().err

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("calm.store.pwrite_all", full)
    assert cli("extract", "--data", str(root), "--model", "tiny:qwen2_audio", "--out", str(tmp_path / "s"),
               "--quiet") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("calm extract: ")]
    assert len(errors) == 1 and errors[0].endswith("data.f16: cannot write the feature store (No space left on device)")


# 12 -----------------------------------------------------------------------------------------------
def test_12_outputs_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    root = classes(tmp_path / "data", per_class=1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setattr("calm.backbones.load_backbone", lambda *a, **k: pytest.fail("the model was loaded"))
    assert cli("fit", "--data", str(root), "--model", "tiny:qwen2_audio", "--out", str(blocker / "c.st")) == 1
    assert "the classifier file cannot be written there" in capsys.readouterr().err
    assert cli("evaluate", "--data", str(root), "--model", "tiny:qwen2_audio", "--out", str(blocker / "r")) == 1
    assert "the report cannot be written there" in capsys.readouterr().err


# 13 -----------------------------------------------------------------------------------------------
def test_13_a_second_writer_is_refused_and_nothing_is_stored_twice(tmp_path, qwen):
    items = [Item(f"c{i}", tone(tmp_path / f"c{i}.wav", 300.0 + 40 * i)) for i in range(4)]
    key = feature_fingerprint(qwen, PROMPT)
    first = FeatureStore.open(tmp_path / "store", key, qwen.head_index())
    first.lock()  # another run is writing
    with pytest.raises(StoreError, match="another process is writing to this store"):
        extract(qwen, items, PROMPT, store=tmp_path / "store")
    first.close()
    extract(qwen, items[:2], PROMPT, store=tmp_path / "store")
    stale = FeatureStore.open(tmp_path / "store", key, qwen.head_index())  # opened before the next run wrote
    extract(qwen, items, PROMPT, store=tmp_path / "store")
    row = stale.read(["c0"]).X
    stale.append([_key(stale, items[0])], ["c0"], np.asarray(row))  # already stored: not stored again
    assert len(FeatureStore.open(tmp_path / "store", key, qwen.head_index())) == 4


def _key(store: FeatureStore, item: Item) -> str:
    from calm.media import content_hash

    return store.item_key(item.id, content_hash(item.audio))


# 14 -----------------------------------------------------------------------------------------------
def test_14_predict_fails_when_every_file_failed_and_names_each_once(tmp_path, capsys):
    root = classes(tmp_path / "data")
    clf = tmp_path / "clf.safetensors"
    assert cli("fit", "--data", str(root), "--model", "tiny:qwen2_audio", "--out", str(clf), "--quiet") == 0
    bad = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for path in bad:
        path.write_text("not audio")
    capsys.readouterr()
    assert cli("predict", "--classifier", str(clf), *map(str, bad), "--on-error", "record", "--quiet") == 1
    captured = capsys.readouterr()
    for path in bad:
        assert (captured.out + captured.err).count(str(path)) == 1


# 15 -----------------------------------------------------------------------------------------------
def test_15_warnings_are_plain_sentences_once_and_quiet_means_quiet(tmp_path, capsys):
    root = classes(tmp_path / "data", per_class=2)
    (root / "low" / "unlabelled.wav").write_bytes((root / "low" / "low0.wav").read_bytes())
    args = ["evaluate", "--data", str(root), "--model", "tiny:qwen2_audio", "--methods", "sav", "--shots", "1",
            "--seeds", "2", "--out", str(tmp_path / "r")]
    assert cli(*args) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": warning: " in line]
    assert lines and all(line.startswith("calm evaluate: warning: ") for line in lines)
    assert len(lines) == len(set(lines)) and "warnings.warn" not in err and ".py:" not in err
    assert cli(*args, "--quiet") == 0
    assert capsys.readouterr().err == ""


# 16 -----------------------------------------------------------------------------------------------
def test_16_chat_methods_are_skipped_on_whisper_with_a_note(tmp_path):
    root = classes(tmp_path / "data", per_class=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = calm.evaluate(calm.load_backbone("tiny:whisper"), load_dataset(root), prompt="Listen.",
                               shots=(2,), seeds=1, progress=False)
    methods = {r["method"] for r in report.results}
    assert "zero-shot" not in methods and "pseudo-label" not in methods and "calm" in methods
    assert any("skipped zero-shot, pseudo-label" in note for note in report.notes)


def test_16_whisper_prompt_too_long_names_the_option(tmp_path):
    with pytest.raises(ValueError, match=r"give a shorter one \(--prompt\)"):
        tiny_backbone("whisper").decoder_prefix("word " * 100)


# 17 -----------------------------------------------------------------------------------------------
def test_17_extract_takes_plain_paths(tmp_path, qwen):
    paths = [tone(tmp_path / f"p{i}.wav", 300.0 + 100 * i) for i in range(2)]
    features = extract(qwen, [str(paths[0]), paths[1]], PROMPT)
    assert features.ids == [str(paths[0]), str(paths[1])]


# 18 -----------------------------------------------------------------------------------------------
def test_18_version_and_plain_help(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"calm {calm.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert "spoof" in listing and "``" not in listing and ":func:" not in listing


# 19 -----------------------------------------------------------------------------------------------
def test_19_tiny_whisper_heads_vary_with_the_audio(tmp_path, capsys):
    root = classes(tmp_path / "data")
    features = extract(calm.load_backbone("tiny:whisper"), load_dataset(root), "Listen.", dtype=np.float32)
    from calm.evaluation.provenance import constant_heads

    constant = constant_heads(features)
    assert constant == [0, 1, 2, 3]  # only layer 0's self-attention, which sees the fixed prompt alone
    assert cli("fit", "--data", str(root), "--model", "tiny:whisper", "--out", str(tmp_path / "w.st"), "--quiet") == 0


# 20 -----------------------------------------------------------------------------------------------
class NeedsAPackage(CALMClassifier):
    def fit(self, X, y, X_val=None, y_val=None):
        raise ImportError("NeedsAPackage needs the 'nothing' package: pip install nothing")


def test_20_a_method_missing_a_package_is_not_evaluated_with_the_install_command(tmp_path):
    calm.methods.register(calm.methods.Method("needs-package", NeedsAPackage, "needs an optional package"))
    try:
        root = classes(tmp_path / "data", per_class=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = calm.evaluate(tiny_backbone("qwen2_audio"), load_dataset(root), prompt=PROMPT, shots=(2,),
                                   seeds=1, methods=["sav", "needs-package"], progress=False)
    finally:
        calm.methods.unregister("needs-package")
    failed = next(r for r in report.results if r["method"] == "needs-package")
    assert "pip install nothing" in failed["error"]
    assert next(r for r in report.results if r["method"] == "sav")["metrics"]["accuracy"] >= 0

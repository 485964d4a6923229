"""calm.scan: windows tile a file exactly (the last one cut at the file's end), a window's features
are those of the same stretch cut to its own file and extracted, the result does not depend on
the batch size or loader threads, a store is reused by a second classifier without running the
model, events come from runs of active windows, and bad files are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

import calm.scanning.features as scan_features
from calm.backbones.tiny import tiny_backbone
from calm.classifiers import load, save
from calm.data.items import Item
from calm.heads import extract
from calm.media import MediaLoadError
from calm.predict import fit_classifier
from calm.scanning import ScanOptions, scan
from calm.scanning.events import active_labels, find_events
from calm.scanning.features import window_id
from calm.scanning.windows import plan_windows
from calm.store import FeatureStore

PROMPT = "What sound is this?"
RATE = 22050  # not the model's 16 kHz: every window is resampled on its own
TONES = {"low": 300.0, "high": 2500.0}


def tone(hz: float, seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone("whisper")


@pytest.fixture(scope="module")
def support(tmp_path_factory) -> list[Item]:
    root = tmp_path_factory.mktemp("support")
    items = []
    for name, hz in TONES.items():
        for k in range(3):
            path = root / f"{name}{k}.wav"
            soundfile.write(path, tone(hz * (1 + 0.02 * k), 0.5, k), RATE, subtype="FLOAT")
            items.append(Item(f"{name}{k}", path, label=name))
    return items


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """5.3 s: noise, a low tone at 1-2 s, noise, a high tone at 3-4 s, noise."""
    noise = lambda s, seed: (0.01 * np.random.default_rng(seed).standard_normal(int(RATE * s))).astype(np.float32)
    audio = np.concatenate([noise(1, 1), tone(300, 1, 2), noise(1, 3), tone(2500, 1, 4), noise(1.3, 5)])
    path = tmp_path_factory.mktemp("long") / "long.wav"
    soundfile.write(path, audio, RATE, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def classifier(backbone, support):
    return fit_classifier(backbone, support, PROMPT, method="sav")


def test_windows_tile_the_file_and_the_last_one_stops_at_its_end():
    w = plan_windows(97, 10, window=2.0, hop=0.5)
    assert w.starts.tolist() == list(range(0, 85, 5))
    assert w.lengths.tolist() == [20] * 16 + [17]  # frames 80..97: cut at the end, not padded
    assert w.spans[0] == 0 and w.spans[-1] == 9.7
    np.testing.assert_allclose(w.spans[1:-1], np.arange(1.25, 8.8, 0.5))
    one = plan_windows(7, 10, window=2.0, hop=0.5)  # shorter than a window: one window, the whole file
    assert one.starts.tolist() == [0] and one.lengths.tolist() == [7] and one.spans.tolist() == [0.0, 0.7]
    with pytest.raises(ValueError, match="must not exceed the window"):
        plan_windows(97, 10, window=1.0, hop=2.0)


def test_a_window_has_the_features_of_the_same_stretch_extracted_as_a_clip(backbone, recording, tmp_path):
    audio, _ = soundfile.read(recording, dtype="float32")
    windows = plan_windows(len(audio), RATE, window=1.5, hop=1.0)
    with scan_features.WindowExtractor(backbone, PROMPT, batch_size=1, loader_threads=0) as extractor:
        rows = np.concatenate([f.X for f in extractor.batches(recording, windows, "x")])
    for i in (0, 2, len(windows) - 1):  # the last window crosses the end (cut to 0.8 s)
        start, n = int(windows.starts[i]), int(windows.lengths[i])
        path = tmp_path / f"w{i}.wav"
        soundfile.write(path, audio[start:start + n], RATE, subtype="FLOAT")
        alone = extract(backbone, [path], PROMPT, loader_threads=0)
        np.testing.assert_array_equal(rows[i], alone.X[0])
    assert windows.lengths[-1] < windows.lengths[0]


def test_the_result_is_the_same_whatever_the_batch_size_and_threads(backbone, classifier, recording):
    options = ScanOptions(window=1.0, hop=0.25)
    runs = [scan(backbone, classifier, [recording], options, batch_size=b, loader_threads=t)[0]
            for b, t in ((1, 0), (4, 1), (32, 0))]
    for other in runs[1:]:
        np.testing.assert_allclose(other.probabilities, runs[0].probabilities, atol=1e-6)
        spans = [(e.label, e.onset, e.offset) for e in runs[0].events]
        assert [(e.label, e.onset, e.offset) for e in other.events] == spans
        np.testing.assert_allclose([e.peak for e in other.events], [e.peak for e in runs[0].events], atol=1e-6)
    first = runs[0]
    assert first.probabilities.shape == (len(first.windows), 2) and first.windows.spans[-1] == pytest.approx(5.3)


def test_events_find_the_tones_against_a_background_class(backbone, support, recording, tmp_path):
    noise = []
    for k in range(3):
        path = tmp_path / f"noise{k}.wav"
        soundfile.write(path, (0.01 * np.random.default_rng(10 + k).standard_normal(RATE // 2)).astype(np.float32),
                        RATE, subtype="FLOAT")
        noise.append(Item(f"noise{k}", path, label="noise"))
    clf = fit_classifier(backbone, support + noise, PROMPT, method="sav")
    result = scan(backbone, clf, [recording], ScanOptions(window=0.5, hop=0.25, threshold=0.0, background="noise"))[0]
    assert [e.label for e in result.events] == ["low", "high"]  # the noise between and around them: no event
    for event, (onset, offset) in zip(result.events, [(1.0, 2.0), (3.0, 4.0)]):
        assert abs(event.onset - onset) <= 0.5 and abs(event.offset - offset) <= 0.5  # the usual 0.5 s collar


def test_a_store_is_reused_by_a_second_classifier_without_running_the_model(backbone, classifier, support,
                                                                             recording, tmp_path, monkeypatch):
    options = ScanOptions(window=1.0, hop=0.5)
    first = scan(backbone, classifier, [recording], options, store=tmp_path / "store")[0]
    stored = len(FeatureStore.open(tmp_path / "store", key=first_key(backbone), heads=backbone.head_index()))
    assert stored == len(first.windows)
    other = fit_classifier(backbone, support, PROMPT, method="calm")

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran although every window is stored")

    monkeypatch.setattr(scan_features, "forward_heads", no_model)
    again = scan(backbone, other, [recording], options, store=tmp_path / "store")[0]
    assert len(again.probabilities) == stored
    monkeypatch.undo()
    fresh = scan(backbone, other, [recording], options)[0]
    np.testing.assert_array_equal(again.probabilities, fresh.probabilities)


def first_key(backbone) -> dict:
    from calm.heads import feature_fingerprint

    return feature_fingerprint(backbone, PROMPT)


def test_window_ids_name_the_content_frames_and_rate():
    assert window_id("abc", 22050, 44100, 22050) == "abc@22050+44100/22050"


def test_events_are_runs_of_active_windows_merged():
    spans = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.45, 0.55], [0.7, 0.3], [0.3, 0.7]])
    labels = active_labels(p, ["a", "b"], threshold=0.6)
    assert labels == ["a", "a", "b", None, "a", "b"]
    events = find_events("f.wav", spans, p, ["a", "b"], labels)
    assert [(e.label, e.onset, e.offset, e.peak, round(e.mean, 6)) for e in events] == [
        ("a", 0.0, 2.0, 0.9, 0.85), ("b", 2.0, 3.0, 0.6, 0.6), ("a", 4.0, 5.0, 0.7, 0.7), ("b", 5.0, 6.0, 0.7, 0.7)]
    merged = find_events("f.wav", spans, p, ["a", "b"], labels, merge_gap=2.0)
    assert [(e.label, e.onset, e.offset, round(e.mean, 6)) for e in merged] == [
        ("a", 0.0, 5.0, round((0.9 + 0.8 + 0.7) / 3, 6)), ("b", 2.0, 6.0, 0.65)]
    assert active_labels(p, ["a", "b"], 0.6, background="b") == ["a", "a", None, None, "a", None]
    assert active_labels(p, ["a", "b"], 0.6, rejected=np.array([1, 0, 0, 0, 0, 0])) == [None, "a", "b", None, "a", "b"]
    with pytest.raises(ValueError, match="background class 'noise' is not one of"):
        active_labels(p, ["a", "b"], 0.6, background="noise")


def test_rejection_marks_windows_unknown(backbone, support, recording):
    calibrated = fit_classifier(backbone, support, PROMPT, method="sav", calibrate=True)
    result = scan(backbone, calibrated, [recording], ScanOptions(window=1.0, hop=0.5, reject=True))[0]
    assert result.rejected.shape == (len(result.windows),) and result.scores.shape == result.rejected.shape
    assert all(label is None for label, r in zip(result.labels, result.rejected) if r)


def test_bad_files_are_named_or_recorded(backbone, classifier, recording, tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(MediaLoadError, match="missing.wav: no such file"):
        scan(backbone, classifier, [missing], ScanOptions(window=1.0, hop=0.5))
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(recording.read_bytes()[: len(recording.read_bytes()) // 2])
    results = scan(backbone, classifier, [missing, truncated, recording],
                   ScanOptions(window=1.0, hop=0.5, on_error="record"))
    assert results[0].error == "no such file" and results[1].error.startswith("truncated")
    assert results[2].error is None and results[2].events is not None
    with pytest.raises(ValueError, match="merge_gap must be at least 0 seconds"):  # before any work
        scan(backbone, classifier, [missing], ScanOptions(window=1.0, hop=0.5, merge_gap=-1))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: a folder with no audio files"):
        scan(backbone, classifier, [tmp_path / "empty"], ScanOptions(window=1.0, hop=0.5))


def test_the_window_comes_from_the_support_clips_and_survives_saving(backbone, classifier, recording, tmp_path):
    assert classifier.support_seconds_ == [0.5] * 6
    result = scan(backbone, classifier, [recording])[0]  # window: the support's median length, hop: half of it
    assert result.windows.lengths[0] == RATE // 2 and result.windows.starts[1] == RATE // 4
    path = save(classifier, tmp_path / "clf.safetensors")
    assert load(path).support_seconds_ == [0.5] * 6
    classifier.support_seconds_ = None  # as in a file saved by calm 0.3.0
    try:
        with pytest.raises(ValueError, match=r"records no support clip lengths .* \(calm scan --window S\)"):
            scan(backbone, classifier, [recording])
    finally:
        classifier.support_seconds_ = [0.5] * 6


def test_quiet_clips_are_the_quietest_windows_written_as_clips(tmp_path):
    from calm.scanning.background import quiet_clips

    rng = np.random.default_rng(0)
    level = np.repeat([0.5, 0.01, 0.3, 0.02, 0.0, 0.005], RATE)  # per second; second 4 is digital silence
    audio = (level * rng.standard_normal(len(level))).astype(np.float32)
    soundfile.write(tmp_path / "rec.wav", audio, RATE, subtype="FLOAT")
    items = quiet_clips([tmp_path / "rec.wav"], window=1.0, count=3, folder=tmp_path / "bg")
    assert [i.label for i in items] == ["background"] * 3
    starts = [int(i.id.rsplit("-", 1)[1]) // RATE for i in items]
    assert starts == [1, 3, 5]  # the three quietest seconds with sound, in time order
    clip, rate = soundfile.read(items[0].audio, dtype="float32")
    assert rate == RATE and np.array_equal(clip, audio[RATE:2 * RATE])
    with pytest.raises(ValueError, match="hold 5 window.* fewer than the 9 background clips"):
        quiet_clips([tmp_path / "rec.wav"], window=1.0, count=9, folder=tmp_path / "bg")

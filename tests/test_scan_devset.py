"""The detection dev benchmark recipe: clips land where the reference says, at the SNR it says."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calm.devdata import detection, recipes
from calm.devdata.detection import Source, build_detection, place_clips, speech_stream
from calm.devdata.sources import DemoDataError
from calm.evaluation.detection import read_events

from conftest import demo_sounds

RATE = detection.RATE


def _tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return np.sin(2 * np.pi * hz * t) * np.hanning(len(t))


def test_place_clips_adds_each_clip_at_its_reference_time_and_snr():
    background = np.random.default_rng(0).normal(0, 0.1, 60 * RATE)
    clips = [(Source(f"c{k}", "ab"[k % 2], Path(f"c{k}.wav")), _tone(0.5 + 0.1 * k, 300 + 50 * k)) for k in range(8)]
    mixture, placed = place_clips(background, clips, random.Random(1), snrs=(0.0, 6.0, 12.0), gap=(2.0, 4.0))
    assert len(placed) == 8 and [p.clip for p in placed] == [f"c{k}" for k in range(8)]
    assert [p.snr for p in placed] == [0.0, 6.0, 12.0] * 2 + [0.0, 6.0]
    residual = mixture - background
    level = np.sqrt(np.mean(background ** 2))
    inside = np.zeros(len(background), dtype=bool)
    previous_end = 0.0
    for p, (_, audio) in zip(placed, clips):
        assert p.onset * RATE == pytest.approx(round(p.onset * RATE), abs=1e-6) and p.offset - p.onset == pytest.approx(len(audio) / RATE)
        assert 2.0 <= p.onset - previous_end <= 4.0 + 1 / RATE
        start = round(p.onset * RATE)
        part = residual[start:start + len(audio)]
        np.testing.assert_allclose(part, audio * (part @ audio) / (audio @ audio), atol=1e-12)  # the clip, scaled
        assert 20 * np.log10(np.sqrt(np.mean(part ** 2)) / level) == pytest.approx(p.snr, abs=1e-9)
        inside[start:start + len(audio)] = True
        previous_end = p.offset
    assert not residual[~inside].any()


def test_place_clips_stops_at_the_first_clip_that_does_not_fit_and_refuses_a_silent_background():
    clips = [(Source("long", "a", Path("x.wav")), _tone(3.0, 300))] * 3
    _, placed = place_clips(np.ones(5 * RATE), clips, random.Random(0), gap=(1.0, 1.0))
    assert [(p.onset, p.offset) for p in placed] == [(1.0, 4.0)]
    with pytest.raises(DemoDataError, match="silent"):
        place_clips(np.zeros(5 * RATE), clips, random.Random(0))


def test_speech_stream_reads_prompts_in_order_until_the_length_and_names_a_shortfall(tmp_path):
    prompts = []
    for k in range(3):
        prompts.append(tmp_path / f"p{k}.wav")
        sf.write(prompts[-1], np.full(RATE, 0.1 * (k + 1)), RATE, subtype="FLOAT")
    audio, used = speech_stream(prompts, 1.5)
    assert used == 2 and len(audio) == 1.5 * RATE
    np.testing.assert_allclose(audio, np.r_[np.full(RATE, 0.1), np.full(RATE // 2, 0.2)], atol=1e-7)
    with pytest.raises(DemoDataError, match="3 background prompts hold 3 s, 10 s needed"):
        speech_stream(prompts, 10)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny benchmark: two tasks of tone clips over a background of identical noise prompts."""
    monkeypatch.setattr(detection, "FILES", 2)
    monkeypatch.setattr(detection, "FILE_SECONDS", 20.0)
    prompt = np.random.default_rng(0).normal(0, 0.05, 2 * RATE)
    prompts = []
    for k in range(60):
        prompts.append(tmp_path / "prompts" / f"p{k:02d}.wav")
        prompts[-1].parent.mkdir(exist_ok=True)
        sf.write(prompts[-1], prompt, RATE, subtype="FLOAT")
    tasks, audio = {}, {}
    for task in ("one", "two"):
        tasks[task] = []
        for label, hz in (("low", 300.0), ("high", 2000.0)):
            for k in range(8):
                clip = tmp_path / "clips" / f"{task}-{label}-{k}.wav"
                clip.parent.mkdir(exist_ok=True)
                audio[clip.stem] = _tone(0.4 + 0.05 * k, hz + 10 * k)
                sf.write(clip, audio[clip.stem], RATE, subtype="FLOAT")
                tasks[task].append(Source(clip.stem, label, clip))
    return tasks, prompts, prompt, audio


def test_tiny_benchmark_reference_matches_where_the_clips_were_placed(tmp_path, tiny):
    tasks, prompts, prompt, audio = tiny
    listing = build_detection(tmp_path / "out", tasks, prompts, verbose=False)
    rows = list(csv.DictReader(open(listing)))
    assert [r["task"] for r in rows] == ["one", "two"]
    background = np.tile(prompt, 20)[:20 * RATE]  # every prompt is the same: each file's background
    for row in rows:
        task_dir = listing.parent / row["task"]
        support = list(csv.DictReader(open(listing.parent / row["support"])))
        assert sorted(r["label"] for r in support) == ["background"] * 5 + ["high"] * 5 + ["low"] * 5
        shots = [r for r in support if r["label"] != "background"]
        assert [r["snr"] for r in shots] == ["0", "6", "12"] * 3 + ["0"]
        bed = np.tile(prompt, 10)[:sum(len(audio[r["id"]]) for r in shots)]  # each shot over its own stretch
        start = 0
        for r in shots:
            clip = audio[r["id"]]
            part = sf.read(task_dir / r["path"])[0] - bed[start:start + len(clip)]
            np.testing.assert_allclose(part, clip * (part @ clip) / (clip @ clip), atol=1e-6)
            snr = 20 * np.log10(np.sqrt(np.mean(part ** 2)) / np.sqrt(np.mean(bed ** 2)))
            assert snr == pytest.approx(float(r["snr"]), abs=1e-3)
            start += len(clip)
        events = list(csv.DictReader(open(listing.parent / row["reference"])))
        assert {e["file"] for e in events} == {f"{row['task']}-00.wav", f"{row['task']}-01.wav"}
        assert not {e["clip"] for e in events} & {r["id"] for r in support}  # placed clips are not support clips
        assert len(read_events(listing.parent / row["reference"])) == len(events)
        for name in {e["file"] for e in events}:
            mixture, rate = sf.read(task_dir / "long" / name, dtype="float64")
            assert rate == RATE
            residual = mixture - background
            inside = np.zeros(len(mixture), dtype=bool)
            for e in (e for e in events if e["file"] == name):
                start, clip = round(float(e["onset"]) * RATE), audio[e["clip"]]
                assert float(e["offset"]) == pytest.approx(float(e["onset"]) + len(clip) / RATE, abs=1e-4)
                assert e["label"] == ("low" if "-low-" in e["clip"] else "high")
                part = residual[start:start + len(clip)]
                np.testing.assert_allclose(part, clip * (part @ clip) / (clip @ clip), atol=1e-6)
                snr = 20 * np.log10(np.sqrt(np.mean(part ** 2)) / np.sqrt(np.mean(background ** 2)))
                assert snr == pytest.approx(float(e["snr"]), abs=1e-3)
                inside[start:start + len(clip)] = True
            assert np.abs(residual[~inside]).max() < 1e-6


def test_tiny_benchmark_is_deterministic_and_refuses_too_few_clips(tmp_path, tiny):
    tasks, prompts, _, _ = tiny
    first = build_detection(tmp_path / "a", tasks, prompts, verbose=False).parent
    second = build_detection(tmp_path / "b", tasks, prompts, verbose=False).parent
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert [f for f in files if f.suffix != ".wav" and (first / f).read_bytes() != (second / f).read_bytes()] == []
    # float WAVs carry a time stamp (libsndfile's PEAK chunk): their samples are compared
    assert all(np.array_equal(sf.read(first / f)[0], sf.read(second / f)[0]) for f in files if f.suffix == ".wav")
    with pytest.raises(DemoDataError, match="5 clips of class 'low', more than 5 needed"):
        build_detection(tmp_path / "c", {"one": [s for s in tasks["one"] if s.label == "high" or s.id[-1] < "5"]},
                        prompts, verbose=False)


def test_detection_is_a_registered_recipe():
    assert recipes.RECIPES["detection"] is detection.prepare_detection


def test_real_asterisk_prompts_make_a_speech_background():
    prompts = sorted(demo_sounds().rglob("*.wav"))[:40]
    audio, used = speech_stream(prompts, 20.0)
    assert len(audio) == 20 * RATE and used < 40 and np.sqrt(np.mean(audio ** 2)) > 1e-3


def _plateaus(audio: np.ndarray, run: int = 200) -> set[float]:
    """The values ``audio`` holds for at least ``run`` samples in a row (a piece, not a cross-fade)."""
    edges = np.flatnonzero(np.diff(audio)) + 1
    starts, ends = np.r_[0, edges], np.r_[edges, len(audio)]
    return {round(float(audio[a]), 6) for a, b in zip(starts, ends) if b - a >= run}


def test_an_ambient_background_keeps_the_clips_stretches_out_of_the_long_files(tmp_path, tiny, monkeypatch):
    """Pieces of constant, distinct levels: the background clips hold five held-out pieces, one
    each, the long files (outside their events) only the others, cycled through all of them."""
    tasks, _, _, _ = tiny
    monkeypatch.setattr(detection, "PIECE", 4.0)
    monkeypatch.setattr(detection, "HELD_OUT", 7)
    monkeypatch.setattr(detection, "FADE", 0.1)
    recordings = []
    for k in range(7):  # two pieces each, then a tail shorter than a piece (never used)
        recordings.append(tmp_path / "ambient" / f"r{k:02d}.wav")
        recordings[-1].parent.mkdir(exist_ok=True)
        levels = np.repeat([0.01 * (2 * k + 1), 0.01 * (2 * k + 2), 0.9], [4 * RATE, 4 * RATE, RATE])
        sf.write(recordings[-1], levels, RATE, subtype="FLOAT")
    listing = build_detection(tmp_path / "out", tasks, recordings, name="ambient-test", verbose=False, ambient=True)
    every = {round(0.01 * n, 6) for n in range(1, 15)}
    for task in ("one", "two"):
        root = listing.parent / task
        support = list(csv.DictReader(open(root / "support.csv")))
        background = [_plateaus(sf.read(root / r["path"])[0]) for r in support if r["label"] == "background"]
        held = set().union(*background)
        assert [len(levels) for levels in background] == [1] * 5 and len(held) == 5  # five pieces, one each
        looped = set()
        events = list(csv.DictReader(open(root / "long" / "reference.csv")))
        for name in sorted({e["file"] for e in events}):
            mixture = sf.read(root / "long" / name)[0]
            keep = np.ones(len(mixture), dtype=bool)
            for e in (e for e in events if e["file"] == name):
                keep[round(float(e["onset"]) * RATE):round(float(e["offset"]) * RATE) + 1] = False
            looped |= _plateaus(np.where(keep, mixture, np.nan))
        assert held and looped and not held & looped and 0.9 not in held | looped
        assert len(looped) == 7 and looped | held <= every  # 40 s of long files from 7 pieces: all, cycled
    with pytest.raises(DemoDataError, match="held-out ambient pieces"):
        monkeypatch.setattr(detection, "HELD_OUT", 1)
        build_detection(tmp_path / "few", tasks, recordings, name="ambient-test", verbose=False, ambient=True)


def test_ambient_recordings_are_the_tilesets_long_loops_each_once(tmp_path, monkeypatch):
    tilesets = tmp_path / "usr" / "share" / "games" / "megaglest" / "tilesets"
    for tileset, name, seconds in (("winter", "wind.ogg", 16), ("winter_forest", "wind.ogg", 16),
                                   ("forest", "day.ogg", 20), ("forest", "wolf.wav", 3)):
        (tilesets / tileset / "sounds").mkdir(parents=True, exist_ok=True)
        sf.write(tilesets / tileset / "sounds" / name, np.random.default_rng(seconds).normal(0, 0.1, seconds * 800),
                 800, format="OGG" if name.endswith(".ogg") else "WAV")
    monkeypatch.setattr(detection, "cache_dir", lambda *parts: tmp_path)
    found = detection.ambient_recordings()
    assert [p.relative_to(tilesets).as_posix() for p in found] == ["forest/sounds/day.ogg", "winter/sounds/wind.ogg"]


def test_detection_ambient_is_a_registered_recipe():
    assert recipes.RECIPES["detection-ambient"] is detection.prepare_detection_ambient

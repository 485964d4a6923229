"""The demo recipes: documented counts and splits, decodable 8 kHz clips, reuse, determinism."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import demo_sounds

from calm.data.episodes import protocol_of
from calm.data.loaders import load_dataset
from calm.devdata import sources
from calm.devdata import speech as demo
from calm.devdata.recipes import RECIPES


@pytest.fixture(scope="module")
def sounds() -> Path:
    """The Asterisk recordings (system copy, or fetched once into the calm cache)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    return demo_sounds()


@pytest.fixture(scope="module")
def built(sounds, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo-data")
    return {name: RECIPES[name](root / name, verbose=False) for name in ("spoken-numbers", "spoof")}


def _check_clips(items) -> None:
    for item in items:
        info = sf.info(item.audio)
        assert (info.samplerate, info.channels, info.subtype) == (sources.SAMPLE_RATE, 1, "PCM_16"), item.id
        assert 0.2 <= info.duration <= demo.MAX_SECONDS, (item.id, info.duration)
    audio, _ = sf.read(items[0].audio)
    assert np.abs(audio).max() == pytest.approx(sources.PEAK, abs=1e-3)


def test_spoken_numbers_counts_and_splits(built):
    items = load_dataset(built["spoken-numbers"])
    assert protocol_of(items) == "split"
    labels = [str(n) for n in range(11)]
    query = [i for i in items if i.fold == "query"]
    support = [i for i in items if i.fold == "support"]
    assert (len(query), len(support), len(items)) == (55, 330, 385)
    assert Counter(i.label for i in query) == {label: 5 for label in labels}
    assert Counter(i.label for i in support) == {label: 30 for label in labels}
    assert {i.meta["source"] for i in query} == {"asterisk"} and {i.meta["source"] for i in support} == {"espeak-ng"}
    assert {i.meta["speaker"] for i in query} == {"Allison", "June", "Carlo", "IvrvoiceRU"}
    assert Counter(i.meta["language"] for i in support) == {lang: 66 for lang in ("en", "es", "fr", "it", "ru")}
    assert len({i.meta["speaker"] for i in support}) > 40  # many TTS voices
    _check_clips(items)


def test_spoof_counts_and_splits(built):
    items = load_dataset(built["spoof"])
    assert protocol_of(items) == "split"
    counts = Counter((i.fold, i.label, i.meta["language"]) for i in items)
    assert counts == {(s, l, lang): 20 for s in ("support", "query") for l in ("bonafide", "spoof")
                      for lang in ("en", "es", "fr", "it", "ru")}
    assert all((i.label == "bonafide") == (i.meta["source"] == "asterisk") for i in items)
    variants = {split: {i.meta["speaker"].rsplit("+", 1)[1] for i in items if i.label == "spoof" and i.fold == split}
                for split in ("support", "query")}
    assert variants["support"] and variants["query"] and not variants["support"] & variants["query"]
    recordings = Counter((i.meta["language"], i.meta["content"]) for i in items if i.label == "bonafide")
    assert max(recordings.values()) == 1  # no recording in both splits
    _check_clips(items)


def test_recipe_reuses_a_complete_dataset(built, capsys):
    metadata = built["spoof"]
    before = metadata.stat().st_mtime_ns
    assert demo.prepare_spoof(metadata.parent) == metadata
    assert metadata.stat().st_mtime_ns == before
    assert "reusing" in capsys.readouterr().out


def test_recipe_refuses_a_foreign_folder(sounds, tmp_path):
    (tmp_path / "mine.txt").write_text("not a dataset")
    with pytest.raises(demo.DemoDataError, match="not a 'spoof' demo dataset"):
        demo.prepare_spoof(tmp_path, verbose=False)


def test_plans_and_audio_are_deterministic(sounds):
    assert demo.spoof_clips() == demo.spoof_clips()
    clips = demo.spoken_numbers_clips()
    assert clips == demo.spoken_numbers_clips()
    tts = next(c for c in clips if c.source == "espeak-ng")
    espeak = shutil.which("espeak-ng")
    np.testing.assert_array_equal(sources.render(tts, espeak), sources.render(tts, espeak))


def test_long_texts_are_said_faster_to_fit(sounds):
    lang = sources.LANGUAGES[1]
    clip = sources.Clip("long", "spoof", "query", lang.code, "x", " ".join(demo.PHRASES["es"][3:6]),
                     voice="es+m1", speed=130)
    assert len(sources.render(clip, shutil.which("espeak-ng"))) <= demo.MAX_SECONDS * sources.SAMPLE_RATE

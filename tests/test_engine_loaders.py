"""Loader processes (calm.clips) under calm.extract: the same features and failures as loading
inline, and a loader killed with SIGKILL mid-run loses nothing finished: the run stops naming the
clips it was loading, and a rerun completes the store."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile

from calm import engine
from calm.backbones.tiny import tiny_backbone
from calm.clips import MIN_CLIPS_FOR_LOADERS, LoaderDied, read_clip
from calm.data.items import Item
from calm.engine import feature_fingerprint
from calm.heads import ExtractionConfig, extract
from calm.store import FeatureStore

PROMPT = "What sound is this?"
RATE = 44100  # stereo at 44.1 kHz, as datasets ship clips: decoded and resampled by the loaders


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Item]:
    """18 clips of 0.3 to 1.15 s (the longest named ``zkill``) and a file that cannot be decoded."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    items = []
    for n in range(18):
        name = "zkill" if n == 17 else f"clip{n:02d}"
        t = np.arange(int((0.3 + 0.05 * n) * RATE)) / RATE
        mono = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.01 * rng.standard_normal(t.size)
        soundfile.write(root / f"{name}.flac", np.stack([mono, 0.5 * mono], axis=1), RATE)
        items.append(Item(name, root / f"{name}.flac"))
    (root / "broken.flac").write_bytes(b"fLaC, but no audio")
    return items + [Item("broken", root / "broken.flac")]


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone("qwen2_audio")


def test_loader_processes_give_the_inline_features_and_failures(clips, backbone):
    assert len(clips) - 1 >= MIN_CLIPS_FOR_LOADERS  # large enough a job for loader processes
    inline = extract(backbone, clips, PROMPT, batch_size=4, on_error="record", loaders=0, dtype=np.float32)
    config = ExtractionConfig(batch_size=4, on_error="record", loaders=2, dtype=np.float32)
    loaded = extract(backbone, clips, PROMPT, config=config)
    assert loaded.ids == inline.ids == [i.id for i in clips[:-1]]
    np.testing.assert_array_equal(loaded.X, inline.X)
    assert loaded.failed == inline.failed and "broken.flac" in loaded.failed["broken"]


def test_settings_go_as_arguments_or_as_a_config_not_both(clips, backbone):
    with pytest.raises(ValueError, match="either as arguments or as config"):
        extract(backbone, clips, PROMPT, batch_size=4, config=ExtractionConfig())
    with pytest.raises(ValueError, match="loaders"):
        ExtractionConfig(loaders=-1)


def killing_read(path, sample_rate, shortest, features=None):
    """Reads a clip as calm does, except that the loader reading a file named ``zkill*`` kills
    itself with SIGKILL (what the out-of-memory killer or a user would do)."""
    if Path(path).name.startswith("zkill"):
        os.kill(os.getpid(), signal.SIGKILL)
    return read_clip(path, sample_rate, shortest, features)


def _stored(store: Path, backbone) -> int:
    with FeatureStore.open(store, feature_fingerprint(backbone, PROMPT), backbone.head_index()) as opened:
        return len(opened.done_keys())


def test_a_killed_loader_loses_nothing_finished_and_a_rerun_completes(tmp_path, clips, backbone, monkeypatch):
    items = clips[:-1]
    store = tmp_path / "store"
    monkeypatch.setattr(engine, "read_clip", killing_read)  # the loaders are given this function
    with pytest.raises(LoaderDied, match=r"a loader process died .*zkill\.flac.*rerun resumes"):
        extract(backbone, items, PROMPT, batch_size=2, store=store, loaders=1)
    monkeypatch.undo()
    finished = _stored(store, backbone)
    assert 2 <= finished < len(items)  # the batches before the kill's are kept
    resumed = extract(backbone, items, PROMPT, batch_size=2, store=store, loaders=0)
    assert resumed.ids == [i.id for i in items] and resumed.failed == {} and _stored(store, backbone) == len(items)
    reference = extract(backbone, items, PROMPT, batch_size=2, loaders=0, dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(resumed.X), reference.X.astype(np.float16))

"""Extraction into a store: kill -9 and resume, no reuse across prompts or models, failed files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from calm.backbones.tiny import tiny_backbone
from calm.data.items import Item
from calm.heads import extract, feature_fingerprint
from calm.media import AudioLoadError
from calm.store import FeatureStore

PROMPT = "What sound is this?"
N_CLIPS = 16

# Extraction in a child process that the test kills: batch size 1 and a pause per forward pass, so
# the kill lands mid-run even on a busy machine; every pass appends its number of clips to a file.
CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from calm.data.items import Item
    from calm.heads import extract
    from calm.backbones.tiny import tiny_backbone

    args = json.loads(sys.argv[1])
    backbone = tiny_backbone("qwen2_audio")
    counts = open(args["counts"], "a")

    def count(module, positional):
        counts.write(f"{positional[0].shape[0]}\\n")
        counts.flush()
        time.sleep(args["pause"])

    backbone.model.get_input_embeddings().register_forward_pre_hook(count)
    items = [Item(Path(p).stem, Path(p)) for p in args["clips"]]
    extract(backbone, items, args["prompt"], batch_size=1, store=args["store"])
    """
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Item]:
    """Tones of different lengths (0.2 to 1.1 s) and pitches."""
    folder = tmp_path_factory.mktemp("clips")
    items = []
    for i in range(N_CLIPS):
        rate = 16000
        t = np.arange(int(rate * (0.2 + 0.06 * ((i * 7) % N_CLIPS)))) / rate
        path = folder / f"clip{i:02d}.wav"
        soundfile.write(path, (0.4 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), rate)
        items.append(Item(path.stem, path))
    return items


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone("qwen2_audio")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny models run faster that way on a busy 2-core machine, and the
    in-process runs compute exactly as the child process does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class PassCounter:
    """Counts the clips that reach the model's forward pass (their token embedding, on either path)."""

    def __init__(self, backbone) -> None:
        self.clips = 0
        self._handle = backbone.model.get_input_embeddings().register_forward_pre_hook(self._count)

    def _count(self, module, positional) -> None:
        self.clips += positional[0].shape[0]

    def __enter__(self) -> "PassCounter":
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def _counted_extract(backbone, items, prompt=PROMPT, **kw):
    with PassCounter(backbone) as counter:
        features = extract(backbone, items, prompt, **kw)
    return features, counter.clips


def _store(root: Path, backbone, prompt: str = PROMPT) -> FeatureStore:
    return FeatureStore.open(root, feature_fingerprint(backbone, prompt), backbone.head_index())


def _journal_rows(store_root: Path) -> int:
    journals = list(store_root.glob("*/journal.jsonl"))
    if not journals:
        return 0
    return sum(1 for line in journals[0].read_bytes().split(b"\n")[:-1] if b'"start"' in line)


def test_kill_9_then_resume_recomputes_nothing_and_matches(tmp_path, clips, backbone):
    root = tmp_path / "store"
    counts = tmp_path / "counts.txt"
    args = {"clips": [str(i.audio) for i in clips], "store": str(root), "prompt": PROMPT,
            "counts": str(counts), "pause": 0.3}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _journal_rows(root) < 4 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, f"the child ended before the kill:\n{stderr.decode()[-2000:]}"

    stored = _store(root, backbone)
    finished = len(stored.done_keys())
    assert 4 <= finished < N_CLIPS
    passes_before_kill = sum(int(line) for line in counts.read_text().split())
    assert passes_before_kill >= finished  # the batch cut short by the kill may have run

    resumed, passes = _counted_extract(backbone, clips, batch_size=1, store=root)
    assert passes == N_CLIPS - finished  # no finished clip is recomputed
    assert resumed.ids == [i.id for i in clips] and resumed.failed == {}
    assert _journal_rows(root) == N_CLIPS  # every clip appended once over both runs

    reference, _ = _counted_extract(backbone, clips, batch_size=1, store=tmp_path / "uninterrupted")
    np.testing.assert_array_equal(np.asarray(resumed.X), np.asarray(reference.X))
    again, passes = _counted_extract(backbone, clips, batch_size=4, store=root)
    assert passes == 0
    np.testing.assert_array_equal(np.asarray(again.X), np.asarray(reference.X))


def test_other_prompt_or_model_never_reuses_features(tmp_path, clips, backbone):
    root = tmp_path / "store"
    items = clips[:4]
    first, passes = _counted_extract(backbone, items, batch_size=4, store=root)
    assert passes == 4
    _, passes = _counted_extract(backbone, items, prompt="Which animal is this?", batch_size=4, store=root)
    assert passes == 4
    other_weights = tiny_backbone("qwen2_audio", seed=1)  # same architecture, other weights
    second, passes = _counted_extract(other_weights, items, batch_size=4, store=root)
    assert passes == 4
    assert not np.array_equal(np.asarray(first.X), np.asarray(second.X))
    assert len(list(root.iterdir())) == 3
    _, passes = _counted_extract(backbone, items, batch_size=4, store=root)
    assert passes == 0


def _bad_clips(folder: Path) -> list[Item]:
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("not audio at all\n")
    good = folder / "good.wav"
    soundfile.write(good, np.zeros(1600, np.float32), 16000)
    corrupt = bytearray(good.read_bytes())
    corrupt[20:36] = b"\xff" * 16
    (folder / "corrupt.wav").write_bytes(bytes(corrupt))
    return [Item(name, folder / f"{name}.wav") for name in ("empty", "notes", "corrupt")]


def test_bad_files_are_recorded_and_retried(tmp_path, clips, backbone):
    bad = _bad_clips(tmp_path)
    items = clips[:3] + bad
    root = tmp_path / "store"
    features, passes = _counted_extract(backbone, items, batch_size=2, store=root, on_error="record")
    assert features.ids == [i.id for i in clips[:3]] and passes == 3
    assert sorted(features.failed) == ["corrupt", "empty", "notes"]
    for item in bad:
        assert str(item.audio) in features.failed[item.id]
    assert "empty file" in features.failed["empty"]
    assert _store(root, backbone).failures() == features.failed

    soundfile.write(tmp_path / "notes.wav", np.zeros(1600, np.float32), 16000)  # the file is fixed
    retried, passes = _counted_extract(backbone, items, batch_size=2, store=root, on_error="record")
    assert passes == 1  # only the fixed file reaches the model
    assert sorted(retried.failed) == ["corrupt", "empty"]
    assert set(_store(root, backbone).failures()) == {"corrupt", "empty"}


def test_bad_file_with_raise_names_the_file(tmp_path, clips, backbone):
    for item in _bad_clips(tmp_path):
        with pytest.raises(AudioLoadError) as caught:
            extract(backbone, clips[:2] + [item], PROMPT, batch_size=2, store=tmp_path / "store")
        assert str(item.audio) in str(caught.value)


def _nan_clip(folder: Path, seconds: float) -> Item:
    """A WAV whose header is fine (so its duration is known) but whose samples are NaN: it fails
    only when decoded, which happens in the background loader."""
    path = folder / "nan.wav"
    soundfile.write(path, np.full(int(16000 * seconds), np.nan, np.float32), 16000, subtype="FLOAT")
    return Item("nan", path)


@pytest.mark.parametrize("threads", [1, 3])
def test_loader_threads_change_nothing(tmp_path, clips, backbone, threads):
    items = clips[:7] + [_nan_clip(tmp_path, 0.5)]
    inline = extract(backbone, items, PROMPT, batch_size=2, on_error="record", loader_threads=0, dtype=np.float32)
    ahead = extract(backbone, items, PROMPT, batch_size=2, on_error="record", loader_threads=threads, dtype=np.float32)
    assert ahead.ids == inline.ids == [i.id for i in clips[:7]]
    assert np.array_equal(ahead.X, inline.X)
    assert list(ahead.failed) == list(inline.failed) == ["nan"]
    assert "NaN" in ahead.failed["nan"] and "nan.wav" in ahead.failed["nan"]


def test_failure_decoded_ahead_keeps_the_batches_before_it(tmp_path, clips, backbone):
    """The longest clip fails to decode; the loader reaches it early, but the error surfaces in its
    turn, after every earlier batch is in the store."""
    items = clips[:6] + [_nan_clip(tmp_path, 2.0)]
    with pytest.raises(AudioLoadError, match="nan.wav"):
        extract(backbone, items, PROMPT, batch_size=2, store=tmp_path / "store", loader_threads=3)
    assert len(_store(tmp_path / "store", backbone).done_keys()) == 6
    with pytest.raises(ValueError, match="loader_threads"):
        extract(backbone, clips[:1], PROMPT, loader_threads=-1)

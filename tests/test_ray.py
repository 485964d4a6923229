"""Extraction on Ray (calm.distributed) against the single-process path, on a local 2-CPU cluster."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile

from calm.media import MediaLoadError
from calm.cli import main as calm_main
from calm.data.items import Item
from calm.distributed import BackboneSpec, extract_ray
from calm.heads import extract, feature_fingerprint
from calm.store import FeatureStore
from calm.backbones.tiny import tiny_backbone

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install 'calm-audio[ray]'")
pytest.importorskip("ray.data", reason="the Ray tests need Ray Data (pyarrow): pip install 'calm-audio[ray]'")

MODEL = "tiny:qwen2_audio"
PROMPT = "What sound is this?"
N_CLIPS = 12
BATCH = 2  # the batches pad, so features match the single-process path's at the same batch size


@dataclass(frozen=True)
class CountingSpec(BackboneSpec):
    """A backbone spec whose model logs "pid clips" per forward pass to ``log`` and then pauses,
    so that a test sees which actors ran what and a kill lands mid-run."""

    log: str = ""
    pause: float = 0.0

    def load(self):
        backbone = super().load()

        def count(module, positional) -> None:  # the token embedding runs once per pass, on either path
            with open(self.log, "a") as handle:
                handle.write(f"{os.getpid()} {positional[0].shape[0]}\n")
            time.sleep(self.pause)

        backbone.model.get_input_embeddings().register_forward_pre_hook(count)
        return backbone


def _passes(log: Path) -> list[tuple[int, int]]:
    """(pid, clips) of every forward pass logged by a CountingSpec."""
    if not log.exists():
        return []
    return [tuple(map(int, line.split())) for line in log.read_text().split("\n") if line]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local cluster for the module: 2 CPUs, no dashboard, a small object store."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # CountingSpec reaches the workers
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024**2, logging_level=logging.WARNING)
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder of two classes: tones of different lengths (0.2 to 0.9 s) and pitches."""
    root = tmp_path_factory.mktemp("data")
    for i in range(N_CLIPS):
        rate = 16000
        t = np.arange(int(rate * (0.2 + 0.06 * ((i * 7) % N_CLIPS)))) / rate
        path = root / ("low" if i % 2 else "high") / f"clip{i:02d}.wav"
        path.parent.mkdir(exist_ok=True)
        soundfile.write(path, (0.4 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), rate)
    return root


@pytest.fixture(scope="module")
def items(folder) -> list[Item]:
    return [Item(p.relative_to(folder).as_posix(), p) for p in sorted(folder.rglob("*.wav"))]


@pytest.fixture(scope="module")
def reference(items):
    """The single-process features (float32, unstored) and the fingerprint the Ray path must match."""
    backbone = tiny_backbone("qwen2_audio")
    features = extract(backbone, items, PROMPT, batch_size=BATCH, dtype=np.float32)
    return features, feature_fingerprint(backbone, PROMPT), backbone.head_index()


def _journal(store: FeatureStore) -> list[dict]:
    return [json.loads(line) for line in (store.path / "journal.jsonl").read_text().splitlines()]


def _stored_once(store: FeatureStore) -> list[str]:
    """Every id with rows in the journal, once per row (a duplicate shows twice)."""
    return sorted(i for record in _journal(store) if "start" in record for i in record["ids"])


def _same_as_reference(features, reference) -> None:
    expected, fingerprint, _ = reference
    assert features.fingerprint == fingerprint
    order = {item_id: n for n, item_id in enumerate(features.ids)}
    X = np.asarray(features.X)[[order[i] for i in expected.ids]]
    np.testing.assert_array_equal(X, expected.X.astype(np.float16))  # what the store keeps, bit for bit


def test_cli_ray_stores_the_same_features_as_the_plain_path(tmp_path, folder, capsys):
    plain, distributed = tmp_path / "plain", tmp_path / "ray"
    common = ["extract", "--data", str(folder), "--model", MODEL, "--prompt", PROMPT, "--batch-size", str(BATCH), "--quiet"]
    assert calm_main([*common, "--out", str(plain)]) == 0
    assert calm_main([*common, "--out", str(distributed), "--ray", "--actors", "2"]) == 0
    assert f"done: {N_CLIPS}; failed: 0" in capsys.readouterr().out
    (a,), (b,) = plain.iterdir(), distributed.iterdir()
    assert a.name == b.name  # the same store key
    first, second = FeatureStore(a, {}, _heads(a)).read(), FeatureStore(b, {}, _heads(b)).read()
    order = {item_id: n for n, item_id in enumerate(second.ids)}
    assert sorted(first.ids) == sorted(second.ids) and len(second.ids) == N_CLIPS
    np.testing.assert_array_equal(np.asarray(first.X), np.asarray(second.X)[[order[i] for i in first.ids]])


def _heads(path: Path):
    from calm.features import HeadIndex

    return HeadIndex.from_dict(json.loads((path / "key.json").read_text())["heads"])


def test_killed_actor_is_replaced_and_nothing_is_lost_or_stored_twice(tmp_path, items, reference):
    log = tmp_path / "passes.log"
    spec = CountingSpec(MODEL, log=str(log), pause=0.5)
    killed: list[int] = []
    seen_before_kill: set[int] = set()

    def kill_one_actor_mid_run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            passes = _passes(log)
            if len(passes) >= 2:  # kill the actor of the latest pass, in its forward pass's pause
                seen_before_kill.update(pid for pid, _ in passes)
                os.kill(passes[-1][0], signal.SIGKILL)
                killed.append(passes[-1][0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor_mid_run)
    killer.start()
    try:
        features = extract_ray(spec, items, PROMPT, tmp_path / "store", num_actors=2, batch_size=BATCH)
    finally:
        killer.join()
    assert killed, "no actor was killed"
    assert {pid for pid, _ in _passes(log)} - seen_before_kill, "no replacement actor ran the retried batch"
    assert len(_passes(log)) < 2 * N_CLIPS  # the run went on after the kill, it did not start over
    assert not features.failed
    _same_as_reference(features, reference)
    with FeatureStore.open(tmp_path / "store", reference[1], reference[2]) as store:
        assert _stored_once(store) == sorted(item.id for item in items)


class InterruptingStore(FeatureStore):
    """A store whose driver is interrupted (Ctrl-C) after ``limit`` appended batches."""

    limit = 2

    def append(self, *args, **kwargs) -> None:
        if self.limit == 0:
            raise KeyboardInterrupt
        self.limit -= 1
        super().append(*args, **kwargs)


def test_interrupted_run_resumes_without_recomputing(tmp_path, items, reference):
    _, fingerprint, heads = reference
    with InterruptingStore.open(tmp_path / "store", fingerprint, heads) as store:
        with pytest.raises(KeyboardInterrupt):
            extract_ray(MODEL, items, PROMPT, store, num_actors=1, batch_size=BATCH)
        stored_before = len(store)
    assert stored_before == 2 * BATCH
    log = tmp_path / "passes.log"
    features = extract_ray(CountingSpec(MODEL, log=str(log)), items, PROMPT, tmp_path / "store",
                           num_actors=1, batch_size=BATCH)
    assert sum(clips for _, clips in _passes(log)) == N_CLIPS - stored_before  # only the rest ran
    _same_as_reference(features, reference)
    with FeatureStore.open(tmp_path / "store", fingerprint, heads) as store:
        assert _stored_once(store) == sorted(item.id for item in items)


def test_failed_items_are_recorded_as_in_the_plain_path(tmp_path, items, reference):
    broken, nan = tmp_path / "broken.wav", tmp_path / "nan.wav"
    broken.write_bytes(b"not audio at all")  # fails on the driver (no duration)
    soundfile.write(nan, np.full(8000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")  # fails in an actor
    bad = [Item("broken", broken), Item("missing", tmp_path / "missing.wav"), Item("nan", nan)]
    features = extract_ray(MODEL, items[:4] + bad, PROMPT, tmp_path / "store", num_actors=1, batch_size=2,
                           on_error="record")
    plain = extract(tiny_backbone("qwen2_audio"), items[:4] + bad, PROMPT, batch_size=2, on_error="record",
                    store=tmp_path / "plain")
    assert features.failed == plain.failed and set(features.failed) == {"broken", "missing", "nan"}
    assert "NaN" in features.failed["nan"] and "missing.wav: no such file" in features.failed["missing"]
    assert sorted(features.ids) == sorted(item.id for item in items[:4])
    with FeatureStore.open(tmp_path / "store", reference[1], reference[2]) as store:
        assert store.failures() == plain.failed
    with pytest.raises(MediaLoadError, match="nan.wav: audio contains NaN"):
        extract_ray(MODEL, [Item("nan", nan)], PROMPT, tmp_path / "raise", num_actors=1)

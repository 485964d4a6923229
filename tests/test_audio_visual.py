"""Audio-visual: generated mp4 clips (video + audio track) through the tiny Qwen2.5-Omni thinker
with video give features that depend on the frames, and a full evaluation (zero-shot included)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from calm.backbones.tiny import tiny_backbone
from calm.data.loaders import load_dataset
from calm.evaluation.protocol import evaluate
from calm.heads import extract

av = pytest.importorskip("av")

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
PROMPT = "What happens in this clip?"


def write_clip(path: Path, colour: tuple[int, int, int], seed: int, seconds: float = 0.5) -> Path:
    """An mp4: flat ``colour`` frames (with a little noise) at 10 fps and a 440 Hz tone track.
    The audio is the same for every colour, so only the video tells the classes apart."""
    rng = np.random.default_rng(seed)
    rate = 16000
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for _ in range(int(seconds * 10)):
            image = np.clip(np.array(colour) + rng.integers(-10, 10, (32, 32, 3)), 0, 255).astype(np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        t = np.arange(int(seconds * rate)) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in audio.encode(frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A folder of classes ``red`` and ``blue``, 4 mp4 clips each."""
    root = tmp_path_factory.mktemp("av")
    for name, colour in COLOURS.items():
        (root / name).mkdir()
        for k in range(4):
            write_clip(root / name / f"{name}{k}.mp4", colour, seed=k)
    return root


@pytest.fixture(scope="module")
def omni():
    return tiny_backbone("qwen2_5_omni")


def test_video_reaches_the_features(dataset, omni):
    items = load_dataset(dataset)
    assert all(item.video is not None and item.video.suffix == ".mp4" for item in items)
    features = extract(omni, items, PROMPT, batch_size=4, dtype=np.float32)
    assert not features.failed and features.X.shape == (8, len(omni.head_index()), omni.sites[0].head_dim)
    by_label = {label: features.X[[i for i, item in enumerate(items) if item.label == label]] for label in COLOURS}
    # same audio track, different frames: the features differ, between colours far more than within
    between = np.abs(by_label["red"].mean(0) - by_label["blue"].mean(0)).mean()
    within = max(np.abs(x - x.mean(0)).mean() for x in by_label.values())
    assert between > 3 * within > 0


def test_audio_visual_evaluation(dataset, omni):
    items = load_dataset(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate(omni, items, prompt=PROMPT, shots=(2,), seeds=2, methods=["calm", "sav"],
                          pseudo_label=False, max_new_tokens=2, batch_size=4, progress=False)
    assert [r["method"] for r in report.summary_rows()] == ["zero-shot", "sav", "calm"]
    assert report.config["fingerprint"]["family"] == "qwen2_5_omni" and not report.config["failed"]
    always_support = set.intersection(*(set(e["support"]) for e in report.config["protocol"]["episodes"]))
    assert report.zero_shot["answered"] == 8 - len(always_support) and not report.zero_shot["failed"]
    calm = next(r for r in report.summary_rows() if r["method"] == "calm")
    assert calm["accuracy"] == 1.0  # only the video separates the classes

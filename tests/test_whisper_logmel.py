"""Whisper's log-mel in numpy (calm.logmel), computed per clip in the loader processes: equal to
transformers' feature extractor up to float rounding, the same bits for every loader count, and
importable where neither torch nor transformers is."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from transformers import WhisperFeatureExtractor
from transformers.models.whisper import feature_extraction_whisper

from calm.backbones.audio_encoder import log_mel
from calm.backbones.tiny import tiny_backbone
from calm.capture import HeadCapture
from calm.clips import MIN_CLIPS_FOR_LOADERS
from calm.data.items import Item
from calm.engine import forward_heads
from calm.heads import extract
from calm.logmel import LogMel, MelFrames, stack_frames

RATE = 16000
PROMPT = "Someone says a number."


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Tones under a moving envelope, faint noise and a stretch of near silence (where the log
    magnifies rounding most)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(np.sin(2 * np.pi * rng.uniform(80, 4000) * t) for _ in range(3))
    envelope = np.interp(t, np.linspace(0, seconds, 6), rng.uniform(0.0, 1.0, 6))
    audio = 0.2 * tones * envelope + 1e-4 * rng.standard_normal(t.size)
    audio[len(audio) // 3: len(audio) // 2] *= 1e-3
    return audio.astype(np.float32)


LENGTHS = (0.1, 1.0, 5.0, 5.00031, 29.97, 30.0, 31.5)
"""Seconds: short, on and off the hop, so close to 30 s that the end's reflection sees audio, 30 s, cut."""


TORCH_ROUNDING = 2.5e-4
"""How far transformers' torch path (float32 FFT; what calm used before) strays from its numpy path
(float64 FFT) on these clips: up to 1.4e-4, in the quietest frames, where the log magnifies rounding."""


@pytest.mark.parametrize("mels", [80, 128])
def test_equals_the_feature_extractor_up_to_rounding(mels, monkeypatch):
    fe = WhisperFeatureExtractor(feature_size=mels)
    ours = LogMel.of(fe)

    def extractor(audio: np.ndarray, torch_path: bool) -> np.ndarray:
        monkeypatch.setattr(feature_extraction_whisper, "is_torch_available", lambda: torch_path)
        return fe([audio], sampling_rate=RATE, return_tensors="np")["input_features"][0]

    for seed, seconds in enumerate(LENGTHS):
        audio = speechlike(seconds, seed)
        mel, float64_fft, torch_fft = ours(audio).full(), extractor(audio, False), extractor(audio, True)
        assert mel.shape == float64_fft.shape == (mels, 3000) and mel.dtype == np.float32
        ours_off, torch_off = np.abs(mel - float64_fft), np.abs(torch_fft - float64_fft)
        # closer to the float64 computation than transformers' own torch path is
        assert ours_off.max() <= 5e-5 and ours_off.max() <= torch_off.max(), seconds
        assert np.abs(mel - torch_fft).max() <= TORCH_ROUNDING, seconds


def test_computing_only_the_audible_frames_changes_no_bit():
    ours = LogMel.of(WhisperFeatureExtractor(feature_size=80))
    for seed, seconds in enumerate((0.1, 1.0, 5.00031, 12.0)):
        audio = speechlike(seconds, seed)
        short = ours(audio)
        assert short.values.shape[1] < 3000  # the frames past the audio were not computed ...
        whole = ours(np.pad(audio, (0, 480000 - len(audio))))  # ... here every frame is
        assert whole.values.shape[1] == 3000
        np.testing.assert_array_equal(short.full(), whole.full())


def test_a_shorter_window_equals_the_torch_log_mel_of_the_trimmed_encoder():
    fe = WhisperFeatureExtractor(feature_size=80)
    ours = LogMel.of(fe, frames=500)
    for seed, seconds in enumerate((0.3, 4.99, 5.0, 7.0)):
        audio = speechlike(seconds, seed)
        reference = log_mel([audio[:500 * 160]], fe, 500, torch.device("cpu"))[0].numpy()
        mel = ours(audio).full()
        assert mel.shape == reference.shape == (80, 500)
        assert np.abs(mel - reference).max() <= TORCH_ROUNDING


def test_clips_of_another_window_are_refused():
    fe = WhisperFeatureExtractor(feature_size=80)
    clips = [LogMel.of(fe)(speechlike(1.0, 0)), LogMel.of(fe, frames=500)(speechlike(1.0, 1))]
    with pytest.raises(ValueError, match=r"a batch of 3000 log-mel frames cannot take .*\(80, 500\)"):
        stack_frames(clips, 3000)
    assert stack_frames(clips[:1], 3000).shape == (1, 80, 3000)


@pytest.fixture(scope="module")
def whisper():
    return tiny_backbone("whisper")


def test_heads_stay_as_close_to_the_processors_log_mel_as_float32_allows(whisper):
    audios = [speechlike(s, n) for n, s in enumerate((0.4, 2.0, 4.5))]
    ours = whisper.build_inputs(audios, PROMPT)
    fe = whisper.processor.feature_extractor
    theirs = dict(ours, input_features=fe(audios, sampling_rate=RATE, return_tensors="pt")["input_features"])
    assert (ours["input_features"] - theirs["input_features"]).abs().max() <= TORCH_ROUNDING
    with HeadCapture(whisper) as capture:
        new, old = forward_heads(whisper, capture, ours), forward_heads(whisper, capture, theirs)
    # the tiny model's large random weights (init_std 0.5) magnify the rounding to about 2e-4 at most
    np.testing.assert_allclose(new, old, rtol=1e-3, atol=1e-4)
    cosine = (new * old).sum(-1) / np.linalg.norm(new, axis=-1) / np.linalg.norm(old, axis=-1)
    assert cosine.min() >= 0.99999


def test_build_inputs_takes_audio_or_its_log_mel_alike(whisper):
    audios = [speechlike(s, n) for n, s in enumerate((0.4, 2.0))]
    mels = [whisper.clip_features(audio) for audio in audios]
    assert all(isinstance(mel, MelFrames) for mel in mels)
    from_audio = whisper.build_inputs(audios, PROMPT)["input_features"]
    torch.testing.assert_close(whisper.build_inputs(mels, PROMPT)["input_features"], from_audio, rtol=0, atol=0)
    torch.testing.assert_close(whisper.build_inputs([audios[0], mels[1]], PROMPT)["input_features"], from_audio,
                               rtol=0, atol=0)


def test_a_dithering_extractor_keeps_its_own_random_log_mel():
    backbone = tiny_backbone("whisper")
    backbone.processor.feature_extractor.dither = 1e-3
    assert backbone.clip_features is None
    audios = [speechlike(1.0, 0)]
    first, second = (backbone.build_inputs(audios, PROMPT)["input_features"] for _ in range(2))
    assert first.shape == (1, 80, 500) and not torch.equal(first, second)


def test_a_loader_process_needs_neither_torch_nor_transformers(whisper):
    payload = pickle.dumps(whisper.clip_features)
    code = ("import pickle, sys; import calm.clips; features = pickle.loads(sys.stdin.buffer.read()); "
            "features(__import__('numpy').zeros(1600, 'float32')); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, check=True)
    assert out.stdout.decode().strip() == "[]"


@pytest.fixture(scope="module")
def flac_clips(tmp_path_factory) -> list[Item]:
    """Stereo 44.1 kHz FLAC files (decoded and resampled by the loaders) and one that is broken."""
    root = tmp_path_factory.mktemp("whisper_logmel")
    items = []
    for n in range(MIN_CLIPS_FOR_LOADERS + 2):
        audio = speechlike(0.3 + 0.1 * n, n)
        wide = np.interp(np.arange(int(len(audio) * 44100 / RATE)) * RATE / 44100, np.arange(len(audio)), audio)
        soundfile.write(root / f"clip{n:02d}.flac", np.stack([wide, 0.5 * wide], axis=1), 44100)
        items.append(Item(f"clip{n:02d}", root / f"clip{n:02d}.flac"))
    (root / "broken.flac").write_bytes(b"fLaC, but no audio")
    return items + [Item("broken", root / "broken.flac")]


@pytest.mark.parametrize("window", [None, 2.0], ids=["30s", "2s"])
def test_every_loader_count_gives_the_same_bits(whisper, flac_clips, window):
    backbone = whisper.with_options(encoder_seconds=window)
    runs = [extract(backbone, flac_clips, PROMPT, batch_size=4, on_error="record", loaders=n, dtype=np.float32)
            for n in (0, 1, 2)]
    for run in runs[1:]:
        assert run.ids == runs[0].ids == [item.id for item in flac_clips[:-1]]
        np.testing.assert_array_equal(run.X, runs[0].X)
        assert run.failed == runs[0].failed and "broken.flac" in run.failed["broken"]

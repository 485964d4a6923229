"""Whisper's log-mel spectrogram in numpy, one clip at a time, so that loader processes (which
import neither torch nor transformers) compute it while the model runs.

It is the published formula, as transformers' ``WhisperFeatureExtractor`` computes it: the clip
cut or zero-padded to the window, a centred STFT (periodic Hann window of ``n_fft`` samples, hop
``hop_length``, the signal reflected at both ends), power, the extractor's mel filters, ``log10``
of at least 1e-10, everything below the clip's maximum minus 8 raised to it, then ``(x + 4) / 4``.
A window shorter than ``n_samples`` (Whisper's ``encoder_seconds``) cuts the clip to its frames
and pads it with ``n_fft`` zeros, as :func:`calm.backbones.audio_encoder.log_mel` does.

Frames past the audio are pure zero padding, whose value is the same everywhere (the floor, then
raised to the clip's maximum minus 8). So only the frames that can see audio and the first silent
one are computed; :meth:`MelFrames.full` repeats that silent frame to the window. A 5 s clip
costs a sixth of its 30 s window. In float32 it equals transformers' extractor up to rounding:
within 5e-5 of its numpy path (float64 FFT), closer to that than its torch path is (what calm used
before: up to 1.4e-4 apart in the quietest frames, where ``log10`` magnifies rounding; values lie
in about [-1.5, 2]; ``tests/test_whisper_logmel.py``). Being the same function wherever it runs,
it gives the same bits inline and in a loader process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from threadpoolctl import ThreadpoolController

FLOOR = 1e-10
"""The least mel power before the logarithm."""


@lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def mel_power(power: np.ndarray, mel_filters: np.ndarray) -> np.ndarray:
    """[mels, frames]: ``power`` [frames, bins] through the filters [bins, mels], on one BLAS thread
    (the product is small: OpenBLAS's threads only wait for each other, on a busy 2-core machine
    30 ms instead of 0.2)."""
    with _blas().limit(limits=1, user_api="blas"):
        return (power @ mel_filters).T


@dataclass(frozen=True, eq=False)
class MelFrames:
    """A clip's log-mel: ``values`` [mels, n] float32, its first frames up to and including the
    first silent one, which stands for the rest of the ``frames`` of its window."""

    values: np.ndarray
    frames: int

    def full(self, out: np.ndarray | None = None) -> np.ndarray:
        """[mels, frames] float32 (written into ``out`` when given)."""
        out = np.empty((self.values.shape[0], self.frames), np.float32) if out is None else out
        computed = self.values.shape[1]
        out[:, :computed] = self.values
        out[:, computed:] = self.values[:, -1:]
        return out


def stack_frames(clips: Sequence[MelFrames], frames: int) -> np.ndarray:
    """[B, mels, frames] float32 of clips computed for a window of ``frames`` frames."""
    shapes = {(clip.values.shape[0], clip.frames) for clip in clips}
    if len(shapes) != 1 or next(iter(shapes))[1] != frames:
        raise ValueError(f"a batch of {frames} log-mel frames cannot take clips computed for (mels, frames) "
                         f"{sorted(shapes)}")
    out = np.empty((len(clips), clips[0].values.shape[0], frames), np.float32)
    for row, clip in zip(out, clips):
        clip.full(row)
    return out


@dataclass(frozen=True, eq=False)
class LogMel:
    """Whisper's log-mel of a clip's first ``frames`` frames (picklable: runs in loader processes).

    Attributes:
        n_fft, hop_length: STFT frame and hop, in samples.
        n_samples: the extractor's window in samples (30 s).
        frames: mel frames kept (``n_samples // hop_length`` for the whole window).
        mel_filters: [n_fft // 2 + 1, mels] float32.
    """

    n_fft: int
    hop_length: int
    n_samples: int
    frames: int
    mel_filters: np.ndarray

    @classmethod
    def of(cls, feature_extractor: Any, frames: int | None = None) -> "LogMel":
        """The settings of a transformers ``WhisperFeatureExtractor`` (``frames``: None for its whole window)."""
        fe = feature_extractor
        return cls(int(fe.n_fft), int(fe.hop_length), int(fe.n_samples), int(frames or fe.nb_max_frames),
                   np.asarray(fe.mel_filters, dtype=np.float32))

    @property
    def window(self) -> np.ndarray:
        """The periodic Hann window, computed in float64 and rounded to float32."""
        return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.n_fft) / self.n_fft)).astype(np.float32)

    def __call__(self, audio: np.ndarray) -> MelFrames:
        """The log-mel of mono ``audio`` at the extractor's rate."""
        hop, half = self.hop_length, self.n_fft // 2
        samples = min(self.n_samples, self.frames * hop + self.n_fft)
        audio = np.asarray(audio, dtype=np.float32)[: self.frames * hop]
        audible = -(-(len(audio) + half) // hop)  # frames t with t * hop - half < len(audio)
        if audible + 1 >= self.frames or len(audio) + self.n_fft > samples:
            computed, length, tail = self.frames, samples, half  # the end's reflection may see audio
        else:
            computed, length, tail = audible + 1, audible * hop + half, 0  # up to the first silent frame
        signal = np.zeros(length, np.float32)
        signal[: min(len(audio), length)] = audio[:length]
        padded = np.pad(signal, (half, tail), mode="reflect")
        framed = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[::hop][:computed]
        power = np.abs(np.fft.rfft(framed * self.window, axis=-1)) ** 2  # [computed, bins]
        log = np.log10(np.maximum(mel_power(power, self.mel_filters), np.float32(FLOOR)))
        log = np.maximum(log, log.max() - np.float32(8.0))
        return MelFrames(((log + np.float32(4.0)) / np.float32(4.0)).astype(np.float32), self.frames)

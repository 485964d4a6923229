"""Audio in: decode a file, downmix to mono, resample to a backbone's rate, and validate.

soundfile (libsndfile) reads WAV, FLAC, OGG, MP3 and friends; containers it cannot read (mp4,
m4a, webm, mkv ...) are decoded with PyAV when the ``video`` extra is installed. Every failure
raises :class:`AudioLoadError`, whose message names the file and the reason, so a run that
records failures can list them and a run that raises points at the culprit.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import soundfile
import soxr

_HASH_CHUNK = 1 << 20


class AudioLoadError(ValueError):
    """An audio file that cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:  # pickled by workers of calm.distributed
        return type(self), (self.path, self.reason)


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decode ``path`` to float32 mono samples at ``sample_rate`` Hz.

    Channels are averaged; resampling uses soxr at high quality. Raises :class:`AudioLoadError`
    for a missing, empty, undecodable or non-audio file, one with no samples, or one with NaN or
    infinite samples.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = Path(path)
    _check_file(path)
    samples, rate = _decode(path)
    if samples.shape[0] == 0:
        raise AudioLoadError(path, "no audio samples (0 frames)")
    if not np.isfinite(samples).all():
        raise AudioLoadError(path, "audio contains NaN or infinite samples")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def duration(path: str | os.PathLike) -> float:
    """The length of ``path`` in seconds, from its header where possible (decoding otherwise)."""
    path = Path(path)
    _check_file(path)
    try:
        return float(soundfile.info(str(path)).duration)
    except soundfile.SoundFileError as sf_error:
        av = _import_av(path, sf_error)
        try:
            with av.open(str(path)) as container:
                stream = _audio_stream(container, path)
                if stream.duration is not None and stream.time_base is not None:
                    return float(stream.duration * stream.time_base)
                if container.duration is not None:
                    return container.duration / av.time_base
        except av.FFmpegError as error:
            raise AudioLoadError(path, _not_decodable(sf_error, error)) from error
        samples, rate = _decode_av(path, sf_error)
        return samples.shape[0] / rate


def content_hash(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of the file's bytes (what a feature store keys an item's audio by)."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as error:
        raise AudioLoadError(path, f"cannot read file ({error.strerror or error})") from error
    return digest.hexdigest()


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError as error:
        raise AudioLoadError(path, "no such file") from error
    except OSError as error:
        raise AudioLoadError(path, f"cannot read file ({error.strerror or error})") from error
    if not path.is_file():
        raise AudioLoadError(path, "not a regular file")
    if size == 0:
        raise AudioLoadError(path, "empty file (0 bytes)")


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Samples as float32 [frames, channels] and the file's sample rate."""
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return samples, int(rate)
    except soundfile.SoundFileError as sf_error:
        return _decode_av(path, sf_error)


def _decode_av(path: Path, sf_error: Exception) -> tuple[np.ndarray, int]:
    av = _import_av(path, sf_error)
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = _audio_stream(container, path)
            rate = stream.rate
            # Planar float keeps the channel count and rate: downmixing and resampling are ours.
            resampler = av.AudioResampler(format="fltp")
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except av.FFmpegError as error:
        raise AudioLoadError(path, _not_decodable(sf_error, error)) from error
    if not rate:
        raise AudioLoadError(path, "audio stream has no sample rate")
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32), int(rate)
    return np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False), int(rate)


def _audio_stream(container, path: Path):
    if not container.streams.audio:
        raise AudioLoadError(path, "no audio stream in the container")
    return container.streams.audio[0]


def _import_av(path: Path, sf_error: Exception):
    try:
        import av
    except ImportError:
        raise AudioLoadError(
            path,
            f"not readable by soundfile ({_sf_reason(sf_error)}); containers such as mp4/m4a/webm "
            "need PyAV: pip install 'calm-audio[video]'",
        ) from sf_error
    return av


def _sf_reason(error: Exception) -> str:
    return str(getattr(error, "error_string", None) or error).strip().rstrip(".")


def _not_decodable(sf_error: Exception, av_error: Exception) -> str:
    av_reason = getattr(av_error, "strerror", None) or str(av_error)
    return f"not a decodable audio file (soundfile: {_sf_reason(sf_error)}; ffmpeg: {av_reason})"

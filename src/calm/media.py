"""Media in: decode audio (downmix, resample to a backbone's rate) and sample video frames, validating both.

soundfile (libsndfile) reads WAV, FLAC, OGG, MP3 and friends; containers it cannot read (mp4,
m4a, webm, mkv ...) and every video are decoded with PyAV (the ``video`` extra). Every failure
raises :class:`MediaLoadError`, whose message names the file and the reason, so a run that
records failures can list them and a run that raises points at the culprit.

What is refused, and why (see the README's "Bad input"): a missing, empty, unreadable or
undecodable file; a WAV whose data chunk is shorter than its header says (truncated mid-write);
no samples; NaN or infinite samples; float samples beyond ±:data:`MAX_ABS_SAMPLE` (garbage, and
they overflow the models' spectrograms into NaN features).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import soundfile
import soxr

from calm.errors import InputError

_HASH_CHUNK = 1 << 20

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma",
                            # more that libsndfile reads (Sun/NeXT, Core Audio, Sony Wave64, RF64, NIST ...)
                            ".au", ".snd", ".caf", ".w64", ".rf64", ".aifc", ".sph", ".voc", ".oga",
                            # and that PyAV (ffmpeg) does
                            ".mka", ".wv", ".amr", ".mp2", ".ac3"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov"})
MEDIA_SUFFIXES = AUDIO_SUFFIXES | VIDEO_SUFFIXES

MAX_ABS_SAMPLE = 1e3
"""Float audio is nominally within ±1; a file whose samples exceed ±1000 (+60 dBFS) is corrupt."""


_ORIGINS: dict[Path, list[str]] = {}
"""Files calm wrote from elsewhere (audio bytes of a Parquet row) -> where they came from."""


def note_origin(path: str | os.PathLike, origin: str) -> None:
    """Record that ``path`` holds media taken from ``origin`` (e.g. ``"train.parquet: row 3"``),
    so that an error about the file names where it came from, not only where calm put it."""
    origins = _ORIGINS.setdefault(Path(path), [])
    if origin not in origins:
        origins.append(origin)


class MediaLoadError(InputError):
    """An audio or video file that cannot be used; ``path`` and ``reason`` say which and why (and,
    for a file written from elsewhere, :func:`note_origin`, where it came from)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        origins = _ORIGINS.get(self.path)
        where = str(self.path)
        if origins:
            more = f" and {len(origins) - 2} more" if len(origins) > 2 else ""
            where = f"{'; '.join(origins[:2])}{more} (its audio, cached as {self.path})"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:  # pickled by workers of calm.distributed
        return type(self), (self.path, self.reason)


AudioLoadError = MediaLoadError
"""The name earlier versions used; the same class."""


# ---------------------------------------------------------------------------- audio


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decode ``path`` to float32 mono samples at ``sample_rate`` Hz.

    Channels are averaged; resampling uses soxr at high quality. Raises :class:`MediaLoadError`
    for anything listed in the module docstring.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = Path(path)
    check_readable(path)
    check_wav_length(path)
    samples, rate = _decode(path)
    if samples.shape[0] == 0:
        raise MediaLoadError(path, "no audio samples (0 frames)")
    if not np.isfinite(samples).all():
        raise MediaLoadError(path, "audio contains NaN or infinite samples")
    peak = float(np.abs(samples).max())
    if peak > MAX_ABS_SAMPLE:
        raise MediaLoadError(path, f"samples reach {peak:.3g}, far outside the ±1 range of audio "
                                   f"(limit ±{MAX_ABS_SAMPLE:g}); the file is probably corrupt")
    mono = downmix(samples)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


PAIRWISE_FROM = 8
"""numpy sums a reduction's rows of at least this many values pairwise (fewer: one by one)."""


def downmix(samples: np.ndarray) -> np.ndarray:
    """[frames, channels] float32 -> the channels' mean, bit for bit ``samples.mean(axis=1)``; up
    to 7 channels summed column by column from zero as numpy does, over ten times faster than its
    reduction along the short rows (a 5 s stereo clip at 44.1 kHz: under 1 ms instead of 10)."""
    channels = samples.shape[1]
    if channels == 1:
        return samples[:, 0]
    if channels >= PAIRWISE_FROM:
        return samples.mean(axis=1, dtype=np.float32)
    total = np.zeros(samples.shape[0], np.float32)
    for column in samples.T:
        total += column
    return total / np.float32(channels)


def duration(path: str | os.PathLike) -> float:
    """The length of ``path`` in seconds, from its header where possible (decoding otherwise)."""
    path = Path(path)
    check_readable(path)
    try:
        return float(soundfile.info(os.fsencode(path)).duration)
    except soundfile.SoundFileError as sf_error:
        av = _import_av(path, f"not readable by soundfile ({_sf_reason(sf_error)}); containers such as "
                              "mp4/m4a/webm need PyAV")
        try:
            with av.open(str(path)) as container:
                stream = _first_stream(container, "audio", path)
                if stream.duration is not None and stream.time_base is not None:
                    return float(stream.duration * stream.time_base)
                if container.duration is not None:
                    return container.duration / av.time_base
        except av.FFmpegError as error:
            raise MediaLoadError(path, _not_decodable(sf_error, error)) from error
        samples, rate = _decode_av(path, sf_error)
        return samples.shape[0] / rate


def is_audio_file(path: str | os.PathLike) -> bool:
    """Whether soundfile recognises ``path`` as audio from its header (for files without a suffix)."""
    try:
        soundfile.info(os.fsencode(path))
    except (soundfile.SoundFileError, RuntimeError, OSError):
        return False
    return True


def content_hash(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of the file's bytes (what a feature store keys an item's audio by)."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    except FileNotFoundError as error:
        raise MediaLoadError(path, missing_reason(path)) from error
    except OSError as error:
        raise MediaLoadError(path, os_reason(error)) from error
    return digest.hexdigest()


def check_readable(path: Path) -> None:
    """A MediaLoadError unless ``path`` is a non-empty regular file this process can read."""
    try:
        size = path.stat().st_size
    except FileNotFoundError as error:
        raise MediaLoadError(path, missing_reason(path)) from error
    except OSError as error:
        raise MediaLoadError(path, os_reason(error)) from error
    if not path.is_file():
        raise MediaLoadError(path, "not a regular file")
    if size == 0:
        raise MediaLoadError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as error:
        raise MediaLoadError(path, os_reason(error)) from error


def missing_reason(path: Path) -> str:
    """Why a file that is not there is not: "dangling symbolic link" or "no such file" (one wording
    for every loader and extraction path)."""
    if path.is_symlink():
        return "dangling symbolic link"
    return "no such file" if not path.exists() else "not a regular file"


def os_reason(error: OSError) -> str:
    """Why a file cannot be read, from the OSError ("cannot read file (Permission denied)")."""
    return f"cannot read file ({error.strerror or error})"


def check_wav_length(path: Path) -> None:
    """For a RIFF/WAVE file: the data chunk must hold as many bytes as its header declares."""
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        size = path.stat().st_size
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return
            name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                available = size - handle.tell()
                if 0 < length < 0xFFFFFFFF and available < length:  # 0 / 0xFFFFFFFF: streamed, unknown
                    raise MediaLoadError(path, f"truncated: the WAV header declares {length} data bytes, the "
                                               f"file holds {available}")
                return
            handle.seek(length + (length & 1), os.SEEK_CUR)


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Samples as float32 [frames, channels] and the file's sample rate."""
    try:
        samples, rate = soundfile.read(os.fsencode(path), dtype="float32", always_2d=True)
        return samples, int(rate)
    except soundfile.SoundFileError as sf_error:
        return _decode_av(path, sf_error)


def _decode_av(path: Path, sf_error: Exception) -> tuple[np.ndarray, int]:
    av = _import_av(path, f"not readable by soundfile ({_sf_reason(sf_error)}); containers such as mp4/m4a/webm "
                          "need PyAV")
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = _first_stream(container, "audio", path)
            rate = stream.rate
            # Planar float keeps the channel count and rate: downmixing and resampling are ours.
            resampler = av.AudioResampler(format="fltp")
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except av.FFmpegError as error:
        raise MediaLoadError(path, _not_decodable(sf_error, error)) from error
    if not rate:
        raise MediaLoadError(path, "audio stream has no sample rate")
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32), int(rate)
    return np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False), int(rate)


def _first_stream(container, kind: str, path: Path):
    streams = getattr(container.streams, kind)
    if not streams:
        raise MediaLoadError(path, f"no {kind} stream in the container")
    return streams[0]


def _import_av(path: Path, what_needs_it: str):
    try:
        import av
    except ImportError:
        raise MediaLoadError(path, f"{what_needs_it}: pip install 'calm-audio[video]'") from None
    return av


def _sf_reason(error: Exception) -> str:
    return str(getattr(error, "error_string", None) or error).strip().rstrip(".")


def _not_decodable(sf_error: Exception, av_error: Exception) -> str:
    av_reason = getattr(av_error, "strerror", None) or str(av_error)
    return f"not a decodable audio file (soundfile: {_sf_reason(sf_error)}; ffmpeg: {av_reason})"


# ---------------------------------------------------------------------------- video


def load_video(path: str | os.PathLike, num_frames: int) -> np.ndarray:
    """``num_frames`` RGB frames of ``path`` as uint8 [T, H, W, 3], taken at the centres of T
    equal segments of the clip (a clip with fewer frames repeats frames).

    The frame count comes from the container when it states one, otherwise from counting packets;
    if the stream then ends early, the missing picks repeat the last decoded frame.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    path = Path(path)
    av = _import_av(path, "reading video needs PyAV")
    check_readable(path)
    try:
        total = _frame_count(av, path)
        if total == 0:
            raise MediaLoadError(path, "no video frames")
        picks = ((np.arange(num_frames) + 0.5) * total / num_frames).astype(np.int64)
        wanted = set(picks.tolist())
        decoded: dict[int, np.ndarray] = {}
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(container.streams.video[0])):
                if index in wanted:
                    decoded[index] = frame.to_ndarray(format="rgb24")
                if index >= picks[-1]:
                    break
    except av.FFmpegError as error:
        reason = getattr(error, "strerror", None) or error
        raise MediaLoadError(path, f"not a decodable video ({reason})") from error
    if not decoded:
        raise MediaLoadError(path, "no video frames could be decoded")
    last = decoded[max(decoded)]
    return np.stack([decoded.get(i, last) for i in picks.tolist()])


def _frame_count(av, path: Path) -> int:
    """Frames in the first video stream: as the container states it, or by counting packets."""
    with av.open(str(path)) as container:
        stream = _first_stream(container, "video", path)
        return stream.frames or sum(1 for packet in container.demux(stream) if packet.size)

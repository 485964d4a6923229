"""Windows over a long recording: where they lie, and reading one without decoding the file.

A file of T seconds is cut into windows of ``window`` seconds every ``hop`` seconds, starting at
0; the last window is the first that reaches the end, cut at the file's end (so it may be shorter
than the others, never padded with audio that is not there). Positions are counted in the file's
own sample frames, so a window is named exactly (file content, first frame, frame count) and the
same window is the same whatever the batch or the rerun.

Each window *stands for* the hop-long stretch around its centre (the first one from 0, the last
one to the file's end): these spans tile the file, and events are drawn from them, which places
an event's edges to within half a hop instead of a whole window.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from calm.media import MAX_ABS_SAMPLE, MediaLoadError, check_readable, check_wav_length


@dataclass(frozen=True)
class Windows:
    """The windows of one file, in its native frames: window i covers frames
    ``starts[i] : starts[i] + lengths[i]``; ``spans`` [n + 1] are the edges, in seconds, of the
    stretches the windows stand for (span i is ``spans[i] .. spans[i + 1]``)."""

    rate: int
    frames: int
    starts: np.ndarray
    lengths: np.ndarray
    spans: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def seconds(self) -> float:
        """The file's length in seconds."""
        return self.frames / self.rate


def plan_windows(frames: int, rate: int, window: float, hop: float) -> Windows:
    """The windows of a file of ``frames`` frames at ``rate`` Hz (see the module docstring)."""
    if not (window > 0 and hop > 0):
        raise ValueError(f"window and hop must be positive seconds, got window={window!r}, hop={hop!r}")
    if hop > window:
        raise ValueError(f"the hop ({hop:g} s) must not exceed the window ({window:g} s): audio between "
                         "windows would never be looked at")
    if frames < 1 or rate < 1:
        raise ValueError(f"a file needs at least one frame and a positive rate, got {frames} at {rate} Hz")
    size, step = max(1, round(window * rate)), max(1, round(hop * rate))
    count = 1 if frames <= size else math.ceil((frames - size) / step) + 1
    starts = np.arange(count, dtype=np.int64) * step
    lengths = np.minimum(size, frames - starts)
    edges = (starts[1:] + (size - step) / 2) / rate
    spans = np.concatenate([[0.0], np.minimum(edges, frames / rate), [frames / rate]])
    return Windows(rate, frames, starts, lengths, spans)


def file_frames(path: str | os.PathLike) -> tuple[int, int]:
    """(frames, sample rate) of an audio file, from its header; MediaLoadError naming the file
    when it cannot be read window by window."""
    path = Path(path)
    check_readable(path)
    check_wav_length(path)
    try:
        info = soundfile.info(str(path))
    except soundfile.SoundFileError as error:
        reason = str(getattr(error, "error_string", None) or error).strip().rstrip(".")
        raise MediaLoadError(path, f"calm scan streams files soundfile reads (WAV, FLAC, OGG, MP3): {reason}; "
                                   "convert it first, e.g. ffmpeg -i IN OUT.flac") from None
    if info.frames <= 0:
        raise MediaLoadError(path, "no audio samples (0 frames)")
    return int(info.frames), int(info.samplerate)


def read_window(path: str | os.PathLike, start: int, frames: int, sample_rate: int) -> np.ndarray:
    """Frames ``start : start + frames`` of ``path``, downmixed and resampled to ``sample_rate`` as
    :func:`calm.media.load_audio` does for a whole file (so a window equals the same stretch cut to
    its own file and loaded); only this stretch is read. MediaLoadError naming the file and time
    for a short read (truncated file), NaN or infinite samples, or absurd values."""
    try:
        with soundfile.SoundFile(str(path)) as handle:
            rate = handle.samplerate
            handle.seek(start)
            samples = handle.read(frames, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError) as error:
        raise MediaLoadError(path, f"cannot read frames {start}..{start + frames}: {error}") from None
    where = f"at {start / rate:.3f} s"
    if samples.shape[0] < frames:
        raise MediaLoadError(path, f"truncated: {where} the header promises {frames} frames, the file holds "
                                   f"{samples.shape[0]}")
    if not np.isfinite(samples).all():
        raise MediaLoadError(path, f"audio contains NaN or infinite samples {where}")
    peak = float(np.abs(samples).max())
    if peak > MAX_ABS_SAMPLE:
        raise MediaLoadError(path, f"samples reach {peak:.3g} {where}, far outside the ±1 range of audio; the "
                                   "file is probably corrupt")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)

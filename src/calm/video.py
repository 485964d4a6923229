"""Video in: a fixed number of frames sampled uniformly over a clip, decoded with PyAV.

PyAV is the optional ``video`` extra (``pip install 'calm-audio[video]'``). Failures raise
:class:`VideoLoadError`, whose message names the file and the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class VideoLoadError(ValueError):
    """A video file that cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:  # pickled by workers of calm.distributed
        return type(self), (self.path, self.reason)


def load_video(path: str | os.PathLike, num_frames: int) -> np.ndarray:
    """``num_frames`` RGB frames of ``path`` as uint8 [T, H, W, 3], taken at the centres of T
    equal segments of the clip (a clip with fewer frames repeats frames).

    The frame count comes from the container when it states one, otherwise from counting packets;
    if the stream then ends early, the missing picks repeat the last decoded frame.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    path = Path(path)
    av = _import_av(path)
    if not path.is_file():
        raise VideoLoadError(path, "no such file")
    if path.stat().st_size == 0:
        raise VideoLoadError(path, "empty file (0 bytes)")
    try:
        total = _frame_count(av, path)
        if total == 0:
            raise VideoLoadError(path, "no video frames")
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
        raise VideoLoadError(path, f"not a decodable video ({reason})") from error
    if not decoded:
        raise VideoLoadError(path, "no video frames could be decoded")
    last = decoded[max(decoded)]
    return np.stack([decoded.get(i, last) for i in picks.tolist()])


def _frame_count(av, path: Path) -> int:
    """Frames in the first video stream: as the container states it, or by counting packets."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoLoadError(path, "no video stream in the container")
        stream = container.streams.video[0]
        return stream.frames or sum(1 for packet in container.demux(stream) if packet.size)


def _import_av(path: Path):
    try:
        import av
    except ImportError as error:
        raise VideoLoadError(path, "reading video needs PyAV: pip install 'calm-audio[video]'") from error
    return av

"""The unit of data: one clip (audio, optional video) with its label(s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Item:
    """One labelled (or unlabelled) clip.

    Attributes:
        id: unique within a dataset; used as the key in feature stores and reports.
        audio: path of the audio file (or of a video container whose audio track is used).
        label: a class name, a tuple of class names for multi-label data, or None.
        video: path of a video file, for audio-visual backbones.
        fold: official fold or split name where the dataset defines one.
        meta: anything else a recipe knows (speaker, source, duration ...).
    """

    id: str
    audio: Path | None
    label: str | tuple[str, ...] | None = None
    video: Path | None = None
    fold: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def labels(self) -> tuple[str, ...]:
        """The label(s) as a tuple: ``()`` unlabelled, ``(label,)`` single-label, the tuple itself multi-label."""
        return label_tuple(self.label)

    @property
    def media_path(self) -> Path | None:
        """The file whose audio is used: ``audio``, else the video container's audio track."""
        return self.audio if self.audio is not None else self.video


def label_tuple(label: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """A label (None, a class name or a tuple of them) as a tuple of class names."""
    if label is None:
        return ()
    return label if isinstance(label, tuple) else (label,)

"""A background class from the recordings themselves: their quietest windows, as clips.

When no clips of "nothing of interest" are at hand, the quietest stretches of the recordings to be
scanned are the best guess at their background. :func:`quiet_clips` reads each recording once,
block by block, measures the RMS level of every non-overlapping window, and writes the ``count``
quietest (digital silence left out) as WAV clips, spread over the recordings; they become a class
of the support like any other:

    >>> background = quiet_clips(["night.flac"], window=1.0, count=10, folder="clips/background")
    >>> clf = calm.fit_classifier(backbone, support + background, prompt)
    >>> calm.scan(backbone, clf, ["night.flac"], ScanOptions(background="background"))
"""

from __future__ import annotations

import heapq
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile

from calm.data.items import Item
from calm.media import content_hash
from calm.scanning.windows import file_frames, read_window

BACKGROUND = "background"


def quiet_clips(paths: Sequence[str | os.PathLike], window: float, count: int, folder: str | os.PathLike,
                label: str = BACKGROUND) -> list[Item]:
    """The ``count`` quietest ``window``-second windows of the recordings (non-overlapping, from
    0; digital silence left out), written to ``folder`` as float WAV clips at each file's own rate,
    as items labelled ``label`` (ordered by file then time). ValueError when the recordings hold
    fewer such windows than ``count``."""
    if count < 1 or not window > 0:
        raise ValueError(f"count must be at least 1 and window positive, got count={count!r}, window={window!r}")
    quietest: list[tuple[float, int, int, int]] = []  # max-heap of (-rms, file index, first frame, frames)
    for index, path in enumerate(paths):
        frames, rate = file_frames(path)
        size = max(1, round(window * rate))
        for block, start in zip(soundfile.blocks(str(path), blocksize=size, dtype="float32", always_2d=True),
                                range(0, frames, size)):
            if len(block) < size:
                continue
            rms = float(np.sqrt(np.mean(np.square(block.mean(axis=1, dtype=np.float64)))))
            if rms == 0.0:
                continue
            entry = (-rms, index, start, size)
            if len(quietest) < count:
                heapq.heappush(quietest, entry)
            elif entry > quietest[0]:
                heapq.heapreplace(quietest, entry)
    if len(quietest) < count:
        raise ValueError(f"the recordings hold {len(quietest)} window(s) of {window:g} s with sound, fewer than the "
                         f"{count} background clips asked for")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for _, index, start, size in sorted(quietest, key=lambda e: (e[1], e[2])):
        path = Path(paths[index])
        rate = file_frames(path)[1]
        clip = folder / f"{path.stem}-{content_hash(path)[:8]}-{start}.wav"
        soundfile.write(clip, read_window(path, start, size, rate), rate, subtype="FLOAT")
        items.append(Item(clip.stem, clip, label=label))
    return items

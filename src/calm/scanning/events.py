"""From per-window class probabilities to events: which windows are active, and runs of them merged.

A window is *active* for its most probable class when that probability reaches the threshold,
the class is not the background class, and (with rejection) the window was not rejected as
unknown. Consecutive active windows of one class form an event from the start of the first
one's span to the end of the last one's (spans: :mod:`calm.scanning.windows`); events of one
class less than ``merge_gap`` seconds apart are joined. An event's ``peak`` and ``mean`` are the
largest and the mean probability of its class over its windows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Event:
    """One event found in ``file``: ``label`` from ``onset`` to ``offset`` seconds."""

    file: str
    onset: float
    offset: float
    label: str
    peak: float
    mean: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def active_labels(probabilities: np.ndarray, classes: Sequence[str], threshold: float,
                  rejected: np.ndarray | None = None, background: str | None = None) -> list[str | None]:
    """Per window, the class it is active for, or None (see the module docstring)."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    if background is not None and background not in classes:
        raise ValueError(f"background class {background!r} is not one of the classifier's classes {list(classes)}")
    if len(probabilities) == 0:
        return []
    best = np.argmax(probabilities, axis=1)
    top = probabilities[np.arange(len(best)), best]
    on = top >= threshold
    if rejected is not None:
        on &= ~np.asarray(rejected, dtype=bool)
    return [str(classes[c]) if ok and classes[c] != background else None for c, ok in zip(best.tolist(), on.tolist())]


def find_events(file: str, spans: np.ndarray, probabilities: np.ndarray, classes: Sequence[str],
                labels: Sequence[str | None], merge_gap: float = 0.0) -> list[Event]:
    """The events of one file, by onset (see the module docstring)."""
    if merge_gap < 0:
        raise ValueError(f"merge_gap must be at least 0 seconds, got {merge_gap!r}")
    column = {str(c): k for k, c in enumerate(classes)}
    runs: list[tuple[str, int, int]] = []  # (label, first window, last window + 1)
    for i, label in enumerate(labels):
        if label is None:
            continue
        if runs and runs[-1][0] == label and runs[-1][2] == i:
            runs[-1] = (label, runs[-1][1], i + 1)
        else:
            runs.append((label, i, i + 1))
    merged: list[tuple[str, list[int]]] = []
    last: dict[str, int] = {}  # label -> its latest entry in merged
    for label, first, end in runs:
        k = last.get(label)
        if k is not None and spans[first] - spans[merged[k][1][-1] + 1] <= merge_gap:
            merged[k][1].extend(range(first, end))
            continue
        last[label] = len(merged)
        merged.append((label, list(range(first, end))))
    events = []
    for label, windows in merged:
        p = probabilities[windows, column[label]]
        events.append(Event(file, float(spans[windows[0]]), float(spans[windows[-1] + 1]), label,
                            float(p.max()), float(p.mean())))
    return sorted(events, key=lambda e: (e.onset, e.label))

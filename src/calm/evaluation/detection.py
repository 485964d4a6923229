"""Event-based detection scores: precision, recall and F1 of found events against reference events.

A found event *matches* a reference event of the same file and label when their onsets are at
most ``collar`` seconds apart (0.5 s by default, as in few-shot bioacoustic event detection) and,
if ``offset_collar`` is given, their offsets too. Each event matches at most one of the other
side: the pairs are a maximum matching (scipy), so the count of true positives does not depend on
the order of the events. Then, per class and over all classes (micro):
precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R); an empty denominator
gives 0. ``macro_f1`` is the mean of the class F1s over the classes of either side.

Reference lists are CSV files with columns ``onset``, ``offset``, ``label`` (seconds) and, for
several recordings, ``file`` (relative to the CSV's folder).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from calm.data.loaders import DatasetError, at, parse_number, read_table

COLLAR = 0.5


class Span(NamedTuple):
    """An event: in ``file``, ``label`` from ``onset`` to ``offset`` seconds."""

    file: str
    onset: float
    offset: float
    label: str


@dataclass(frozen=True)
class Counts:
    """True positives, false positives, false negatives, and the scores from them."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision, "recall": self.recall,
                "f1": self.f1}


@dataclass(frozen=True)
class DetectionScores:
    """Scores over all classes (micro) and per class, with the collars they were counted at."""

    overall: Counts
    classes: dict[str, Counts] = field(default_factory=dict)
    collar: float = COLLAR
    offset_collar: float | None = None

    @property
    def macro_f1(self) -> float:
        return float(np.mean([c.f1 for c in self.classes.values()])) if self.classes else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"collar": self.collar, "offset_collar": self.offset_collar, **self.overall.as_dict(),
                "macro_f1": self.macro_f1, "classes": {k: v.as_dict() for k, v in sorted(self.classes.items())}}


def score_events(found: Iterable[Any], reference: Iterable[Any], collar: float = COLLAR,
                 offset_collar: float | None = None) -> DetectionScores:
    """Event-based scores of ``found`` against ``reference`` (events with ``file``, ``onset``,
    ``offset`` and ``label``, e.g. :class:`Span` or :class:`calm.scanning.Event`)."""
    if not collar >= 0 or (offset_collar is not None and not offset_collar >= 0):
        raise ValueError(f"collars must be at least 0 seconds, got {collar!r} and {offset_collar!r}")
    groups: dict[tuple[str, str], tuple[list[Any], list[Any]]] = defaultdict(lambda: ([], []))
    for side, events in enumerate((found, reference)):
        for e in events:
            groups[(str(e.file), str(e.label))][side].append(e)
    per_class: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for (_, label), (mine, theirs) in groups.items():
        tp = _matched(mine, theirs, collar, offset_collar)
        counts = per_class[label]
        counts[0] += tp
        counts[1] += len(mine) - tp
        counts[2] += len(theirs) - tp
    classes = {label: Counts(*c) for label, c in per_class.items()}
    overall = Counts(*(sum(c[i] for c in per_class.values()) for i in range(3)))
    return DetectionScores(overall, classes, collar, offset_collar)


def _matched(found: list[Any], reference: list[Any], collar: float, offset_collar: float | None) -> int:
    """The size of a maximum one-to-one matching of events within the collars."""
    if not found or not reference:
        return 0
    onsets = np.array([e.onset for e in found])[:, None], np.array([e.onset for e in reference])[None, :]
    close = np.abs(onsets[0] - onsets[1]) <= collar + 1e-9
    if offset_collar is not None:
        offsets = np.array([e.offset for e in found])[:, None], np.array([e.offset for e in reference])[None, :]
        close &= np.abs(offsets[0] - offsets[1]) <= offset_collar + 1e-9
    if not close.any():
        return 0
    return int((maximum_bipartite_matching(csr_matrix(close.astype(np.int8)), perm_type="column") >= 0).sum())


def read_events(path: str | Path, file: str | None = None) -> list[Span]:
    """The events of a reference CSV (``onset``, ``offset``, ``label`` and, if present, ``file``:
    resolved against the CSV's folder); without a ``file`` column, every event is in ``file``.
    DatasetError naming the file and line for a missing column, a bad number or onset > offset."""
    path = Path(path)
    spans = []
    for line, row in read_table(path, ("onset", "offset", "label")):
        where = at(path, line)
        onset, offset = (parse_number(row[c], float, c, where) for c in ("onset", "offset"))
        if not (0 <= onset <= offset):
            raise DatasetError(f"{where}: onset {onset:g} and offset {offset:g}: need 0 <= onset <= offset")
        if not row["label"]:
            raise DatasetError(f"{where}: empty label")
        if "file" in row:
            owner = str((path.parent / row["file"]).resolve())
        elif file is not None:
            owner = file
        else:
            raise DatasetError(f"{where}: no 'file' column, and no recording named for these events")
        spans.append(Span(owner, onset, offset, row["label"]))
    return spans

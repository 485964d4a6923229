"""A scan scored against reference events (:mod:`calm.evaluation.detection`)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

from calm.evaluation.detection import COLLAR, DetectionScores, Span, read_events, score_events
from calm.scanning.run import FileScan


def score_scan(results: Sequence[FileScan], reference: str | os.PathLike, collar: float = COLLAR,
               offset_collar: float | None = None) -> DetectionScores:
    """Event-based scores of a scan's events against a reference CSV (``onset, offset, label`` and
    ``file`` relative to the CSV's folder; without ``file``, the scan must be of one file).
    Reference events of files that were not scanned are left out, with a warning naming one;
    files that could not be read count their reference events as missed."""
    scanned = {str(Path(r.path).resolve()) for r in results}
    single = next(iter(scanned)) if len(scanned) == 1 else None
    spans = read_events(reference, file=single)
    kept = [s for s in spans if s.file in scanned]
    if len(kept) < len(spans):
        other = next(s.file for s in spans if s.file not in scanned)
        warnings.warn(f"{reference}: {len(spans) - len(kept)} reference event(s) are in files that were not scanned "
                      f"and are left out of the scores, e.g. {other}", stacklevel=2)
    found = [Span(str(Path(e.file).resolve()), e.onset, e.offset, e.label) for r in results for e in r.events]
    return score_events(found, kept, collar, offset_collar)

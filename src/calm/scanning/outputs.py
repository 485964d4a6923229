"""A scan's events in the formats people open them in.

* With ``windows=True``, a CSV per file of every window: its stretch, label and probabilities.
* CSV and JSON of every file's events (``file, onset, offset, label, peak, mean``; the JSON also
  lists each file's length and error, and the scan's settings).
* An Audacity label track per file (File > Import > Labels): tab-separated ``onset, offset,
  label`` in seconds, no header.
* A Raven selection table per file (File > Open Selection Table), tab-separated with Raven's own
  columns ``Selection, View, Channel, Begin Time (s), End Time (s), Low Freq (Hz), High Freq (Hz)``
  then ``Annotation`` (the label) and ``Peak Score``, ``Mean Score``; one row per event, on the
  spectrogram view of channel 1, spanning 0 Hz to the file's Nyquist frequency.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence, TextIO

from calm.scanning.run import FileScan

CSV_COLUMNS = ("file", "onset", "offset", "label", "peak", "mean")
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Annotation", "Peak Score", "Mean Score")
RAVEN_VIEW = "Spectrogram 1"


def write_csv(results: Sequence[FileScan], handle: TextIO) -> None:
    """Every event of every file, one row each, in file order then by onset."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for result in results:
        for e in result.events:
            writer.writerow([e.file, f"{e.onset:.3f}", f"{e.offset:.3f}", e.label, f"{e.peak:.4f}", f"{e.mean:.4f}"])


def as_json(results: Sequence[FileScan], settings: dict[str, Any]) -> dict[str, Any]:
    """The scan as one JSON-able dict: its settings, and per file its length, error and events."""
    return {"settings": settings, "files": [
        {"path": r.path, "seconds": round(r.seconds, 3), "error": r.error,
         "events": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.as_dict().items() if k != "file"}
                    for e in r.events]} for r in results]}


def audacity_labels(result: FileScan) -> str:
    """The file's events as an Audacity label track."""
    return "".join(f"{e.onset:.6f}\t{e.offset:.6f}\t{e.label}\n" for e in result.events)


def raven_table(result: FileScan) -> str:
    """The file's events as a Raven selection table."""
    nyquist = result.windows.rate / 2 if result.windows is not None else 0.0
    lines = ["\t".join(RAVEN_COLUMNS)]
    for n, e in enumerate(result.events, start=1):
        lines.append("\t".join([str(n), RAVEN_VIEW, "1", f"{e.onset:.6f}", f"{e.offset:.6f}", "0", f"{nyquist:g}",
                                e.label, f"{e.peak:.4f}", f"{e.mean:.4f}"]))
    return "\n".join(lines) + "\n"


def write_windows(result: FileScan, handle: TextIO, unknown_label: str = "unknown") -> None:
    """One row per window of a file: the stretch it stands for (``onset``, ``offset``), the class it
    is active for (``unknown_label`` if rejected, empty if neither), its open-set ``score`` (with
    rejection) and one probability column per class."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["onset", "offset", "label", "score", *(f"p_{c}" for c in result.classes)])
    spans = result.windows.spans if result.windows is not None else []
    for i, p in enumerate(result.probabilities):
        rejected = result.rejected is not None and bool(result.rejected[i])
        label = unknown_label if rejected else (result.labels[i] or "")
        score = f"{result.scores[i]:.4f}" if result.scores is not None else ""
        writer.writerow([f"{spans[i]:.3f}", f"{spans[i + 1]:.3f}", label, score, *(f"{v:.4f}" for v in p)])


def file_stems(results: Sequence[FileScan]) -> list[str]:
    """A distinct name per file for its own outputs: its stem, with ``-2``, ``-3`` ... after the
    first file of the same stem."""
    seen: dict[str, int] = {}
    stems = []
    for result in results:
        stem = Path(result.path).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def write_outputs(results: Sequence[FileScan], folder: str | Path, settings: dict[str, Any],
                  windows: bool = False) -> dict[str, Path]:
    """``events.csv``, ``events.json``, and per readable file ``<stem>.audacity.txt``,
    ``<stem>.Table.1.selections.txt`` (Raven's own naming) and, with ``windows``,
    ``<stem>.windows.csv`` in ``folder``; name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {"csv": folder / "events.csv", "json": folder / "events.json"}
    with open(written["csv"], "w", newline="") as handle:
        write_csv(results, handle)
    written["json"].write_text(json.dumps(as_json(results, settings), indent=1) + "\n")
    for stem, result in zip(file_stems(results), results):
        if result.error is None:
            (folder / f"{stem}.audacity.txt").write_text(audacity_labels(result))
            (folder / f"{stem}.Table.1.selections.txt").write_text(raven_table(result))
            if windows:
                with open(folder / f"{stem}.windows.csv", "w", newline="") as handle:
                    write_windows(result, handle, settings.get("unknown_label", "unknown"))
    return written

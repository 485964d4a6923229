"""AudioSet: ``class_labels_indices.csv`` (index, mid, display_name), segment CSVs
(``balanced_train_segments.csv``, ``eval_segments.csv``, ``unbalanced_train_segments.csv``: comment
lines, then ``YTID, start_seconds, end_seconds, "mid,mid,..."``) and local clips below the root named
by YouTube id (``<YTID>``, ``Y<YTID>``, ``<YTID>_<start>`` or ``<YTID>_<start>_<end>``, in seconds
or milliseconds). Items are multi-label: ``Item.label`` is a tuple of display names."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from calm.data.items import Item
from calm.data.loaders import (DatasetError, at, check_unique_ids, clip_index, find_clip, media_item, parse_number,
                               read_rows, read_table, warn_skipped)

SEGMENTS = ("balanced_train", "eval", "unbalanced_train")


def read_class_labels(path: Path) -> dict[str, str]:
    """mid -> display name from ``class_labels_indices.csv``."""
    names: dict[str, str] = {}
    for line, row in read_table(path, ("index", "mid", "display_name")):
        if not row["mid"] or not row["display_name"]:
            raise DatasetError(f"{at(path, line)}: empty mid or display_name")
        names[row["mid"]] = row["display_name"]
    return names


def _clip_stems(ytid: str, start: float, end: float) -> list[str]:
    s, e, s_ms, e_ms = int(start), int(end), round(start * 1000), round(end * 1000)
    return [ytid, f"Y{ytid}", f"{ytid}_{s}", f"{ytid}_{s:06d}", f"{ytid}_{start:.3f}",
            f"{ytid}_{s}_{e}", f"{ytid}_{s_ms}_{e_ms}", f"{ytid}_{start:.3f}_{end:.3f}"]


def load_audioset(
    root: Path | str, *, segments: Sequence[str] | None = None, missing: str = "error"
) -> list[Item]:
    """Items of the given segment sets (default: every one present); ``Item.fold`` is the set name.

    ``missing="skip"`` drops rows without a local clip, with a warning, instead of raising.
    """
    root = Path(root)
    unknown = set(segments or ()) - set(SEGMENTS)
    if unknown:
        raise ValueError(f"unknown AudioSet segment set(s) {sorted(unknown)}; known: {list(SEGMENTS)}")
    files = {name: root / f"{name}_segments.csv" for name in SEGMENTS}
    if segments is None:
        segments = [name for name, path in files.items() if path.is_file()]
        if not segments:
            raise DatasetError(f"{at(root)}: no segment CSVs ({[p.name for p in files.values()]})")
    names = read_class_labels(root / "class_labels_indices.csv")
    index = clip_index(root)
    items: list[Item] = []
    rows = 0
    for segment in segments:
        path = files[segment]
        for line, row in read_rows(path, comment="#", skipinitialspace=True):
            rows += 1
            where = at(path, line)
            if len(row) != 4:
                raise DatasetError(f"{where}: expected 4 fields (YTID, start, end, labels), got {len(row)}")
            ytid = row[0].strip()
            start = parse_number(row[1], float, "start_seconds", where)
            end = parse_number(row[2], float, "end_seconds", where)
            mids = [mid.strip() for mid in row[3].split(",") if mid.strip()]
            unknown_mids = [mid for mid in mids if mid not in names]
            if not ytid or not mids or unknown_mids:
                raise DatasetError(f"{where}: empty YTID or labels, or label id(s) not in class_labels_indices.csv: {unknown_mids}")
            clip = find_clip(index, _clip_stems(ytid, start, end), where, missing)
            if clip is not None:
                label = tuple(dict.fromkeys(names[mid] for mid in mids))
                items.append(media_item(ytid, clip, label, segment, start=start, end=end, mids=tuple(mids)))
    warn_skipped(rows - len(items), rows, root)
    return check_unique_ids(items, root)

"""VGGSound: ``vggsound.csv`` without a header (YouTube id, start second, label, train/test) and
local clips anywhere below the root, named ``<id>_<start:06d>`` (or ``<id>_<start>``) with an audio
or video suffix. Video is optional: an mp4 clip is the item's video and its audio track is used."""

from __future__ import annotations

from pathlib import Path

from calm.data.items import Item
from calm.data.loaders import (DatasetError, at, check_unique_ids, clip_index, find_clip, media_item, parse_number,
                               read_rows, warn_skipped)

SPLITS = ("train", "test")


def load_vggsound(root: Path | str, *, missing: str = "error") -> list[Item]:
    """VGGSound items (``Item.fold`` is ``"train"`` or ``"test"``); ``missing="skip"`` drops rows
    without a local clip, with a warning, instead of raising."""
    root = Path(root)
    meta = root / "vggsound.csv"
    index = clip_index(root)
    items: list[Item] = []
    rows = 0
    for line, row in read_rows(meta):
        rows += 1
        where = at(meta, line)
        if len(row) != 4:
            raise DatasetError(f"{where}: expected 4 fields (id, start, label, split), got {len(row)}")
        ytid, start_text, label, split = (cell.strip() for cell in row)
        start = parse_number(start_text, int, "start", where)
        if split not in SPLITS:
            raise DatasetError(f"{where}: split must be one of {SPLITS}, got {split!r}")
        if not ytid or not label:
            raise DatasetError(f"{where}: empty id or label")
        item_id = f"{ytid}_{start:06d}"
        path = find_clip(index, (item_id, f"{ytid}_{start}"), where, missing)
        if path is not None:
            items.append(media_item(item_id, path, label, split, youtube_id=ytid, start=start))
    warn_skipped(rows - len(items), rows, meta)
    return check_unique_ids(items, meta)

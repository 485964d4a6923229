"""UrbanSound8K: ``metadata/UrbanSound8K.csv`` (slice_file_name, fsID, start, end, salience, fold,
classID, class) and ``audio/fold<N>/<slice_file_name>``; 10 classes, 10 official folds, clips
with mixed sample rates and channel counts (decoding resamples and downmixes)."""

from __future__ import annotations

from pathlib import Path

from calm.data.items import Item
from calm.data.loaders import DatasetError, at, check_unique_ids, media_item, parse_number, read_table, require_file

COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")


def load_urbansound8k(root: Path | str) -> list[Item]:
    """UrbanSound8K items from its root folder (``Item.fold`` is ``"1"`` ... ``"10"``)."""
    root = Path(root)
    meta = root / "metadata" / "UrbanSound8K.csv"
    items: list[Item] = []
    for line, row in read_table(meta, COLUMNS):
        where = at(meta, line)
        fold = parse_number(row["fold"], int, "fold", where)
        if not 1 <= fold <= 10:
            raise DatasetError(f"{where}: column 'fold': expected 1..10, got {fold}")
        if not row["class"]:
            raise DatasetError(f"{where}: empty 'class'")
        path = require_file(root / "audio" / f"fold{fold}" / row["slice_file_name"], where)
        items.append(
            media_item(
                Path(row["slice_file_name"]).stem, path, row["class"], str(fold),
                fs_id=row["fsID"],
                start=parse_number(row["start"], float, "start", where),
                end=parse_number(row["end"], float, "end", where),
                salience=parse_number(row["salience"], int, "salience", where),
                class_id=parse_number(row["classID"], int, "classID", where),
            )
        )
    return check_unique_ids(items, meta)

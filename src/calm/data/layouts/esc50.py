"""ESC-50: ``meta/esc50.csv`` (filename, fold, target, category, esc10, src_file, take) and
``audio/<filename>``; 50 classes, 5 official folds (``Item.fold`` is ``"1"`` ... ``"5"``)."""

from __future__ import annotations

from pathlib import Path

from calm.data.items import Item
from calm.data.loaders import DatasetError, at, check_unique_ids, media_item, parse_number, read_table, require_file

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def load_esc50(root: Path | str, *, esc10: bool = False) -> list[Item]:
    """ESC-50 items from its root folder; ``esc10=True`` keeps the ESC-10 subset only."""
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    items: list[Item] = []
    for line, row in read_table(meta, COLUMNS):
        where = at(meta, line)
        fold = parse_number(row["fold"], int, "fold", where)
        if not 1 <= fold <= 5:
            raise DatasetError(f"{where}: column 'fold': expected 1..5, got {fold}")
        in_esc10 = row["esc10"].lower()
        if in_esc10 not in ("true", "false"):
            raise DatasetError(f"{where}: column 'esc10': expected True or False, got {row['esc10']!r}")
        if not row["category"]:
            raise DatasetError(f"{where}: empty 'category'")
        if esc10 and in_esc10 != "true":
            continue
        path = require_file(root / "audio" / row["filename"], where)
        items.append(
            media_item(
                Path(row["filename"]).stem, path, row["category"], str(fold),
                target=parse_number(row["target"], int, "target", where),
                esc10=in_esc10 == "true", src_file=row["src_file"], take=row["take"],
            )
        )
    return check_unique_ids(items, meta)

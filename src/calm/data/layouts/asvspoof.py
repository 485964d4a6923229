"""ASVspoof 2019 LA: ``ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.<part>.txt`` (space-separated:
speaker, utterance id, ``-``, attack id or ``-``, ``bonafide``/``spoof``) and
``ASVspoof2019_LA_<train|dev|eval>/flac/<utterance>.flac``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from calm.data.items import Item
from calm.data.loaders import DatasetError, at, check_unique_ids, media_item, read_rows, require_file

PROTOCOLS = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
LABELS = ("bonafide", "spoof")


def load_asvspoof2019_la(root: Path | str, *, parts: Sequence[str] | None = None) -> list[Item]:
    """Items of the given parts (default: every part whose protocol file is present).

    Labels are ``"bonafide"``/``"spoof"``; ``Item.fold`` is the part; meta has speaker and attack.
    """
    root = Path(root)
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    unknown = set(parts or ()) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown ASVspoof 2019 LA part(s) {sorted(unknown)}; known: {list(PROTOCOLS)}")
    protocol = {part: protocols / f"ASVspoof2019.LA.cm.{PROTOCOLS[part]}.txt" for part in PROTOCOLS}
    if parts is None:
        parts = [part for part, path in protocol.items() if path.is_file()]
        if not parts:
            raise DatasetError(f"{at(protocols)}: no protocol files ({[p.name for p in protocol.values()]})")
    items: list[Item] = []
    for part in parts:
        flac = root / f"ASVspoof2019_LA_{part}" / "flac"
        for line, row in read_rows(protocol[part], delimiter=" ", skipinitialspace=True):
            where = at(protocol[part], line)
            if len(row) != 5:
                raise DatasetError(f"{where}: expected 5 fields (speaker, utterance, -, attack, label), got {len(row)}")
            speaker, utterance, _, attack, label = row
            if label not in LABELS:
                raise DatasetError(f"{where}: label must be one of {LABELS}, got {label!r}")
            path = require_file(flac / f"{utterance}.flac", where)
            items.append(
                media_item(utterance, path, label, part, speaker=speaker, attack=None if attack == "-" else attack)
            )
    return check_unique_ids(items, protocols)

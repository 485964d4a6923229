"""Hugging Face datasets on disk -> ``list[Item]``: ``load_dataset("hf:PATH[:SPLIT]")``.

``PATH`` is one of

* a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (every split, each
  split name becoming ``Item.fold``, unless ``SPLIT`` names one);
* a ``.parquet`` or ``.arrow`` file, or a folder of them (the Hub's ``data/train-00000-of-00002.parquet``
  layout: the file name up to the first ``-`` is the split).

The audio column is the one with the ``Audio`` feature (else ``audio``); it holds ``{"bytes",
"path"}`` structs, paths or bytes. The label column is ``label`` (else ``labels``, ``class``,
``category``; none: unlabelled): ``ClassLabel`` ids become their names, strings stay strings,
lists become multi-label tuples. An ``id`` column gives the item ids; without one an item is named
by its audio's path, or ``<split>/<row>`` when paths are missing or repeat.

Audio is decoded by calm's own loader (:func:`calm.media.load_audio`), never by ``datasets`` (which
needs torchcodec): audio stored as bytes is written once to ``$CALM_CACHE/hf-audio/<sha256 of the
bytes><suffix>`` and the item points at that file, so the feature store keys it by the same content
hash as the original file. Relative paths are read from the folder of the file (or the
``save_to_disk`` folder) that holds the row. A cached file that does not decode is named by its file
and row ("train.parquet: row 3 (its audio, cached as ...)"). A row without audio, with a path that
does not exist, or with a label that is not a class name, raises
:class:`~calm.data.loaders.DatasetError` naming the file and the row.
Needs the ``hf`` extra: ``pip install 'calm-audio[hf]'``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from calm.cache import cache_dir
from calm.data.items import Item
from calm.data.loaders import MEDIA_SUFFIXES, VIDEO_SUFFIXES, DatasetError, at, check_unique_ids
from calm.media import missing_reason, note_origin

LABEL_COLUMNS = ("label", "labels", "class", "category")
_TABLE_SUFFIXES = (".parquet", ".arrow")
_ROWS_PER_CHUNK = 256  # rows turned into Python objects at a time (audio bytes stay bounded in memory)


def load_hf(root: Path | str, split: str | None = None, audio_column: str | None = None,
            label_column: str | None = None) -> list[Item]:
    """Items of a Hugging Face dataset on disk (see the module docstring); ``root`` may end in
    ``:SPLIT``. ``audio_column`` and ``label_column`` override the detected columns."""
    root = Path(root)
    if not root.exists() and ":" in root.name:
        name, _, split_name = root.name.rpartition(":")
        root, split = root.with_name(name), split or split_name
    if not root.exists():
        raise DatasetError(f"{at(root)}: no such file or folder")
    parts = list(_splits(root))
    if split is not None:
        known = sorted({name for name, _, _ in parts if name is not None})
        parts = [part for part in parts if part[0] == split]
        if not parts:
            raise DatasetError(f"{at(root)}: no split {split!r} (splits: {known or 'none named'})")
    groups = [_items(table, source, name, audio_column, label_column) for name, source, table in parts]
    items = [item for group in groups for item in group]
    if len({item.id for item in items}) < len(items) and all(name for name, _, _ in parts):
        # the same names in several splits: prefix each with its split, as a folder with a split level
        items = [replace(item, id=f"{item.fold}/{item.id}") for item in items]
    if not items:
        raise DatasetError(f"{at(root)}: no rows")
    return check_unique_ids(items, root)


def _splits(root: Path) -> Iterator[tuple[str | None, Path, Any]]:
    """(split name or None, source file or folder, ``datasets.Dataset``) for each part of ``root``."""
    if root.is_file():
        yield None, root, _read_file(root)
    elif (root / "dataset_dict.json").is_file():
        for name in json.loads((root / "dataset_dict.json").read_text())["splits"]:
            yield name, root / name, _load_from_disk(root / name)
    elif (root / "state.json").is_file():
        dataset = _load_from_disk(root)
        yield (str(dataset.split) if dataset.split else None), root, dataset
    else:
        files = sorted(p for p in root.rglob("*") if p.suffix in _TABLE_SUFFIXES and p.is_file())
        if not files:
            raise DatasetError(f"{at(root)}: neither a save_to_disk folder nor a folder of .parquet/.arrow files")
        for path in files:
            yield path.name.partition("-")[0] if "-" in path.name else None, path, _read_file(path)


def _load_from_disk(path: Path) -> Any:
    try:
        return _import_datasets().load_from_disk(str(path))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{at(path)}: unreadable save_to_disk folder ({error})") from error


def _read_file(path: Path) -> Any:
    datasets = _import_datasets()
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet

            table = pyarrow.parquet.read_table(path)
            return datasets.Dataset(table, info=datasets.DatasetInfo(
                features=datasets.Features.from_arrow_schema(table.schema)))
        if path.suffix == ".arrow":
            return datasets.Dataset.from_file(str(path))
    except (OSError, ValueError) as error:  # pyarrow.ArrowInvalid is a ValueError
        raise DatasetError(f"{at(path)}: unreadable ({error})") from error
    raise DatasetError(f"{at(path)}: not a .parquet or .arrow file")


def _items(dataset: Any, source: Path, split: str | None, audio_column: str | None,
           label_column: str | None) -> list[Item]:
    datasets = _import_datasets()
    features = dataset.features
    audio_col = audio_column or next((n for n, f in features.items() if isinstance(f, datasets.Audio)), "audio")
    label_col = label_column or next((n for n in LABEL_COLUMNS if n in features), None)
    for column in (audio_col, label_col):
        if column is not None and column not in features:
            raise DatasetError(f"{at(source)}: no column {column!r} in {list(features)}")
    names = _class_names(features[label_col]) if label_col else None
    base = source if source.is_dir() else source.parent
    known = {audio_col, label_col, "id"}
    rows: list[_Row] = []
    for number, row in enumerate(_rows(dataset)):
        where = f"{at(source)}: row {number}"
        path, name = _audio_file(row.get(audio_col), base, where)
        label = _label(row.get(label_col), names, where) if label_col else None
        meta = {k: v for k, v in row.items() if k not in known and isinstance(v, (str, int, float, bool))}
        rows.append(_Row(row.get("id"), name, path, label, meta))
    return [Item(id=item_id, audio=row.path, label=row.label, fold=split, meta=row.meta,
                 video=row.path if row.path.suffix.lower() in VIDEO_SUFFIXES else None)
            for item_id, row in zip(_item_ids(rows, split, source), rows)]


class _Row(NamedTuple):
    id: Any
    name: str | None
    path: Path
    label: str | tuple[str, ...] | None
    meta: dict[str, Any]


def _rows(dataset: Any) -> Iterator[dict[str, Any]]:
    """The rows as Python dicts, a chunk at a time, straight from Arrow (nothing decoded)."""
    for batch in dataset.data.to_batches(max_chunksize=_ROWS_PER_CHUNK):
        yield from batch.to_pylist()


def _class_names(feature: Any) -> list[str] | None:
    """The ClassLabel names of a label feature (or of a list of them), else None."""
    datasets = _import_datasets()
    inner = getattr(feature, "feature", None)  # Sequence / List of ClassLabel
    for candidate in (feature, inner):
        if isinstance(candidate, datasets.ClassLabel):
            return list(candidate.names)
    if isinstance(feature, list) and feature and isinstance(feature[0], datasets.ClassLabel):
        return list(feature[0].names)
    return None


def _label(value: Any, names: list[str] | None, where: str) -> str | tuple[str, ...] | None:
    if value is None or value == "" or (names is not None and value == -1):  # -1: ClassLabel's "no label"
        return None
    if isinstance(value, list):
        return tuple(_one_label(v, names, where) for v in value) or None
    return _one_label(value, names, where)


def _one_label(value: Any, names: list[str] | None, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DatasetError(f"{where}: label {value!r} is neither a class name nor a ClassLabel id")
    if isinstance(value, str):
        return value
    if names is None:
        return str(value)
    if not 0 <= value < len(names):
        raise DatasetError(f"{where}: ClassLabel id {value} outside 0..{len(names) - 1}")
    return names[value]


def _audio_file(value: Any, base: Path, where: str) -> tuple[Path, str | None]:
    """The file holding a row's audio (bytes are written to the cache) and its original name."""
    if isinstance(value, dict):
        data, name = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, str)):
        data, name = (value, None) if isinstance(value, bytes) else (None, value)
    else:
        raise DatasetError(f"{where}: no audio (expected bytes, a path or {{'bytes', 'path'}}, got {type(value).__name__})")
    if data:
        path = _cached(data, name)
        note_origin(path, where)  # a file that does not decode is named by its row, not its cache path
        return path, name
    if not name:
        raise DatasetError(f"{where}: no audio (neither bytes nor a path)")
    path = Path(name) if Path(name).is_absolute() else base / name
    if not path.is_file():
        raise DatasetError(f"{where}: {path}: {missing_reason(path)}")
    return path, name


def _cached(data: bytes, name: str | None) -> Path:
    """``data`` in the cache under its content hash (written once, atomically)."""
    suffix = Path(name).suffix.lower() if name and Path(name).suffix.lower() in MEDIA_SUFFIXES else ""
    path = cache_dir("hf-audio") / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def _item_ids(rows: list[_Row], split: str | None, source: Path) -> list[str]:
    """The ``id`` column, else the audio names when present and unique, else ``<split>/<row>``."""
    if rows and all(row.id is not None for row in rows):
        return [str(row.id) for row in rows]
    names = [row.name for row in rows]
    if all(names) and len(set(names)) == len(names):
        return [Path(name).as_posix() for name in names]
    if any(names):
        warnings.warn(f"{source}: audio paths missing or repeated; items are named <split>/<row>", stacklevel=4)
    return [f"{split or 'row'}/{number}" for number in range(len(rows))]


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as error:
        raise DatasetError(f"Hugging Face datasets need the hf extra: pip install 'calm-audio[hf]' ({error})") from None
    return datasets

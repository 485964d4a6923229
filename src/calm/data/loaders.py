"""Dataset loaders: local folders in public layouts -> ``list[Item]``.

``load_dataset(spec)`` is the entry point. ``spec`` is a path (a folder or a metadata file) or
``"layout:path"`` to name the layout. The generic layouts live here:

* ``folder``: ``root/<class>/**/<file>`` (audio or video files); an optional split level
  ``root/<split>/<class>/...`` (split names such as ``train``/``test``) becomes ``Item.fold``.
  Symbolic links to folders are followed; files it does not take are named in one warning.
* ``csv``: a CSV with a header and the columns ``path`` (relative to the CSV's folder) and
  ``label``, optionally ``split`` (-> ``Item.fold``), ``id`` and ``video``; every other column goes
  to ``Item.meta``. An empty label means "unlabelled".

The public datasets (ESC-50, UrbanSound8K, VGGSound, ASVspoof 2019 LA, AudioSet) live in
:mod:`calm.data.layouts`, one module each, and use the helpers below; Hugging Face datasets on disk
(``hf:PATH[:SPLIT]``) in :mod:`calm.data.hf`. Malformed metadata and missing files raise :class:`DatasetError` naming the file and line.
"""

from __future__ import annotations

import csv
import importlib
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from calm.data.items import Item
from calm.media import AUDIO_SUFFIXES, MEDIA_SUFFIXES, VIDEO_SUFFIXES, is_audio_file, missing_reason, os_reason

# Folder names that mark a split level in the folder layout.
SPLIT_NAMES = frozenset({"train", "test", "support", "query", "val", "valid", "validation", "dev", "eval"})

# layout name -> "module:function"; every loader takes the root (folder or file) and keyword options.
LAYOUTS: dict[str, str] = {
    "folder": "calm.data.loaders:load_folder",
    "csv": "calm.data.loaders:load_csv",
    "esc50": "calm.data.layouts.esc50:load_esc50",
    "urbansound8k": "calm.data.layouts.urbansound8k:load_urbansound8k",
    "vggsound": "calm.data.layouts.vggsound:load_vggsound",
    "asvspoof2019_la": "calm.data.layouts.asvspoof:load_asvspoof2019_la",
    "audioset": "calm.data.layouts.audioset:load_audioset",
    "hf": "calm.data.hf:load_hf",
}

# Marker (relative to a root folder) -> layout, checked in this order by detect_layout.
_MARKERS: tuple[tuple[str, str], ...] = (
    ("meta/esc50.csv", "esc50"),
    ("metadata/UrbanSound8K.csv", "urbansound8k"),
    ("ASVspoof2019_LA_cm_protocols", "asvspoof2019_la"),
    ("LA/ASVspoof2019_LA_cm_protocols", "asvspoof2019_la"),
    ("class_labels_indices.csv", "audioset"),
    ("vggsound.csv", "vggsound"),
)


class DatasetError(ValueError):
    """Malformed metadata or a missing file; the message names the file and the line."""


def at(path: Path | str, line: int | None = None) -> str:
    """``"path:line"`` (or just the path), the prefix of every DatasetError message."""
    return f"{path}:{line}" if line is not None else str(path)


# ---------------------------------------------------------------------------- helpers for layouts


def read_rows(path: Path, *, comment: str | None = None, **fmt: Any) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)`` from a CSV-like file, skipping blank lines and lines that
    start with ``comment``. ``fmt`` goes to :func:`csv.reader` (``delimiter``, ``skipinitialspace``)."""
    if not path.is_file():
        raise DatasetError(f"{at(path)}: metadata file not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        lines = ("\n" if comment and line.lstrip().startswith(comment) else line for line in handle)
        reader = csv.reader(lines, **fmt)
        for row in reader:
            if any(cell.strip() for cell in row):
                yield reader.line_num, row


def read_table(path: Path, columns: Iterable[str] = (), **fmt: Any) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line number, row)`` from a CSV with a header, each row a dict of stripped fields.

    The header must contain ``columns`` and every row as many fields as the header.
    """
    rows = read_rows(path, **fmt)
    first = next(rows, None)
    if first is None:
        raise DatasetError(f"{at(path)}: empty file (no header)")
    names = [name.strip() for name in first[1]]
    missing = [c for c in columns if c not in names]
    if missing:
        raise DatasetError(f"{at(path, first[0])}: missing column(s) {missing} in header {names}")
    for line, row in rows:
        if len(row) != len(names):
            raise DatasetError(f"{at(path, line)}: {len(row)} field(s), the header has {len(names)}")
        yield line, {name: cell.strip() for name, cell in zip(names, row)}


def parse_number(value: str, kind: Callable[[str], Any], column: str, where: str) -> Any:
    """``kind(value)`` (int or float), or a DatasetError naming the column and the place."""
    try:
        return kind(value.strip())
    except ValueError:
        raise DatasetError(f"{where}: column {column!r}: expected {kind.__name__}, got {value!r}") from None


def require_file(path: Path, where: str) -> Path:
    """``path`` if it is a file, else a DatasetError naming ``where`` (file and line), the path and
    why, as extraction would (:func:`calm.media.missing_reason`)."""
    if not path.is_file():
        raise DatasetError(f"{where}: {path}: {missing_reason(path)}")
    return path


def media_item(
    id: str, path: Path, label: str | tuple[str, ...] | None, fold: str | None = None, **meta: Any
) -> Item:
    """An Item for ``path``; a video container is also the item's video."""
    video = path if path.suffix.lower() in VIDEO_SUFFIXES else None
    return Item(id=id, audio=path, label=label, video=video, fold=fold, meta=meta)


def media_files(root: Path) -> list[Path]:
    """Audio and video files below ``root``, sorted (see :func:`scan_media`)."""
    return scan_media(root)[0]


def scan_media(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The audio and video files below ``root``, sorted, and the files left out, each with why.

    A file is taken by its suffix (:data:`calm.media.MEDIA_SUFFIXES`) or, without a suffix, when
    soundfile reads its header as audio. Symbolic links to folders are followed (each folder once,
    so a loop ends); hidden files and folders are skipped. A symbolic link with a media suffix is
    kept even when it is dangling or loops, so that loading it fails with a message naming it
    instead of the item vanishing.
    """
    taken: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    def unreadable(error: OSError) -> None:
        skipped.append((Path(error.filename), os_reason(error)))

    for folder, dirs, files in os.walk(root, onerror=unreadable, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            skipped.append((Path(folder), "a link to a folder already read (a loop, or the same folder twice)"))
            dirs.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(folder, name)
            if name.startswith("."):
                continue
            if path.suffix.lower() in MEDIA_SUFFIXES:
                if path.is_symlink() or path.is_file():
                    taken.append(path)
                else:
                    skipped.append((path, "not a regular file"))
            elif not path.suffix and is_audio_file(path):
                taken.append(path)
            else:
                skipped.append((path, "no suffix, and soundfile does not read it as audio" if not path.suffix
                                else f"{path.suffix!r} is not an audio or video suffix"))
    return sorted(taken), sorted(skipped)


def warn_left_out(skipped: list[tuple[Path, str]], root: Path) -> None:
    """One warning naming the files of ``root`` that were not taken, with a count and examples."""
    if skipped:
        examples = "; ".join(f"{path.relative_to(root)} ({why})" for path, why in sorted(skipped)[:5])
        warnings.warn(f"{root}: left out {len(skipped)} file(s), e.g. {examples}",
                      stacklevel=3)


def clip_index(root: Path) -> dict[str, Path]:
    """File stem -> path for every media file below ``root`` (audio preferred over video)."""
    index: dict[str, Path] = {}
    for path in media_files(root):
        current = index.get(path.stem)
        if current is None or (current.suffix.lower() in VIDEO_SUFFIXES and path.suffix.lower() in AUDIO_SUFFIXES):
            index[path.stem] = path
    return index


def find_clip(index: dict[str, Path], stems: Iterable[str], where: str, missing: str) -> Path | None:
    """The clip of ``index`` (see :func:`clip_index`) named by the first matching stem.

    A clip that is not there raises a DatasetError naming ``where``, or gives None when
    ``missing == "skip"`` (datasets fetched from YouTube always lack some clips).
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    stems = list(stems)
    for stem in stems:
        if stem in index:
            return index[stem]
    if missing == "skip":
        return None
    raise DatasetError(f"{where}: no clip named {' or '.join(stems)} (any audio/video suffix); pass missing='skip' to skip")


def warn_skipped(skipped: int, total: int, source: Path) -> None:
    """Warn that ``skipped`` of ``total`` rows of ``source`` had no local clip."""
    if skipped:
        warnings.warn(f"{source}: skipped {skipped} of {total} rows without a local clip", stacklevel=3)


def check_unique_ids(items: list[Item], source: Path | str) -> list[Item]:
    """``items``, or a DatasetError naming a duplicated id."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise DatasetError(f"{at(source)}: duplicate item id {item.id!r}")
        seen.add(item.id)
    return items


# ---------------------------------------------------------------------------- generic layouts


def load_folder(root: Path | str) -> list[Item]:
    """Folder of classes: ``root/<class>/**/<media file>``, or ``root/<split>/<class>/...``.

    Item ids are the paths relative to ``root``; labels are class folder names.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{at(root)}: not a folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    has_splits = bool(subdirs) and all(p.name.lower() in SPLIT_NAMES for p in subdirs)
    groups = [(p.name, p) for p in subdirs] if has_splits else [(None, root)]
    items: list[Item] = []
    left_out: list[tuple[Path, str]] = []
    for split, base in groups:
        left_out += [(p, "not in a class folder, so it has no label") for p in base.iterdir()
                     if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES and not p.name.startswith(".")]
        for class_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            paths, skipped = scan_media(class_dir)
            left_out += skipped
            for path in paths:
                item_id = path.relative_to(root).as_posix()
                items.append(media_item(item_id, path, class_dir.name, split))
    warn_left_out(left_out, root)
    if not items:
        raise DatasetError(
            f"{at(root)}: no audio files in class subfolders (expected root/<class>/<file> with one of "
            f"{sorted(MEDIA_SUFFIXES)})"
        )
    return items


_PATH_COLUMNS = ("path", "audio", "file", "filename")
_LABEL_COLUMNS = ("label", "class")


def load_csv(path: Path | str) -> list[Item]:
    """A CSV (or ``.tsv``) with a header: ``path``, ``label``, and optionally ``split``, ``id``, ``video``.

    Paths are relative to the CSV's folder (absolute paths are kept). ``audio``, ``file`` or
    ``filename`` may name the path column and ``class`` the label column. Other columns go to meta.
    """
    path = Path(path)
    base = path.parent
    items: list[Item] = []
    path_col = label_col = None
    known: set[str | None] = set()
    for line, row in read_table(path, delimiter="\t" if path.suffix.lower() == ".tsv" else ","):
        if path_col is None:
            path_col = next((c for c in _PATH_COLUMNS if c in row), None)
            if path_col is None:
                raise DatasetError(f"{at(path, 1)}: no path column (one of {list(_PATH_COLUMNS)}) in {list(row)}")
            label_col = next((c for c in _LABEL_COLUMNS if c in row), None)
            known = {path_col, label_col, "split", "id", "video"}
        where = at(path, line)
        rel = row[path_col]
        if not rel:
            raise DatasetError(f"{where}: empty {path_col!r}")
        audio = require_file(base / rel, where)
        video = require_file(base / row["video"], where) if row.get("video") else None
        items.append(
            Item(
                id=row.get("id") or Path(rel).as_posix(),
                audio=audio,
                label=(row[label_col] or None) if label_col else None,
                video=video or (audio if audio.suffix.lower() in VIDEO_SUFFIXES else None),
                fold=row.get("split") or None,
                meta={k: v for k, v in row.items() if k not in known},
            )
        )
    return check_unique_ids(items, path)


# ---------------------------------------------------------------------------- dispatch


def detect_layout(path: Path | str) -> tuple[str, Path]:
    """The layout name of a folder or metadata file, and the root its loader takes.

    A folder is recognised by a public dataset's metadata file (``meta/esc50.csv`` ...); a folder
    holding exactly one other CSV is that CSV; any other folder is a folder of classes.
    """
    path = Path(path)
    if path.is_file():
        for marker, layout in _MARKERS:
            if path.name == Path(marker).name and path.suffix:
                return layout, path.parents[len(Path(marker).parts) - 1]
        if path.suffix.lower() in {".csv", ".tsv"}:
            return "csv", path
        raise DatasetError(f"{at(path)}: unknown metadata file; name the layout as 'layout:path' ({sorted(LAYOUTS)})")
    if not path.is_dir():
        raise DatasetError(f"{at(path)}: no such file or folder")
    for marker, layout in _MARKERS:
        if (path / marker).exists():
            return layout, (path / Path(marker).parent) if marker.startswith("LA/") else path
    csvs = sorted(path.glob("*.csv"))
    if len(csvs) == 1:
        return "csv", csvs[0]
    return "folder", path


def load_dataset(spec: str | Path, **options: Any) -> list[Item]:
    """Load a dataset from a local path, detecting its layout, or from ``"layout:path"``.

    ``options`` go to the layout's loader (e.g. ``missing="skip"`` for VGGSound and AudioSet).
    """
    text = str(spec)
    layout, _, rest = text.partition(":")
    if rest and layout in LAYOUTS:
        root = Path(rest)
        if root.is_file() and layout in {name for _, name in _MARKERS}:
            detected, root = detect_layout(rest)
            if detected != layout:
                raise DatasetError(f"{at(rest)}: not a metadata file of the {layout!r} layout")
    else:
        layout, root = detect_layout(Path(text))
    module, _, function = LAYOUTS[layout].partition(":")
    return getattr(importlib.import_module(module), function)(root, **options)

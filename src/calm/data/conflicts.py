"""The same audio under two labels: refused when it is one file, a warning when two files hold it."""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from typing import Callable, Sequence

from calm.data.items import Item
from calm.data.loaders import DatasetError
from calm.media import MediaLoadError, content_hash

_HEAD_BYTES = 1 << 16  # compared before hashing whole files of equal size


def check_label_conflicts(items: Sequence[Item]) -> None:
    """Check that no audio of ``items`` carries two labels (called by ``fit`` and ``evaluate``).

    One file (the same path once symbolic links are resolved) listed with different labels raises
    a DatasetError naming the file and its labels: it would teach two classes at once. Two files
    with identical bytes and different labels are kept, with one warning naming them and their
    labels (a recording filed under two classes is most often a labelling mistake). Files are
    compared by size, then by their first 64 KiB, and only files alike in both are hashed whole.
    Unlabelled items and files that cannot be read are left to the loader and extraction, which
    name them.
    """
    by_path: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if item.labels and item.media_path is not None:
            by_path[os.path.realpath(item.media_path)].append(item)
    for path, group in by_path.items():
        labels = sorted({_labels(item) for item in group})
        if len(labels) > 1:
            raise DatasetError(f"{path}: one file with {len(labels)} labels ({', '.join(labels)}; items "
                               f"{', '.join(item.id for item in group[:4])}); give it one")

    def mixed(group: list[str]) -> bool:
        return len({_labels(by_path[path][0]) for path in group}) > 1

    clashes = [list(by_path)]
    for key in (_size, _head, content_hash):  # cheap keys first: only candidates are read whole
        clashes = [group for candidates in clashes for group in _groups(candidates, key) if mixed(group)]
    clashes = sorted(sorted(group) for group in clashes)
    if clashes:
        first = " = ".join(f"{by_path[p][0].id} ({_labels(by_path[p][0])})" for p in clashes[0])
        warnings.warn(f"{len(clashes)} group(s) of identical audio files carry different labels, e.g. {first}; "
                      "both labels are kept, but one is probably wrong", stacklevel=2)


def _groups(paths: list[str], key: Callable[[str], object]) -> list[list[str]]:
    """The groups of two or more ``paths`` with the same ``key`` (files that cannot be read are left out)."""
    groups: dict[object, list[str]] = defaultdict(list)
    for path in paths:
        try:
            groups[key(path)].append(path)
        except (OSError, MediaLoadError):
            continue
    return [group for group in groups.values() if len(group) > 1]


def _size(path: str) -> int:
    return os.stat(path).st_size


def _head(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(_HEAD_BYTES)


def _labels(item: Item) -> str:
    return "+".join(sorted(item.labels))

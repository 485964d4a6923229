"""The same audio under two labels: refused when it is one file, a warning when two files hold it."""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from typing import Sequence

from calm.data.items import Item
from calm.data.loaders import DatasetError
from calm.media import MediaLoadError, content_hash


def check_label_conflicts(items: Sequence[Item]) -> None:
    """Check that no audio of ``items`` carries two labels (called by ``fit`` and ``evaluate``).

    One file (the same path once symbolic links are resolved) listed with different labels raises
    a DatasetError naming the file and its labels: it would teach two classes at once. Two files
    with identical bytes and different labels are kept, with one warning naming them and their
    labels (a recording filed under two classes is most often a labelling mistake). Only files of
    equal size are hashed, so the check costs a ``stat`` per item. Unlabelled items and files that
    cannot be read are left to the loader and extraction, which name them.
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
    by_size: dict[int, list[str]] = defaultdict(list)
    for path in by_path:
        try:
            by_size[os.stat(path).st_size].append(path)
        except OSError:
            continue
    by_content: dict[str, list[str]] = defaultdict(list)
    for paths in by_size.values():
        if len(paths) > 1 and len({_labels(by_path[p][0]) for p in paths}) > 1:
            for path in paths:
                try:
                    by_content[content_hash(path)].append(path)
                except MediaLoadError:
                    continue
    clashes = [sorted(paths) for paths in by_content.values() if len({_labels(by_path[p][0]) for p in paths}) > 1]
    if clashes:
        first = " = ".join(f"{by_path[p][0].id} ({_labels(by_path[p][0])})" for p in sorted(clashes)[0])
        warnings.warn(f"{len(clashes)} group(s) of identical audio files carry different labels, e.g. {first}; "
                      "both labels are kept, but one is probably wrong", stacklevel=2)


def _labels(item: Item) -> str:
    return "+".join(sorted(item.labels))

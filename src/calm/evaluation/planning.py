"""Planning an evaluation: which task, which methods, and the episodes every method shares."""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

from calm import methods as registry
from calm.choices import TASKS
from calm.data.episodes import Episode, episodes
from calm.data.items import Item
from calm.errors import InputError
from calm.features import HeadFeatures

SPOOF_LABELS = ("bonafide", "spoof")


def detect_task(items: Sequence[Item]) -> str:
    """``multilabel`` if any label is a tuple, ``spoof`` if the labels are bonafide/spoof, else ``multiclass``."""
    labels = [i.label for i in items if i.label is not None]
    if any(isinstance(label, tuple) for label in labels):
        return "multilabel"
    return "spoof" if set(labels) == set(SPOOF_LABELS) else "multiclass"


def check_task(task: str | None, items: Sequence[Item]) -> str:
    """``task``, or the detected one; ValueError if it does not fit the labels."""
    if not items:
        raise InputError("no labelled items to evaluate")
    detected = detect_task(items)
    if task is None:
        return detected
    if task not in TASKS:
        raise InputError(f"task must be one of {TASKS}, got {task!r}")
    if task == "spoof" and detected != "spoof":
        found = sorted({str(i.label) for i in items})[:5]
        raise InputError(f"task 'spoof' needs exactly the labels {SPOOF_LABELS}, got {found}")
    if task != "multilabel" and detected == "multilabel":
        raise InputError(f"task {task!r} needs one label per item, but some items have several")
    return task


def resolve_methods(names: Sequence[str] | None, switches: Mapping[str, bool | None] | None = None) -> list[str]:
    """Method names in registry order (default: every feature method); ``switches``: method name ->
    add (True), remove (False) or leave as ``names`` says (None)."""
    chosen = registry.names(feature_only=True) if names is None else list(names)
    for name in [*chosen, *(switches or {})]:
        registry.get(name)
    wanted = set(chosen)
    for name, switch in (switches or {}).items():
        if switch is True:
            wanted.add(name)
        elif switch is False:
            wanted.discard(name)
    if not wanted:
        raise InputError("no methods to evaluate")
    return [m for m in registry.names() if m in wanted]


def classes_of(items: Sequence[Item]) -> list[str]:
    """Every class name of the items, sorted."""
    return sorted({c for i in items for c in i.labels})


def duplicate_groups(content: Mapping[str, str]) -> list[list[str]]:
    """Groups of item ids with identical content (each group sorted, two or more ids)."""
    by_hash: dict[str, list[str]] = defaultdict(list)
    for item_id, digest in content.items():
        by_hash[digest].append(item_id)
    return sorted(sorted(ids) for ids in by_hash.values() if len(ids) > 1)


def plan(features: HeadFeatures, items: Sequence[Item], shots: Iterable[int], seeds: int | Iterable[int],
         query_fold: str | None, content: Mapping[str, str] | None = None) -> dict[int, list[Episode]]:
    """Episodes per shot count (ascending) over the items that have features; identical clips
    (same ``content`` hash) never sit on both sides of an episode."""
    have = set(features.ids)
    missing = [i.id for i in items if i.id not in have and i.id not in features.failed]
    if missing:
        raise InputError(f"{len(missing)} item(s) have no features and are not listed as failed, e.g. {missing[:3]}")
    usable = [i for i in items if i.id in have]
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    shot_list = sorted({int(s) for s in shots})
    if not seed_list or not shot_list:
        raise InputError("need at least one shot count and one seed")
    result = {}
    for shot in shot_list:
        result[shot] = list(episodes(usable, shot, seed_list, query_fold=query_fold, content=content))
        for ep in result[shot]:
            if not ep.query:
                raise InputError(f"{shot}-shot, seed {ep.seed}: the query set is empty")
    return result


def check_plan(items: Sequence[Item], shots: Iterable[int], seeds: int | Iterable[int], query_fold: str | None) -> None:
    """Raise what :func:`plan` would over these items (too few items in a class for a shot count,
    an unknown query fold, an empty query ...), before any feature is extracted. Items that later
    fail or duplicate others only make episodes harder to draw, so passing here is necessary,
    not sufficient."""
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # raised again, and noted, when the episodes are drawn
        for shot in sorted({int(s) for s in shots}):
            for ep in episodes(items, shot, seed_list, query_fold=query_fold):
                if not ep.query:
                    raise InputError(f"{shot}-shot, seed {ep.seed}: the query set is empty")


def check_evaluation(items: Sequence[Item], *, shots: Iterable[int], seeds: int | Iterable[int],
                     methods: Sequence[str] | None, task: str | None, query_fold: str | None) -> str:
    """Everything about an evaluation that can be checked before any model loads (methods, task,
    episodes: :func:`check_plan`); the task."""
    resolve_methods(methods)
    labelled = [i for i in items if i.label is not None]
    task = check_task(task, labelled)
    check_plan(labelled, shots, seeds, query_fold)
    return task


def quiet_plan(*args, **kwargs) -> dict[int, list[Episode]]:
    """:func:`plan` without its warnings (for a second drawing of episodes already reported)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return plan(*args, **kwargs)

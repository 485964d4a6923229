"""The few-shot protocol: K-shot support sets drawn per seed, and query sets disjoint from them.

Where the query items come from depends on the folds the dataset defines (``Item.fold``):

* ``"split"``: folds name roles. Support is drawn only from ``SUPPORT_SPLITS`` (``support``,
  ``train`` ...), queries are all of ``QUERY_SPLITS`` (``query``, ``test``, ``eval``); other
  folds (``dev``, ``val``) are left out. Used when both roles are present.
* ``"folds"``: official cross-validation folds (ESC-50's 1-5, UrbanSound8K's 1-10). The query is
  one held-out fold, support is drawn from the others. Unless ``query_fold`` is given, the held-out
  fold rotates with the seed: the i-th seed holds out the i-th fold (cyclically).
* ``"random"``: no folds; the query is every labelled item not drawn for support.

Draws are deterministic per seed and independent per class: the K-shot draw of a class does not
depend on which other classes are present, and the first K of a (K+1)-shot draw are the K-shot
draw. Multi-label items (tuple labels, AudioSet) are drawn greedily, rarest label first, until
every label has at least K positives.
"""

from __future__ import annotations

import warnings
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from calm.data.items import Item

SUPPORT_SPLITS = frozenset({"support", "train", "balanced_train", "unbalanced_train"})
QUERY_SPLITS = frozenset({"query", "test", "eval"})
HELD_OUT_SPLITS = frozenset({"dev", "val", "valid", "validation"})


@dataclass(frozen=True)
class Episode:
    """One support/query draw. Unpacks as ``support, query = episode``.

    Attributes:
        support: the K-shot support items (labelled).
        query: the items to classify, disjoint from ``support``.
        seed: the seed of the support draw.
        protocol: ``"split"``, ``"folds"`` or ``"random"`` (see the module docstring).
        query_fold: the held-out fold under the ``"folds"`` protocol, else None.
    """

    support: list[Item]
    query: list[Item]
    seed: int
    protocol: str
    query_fold: str | None = None

    def __iter__(self) -> Iterator[list[Item]]:
        yield self.support
        yield self.query


def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator for (seed, class name), stable across runs and Python processes."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def sample_support(
    items: Sequence[Item], shots: int, seed: int, classes: Sequence[str] | None = None
) -> list[Item]:
    """K = ``shots`` items per class (default classes: every label present), drawn by ``seed``.

    Multi-label items get a greedy draw with at least K positives per label. A class with fewer
    than K items raises ValueError naming it. Items without a label are not drawn.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    pool = sorted((i for i in items if i.label is not None), key=lambda i: i.id)
    multilabel = any(isinstance(i.label, tuple) for i in pool)
    by_class: dict[str, list[Item]] = defaultdict(list)
    for item in pool:
        for label in item.labels:
            by_class[label].append(item)
    wanted = sorted(by_class) if classes is None else list(classes)
    for name in wanted:
        if len(by_class.get(name, ())) < shots:
            raise ValueError(f"class {name!r} has {len(by_class.get(name, ()))} item(s) to draw from, {shots}-shot needs {shots}")
    if not multilabel:
        return [by_class[c][j] for c in wanted for j in _rng(seed, c).permutation(len(by_class[c]))[:shots]]
    return _greedy_multilabel(by_class, wanted, shots, seed)


def _greedy_multilabel(by_class: dict[str, list[Item]], wanted: list[str], shots: int, seed: int) -> list[Item]:
    """Rarest label first: add random items carrying it until it has ``shots`` positives."""
    chosen: dict[str, Item] = {}
    count: Counter[str] = Counter()
    for name in sorted(wanted, key=lambda c: (len(by_class[c]), c)):
        candidates = by_class[name]
        for j in _rng(seed, name).permutation(len(candidates)):
            if count[name] >= shots:
                break
            item = candidates[j]
            if item.id not in chosen:
                chosen[item.id] = item
                count.update(item.labels)
    return list(chosen.values())


def protocol_of(items: Sequence[Item]) -> str:
    """``"split"``, ``"folds"`` or ``"random"``: how queries are chosen for these items."""
    folds = {i.fold for i in items}
    if folds == {None}:
        return "random"
    if None in folds:
        example = next(i.id for i in items if i.fold is None)
        raise ValueError(f"some items have a fold or split and others not (e.g. {example!r})")
    names = {str(f).lower() for f in folds}
    if names & SUPPORT_SPLITS and names & QUERY_SPLITS:
        return "split"
    if names & (SUPPORT_SPLITS | QUERY_SPLITS | HELD_OUT_SPLITS):
        return "random"  # one role only (e.g. a train-only subset): draw queries from the rest
    return "folds"


def episodes(
    items: Sequence[Item],
    shots: int,
    seeds: int | Iterable[int],
    *,
    classes: Sequence[str] | None = None,
    query_fold: str | None = None,
    content: Mapping[str, str] | None = None,
) -> Iterator[Episode]:
    """One :class:`Episode` per seed (``seeds`` an int n means seeds 0..n-1).

    ``query_fold`` holds out that fold as the query for every seed (the ``"folds"`` protocol).
    Unlabelled items are left out. Single-label queries of classes outside the support's are left
    out with a warning. Support and query are checked to be disjoint. ``content`` (item id ->
    content hash) keeps identical clips on one side: a query item with the same content as a
    support item is left out, with a warning (otherwise a duplicate would leak its label).
    """
    labelled = [i for i in items if i.label is not None]
    if not labelled:
        raise ValueError("no labelled items to draw episodes from")
    protocol = "folds" if query_fold is not None else protocol_of(labelled)
    folds = sorted({str(i.fold) for i in labelled}, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
    if query_fold is not None and str(query_fold) not in folds:
        raise ValueError(f"query fold {query_fold!r} not among the folds {folds}")
    for n, seed in enumerate(range(seeds) if isinstance(seeds, int) else seeds):
        held_out = None
        if protocol == "folds":
            held_out = str(query_fold) if query_fold is not None else folds[n % len(folds)]
            support_pool = [i for i in labelled if str(i.fold) != held_out]
            query_pool = [i for i in labelled if str(i.fold) == held_out]
        elif protocol == "split":
            support_pool = [i for i in labelled if str(i.fold).lower() in SUPPORT_SPLITS]
            query_pool = [i for i in labelled if str(i.fold).lower() in QUERY_SPLITS]
        else:
            support_pool = query_pool = labelled
        support = sample_support(support_pool, shots, seed, classes)
        taken = {i.id for i in support}
        query = [i for i in query_pool if i.id not in taken]
        if content is not None:
            query = _unseen_content(query, support, content)
        query = _known_classes(query, classes or sorted({c for i in support_pool for c in i.labels}))
        overlap = taken & {i.id for i in query}
        if overlap:
            raise AssertionError(f"support and query share {len(overlap)} item(s), e.g. {sorted(overlap)[:3]}")
        yield Episode(support, query, int(seed), protocol, held_out)


def _known_classes(query: list[Item], classes: Sequence[str]) -> list[Item]:
    """Single-label queries whose class is among ``classes``; warns about the rest."""
    known = set(classes)
    kept = [i for i in query if isinstance(i.label, tuple) or i.label in known]
    if len(kept) < len(query):
        unseen = sorted({str(i.label) for i in query} - known)
        warnings.warn(f"left out {len(query) - len(kept)} query item(s) of classes not in the support: {unseen[:5]}", stacklevel=3)
    return kept


def _unseen_content(query: list[Item], support: list[Item], content: Mapping[str, str]) -> list[Item]:
    """Queries whose content hash no support item has; warns about the rest."""
    seen = {content[i.id] for i in support if i.id in content}
    kept = [i for i in query if content.get(i.id) not in seen]
    if len(kept) < len(query):
        dropped = sorted(i.id for i in query if content.get(i.id) in seen)
        warnings.warn(f"left out {len(dropped)} query item(s) whose audio is identical to a support item's, e.g. "
                      f"{dropped[:3]}", stacklevel=3)
    return kept

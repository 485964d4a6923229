"""The few-shot protocol: disjoint support/query, deterministic per seed, folds and splits respected."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from calm.data.episodes import Episode, episodes, protocol_of, sample_support
from calm.data.items import Item


def make_items(per_class: int, classes=("cat", "dog", "owl"), folds=None) -> list[Item]:
    return [
        Item(f"{c}{j}", Path(f"{c}{j}.wav"), c, fold=None if folds is None else folds[j % len(folds)])
        for c in classes for j in range(per_class)
    ]


def ids(items: list[Item]) -> list[str]:
    return [i.id for i in items]


def test_sample_support_k_per_class_deterministic_nested() -> None:
    items = make_items(10)
    support = sample_support(items, 3, seed=7)
    assert Counter(i.label for i in support) == {"cat": 3, "dog": 3, "owl": 3}
    assert ids(sample_support(list(reversed(items)), 3, seed=7)) == ids(support)  # order of items does not matter
    assert ids(sample_support(items, 3, seed=8)) != ids(support)
    five = sample_support(items, 5, seed=7)
    assert all(i in five for i in support)  # the 3-shot draw is the start of the 5-shot draw
    # a class's draw does not depend on the other classes present
    cats = [i for i in support if i.label == "cat"]
    assert sample_support([i for i in items if i.label == "cat"], 3, seed=7) == cats
    assert ids(sample_support(items, 2, seed=7, classes=["owl"])) == ids([i for i in support if i.label == "owl"][:2])


def test_sample_support_names_a_short_class() -> None:
    items = make_items(4) + make_items(1, classes=("bee",))
    with pytest.raises(ValueError, match="class 'bee' has 1 item"):
        sample_support(items, 2, seed=0)
    with pytest.raises(ValueError, match="class 'yak' has 0 item"):
        sample_support(items, 1, seed=0, classes=["cat", "yak"])


def test_random_episodes_disjoint_and_deterministic() -> None:
    items = make_items(6) + [Item("unlabelled", Path("u.wav"))]
    first = list(episodes(items, 2, seeds=3))
    again = list(episodes(items, 2, seeds=[0, 1, 2]))
    assert [(ids(e.support), ids(e.query)) for e in first] == [(ids(e.support), ids(e.query)) for e in again]
    for episode in first:
        support, query = episode
        assert episode.protocol == "random" and episode.query_fold is None
        assert not set(ids(support)) & set(ids(query))
        assert len(support) == 6 and len(query) == 12  # every labelled item is used once
    assert ids(first[0].support) != ids(first[1].support)


def test_split_roles() -> None:
    items = make_items(6, folds=["train", "train", "test", "dev"])
    assert protocol_of(items) == "split"
    for support, query in episodes(items, 2, seeds=2):
        assert {i.fold for i in support} == {"train"} and {i.fold for i in query} == {"test"}
        assert len(query) == 3  # every test item (one per class); dev items are left out


def test_official_folds_rotate_and_hold_out() -> None:
    items = make_items(10, folds=["1", "2", "3", "4", "5"])
    assert protocol_of(items) == "folds"
    runs = list(episodes(items, 1, seeds=6))
    assert [e.query_fold for e in runs] == ["1", "2", "3", "4", "5", "1"]
    for e in runs:
        assert {i.fold for i in e.query} == {e.query_fold} and e.query_fold not in {i.fold for i in e.support}
    fixed = list(episodes(items, 1, seeds=2, query_fold="3"))
    assert {e.query_fold for e in fixed} == {"3"}
    with pytest.raises(ValueError, match="query fold '9'"):
        list(episodes(items, 1, seeds=1, query_fold="9"))


def test_query_classes_outside_support_are_left_out() -> None:
    items = make_items(4, classes=("cat", "dog"), folds=["train", "test"]) + [Item("x", Path("x.wav"), "yak", fold="test")]
    with pytest.warns(UserWarning, match="'yak'"):
        (episode,) = episodes(items, 1, seeds=1)
    assert "x" not in ids(episode.query)


def test_multilabel_greedy_support() -> None:
    labels = [("Speech",), ("Speech", "Dog"), ("Music",), ("Music", "Speech"), ("Dog",), ("Music",), ("Speech",), ("Dog", "Music")]
    items = [Item(f"y{j}", Path(f"y{j}.wav"), lab) for j, lab in enumerate(labels)]
    support = sample_support(items, 2, seed=3)
    count = Counter(c for i in support for c in i.label)
    assert all(count[c] >= 2 for c in ("Speech", "Dog", "Music"))
    assert len(support) == len({i.id for i in support}) <= 6
    assert ids(sample_support(items, 2, seed=3)) == ids(support)
    (episode,) = episodes(items, 2, seeds=[3])
    assert isinstance(episode, Episode) and not set(ids(episode.support)) & set(ids(episode.query))
    assert len(episode.support) + len(episode.query) == len(items)

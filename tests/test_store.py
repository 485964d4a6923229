"""The feature store: exact round trips, memory-mapped reads, keys, failures, torn tails."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calm.features import HeadIndex
from calm.store import FeatureStore, StoreError

HEADS = HeadIndex.from_tuples([("self_attn", layer, head) for layer in range(2) for head in range(3)])
KEY = {"model_id": "tiny:qwen2_audio", "revision": "r1", "dtype": "float32", "prompt": "What is it?", "sites": ["self_attn"]}


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, len(HEADS), 4)).astype(np.float16)


def _fill(store: FeatureStore, n: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    X = _rows(n, seed)
    for start in range(0, n, batch):
        ids = [f"item{i}" for i in range(start, min(n, start + batch))]
        store.append([store.item_key(i, f"hash-{i}") for i in ids], ids, X[start : start + batch])
    return X


def test_round_trip_is_exact_and_memory_mapped(tmp_path):
    with FeatureStore.open(tmp_path, KEY, HEADS) as store:
        X = _fill(store, 5)
    store = FeatureStore.open(tmp_path, KEY, HEADS)
    features = store.read()
    assert isinstance(features.X, np.memmap) and features.X.dtype == np.float16
    np.testing.assert_array_equal(features.X, X)
    assert features.ids == [f"item{i}" for i in range(5)]
    assert features.heads == HEADS and features.fingerprint == KEY == store.fingerprint
    subset = store.read(["item3", "item0"])
    np.testing.assert_array_equal(subset.X, X[[3, 0]])
    assert subset.ids == ["item3", "item0"]
    assert isinstance(store.read(["item1", "item2"]).X, np.memmap)  # in store order: a view
    by_key = store.read(item_keys=[store.item_key("item4", "hash-item4")])
    np.testing.assert_array_equal(by_key.X, X[[4]])
    assert by_key.ids == ["item4"]


def test_float32_input_is_stored_as_float16(tmp_path):
    store = FeatureStore.open(tmp_path, KEY, HEADS)
    X = np.random.default_rng(1).standard_normal((2, len(HEADS), 4)).astype(np.float32)
    store.append(["k0", "k1"], ["a", "b"], X)
    np.testing.assert_array_equal(store.read().X, X.astype(np.float16))


def test_done_keys_and_rerun_state(tmp_path):
    with FeatureStore.open(tmp_path, KEY, HEADS) as store:
        _fill(store, 3)
    store = FeatureStore.open(tmp_path, KEY, HEADS)
    assert store.done_keys() == {store.item_key(f"item{i}", f"hash-item{i}") for i in range(3)}
    assert len(store) == 3


def test_item_key_depends_on_id_and_content():
    keys = {
        FeatureStore.item_key("a", "h1"),
        FeatureStore.item_key("b", "h1"),
        FeatureStore.item_key("a", "h2"),
        FeatureStore.item_key("a", "h1", video_hash="v1"),
    }
    assert len(keys) == 4 and FeatureStore.item_key("a", "h1") == FeatureStore.item_key("a", "h1")


def test_different_key_different_directory(tmp_path):
    a = FeatureStore.open(tmp_path, KEY, HEADS)
    b = FeatureStore.open(tmp_path, {**KEY, "prompt": "Another prompt"}, HEADS)
    c = FeatureStore.open(tmp_path, dict(reversed(list(KEY.items()))), HEADS)  # key order is irrelevant
    assert a.path != b.path and a.path == c.path
    a.append(["k"], ["x"], _rows(1))
    assert len(b) == 0 and b.done_keys() == set()
    assert json.loads((a.path / "key.json").read_text())["key"] == KEY


def test_directory_with_another_key_is_refused(tmp_path):
    store = FeatureStore.open(tmp_path, KEY, HEADS)
    meta = json.loads((store.path / "key.json").read_text())
    meta["key"]["prompt"] = "tampered"
    (store.path / "key.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="key.json: this directory holds features for another key"):
        FeatureStore.open(tmp_path, KEY, HEADS)
    other_heads = HeadIndex.from_tuples([("self_attn", 0, h) for h in range(6)])
    FeatureStore.open(tmp_path / "fresh", KEY, HEADS)
    with pytest.raises(StoreError, match="another key or head index"):
        FeatureStore.open(tmp_path / "fresh", KEY, other_heads)


def test_key_must_be_plain_json(tmp_path):
    with pytest.raises(TypeError, match="plain JSON"):
        FeatureStore.open(tmp_path, {"dtype": np.float16}, HEADS)


def test_failures_are_recorded_and_cleared_by_success(tmp_path):
    with FeatureStore.open(tmp_path, KEY, HEADS) as store:
        _fill(store, 2)
        store.record_failure("kbad", "bad", "bad.wav: empty file (0 bytes)")
        store.record_failure("kretry", "retry", "retry.wav: not a decodable audio file")
    store = FeatureStore.open(tmp_path, KEY, HEADS)
    assert store.failures() == {"bad": "bad.wav: empty file (0 bytes)", "retry": "retry.wav: not a decodable audio file"}
    assert "kbad" not in store.done_keys()  # a failure is a record, not a finished item
    features = store.read(["item0", "bad"])
    assert features.ids == ["item0"] and features.failed == {"bad": "bad.wav: empty file (0 bytes)"}
    assert store.read(item_keys=["kbad"]).failed == {"bad": "bad.wav: empty file (0 bytes)"}
    store.append(["kretry"], ["retry"], _rows(1, seed=5))
    reopened = FeatureStore.open(tmp_path, KEY, HEADS)
    assert reopened.failures() == {"bad": "bad.wav: empty file (0 bytes)"}
    assert reopened.read().ids == ["item0", "item1", "retry"]
    with pytest.raises(KeyError, match="never-seen"):
        reopened.read(["never-seen"])


def test_an_id_whose_file_changed_reads_its_latest_row(tmp_path):
    store = FeatureStore.open(tmp_path, KEY, HEADS)
    old, new = _rows(1, seed=1), _rows(1, seed=2)
    store.append([store.item_key("a", "old")], ["a"], old)
    store.append([store.item_key("a", "new")], ["a"], new)
    np.testing.assert_array_equal(store.read(["a"]).X, new)
    np.testing.assert_array_equal(store.read(item_keys=[store.item_key("a", "old")]).X, old)
    assert store.read().ids == ["a"]
    store.record_failure(store.item_key("a", "broken"), "a", "a.wav: empty file (0 bytes)")
    assert store.read().ids == [] and store.failures() == {"a": "a.wav: empty file (0 bytes)"}


def test_append_validates_shapes_and_values(tmp_path):
    store = FeatureStore.open(tmp_path, KEY, HEADS)
    with pytest.raises(ValueError, match="2 ids"):
        store.append(["k"], ["a", "b"], _rows(2))
    with pytest.raises(ValueError, match="heads"):
        store.append(["k"], ["a"], np.zeros((1, 5, 4)))
    with pytest.raises(ValueError, match=r"non-finite.*'big'"):
        store.append(["k"], ["big"], np.full((1, len(HEADS), 4), 1e6))
    store.append(["k"], ["a"], _rows(1))
    with pytest.raises(ValueError, match="head dimension 8"):
        store.append(["k2"], ["b"], np.zeros((1, len(HEADS), 8)))


def test_torn_tail_is_cut_off(tmp_path):
    with FeatureStore.open(tmp_path, KEY, HEADS) as store:
        X = _fill(store, 4)
    journal, data = store.path / "journal.jsonl", store.path / "data.f16"
    # a writer killed mid-batch: data of a batch written, its journal line only half written
    with open(data, "ab") as handle:
        handle.write(_rows(2, seed=9).tobytes()[:100])
    with open(journal, "ab") as handle:
        handle.write(b'{"start": 4, "n": 2, "d": 4, "keys": ["x"')
    store = FeatureStore.open(tmp_path, KEY, HEADS)
    np.testing.assert_array_equal(store.read().X, X)  # readers ignore the torn tail
    store.append(["k4"], ["item4"], _rows(1, seed=3))  # the first write repairs it
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    reopened = FeatureStore.open(tmp_path, KEY, HEADS).read()
    np.testing.assert_array_equal(reopened.X, np.concatenate([X, _rows(1, seed=3)]))
    assert data.stat().st_size == 5 * len(HEADS) * 4 * 2


def test_journal_line_without_its_data_is_dropped(tmp_path):
    with FeatureStore.open(tmp_path, KEY, HEADS) as store:
        X = _fill(store, 4)
    data = store.path / "data.f16"
    data.write_bytes(data.read_bytes()[: 3 * len(HEADS) * 4 * 2])  # the last batch's data lost
    store = FeatureStore.open(tmp_path, KEY, HEADS)
    np.testing.assert_array_equal(store.read().X, X[:2])
    assert len(store.done_keys()) == 2


def test_damage_inside_the_journal_is_an_error(tmp_path):
    with FeatureStore.open(tmp_path, KEY, HEADS) as store:
        _fill(store, 6)
    journal = store.path / "journal.jsonl"
    lines = journal.read_bytes().split(b"\n")
    lines[1] = b"garbage"
    journal.write_bytes(b"\n".join(lines))
    with pytest.raises(StoreError, match="journal.jsonl: line 2 is damaged"):
        FeatureStore.open(tmp_path, KEY, HEADS)


def test_one_writer_at_a_time(tmp_path):
    first = FeatureStore.open(tmp_path, KEY, HEADS)
    first.append(["k0"], ["a"], _rows(1))
    second = FeatureStore.open(tmp_path, KEY, HEADS)
    with pytest.raises(StoreError, match="another process is writing"):
        second.append(["k1"], ["b"], _rows(1))
    assert second.read().ids == ["a"]  # reading needs no lock
    first.close()
    second.append(["k1"], ["b"], _rows(1))
    assert FeatureStore.open(tmp_path, KEY, HEADS).read().ids == ["a", "b"]


def test_empty_store_reads_empty(tmp_path):
    features = FeatureStore.open(tmp_path, KEY, HEADS).read()
    assert features.X.shape[:2] == (0, len(HEADS)) and features.ids == [] and features.failed == {}

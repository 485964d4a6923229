"""``calm evaluate`` in worker processes: the report is the same, bit for bit, whatever the worker
count; and its warnings come back as one line per kind, with a count and plain values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np

from calm.evaluation.notes import Notes
from calm.evaluation.protocol import evaluate_features
from test_evaluate import synthetic


METHODS = ["sav", "calm", "calm-tuned", "probe", "auto"]


def _report(workers: int | None):
    features, items = synthetic(["dog", "cat", "bird", "cow"] * 6, seed=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate_features(features, items, shots=(1, 3), seeds=3, methods=METHODS, workers=workers)
    return report, [str(w.message) for w in caught]


def _without_timings(report) -> str:
    data = report.to_dict()
    for row in data["results"]:
        row.pop("seconds")
    return json.dumps(data, sort_keys=True, default=str)


def test_one_and_two_workers_give_the_same_report():
    one, warned_one = _report(1)
    two, warned_two = _report(2)
    assert _without_timings(one) == _without_timings(two)
    assert one.notes == two.notes and warned_one == warned_two
    for name, by_shots in one.confusion.items():
        for shots, counts in by_shots.items():
            np.testing.assert_array_equal(counts, two.confusion[name][shots])
    assert len(one.results) == len(METHODS) * 2 * 3  # every method, shot count and seed


def test_a_one_shot_run_notes_each_kind_of_warning_once_with_a_count():
    report, warned = _report(1)
    assert warned == report.notes  # stderr shows what the report's notes say, once
    single = [n for n in report.notes if "cannot be scored out of fold" in n]
    assert len(single) == 1  # one line for every method's calibration on every 1-shot seed
    # 4 methods x 3 seeds (calm-tuned cannot tune on one shot: not evaluated, its own line)
    assert single[0].endswith("(12 fits: sav, calm, probe, auto; 1-shot)")
    assert [n for n in report.notes if "not evaluated" in n] == [
        "not evaluated: tuning needs at least one class with two or more support items (3 fits: calm-tuned; 1-shot)"]
    assert "np.str_" not in "\n".join(report.notes)
    assert len(report.notes) < 8


def test_notes_group_by_kind_and_write_numpy_values_plainly():
    notes = Notes()
    notes.add("the run as a whole")
    notes.add("SAVClassifier: asked for 20 heads but only 12 vary", "sav", 1)
    notes.add("SAVClassifier: asked for 20 heads but only 11 vary", "sav-white", 3)
    notes.add("Calibrated(LogisticProbe): class np.str_('clap') has one item", "probe", 1)
    notes.add("the run as a whole")
    assert notes.lines() == [
        "the run as a whole",
        "asked for 20 heads but only 12 vary (2 fits: sav, sav-white; 1, 3-shot)",
        "probe (1-shot): Calibrated(LogisticProbe): class 'clap' has one item",
    ]


def test_balanced_accuracy_is_the_same_in_every_process():
    """Recalls 1/3, 2/5 ... 8/17 sum to a last bit that depended on the order of a set of strings,
    which changes with the hash seed: worker processes must agree with the parent."""
    code = ("from calm.evaluation.metrics import balanced_accuracy\n"
            "t, p = [], []\n"
            "for k, name in enumerate('abcdefgh'):\n"
            "    t += [name] * (3 + 2 * k)\n"
            "    p += [name] * (k + 1) + ['z'] * (2 + k)\n"
            "print(repr(balanced_accuracy(t, p)))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(8)}
    assert len(runs) == 1

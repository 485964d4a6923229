"""calm.extract's default loader threads follow the cores the process may use."""

from __future__ import annotations

import os

import pytest

from calm import heads


@pytest.mark.parametrize(("cores", "threads"), [(1, 0), (2, 1), (3, 2), (5, 4), (64, 4)])
def test_default_loader_threads_leave_a_core_to_the_model(monkeypatch, cores, threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert heads.default_loader_threads() == threads

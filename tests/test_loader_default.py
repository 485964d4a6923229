"""calm.extract's default loader processes follow the cores the process may use."""

from __future__ import annotations

import os

import pytest

from calm import clips


@pytest.mark.parametrize(("cores", "loaders"), [(1, 0), (2, 1), (3, 2), (16, 15), (64, 32)])
def test_default_loaders_leave_a_core_to_the_model(monkeypatch, cores, loaders):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert clips.default_loaders() == loaders

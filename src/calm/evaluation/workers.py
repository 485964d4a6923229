"""Running an evaluation's episodes, in this process or in worker processes.

An episode is one unit of work: every method fitted and scored on it by a fresh
:class:`~calm.evaluation.runner.Runner` (the methods share the episode's feature selection). Units
go to worker processes when asked, or by default when the first unit shows that the rest would
take long enough (:data:`AUTO_SECONDS`) to repay starting them. Their runners are merged in
episode order, and every unit runs torch and BLAS on one thread wherever it runs, so the report is the
same, bit for bit, whatever the worker count.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Sequence

from calm.data.episodes import Episode
from calm.evaluation.runner import Runner

AUTO_SECONDS = 20.0
"""Auto mode starts workers when the episodes left would take longer than this in one process."""

Unit = tuple[int, Episode]
"""(shots, episode)."""

_RUNNER_ARGS: tuple[Any, ...] = ()


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_units(parent: Runner, runner_args: tuple[Any, ...], units: Sequence[Unit], workers: int | None,
              bar: Any) -> None:
    """Every unit's results merged into ``parent``, in order. ``workers``: processes (1: this
    one; None: auto, see the module docstring)."""
    if not units:
        return
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    started = time.perf_counter()
    done = 0
    if workers is None or workers == 1:
        parent.merge(_run(runner_args, units[0]))
        bar.update(len(parent.settings))
        done = 1
        if workers is None:
            left = (time.perf_counter() - started) * (len(units) - 1)
            workers = min(available_cores(), len(units) - 1) if left > AUTO_SECONDS else 1
    rest = units[done:]
    if workers <= 1 or len(rest) < 2:
        for unit in rest:
            parent.merge(_run(runner_args, unit))
            bar.update(len(parent.settings))
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(rest)), mp_context=context, initializer=_start,
                             initargs=(runner_args,)) as pool:
        for outcome in pool.map(_run_in_worker, rest):
            parent.merge(outcome)
            bar.update(len(parent.settings))


def _start(runner_args: tuple[Any, ...]) -> None:
    global _RUNNER_ARGS
    _RUNNER_ARGS = runner_args


def _run_in_worker(unit: Unit) -> Runner:
    return _run(_RUNNER_ARGS, unit)


def _run(runner_args: tuple[Any, ...], unit: Unit) -> Runner:
    """One episode's runner (detached: without features), its warnings noted."""
    from calm.classifiers.threads import one_thread  # calm.classifiers imports torch: only where fits run

    shots, episode = unit
    runner = Runner(*runner_args)
    with one_thread(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner.episode(episode, shots, caught)
    return runner.detached()

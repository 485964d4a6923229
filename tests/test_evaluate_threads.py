"""Every evaluation unit runs its arithmetic on one thread: torch, and every BLAS and OpenMP
library, scipy's own included even when nothing has loaded it before the unit starts. A
multi-threaded BLAS gave the probe other solutions (its summation order depends on the thread
count) and, on a loaded machine, made the tuned probe ten times slower."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from threadpoolctl import threadpool_info
from calm.evaluation import workers
from calm.evaluation.runner import Runner

def pools():
    return {pool["filepath"]: pool["num_threads"] for pool in threadpool_info()}

seen = []
Runner.episode = lambda self, *args, **kwargs: seen.append((pools(), __import__("torch").get_num_threads()))
workers._run(("multiclass", ["a", "b"], None, None, {}, False), (1, None))
inside, torch_threads = seen[0]
import sklearn.linear_model  # what the probe loads: every pool it brings was already limited
assert set(pools()) <= set(inside), (sorted(pools()), sorted(inside))
assert set(inside.values()) == {1} and torch_threads == 1, (inside, torch_threads)
print("ok")
"""


def test_a_unit_runs_every_thread_pool_on_one_thread_in_a_fresh_process():
    # a fresh process, as a worker: scipy's BLAS and scikit-learn's OpenMP are not loaded yet
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_one_thread_restores_the_thread_counts_it_found():
    import torch
    from threadpoolctl import threadpool_info

    from calm.classifiers.threads import one_thread

    before = torch.get_num_threads(), [pool["num_threads"] for pool in threadpool_info()]
    with one_thread():
        assert torch.get_num_threads() == 1
        assert {pool["num_threads"] for pool in threadpool_info()} == {1}
    assert (torch.get_num_threads(), [pool["num_threads"] for pool in threadpool_info()]) == before

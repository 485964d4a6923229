"""Fitting on one thread: the estimators' arithmetic is many small products (per head, per fold,
per solver step), which a second thread only slows, and whose sums a multi-threaded library may
add up in another order."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def one_thread() -> Iterator[None]:
    """torch, every BLAS and every OpenMP pool on one thread, restored after: the same summation
    order in every process, on every machine. A multi-threaded BLAS changed the probe's solutions
    in their fifth digit (a LAPACK QR and the solver's products summed in another order) and, on a
    loaded machine, made each small product wait for a second thread: the tuned probe's fits took
    ten times longer."""
    import scipy.linalg  # noqa: F401  (loads scipy's own BLAS now, so that the limit below reaches it)
    import sklearn.utils._openmp_helpers  # noqa: F401  (and scikit-learn's OpenMP)
    import torch
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)

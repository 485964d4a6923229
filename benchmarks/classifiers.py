"""Time the classifiers at a realistic few-shot size (defaults: 50 classes x 40 shots, K=1024 heads
of D=128, 2000 queries) and a 100-configuration tuning grid; print seconds (best of --repeats).

    python benchmarks/classifiers.py               # float16 features, as read from a store
    python benchmarks/classifiers.py --dtype float32
    python benchmarks/classifiers.py --threads 1   # on a machine shared with other jobs
    python benchmarks/classifiers.py --every-method --shots 5 --queries 200 --skip-tuning
                                                   # every feature method of calm.methods (issue 22's size)

Targets on a 2-core CPU: CALM fit + predict under 1 s, the default tuning grid under 10 s, a
whitened classifier (``geometry="whitened"``) fit + predict under 2 s; at 50 classes x 5 shots and
200 queries, ``auto`` fit under 1 s and predict under 0.2 s.
The synthetic features have a few informative heads per class, so accuracies are printed too.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from typing import Any, Callable

import numpy as np
import torch

import calm.methods
from calm.classifiers import (DEFAULT_GRID, CALMClassifier, ConcatCentroidClassifier, SAVClassifier,
                              UniformVoteClassifier, tune_calm)
from calm.classifiers.tuning import expand_grid


def synthetic(classes: int, shots: int, queries: int, heads: int, dim: int, dtype: torch.dtype,
              seed: int = 0) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Support and query features where each class is visible in a few heads only (about 2% of
    (head, class) pairs carry a class direction), over a shared offset per head and noise: the
    class-specific experts CALM is built for."""
    gen = torch.Generator().manual_seed(seed)
    offset = torch.randn(heads, dim, generator=gen)
    experts = (torch.rand(heads, classes, 1, generator=gen) < 0.02) * 0.2
    directions = torch.randn(heads, classes, dim, generator=gen) * experts

    def draw(labels: np.ndarray) -> torch.Tensor:
        x = torch.randn(len(labels), heads, dim, generator=gen) * 1.5
        x += offset
        x += directions[:, torch.from_numpy(labels)].transpose(0, 1)
        return x.to(dtype)

    y = np.repeat(np.arange(classes), shots)
    yq = np.arange(queries) % classes
    return draw(y), y, draw(yq), yq


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Best wall-clock seconds of ``repeats`` runs, the process CPU seconds of that run, the output."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = run()
        if time.perf_counter() - start < best:
            best, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return best, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--shots", type=int, default=40)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--heads", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, one per core); 1 on a busy machine")
    parser.add_argument("--skip-tuning", action="store_true")
    parser.add_argument("--only", nargs="+", default=None, help="time only these rows, e.g. 'SAV whitened'")
    parser.add_argument("--every-method", action="store_true",
                        help="rows: every method of calm.methods that fits an estimator on features, by its name")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, load average {load:.1f} at start")
    print(f"data: {args.classes} classes x {args.shots} shots, {args.queries} queries, K={args.heads}, "
          f"D={args.dim}, {args.dtype}; best of {args.repeats}, wall seconds (process CPU seconds)")
    X, y, Xq, yq = synthetic(args.classes, args.shots, args.queries, args.heads, args.dim,
                             getattr(torch, args.dtype))
    X, Xq = X.numpy(), Xq.numpy()
    rows = [("CALM", CALMClassifier()), ("SAV", SAVClassifier()), ("uniform vote", UniformVoteClassifier()),
            ("concat centroid", ConcatCentroidClassifier()), ("SAV whitened", SAVClassifier(geometry="whitened")),
            ("CALM whitened", CALMClassifier(geometry="whitened"))]
    if args.every_method:
        rows = [(name, calm.methods.get(name).make()) for name in calm.methods.names(feature_only=True)]
    if args.only:
        rows = [row for row in rows if row[0] in args.only]
    for name, clf in rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the probes' convergence warnings on synthetic data
            fit_s, fit_cpu, _ = best_of(args.repeats, lambda: clf.fit(X, y))
        pred_s, pred_cpu, pred = best_of(args.repeats, lambda: clf.predict(Xq))
        print(f"{name:16s} fit {fit_s:6.3f} ({fit_cpu:5.2f})  predict {pred_s:6.3f} ({pred_cpu:5.2f})  "
              f"fit+predict {fit_s + pred_s:6.3f} s  accuracy {np.mean(pred == yq):.3f}")
    if not args.skip_tuning:
        n_configs = len(expand_grid(DEFAULT_GRID))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tune_s, tune_cpu, result = best_of(max(1, args.repeats - 1), lambda: tune_calm(X, y))
        print(f"tune_calm        {n_configs} configs {tune_s:6.3f} s ({tune_cpu:5.2f})  best {result.best_params}  "
              f"LOO accuracy {result.best_score:.3f}")

if __name__ == "__main__":
    main()

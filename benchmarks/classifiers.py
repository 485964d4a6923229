"""Time the classifiers at a realistic few-shot size (defaults: 50 classes x 40 shots, K=1024 heads
of D=128, 2000 queries) and a 100-configuration tuning grid; print seconds (best of --repeats).

    python benchmarks/classifiers.py               # float16 features, as read from a store
    python benchmarks/classifiers.py --dtype float32

Targets on a 2-core CPU: CALM fit + predict under 1 s, the default tuning grid under 10 s.
The synthetic features have a few informative heads per class, so accuracies are printed too.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from typing import Any, Callable

import numpy as np
import torch

from calm.classifiers import (DEFAULT_GRID, CALMClassifier, ConcatCentroidClassifier, SAVClassifier,
                              UniformVoteClassifier, tune_calm)


def synthetic(classes: int, shots: int, queries: int, heads: int, dim: int, dtype: torch.dtype,
              seed: int = 0) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Support and query features: a shared offset per head, plus a class direction whose strength
    differs by head and class, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    offset = torch.randn(heads, dim, generator=gen)
    strength = torch.rand(heads, classes, 1, generator=gen).pow(4) * 2.0
    directions = torch.randn(heads, classes, dim, generator=gen) * strength

    def draw(labels: np.ndarray) -> torch.Tensor:
        x = torch.randn(len(labels), heads, dim, generator=gen) * 1.5
        x += offset
        x += directions[:, torch.from_numpy(labels)].transpose(0, 1)
        return x.to(dtype)

    y = np.repeat(np.arange(classes), shots)
    yq = np.arange(queries) % classes
    return draw(y), y, draw(yq), yq


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--shots", type=int, default=40)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--heads", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-tuning", action="store_true")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    print(f"data: {args.classes} classes x {args.shots} shots, {args.queries} queries, K={args.heads}, "
          f"D={args.dim}, {args.dtype}")
    X, y, Xq, yq = synthetic(args.classes, args.shots, args.queries, args.heads, args.dim,
                             getattr(torch, args.dtype))
    X, Xq = X.numpy(), Xq.numpy()
    rows = [("CALM", CALMClassifier()), ("SAV", SAVClassifier()), ("uniform vote", UniformVoteClassifier()),
            ("concat centroid", ConcatCentroidClassifier())]
    for name, clf in rows:
        fit_s, _ = best_of(args.repeats, lambda: clf.fit(X, y))
        pred_s, pred = best_of(args.repeats, lambda: clf.predict(Xq))
        print(f"{name:16s} fit {fit_s:6.3f} s  predict {pred_s:6.3f} s  fit+predict {fit_s + pred_s:6.3f} s"
              f"  accuracy {np.mean(pred == yq):.3f}")
    if not args.skip_tuning:
        n_configs = int(np.prod([len(v) for v in DEFAULT_GRID.values()]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tune_s, result = best_of(max(1, args.repeats - 1), lambda: tune_calm(X, y))
        print(f"tune_calm        {n_configs} configs {tune_s:6.3f} s  best {result.best_params}  "
              f"LOO accuracy {result.best_score:.3f}")


if __name__ == "__main__":
    main()

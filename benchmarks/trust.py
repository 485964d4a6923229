"""Trust benchmark on saved dev features: calibration (ECE/NLL before and after), 90% conformal
coverage and set size (smoothed, the default, and conservative), the shift check of the queries,
and the open-set AUROC of each rejection score, per method and shot count, mean over seeds.

    PYTHONPATH=src python benchmarks/trust.py /work/devfeatures/spoken-numbers.npz /work/devfeatures/spoof.npz

Each .npz holds X [N, K, D], y, ids and split: with a "query" split (a shifted set), support sets
of K shots per class are drawn from the "support" split with each seed and the queries are the
whole query split; without one (in-domain), the support is drawn from every clip and the queries
are all the others.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from calm import methods as registry
from calm.classifiers.openset import OPEN_SCORES
from calm.classifiers.trust import DEFAULT_OPEN_SCORE, Calibrated
from calm.evaluation import calibration
from calm.evaluation.trust import TrustRecorder, column_index

SHOWN = ("calibrated", "ece_uncalibrated", "ece", "nll_uncalibrated", "nll", "coverage_90", "set_size_90", "auroc",
         "fpr_at_95_tpr", "unknown_rejected", "known_rejected", "atypical", "shifted", "coverage_90_conservative",
         "set_size_90_conservative")
OPEN_KINDS = (*OPEN_SCORES, "typicality")
"""Open-set scores compared: the calibrated class scores' three, the whitened distances' three, and
the model-free typicality."""


def draw_support(y: np.ndarray, pool: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Row indices: ``shots`` random items of each class among the ``pool`` rows (fewer if short)."""
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(pool[y[pool] == c])[:shots] for c in np.unique(y[pool])]
    return np.sort(np.concatenate(rows))


def run(path: Path, methods: list[str], shots: list[int], seeds: int, open_score: str) -> None:
    data = np.load(path, allow_pickle=False)
    X, y, split = data["X"], data["y"].astype(str), data["split"].astype(str)
    classes = sorted(set(y.tolist()))
    task = "spoof" if set(classes) == {"bonafide", "spoof"} else "multiclass"
    fixed = bool((split == "query").any())
    pool = np.flatnonzero(split == "support") if fixed else np.arange(len(y))
    print(f"\n## {path.stem}: {len(classes)} classes, support pool {len(pool)}, "
          f"queries {int((split == 'query').sum()) if fixed else 'the rest'}, features {X.shape}\n")
    print("| method | shots | " + " | ".join(SHOWN) + " | " + " | ".join(f"auroc_{k}" for k in OPEN_KINDS)
          + " | seconds |")
    print("|---|---|" + "---|" * (len(SHOWN) + len(OPEN_KINDS) + 1))
    for name in methods:
        for k in shots:
            recorder = TrustRecorder(task, classes)
            rows, started = [], time.perf_counter()
            for seed in range(seeds):
                support = draw_support(y, pool, k, seed)
                queries = np.flatnonzero(split == "query") if fixed else np.setdiff1d(np.arange(len(y)), support)
                Xs, ys, Xq, yq = X[support], y[support], X[queries], y[queries].tolist()
                make = registry.get(name).make
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    clf = Calibrated(make(), open_score=open_score).fit(Xs, ys)
                    rows.append(recorder.score(name, k, seed, clf, make, Xs, ys.tolist(), Xq, yq))
                    if clf.threshold_ is not None:  # the sets without smoothing, for comparison
                        conservative = clf.set_mask(Xq, 0.9, smooth=False)
                        truth = column_index(clf, yq)
                        rows[-1]["coverage_90_conservative"] = calibration.coverage(conservative, truth)
                        rows[-1]["set_size_90_conservative"] = calibration.mean_set_size(conservative)
            cells = [_mean([r.get(m) for r in rows]) for m in SHOWN]
            cells += [_mean([r["auroc_by_score"].get(s) for r in rows if "auroc_by_score" in r]) for s in OPEN_KINDS]
            print(f"| {name} | {k} | " + " | ".join(cells) + f" | {(time.perf_counter() - started) / seeds:.1f} |",
                  flush=True)


def _mean(values: list) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.3f}" if values else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", nargs="+", type=Path, help=".npz dev feature files")
    parser.add_argument("--methods", nargs="+", default=["calm", "sav"], choices=registry.names(feature_only=True))
    parser.add_argument("--shots", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--open-score", choices=OPEN_SCORES, default=DEFAULT_OPEN_SCORE,
                        help="the rejection score whose threshold gives the rejected shares (default: calm's)")
    args = parser.parse_args()
    for path in args.features:
        run(path, args.methods, args.shots, args.seeds, args.open_score)


if __name__ == "__main__":
    main()

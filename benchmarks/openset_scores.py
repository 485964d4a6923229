r"""Candidate open-set ("unknown") scores on saved dev features: AUROC and FPR at 95% TPR per dev
set, the default method at a fixed shot count, the benchmark's open-set protocol (the classes
``held_out_classes(seed)`` drops are the unknowns), mean over support draws.

    F=/work/cache-shared/devfeatures
    PYTHONPATH=src python benchmarks/openset_scores.py $F/{instruments,languages,drums}.npz \
        $F/{instruments-shift,languages-shift,drums-shift,spoken-numbers}.npz --shots 5 --seeds 0 10 --cache DIR

Per draw it fits ``Calibrated(DefaultClassifier())`` on the support without the dropped classes
and keeps, for the queries and for every support clip scored out of fold (by copies fitted
without its fold, as calm's calibration does), the calibrated class scores and the whitened head
distances: to each class mean per head, to the mean of the class means per head, and to the
nearest support clips. ``--cache`` keeps them per draw (.npz), so the scores below can be changed
and recomputed without refitting. Scores, higher meaning more known:

* ``energy``, ``msp``, ``margin``: of the calibrated class scores;
* ``whitened`` (minus the nearest class mean's squared distance summed over heads), ``whitened-pred``
  (the same for the one class nearest over all heads), ``vote`` (share of heads voting for the most
  voted class), ``knn1..3`` (minus the mean squared distance to the k nearest support clips),
  ``cos-sum`` (the largest whitened cosine to a class mean, summed over heads);
* ``rmd``: relative Mahalanobis, sum over heads of (distance to the mean of the class means minus
  distance to the nearest class mean);
* per head against the out-of-fold support: ``zsum`` (distances z-scored per head, summed),
  ``pmean`` (mean over heads of the conformal p-value of the distance), ``fisher`` (sum of log
  p-values), ``zsum-rel`` and ``whitened-rel`` (heads weighted by their out-of-fold accuracy above
  chance);
* ``typicality`` (model-free, :mod:`calm.classifiers.typicality`);
* pairs ``a+b`` (each standardised by its out-of-fold mean and sd, then summed: ``energy+knn1`` is
  calm's ``energy+knn``) and ``a&b`` (the sum of their conformal p-values among the out-of-fold
  values: ``energy&pmean`` is calm's ``energy+heads``).

A row is marked ✗ when it loses to the energy under shift: a lower mean over the shifted sets, or
more than 0.01 lower on any one of them.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

from calm.classifiers._cosine import FeatureBlocks
from calm.classifiers.default import DefaultClassifier
from calm.classifiers.openset import HeadDistances
from calm.classifiers.trust import Calibrated, class_scores, fold_assignment
from calm.classifiers.typicality import sketch, typicality
from calm.evaluation.calibration import auroc, fpr_at_tpr
from calm.evaluation.trust import held_out_classes
from trust import draw_support

PAIRS = [("energy", x) for x in ("knn1", "knn2", "whitened", "rmd", "zsum", "vote", "cos-sum", "typicality", "pmean")]
PAIRS += [("vote", "knn1"), ("rmd", "knn1"), ("msp", "knn1"), ("zsum", "knn1")]


def primitives(distances: HeadDistances, X: np.ndarray) -> dict[str, np.ndarray]:
    """Whitened-space quantities of clips X against a fitted support: D [N, K, C] squared distances
    to the class means, cos [N, K, C] cosines to them, B [N, K] squared distances to the mean of the
    class means, NN [N, 3] the three smallest squared distances to support clips (all heads)."""
    z = distances._whitened(FeatureBlocks(X))  # [N, K, D]
    centres = torch.from_numpy(distances.centres_).to(z.dtype)  # [K, C, D]
    per_head = z.transpose(0, 1)
    D = torch.cdist(per_head, centres).square().permute(1, 0, 2)
    unit = torch.nn.functional.normalize
    cos = torch.einsum("kid,kcd->ikc", unit(per_head, dim=-1), unit(centres, dim=-1))
    B = (z - centres.mean(1)[None]).square().sum(-1)
    support = torch.from_numpy(distances.support_).to(z.dtype).flatten(1)
    NN = torch.sort(torch.cdist(z.flatten(1), support).square(), 1).values[:, :3]
    return {k: v.float().numpy() for k, v in dict(D=D, cos=cos, B=B, NN=NN).items()}


def fit_draw(X: np.ndarray, y: np.ndarray, split: np.ndarray, shots: int, seed: int) -> dict[str, np.ndarray]:
    """Primitives of one draw: ``q_*`` for the queries, ``o_*`` for the support scored out of fold."""
    classes = sorted(set(y.tolist()))
    fixed = bool((split == "query").any())
    pool = np.flatnonzero(split == "support") if fixed else np.arange(len(y))
    support = draw_support(y, pool, shots, seed)
    queries = np.flatnonzero(split == "query") if fixed else np.setdiff1d(np.arange(len(y)), support)
    dropped = set(held_out_classes(classes, seed))
    kept = support[[y[i] not in dropped for i in support]]
    Xs, ys, Xq = X[kept], y[kept], X[queries]
    known_classes = sorted(set(ys.tolist()))
    labels = np.array([known_classes.index(v) for v in ys])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = Calibrated(DefaultClassifier(), open_score="energy").fit(Xs, ys)
        q = primitives(HeadDistances().fit(Xs, labels, True, like=clf.estimator_), Xq)
        q["logits"], q["typ"] = clf.calibrated_logits(Xq), typicality(clf.support_sketch_, sketch(Xq))
        folds = fold_assignment(labels, 5, 0)
        held_parts: dict[str, list[np.ndarray]] = {}
        for fold in range(folds.max() + 1):
            held, train = np.flatnonzero(folds == fold), np.flatnonzero(folds != fold)
            model = DefaultClassifier().fit(Xs[train], ys[train])
            part = primitives(HeadDistances().fit(Xs[train], labels[train], True, like=model), Xs[held])
            part["logits"] = class_scores(model, Xs[held], clf.logit_source_) / clf.temperature_
            part["typ"] = typicality(sketch(Xs[train]), sketch(Xs[held]))
            part["idx"] = held
            for key, value in part.items():
                held_parts.setdefault(key, []).append(value)
    o = {key: np.concatenate(value) for key, value in held_parts.items()}
    order = np.argsort(o.pop("idx"))
    return {"known": np.array([v not in dropped for v in y[queries]]), "slab": labels,
            **{"q_" + k: v for k, v in q.items()}, **{"o_" + k: v[order] for k, v in o.items()}}


def _lse(logits: np.ndarray) -> np.ndarray:
    top = logits.max(1)
    return top + np.log(np.exp(logits - top[:, None]).sum(1))


def base_scores(p: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The single candidate scores of primitives ``p``; ``ref``: the out-of-fold support's."""
    D = p["D"].astype(np.float64)
    proba = np.exp(p["logits"] - p["logits"].max(1, keepdims=True))
    ranked = np.sort(proba / proba.sum(1, keepdims=True), 1)
    nearest = D.min(2)  # [N, K]
    live = ref["D"].std(axis=(0, 2)) > 0
    out = {"energy": _lse(p["logits"]), "msp": ranked[:, -1], "margin": ranked[:, -1] - ranked[:, -2],
           "whitened": -nearest.sum(1), "whitened-pred": -D[np.arange(len(D)), :, D.sum(1).argmin(1)].sum(1)}
    votes = D[:, live].argmin(2)
    out["vote"] = np.array([np.bincount(v, minlength=D.shape[2]).max() for v in votes]) / live.sum()
    for k in (1, 2, 3):
        out[f"knn{k}"] = -p["NN"][:, :k].mean(1)
    out["rmd"] = -(nearest - p["B"]).sum(1)
    out["cos-sum"] = p["cos"].max(2).sum(1)
    held = ref["D"].astype(np.float64).min(2)  # [n, K]
    mean, sd = held.mean(0), held.std(0)
    sd[sd == 0] = 1
    z = (nearest - mean) / sd
    out["zsum"] = -z[:, live].sum(1)
    p_head = (1 + (held[None] >= nearest[:, None]).sum(1)) / (len(held) + 1)  # [N, K]
    out["pmean"] = p_head[:, live].mean(1)
    out["fisher"] = np.log(p_head[:, live]).sum(1)
    accuracy = (ref["D"].argmin(2) == ref["slab"][:, None]).mean(0)
    weight = np.clip(accuracy - 1.0 / D.shape[2], 0, None)
    weight = weight / weight.sum() if weight.sum() > 0 else np.full(len(weight), 1.0 / len(weight))
    out["zsum-rel"], out["whitened-rel"] = -(z * weight).sum(1), -(nearest * weight).sum(1)
    out["typicality"] = p["typ"]
    return out


def candidates(draw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every candidate score of the queries of one draw."""
    q = {k[2:]: v for k, v in draw.items() if k.startswith("q_")}
    o = {k[2:]: v for k, v in draw.items() if k.startswith("o_")}
    o["slab"] = draw["slab"]
    queries, held = base_scores(q, o), base_scores(o, o)
    out = dict(queries)
    for a, b in PAIRS:
        out[f"{a}+{b}"] = sum((queries[s] - held[s].mean()) / (held[s].std() or 1.0) for s in (a, b))
        out[f"{a}&{b}"] = sum((1 + (held[s][None] <= queries[s][:, None]).sum(1)) / (len(held[s]) + 1) for s in (a, b))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", nargs="+", type=Path, help=".npz dev feature files (with 3 or more classes)")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--seeds", nargs=2, type=int, default=[0, 10], metavar=("FIRST", "STOP"))
    parser.add_argument("--cache", type=Path, help="folder for the per-draw primitives")
    args = parser.parse_args()
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    names = [path.stem for path in args.features]
    for path in args.features:
        data = np.load(path, allow_pickle=False)
        X, y, split = data["X"], data["y"].astype(str), data["split"].astype(str)
        for seed in range(*args.seeds):
            cached = args.cache / f"{path.stem}_{args.shots}_{seed}.npz" if args.cache else None
            if cached is not None and cached.exists():
                draw = dict(np.load(cached))
            else:
                draw = fit_draw(X, y, split, args.shots, seed)
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(cached, **draw)
            for name, score in candidates(draw).items():
                results.setdefault(name, {}).setdefault(path.stem, []).append(
                    (auroc(score, draw["known"]), fpr_at_tpr(score, draw["known"])))
    print_table(results, names)


def print_table(results: dict[str, dict[str, list[tuple[float, float]]]], names: list[str]) -> None:
    shifted = [n for n in names if n.endswith("-shift") or n == "spoken-numbers"]
    domain = [n for n in names if n not in shifted]
    mean = {c: {n: np.mean(results[c][n], axis=0) for n in names} for c in results}  # (AUROC, FPR) per set
    print("| score | " + " | ".join(names) + " | mean in-domain | mean shifted | FPR@95 in-domain | FPR@95 shifted |")
    print("|---|" + "---:|" * (len(names) + 4))
    energy = mean["energy"]
    for c in sorted(mean, key=lambda c: -np.mean([mean[c][n][0] for n in domain])):
        row = mean[c]
        loses = (np.mean([row[n][0] for n in shifted]) < np.mean([energy[n][0] for n in shifted])
                 or any(row[n][0] < energy[n][0] - 0.01 for n in shifted))
        cells = [f"{row[n][0]:.3f}" for n in names]
        cells += [f"{np.mean([row[n][i] for n in group]):.3f}" for i in (0, 1) for group in (domain, shifted)]
        print(f"| {c}{' ✗' if loses else ''} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""CALM hyperparameters chosen on the support set alone, by leave-one-out accuracy over a grid.

The leave-one-out cosines of the support set are computed once; each tau turns them into
posteriors once, every scheme's reliabilities come from those, and every (scheme, top_k, tau_w)
weight matrix scores all items in one batched contraction. Item i is scored with its own class's
prototype built without it (as ``reliability="loo"``), and with its own class's weights rebuilt
from reliabilities that leave out item i's own score, so an item never votes for the weights
that judge it. (Other items' posteriors are not recomputed without item i: a second-order
effect.) Items of one-item classes cannot be left out; they are not scored.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch

from calm.classifiers._base import encode_labels
from calm.classifiers._cosine import Block, FeatureBlocks, iter_cosines, posteriors, support_pass, warn_single_shot
from calm.classifiers._reliability import (ReliabilitySums, item_scores, shrink, top_k_mask, weight_logits,
                                           weights_from_logits)
from calm.classifiers.reliability_vote import (CALMClassifier, ReliabilityVote, check_hyperparameters, check_shrinkage,
                                               check_source)

DEFAULT_GRID: dict[str, tuple] = {
    "tau": (0.03, 0.05, 0.07, 0.1, 0.2),
    "tau_w": (0.05, 0.1, 0.3, 1.0, 3.0),
    "top_k": (None, 20),
    "scheme": ("margin_clamped", "prob"),
}
"""100 configurations. Keys left out of a user grid take CALMClassifier's defaults."""

GRID_KEYS = ("tau", "tau_w", "top_k", "scheme")


@dataclass
class TuningResult:
    """The chosen hyperparameters and every configuration's leave-one-out score.

    ``scores`` has one dict per configuration: tau, tau_w, top_k, scheme, ``accuracy`` (LOO accuracy
    on the scored support items) and ``true_share`` (mean share of the soft-vote score that goes to
    the true class). The best configuration has the highest accuracy, then the highest true_share,
    then comes first in the grid.
    """

    best_params: dict[str, Any]
    best_score: float
    n_scored: int
    scores: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TuningResult":
        return cls(dict(data["best_params"]), float(data["best_score"]), int(data["n_scored"]),
                   [dict(s) for s in data["scores"]])


def expand_grid(grid: Mapping[str, Sequence] | None) -> list[dict[str, Any]]:
    """Validated configurations, the cartesian product of the grid's values (tau, scheme, top_k, tau_w)."""
    grid = DEFAULT_GRID if grid is None else grid
    unknown = set(grid) - set(GRID_KEYS)
    if unknown:
        raise ValueError(f"unknown grid key(s) {sorted(unknown)}; use {GRID_KEYS}")
    defaults = CALMClassifier().get_params()
    values = {}
    for key in GRID_KEYS:
        options = list(grid.get(key, [defaults[key]]))
        if not options:
            raise ValueError(f"grid[{key!r}] is empty")
        values[key] = list(dict.fromkeys(options))
    configs = [check_hyperparameters(tau, tau_w, scheme, top_k) for tau, scheme, top_k, tau_w in
               itertools.product(values["tau"], values["scheme"], values["top_k"], values["tau_w"])]
    return configs


class CosineBuffer:
    """Collects the support set's leave-one-out cosine blocks into one tensor ``cos`` [C, K, N]
    (classes first, so each class's [K, N] slice feeds one batched matmul)."""

    def __init__(self, features: FeatureBlocks, n_classes: int):
        n_items, n_heads, _ = features.shape
        self.cos = torch.empty(n_classes, n_heads, n_items, dtype=features.dtype)
        self._buffer: torch.Tensor | None = None

    def add(self, block: Block) -> None:
        items, cols, cos = block
        self.cos[:, cols, items] = cos.transpose(0, 1)

    def posteriors(self, tau: float) -> torch.Tensor:
        """p_k(c | x_i) for every support item, [C, K, N], in a buffer reused by the next call."""
        if self._buffer is None:
            self._buffer = torch.empty_like(self.cos)
        logits = torch.mul(self.cos, 1.0 / tau, out=self._buffer)
        return posteriors(logits, 0, inplace=True, bound=1.0 / tau)


def tune_calm(X: Any, y: Any, grid: Mapping[str, Sequence] | None = None, *, shrinkage: float = 0.0) -> TuningResult:
    """Choose tau, tau_w, top_k and scheme for CALM by leave-one-out accuracy on (X, y) alone.

    Args:
        X: support features [N, K, D]; y: their labels.
        grid: values to try per key (tau, tau_w, top_k, scheme); None: :data:`DEFAULT_GRID`.
        shrinkage: CALM's shrinkage alpha, fixed during the search.
    """
    configs = expand_grid(grid)
    alpha = check_shrinkage(shrinkage)
    features = FeatureBlocks(X)
    classes, labels = encode_labels(y, len(features))
    warn_single_shot("tune_calm", "scores", classes, torch.bincount(labels, minlength=len(classes)))
    store = CosineBuffer(features, len(classes))
    stats = support_pass(features, labels, len(classes), "loo", store.add)
    if bool(stats.constant.all()):
        raise ValueError("tune_calm: every head is constant over the support set")
    return search(store, labels, stats.counts, ~stats.constant, configs, alpha)


def search(store: CosineBuffer, labels: torch.Tensor, counts: torch.Tensor, active: torch.Tensor,
           configs: list[dict[str, Any]], alpha: float) -> TuningResult:
    """Leave-one-out score of every configuration from the support set's LOO cosines."""
    n_class = counts[labels]
    scored = n_class >= 2
    if not bool(scored.any()):
        raise ValueError("tuning needs at least one class with two or more support items")
    left = (n_class - 1).clamp_min(1)
    rows = torch.arange(len(labels))
    accuracy: dict[int, float] = {}
    share: dict[int, float] = {}
    for tau in dict.fromkeys(c["tau"] for c in configs):
        P = store.posteriors(tau)  # [C, K, N]
        members = [i for i, c in enumerate(configs) if c["tau"] == tau]
        schemes = tuple(dict.fromkeys(configs[i]["scheme"] for i in members))
        per_item = item_scores(P, labels, schemes + ("prob",), class_dim=0)  # scheme -> [K, N]
        p_true = per_item["prob"].T.to(torch.float64)
        order, weights, own_scores = [], [], []
        for scheme in schemes:
            m = per_item[scheme].T.to(torch.float64)  # [N, K]
            sums = torch.zeros(len(counts), m.shape[1], dtype=torch.float64).index_add_(0, labels, m)
            raw = sums / counts.unsqueeze(1)
            r = shrink(raw, counts, alpha, active)
            r_own = shrink((sums[labels] - m) / left.unsqueeze(1), left, alpha, active, mean=raw[:, active].mean())
            logits: dict[Any, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
            for i in members:
                if configs[i]["scheme"] != scheme:
                    continue
                top_k, tau_w = configs[i]["top_k"], configs[i]["tau_w"]
                if top_k not in logits:
                    own_logits = weight_logits(r_own, scheme, top_k_mask(r_own, top_k, active))
                    logits[top_k] = (weight_logits(r, scheme, top_k_mask(r, top_k, active)), own_logits,
                                     torch.isneginf(own_logits.amax(-1, keepdim=True)))
                class_logits, own_logits, own_empty = logits[top_k]
                order.append(i)
                weights.append(weights_from_logits(class_logits, tau_w, active))
                w_own = weights_from_logits(own_logits, tau_w, active, own_empty)
                own_scores.append(torch.linalg.vecdot(w_own, p_true))
        stacked = torch.stack(weights, dim=1).to(P.dtype)  # [C, M, K]
        scores = torch.bmm(stacked, P).permute(1, 2, 0).to(torch.float64)  # [M, N, C]
        own = torch.stack(own_scores)  # [M, N]
        scores[:, rows, labels] = torch.where(scored, own, scores[:, rows, labels])
        correct = (scores.argmax(2) == labels)[:, scored].to(torch.float64).mean(1)
        true_share = (scores[:, rows, labels] / scores.sum(2))[:, scored].mean(1)
        for j, i in enumerate(order):
            accuracy[i], share[i] = float(correct[j]), float(true_share[j])
    table = [{**c, "accuracy": accuracy[i], "true_share": share[i]} for i, c in enumerate(configs)]
    best = max(range(len(configs)), key=lambda i: (accuracy[i], share[i], -i))
    return TuningResult(dict(configs[best]), accuracy[best], int(scored.sum()), table)


class TunedCALMClassifier(ReliabilityVote):
    """CALM whose tau, tau_w, top_k and scheme are chosen inside ``fit`` by :func:`tune_calm` on the
    support set (never on queries), then fit as :class:`CALMClassifier` with them.

    Args:
        grid: values to try per key (tau, tau_w, top_k, scheme); None: :data:`DEFAULT_GRID`.
        shrinkage, reliability: as in :class:`CALMClassifier` (the search always uses the support
            set's leave-one-out scores; ``reliability`` only sets how the final weights are estimated).

    Fitted attributes add ``best_params_`` and ``tuning_`` (a :class:`TuningResult`). With one
    support item in every class nothing can be left out: ``fit`` raises ValueError rather than
    pretend to tune.
    """

    _fitted_meta = ("best_params_", "tuning_")

    def __init__(self, grid: Mapping[str, Sequence] | None = None, shrinkage: float = 0.0, reliability: str = "loo",
                 geometry: str | dict = "cosine"):
        self.geometry = geometry
        self.grid = grid
        self.shrinkage = shrinkage
        self.reliability = reliability

    def _validate_params(self) -> None:
        expand_grid(self.grid)
        check_shrinkage(self.shrinkage)
        check_source(self.reliability)

    def _hyperparameters(self) -> dict[str, Any]:
        return dict(self.best_params_)

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "TunedCALMClassifier":
        """Tune on the support set by leave-one-out, then fit CALM with the best configuration."""
        self._validate_params()
        configs = expand_grid(self.grid)
        source = self._check_validation(X_val, y_val)
        alpha = check_shrinkage(self.shrinkage)
        features, labels = self._start_fit(X, y)
        n_classes = len(self.classes_)
        warn_single_shot(type(self).__name__, "scores", self.classes_, torch.bincount(labels, minlength=n_classes))
        store = CosineBuffer(features, n_classes)
        stats = self._fit_prototypes(features, labels, "loo", store.add)
        self.tuning_ = search(store, labels, stats.counts, ~stats.constant, configs, alpha)
        best = self.best_params_ = dict(self.tuning_.best_params)
        if source == "holdout":
            sums = self._holdout_sums(features, X_val, y_val, best["tau"], best["scheme"])
        else:
            sums = ReliabilitySums(labels, n_classes, self.n_heads_in_, best["tau"], (best["scheme"],))
            if source == "loo":
                scores = item_scores(store.posteriors(best["tau"]), labels, (best["scheme"],), class_dim=0)
                sums.add_scores(slice(None), slice(None), scores)
            else:
                for block in iter_cosines(features, self._prototypes()):
                    sums.add(block)
        self._set_weights(sums, tau_w=best["tau_w"], scheme=best["scheme"], top_k=best["top_k"])
        return self

    def _get_meta(self) -> dict[str, Any]:
        return {"best_params_": self.best_params_, "tuning_": self.tuning_.to_dict()}

    def _set_meta(self, meta: Mapping[str, Any]) -> None:
        self.best_params_ = dict(meta["best_params_"])
        self.tuning_ = TuningResult.from_dict(meta["tuning_"])


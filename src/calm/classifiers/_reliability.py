"""CALM's reliability and weights: per-item reliability scores, their class means, shrinkage,
and the per-class weights over heads (with optional top-k). Functions that work along heads
take heads on the last axis, so the same code serves [C, K] matrices and the tuner's per-item
[N, K] rows.

Both weightings are a softmax over heads: margin_clamped's r^(1/tau_w) / sum r^(1/tau_w) equals
softmax(log r / tau_w) (log 0 = -inf), the other schemes use softmax(r / tau_w). So the logits
(log r or r, masked to the kept heads) are computed once and each tau_w costs one softmax.
"""

from __future__ import annotations

from typing import Iterable

import torch

from calm.classifiers._cosine import Block, posteriors

SCHEMES = ("margin_clamped", "margin", "prob", "brier")


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def item_scores(P: torch.Tensor, own: torch.Tensor, schemes: Iterable[str], class_dim: int,
                keep: bool = True) -> dict[str, torch.Tensor]:
    """Per-head, per-item reliability scores [K, n] from posteriors P whose last axis is items
    (labels ``own``) and ``class_dim`` classes: P [K, C, n] (class_dim 1) or [C, K, n] (class_dim 0).

    margin_clamped: max(0, p(c) - max_{c' != c} p(c')); margin: unclamped; prob: p(c);
    brier: 2 p(c) - sum_c' p(c')^2, with c the item's true class. P is left as it was unless
    ``keep`` is False (then the margins may overwrite it).
    """
    schemes = tuple(schemes)
    shape = [1, 1, -1]
    size = list(P.shape)
    size[class_dim] = 1
    index = own.view(shape).expand(size)
    p_true = P.gather(class_dim, index)
    out: dict[str, torch.Tensor] = {"prob": p_true.squeeze(class_dim)}
    if "brier" in schemes:
        out["brier"] = out["prob"] * 2 - torch.linalg.vector_norm(P, dim=class_dim).square()
    if "margin" in schemes or "margin_clamped" in schemes:
        other = P.scatter_(class_dim, index, float("-inf")).amax(class_dim)
        if keep:
            P.scatter_(class_dim, index, p_true)
        out["margin"] = out["prob"] - other
        out["margin_clamped"] = out["margin"].clamp_min(0.0)
    return {s: out[s] for s in schemes}


class ReliabilitySums:
    """Accumulates each class's sum of item scores per head, ``sums[scheme]`` [C, K] (float64), over
    reliability items labelled ``labels``; ``counts`` [C] items per class."""

    def __init__(self, labels: torch.Tensor, n_classes: int, n_heads: int, tau: float, schemes: Iterable[str]):
        self.labels = labels
        self.tau = tau
        self.counts = torch.bincount(labels, minlength=n_classes)
        self.sums = {scheme: torch.zeros(n_classes, n_heads, dtype=torch.float64) for scheme in schemes}

    def add(self, block: Block) -> None:
        """Add a block (items, heads, cos [k, C, n]) of cosines (the block's tensor is overwritten)."""
        items, cols, cos = block
        P = posteriors(cos.mul_(1.0 / self.tau), 1, inplace=True, bound=1.0 / self.tau)
        self.add_scores(items, cols, item_scores(P, self.labels[items], tuple(self.sums), class_dim=1, keep=False))

    def add_scores(self, items: slice, cols: slice, scores: dict[str, torch.Tensor]) -> None:
        """Add item scores [k, n] of items ``items`` for heads ``cols``."""
        own = self.labels[items]
        for scheme, value in scores.items():
            self.sums[scheme][:, cols].index_add_(0, own, value.T.to(torch.float64))


def shrink(r: torch.Tensor, counts: torch.Tensor, alpha: float, active: torch.Tensor,
           mean: torch.Tensor | None = None) -> torch.Tensor:
    """r [C, K] <- r n_c/(n_c+alpha) + mean(r) alpha/(n_c+alpha), with n_c = ``counts`` [C] the
    reliability items per row and mean(r) over all rows and the non-constant heads (or ``mean``)."""
    if alpha == 0:
        return r
    mean = r[..., active].mean() if mean is None else mean
    keep = counts.to(r.dtype) / (counts.to(r.dtype) + alpha)
    keep = keep.view(*keep.shape, *([1] * (r.dim() - keep.dim())))
    return r * keep + mean * (1 - keep)


def top_k_mask(r: torch.Tensor, top_k: int | None, active: torch.Tensor) -> torch.Tensor:
    """Boolean [..., K]: the ``top_k`` most reliable active heads along the last axis; among equal
    reliabilities the lower head index wins."""
    mask = active.expand_as(r)
    if top_k is None or top_k >= int(active.sum()):
        return mask.clone()
    keyed = r.masked_fill(~mask, float("-inf"))
    kth = torch.topk(keyed, top_k, dim=-1).values[..., -1:]
    above = keyed > kth
    tied = keyed == kth
    room = top_k - above.sum(-1, keepdim=True)
    return above | (tied & (tied.cumsum(-1) <= room))


def weight_logits(r: torch.Tensor, scheme: str, mask: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax over heads (last axis) gives the weights at tau_w = 1: log r for
    margin_clamped, r for the others; -inf outside ``mask``."""
    base = torch.log(r.clamp_min(0.0)) if scheme == "margin_clamped" else r.clone()
    return base.masked_fill_(~mask, float("-inf"))


def weights_from_logits(logits: torch.Tensor, tau_w: float, active: torch.Tensor,
                        empty: torch.Tensor | None = None) -> torch.Tensor:
    """softmax over heads of logits / tau_w; a row with no finite logit (margin_clamped with no
    positive reliability among its heads; ``empty`` [..., 1] if already known) gets uniform
    weights over the ``active`` heads."""
    empty = torch.isneginf(logits.amax(-1, keepdim=True)) if empty is None else empty
    w = torch.softmax(logits * (1.0 / tau_w), dim=-1)
    if not bool(empty.any()):
        return w
    return torch.where(empty, (active.to(w.dtype) / active.sum()).expand_as(w), w)


def head_weights(r: torch.Tensor, scheme: str, tau_w: float, top_k: int | None,
                 active: torch.Tensor) -> torch.Tensor:
    """Per-row weights over heads (last axis) from reliabilities, with optional per-row top-k.

    margin_clamped: w_k = r_k^(1/tau_w) / sum r^(1/tau_w) over the kept heads (uniform over the
    active heads if none has positive reliability); others: softmax over the kept heads of r/tau_w.
    """
    return weights_from_logits(weight_logits(r, scheme, top_k_mask(r, top_k, active)), tau_w, active)

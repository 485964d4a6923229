"""CALM's reliability and weights: per-item reliability scores, their class means, shrinkage,
and the per-class weights over heads (with optional top-k). Tensors put heads on the last axis
where a function works along heads, so the same code serves [C, K] matrices and the tuner's
per-item [N, K] columns."""

from __future__ import annotations

from typing import Iterable

import torch

from calm.classifiers._cosine import Block, posteriors

SCHEMES = ("margin_clamped", "margin", "prob", "brier")


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def item_scores(P: torch.Tensor, own: torch.Tensor, schemes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Per-head, per-item reliability scores [K, n] for item labels ``own`` [n] from posteriors P [K, n, C].

    margin_clamped: max(0, p(c) - max_{c' != c} p(c')); margin: unclamped; prob: p(c);
    brier: 2 p(c) - sum_c' p(c')^2, with c the item's true class.
    """
    index = own.view(1, -1, 1).expand(P.shape[0], -1, 1)
    p_true = P.gather(2, index).squeeze(2)
    out: dict[str, torch.Tensor] = {}
    for scheme in schemes:
        if scheme in ("margin", "margin_clamped"):
            if "margin" not in out:
                other = P.scatter(2, index, float("-inf")).amax(2)
                out["margin"] = p_true - other
            if scheme == "margin_clamped":
                out[scheme] = out["margin"].clamp_min(0.0)
        elif scheme == "prob":
            out[scheme] = p_true
        else:
            out[scheme] = 2 * p_true - P.square().sum(2)
    return {s: out[s] for s in schemes}


def class_score_sums(blocks: Iterable[Block], labels: torch.Tensor, n_classes: int, n_heads: int,
                     tau: float, schemes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Sums over reliability items of each class of their item scores: scheme -> [C, K] (float64),
    from cosine blocks (items, heads, cos [k, n, C])."""
    schemes = tuple(schemes)
    sums = {scheme: torch.zeros(n_classes, n_heads, dtype=torch.float64) for scheme in schemes}
    for items, cols, cos in blocks:
        own = labels[items]
        for scheme, value in item_scores(posteriors(cos, tau), own, schemes).items():
            sums[scheme][:, cols].index_add_(0, own, value.T.to(torch.float64))
    return sums


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
    """Boolean [..., K]: the ``top_k`` most reliable active heads along the last axis (ties: lower index)."""
    mask = active.expand_as(r).clone()
    if top_k is None or top_k >= int(active.sum()):
        return mask
    order = torch.sort(r.masked_fill(~mask, float("-inf")), dim=-1, descending=True, stable=True).indices
    return torch.zeros_like(mask).scatter_(-1, order[..., :top_k], True)


def weights_from_reliability(r: torch.Tensor, scheme: str, tau_w: float, mask: torch.Tensor,
                             active: torch.Tensor) -> torch.Tensor:
    """Weights over heads (last axis) summing to 1, zero outside ``mask``.

    margin_clamped: w_k = r_k^(1/tau_w) / sum_k' r_k'^(1/tau_w) (computed as (r/max r)^(1/tau_w) so
    sharp powers do not underflow); a row with no positive reliability gets uniform weights over the
    ``active`` heads. Other schemes: softmax over the masked heads of r / tau_w.
    """
    if scheme == "margin_clamped":
        v = r.clamp_min(0.0).masked_fill(~mask, 0.0)
        top = v.amax(-1, keepdim=True)
        ratio = v / top.clamp_min(torch.finfo(v.dtype).tiny)
        w = torch.where(v > 0, torch.exp(torch.log(ratio) * (1.0 / tau_w)), torch.zeros_like(v))
        w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
        uniform = active.to(v.dtype) / active.sum()
        return torch.where(top > 0, w, uniform.expand_as(w))
    return torch.softmax((r * (1.0 / tau_w)).masked_fill(~mask, float("-inf")), dim=-1)


def head_weights(r: torch.Tensor, scheme: str, tau_w: float, top_k: int | None,
                 active: torch.Tensor) -> torch.Tensor:
    """Per-row weights over heads (last axis) from reliabilities, with optional per-row top-k."""
    return weights_from_reliability(r, scheme, tau_w, top_k_mask(r, top_k, active), active)

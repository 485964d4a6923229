"""The cosine geometry every classifier shares, written once.

Prototypes are the raw class means of each head's vectors, L2-normalised per head (so they are
the normalised raw class *sums*). A query is L2-normalised per head, and cos_{k,c}(x) is its dot
product with prototype c of head k. The leave-one-out cosine of support item i against its own
class uses the prototype built without it, in closed form from the raw class sum S_c:

    <q_i, S_c - q_i> / (|q_i| |S_c - q_i|),   |S_c - q_i|^2 = |S_c|^2 - 2 <q_i, S_c> + |q_i|^2

where <q_i, S_c> comes from the same batched matmul as every other cosine. Features (float16
memory maps and torch tensors alike) are read in blocks of a few heads by many items, so memory
stays small, each head's matmul is tall, and no Python loop runs per head; arithmetic is float32,
or float64 when the features are float64. A zero vector has cosine 0 with everything.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from calm.features import HeadFeatures

CONSTANT_TOL = 1e-4
"""A head is constant when the mean resultant length of its normalised support vectors is at least
1 - CONSTANT_TOL (every direction within about 0.8 degrees of the mean): it carries nothing."""

BLOCK_FLOATS = 1 << 19
"""Features are read in blocks of about this many floats (2 MB in float32): all items (up to
BLOCK_FLOATS / D of them) times as many heads as fit, so each head's matmul is tall and the
block's elementwise work stays in cache."""

Block = tuple[slice, slice, torch.Tensor]
"""(items, heads, x): item rows, head positions, and x [heads, items, ...] head-major."""


class Features:
    """A read-only view of [N, K, D] head features (numpy, memmap, torch or HeadFeatures), read in blocks."""

    def __init__(self, X: Any, name: str = "X"):
        if isinstance(X, HeadFeatures):
            X = X.X
        if not isinstance(X, (np.ndarray, torch.Tensor)):
            X = np.asarray(X)
        if X.ndim != 3 or min(X.shape) == 0:
            raise ValueError(f"{name} must be a non-empty array of shape [N, K, D] (items, heads, head dim), "
                             f"got shape {tuple(X.shape)}")
        floating = X.dtype.is_floating_point if isinstance(X, torch.Tensor) else X.dtype.kind == "f"
        if not floating:
            raise ValueError(f"{name} must hold floating-point features, got dtype {X.dtype}")
        self.data = X
        self.name = name
        self.shape: tuple[int, int, int] = tuple(int(s) for s in X.shape)  # type: ignore[assignment]
        wide = X.dtype == torch.float64 if isinstance(X, torch.Tensor) else X.dtype == np.float64
        self.dtype = torch.float64 if wide else torch.float32

    def __len__(self) -> int:
        return self.shape[0]

    def blocks(self, heads: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> Iterator[Block]:
        """Blocks (items, head positions, x) with x [k, n, D] in float, head-major and contiguous.

        ``heads`` selects and orders the heads read (positions then index into it). Raises
        ValueError if a block holds NaN or inf.
        """
        n_total, n_heads, dim = self.shape
        dtype = dtype or self.dtype
        width = n_heads if heads is None else len(heads)
        rows = min(n_total, max(1, BLOCK_FLOATS // dim))
        step = max(1, BLOCK_FLOATS // (rows * dim))
        for r0 in range(0, n_total, rows):
            items = slice(r0, min(r0 + rows, n_total))
            for k0 in range(0, width, step):
                cols = slice(k0, min(k0 + step, width))
                part = self._read(items, cols if heads is None else heads[cols])
                x = torch.empty(part.shape[1], part.shape[0], dim, dtype=dtype).copy_(part.transpose(0, 1))
                yield items, cols, x

    def _read(self, items: slice, heads: slice | torch.Tensor) -> torch.Tensor:
        if isinstance(self.data, torch.Tensor):
            index = heads if isinstance(heads, slice) else heads.to(self.data.device)
            return self.data[items, index].cpu()
        part = self.data[items, heads if isinstance(heads, slice) else heads.numpy()]
        if not part.flags.writeable:  # a read-only memory map: torch wants a writeable buffer
            part = np.array(part)
        return torch.from_numpy(part)


@dataclass
class ClassStats:
    """Raw per-class sums of each head's vectors, class sizes, and which heads are constant."""

    sums: torch.Tensor  # [K, C, D]
    counts: torch.Tensor  # [C] int64
    constant: torch.Tensor  # [K] bool

    def prototypes(self) -> torch.Tensor:
        """Normalised class means per head, [K, C, D] (a class whose sum is zero gets a zero prototype)."""
        return normalise(self.sums)


def normalise(v: torch.Tensor) -> torch.Tensor:
    """L2-normalise along the last axis; zero vectors stay zero."""
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return v / norm.clamp_min(torch.finfo(v.dtype).tiny)


def check_finite(norms: torch.Tensor, features: Features, items: slice) -> None:
    if not bool(torch.isfinite(norms).all()):
        raise ValueError(f"{features.name} holds NaN or inf values (among items {items.start}..{items.stop - 1})")


def class_stats(features: Features, labels: torch.Tensor, n_classes: int) -> ClassStats:
    """One pass over the support set: raw class sums, class sizes, and constant heads."""
    n_items, n_heads, dim = features.shape
    sums = torch.zeros(n_heads, n_classes, dim, dtype=features.dtype)
    resultant = torch.zeros(n_heads, dim, dtype=torch.float64)
    any_nonzero = torch.zeros(n_heads, dtype=torch.bool)
    for items, cols, x in features.blocks():
        norms = torch.linalg.vector_norm(x, dim=-1)  # [k, n]
        check_finite(norms, features, items)
        sums[cols].index_add_(1, labels[items], x)
        inverse = 1.0 / norms.clamp_min(torch.finfo(x.dtype).tiny)
        resultant[cols] += torch.bmm(inverse.unsqueeze(1), x).squeeze(1).to(torch.float64)
        any_nonzero[cols] |= (norms > 0).any(1)
    length = torch.linalg.vector_norm(resultant, dim=-1) / n_items
    constant = (length >= 1.0 - CONSTANT_TOL) | ~any_nonzero
    return ClassStats(sums, torch.bincount(labels, minlength=n_classes), constant)


def iter_cosines(features: Features, prototypes: torch.Tensor, *, heads: torch.Tensor | None = None,
                 loo: tuple[torch.Tensor, ClassStats] | None = None) -> Iterator[Block]:
    """Blocks (items, head positions, cos) with cos [k, n, C]: cosines to every class prototype.

    ``prototypes`` is [K', C, D] (already restricted to ``heads`` when those are given). With
    ``loo=(labels, stats)`` the column of each item's own class is its leave-one-out cosine,
    for classes of at least two items (a one-item class keeps the in-sample cosine).
    """
    dtype = prototypes.dtype
    tiny = torch.finfo(dtype).tiny
    by_head = prototypes.transpose(1, 2)  # [K', D, C]
    if loo is not None:
        labels, stats = loo
        sum_norm = torch.linalg.vector_norm(stats.sums, dim=-1).to(dtype)  # [K, C]
        can_leave = stats.counts >= 2
        rel_tol = 64 * torch.finfo(dtype).eps
    for items, cols, x in features.blocks(heads, dtype):
        norms = torch.linalg.vector_norm(x, dim=-1)  # [k, n]
        check_finite(norms, features, items)
        raw = torch.bmm(x, by_head[cols])  # [k, n, C]: <x, mu_c / |mu_c|>
        cos = raw / norms.clamp_min(tiny).unsqueeze(-1)
        if loo is not None:
            own = labels[items]
            index = own.view(1, -1, 1).expand(cos.shape[0], -1, 1)
            s_norm = sum_norm[cols][:, own]  # [k, n]
            dot = raw.gather(2, index).squeeze(2) * s_norm  # <x_i, S_c>
            sq = norms.square()
            left_sq = (s_norm.square() - 2 * dot + sq).clamp_min(0)
            degenerate = left_sq <= rel_tol * (s_norm + norms).square()
            left = (dot - sq) / (norms * left_sq.sqrt()).clamp_min(tiny)
            left = left.masked_fill(degenerate | (norms == 0), 0.0)
            mixed = torch.where(can_leave[own].unsqueeze(0), left, cos.gather(2, index).squeeze(2))
            cos.scatter_(2, index, mixed.unsqueeze(2))
        yield items, cols, cos


def posteriors(cos: torch.Tensor, tau: float) -> torch.Tensor:
    """p_k(c|x) = softmax over classes of cos / tau."""
    return torch.softmax(cos * (1.0 / tau), dim=-1)


def warn_single_shot(who: str, what: str, classes: np.ndarray, counts: torch.Tensor) -> None:
    """Warn that leave-one-out is impossible for the one-item classes, which fall back to in-sample."""
    single = classes[(counts == 1).numpy()]
    if len(single):
        shown = ", ".join(map(str, single[:5].tolist())) + (" ..." if len(single) > 5 else "")
        warnings.warn(f"{who}: {len(single)} class(es) have a single support item ({shown}), so their "
                      f"{what} cannot be left-one-out; using in-sample values for them", UserWarning, stacklevel=3)


def check_positive(name: str, value: Any) -> float:
    """A finite positive float, or ValueError naming the parameter."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number

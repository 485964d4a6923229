"""The cosine geometry every classifier shares, written once.

Prototypes are the raw class means of each head's vectors, L2-normalised per head (so they are
the normalised raw class *sums*). A query is L2-normalised per head, and cos_{k,c}(x) is its dot
product with prototype c of head k. The leave-one-out cosine of support item i against its own
class uses the prototype built without it, in closed form from the raw class sum S_c:

    <q_i, S_c - q_i> / (|q_i| |S_c - q_i|),   |S_c - q_i|^2 = |S_c|^2 - 2 <q_i, S_c> + |q_i|^2

where <q_i, S_c> comes from the same batched matmul as every other cosine. FeatureBlocks (float16
memory maps and torch tensors alike) are read in blocks of a few heads by many items, so memory
stays small, each head's matmul is tall, and no Python loop runs per head; arithmetic is float32,
or float64 when the features are float64. A zero vector has cosine 0 with everything.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from calm.features import HeadFeatures

CONSTANT_TOL = 1e-4
"""A head is constant when the mean resultant length of its normalised support vectors is at least
1 - CONSTANT_TOL (every direction within about 0.8 degrees of the mean): it carries nothing."""

BLOCK_FLOATS = 1 << 21
"""FeatureBlocks are read in blocks of about this many floats (8 MB in float32): all items (up to
BLOCK_FLOATS / D of them) times as many heads as fit, so each head's matmul is tall and the
block's elementwise work stays in the last-level cache."""

Block = tuple[slice, slice, torch.Tensor]
"""(items, heads, tensor): item rows, head positions, and a head-major tensor: features x
[k, n, D], or cosines [k, C, n] (classes before items: the matmul is faster that way round and
softmax over classes reduces across contiguous rows). The tensor lives in a buffer that the next
block reuses: use it (or copy it) before asking for the next."""


class Scratch:
    """Reusable buffers by name. A loop over blocks takes its working tensors from here, so it
    allocates once instead of once per block (a fresh multi-megabyte tensor page-faults on every
    first touch, which costs as much as the arithmetic)."""

    def __init__(self) -> None:
        self._flat: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A contiguous tensor of ``shape`` (contents undefined), reusing the buffer ``name``."""
        numel = math.prod(shape)
        flat = self._flat.get((name, dtype))
        if flat is None or flat.numel() < numel:
            flat = self._flat[name, dtype] = torch.empty(numel, dtype=dtype)
        return flat[:numel].view(shape)


class FeatureBlocks:
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
        if isinstance(X, np.ndarray):
            X = _as_tensor(X)
        self.data = X
        self.name = name
        self.shape: tuple[int, int, int] = tuple(int(s) for s in X.shape)  # type: ignore[assignment]
        self.dtype = torch.float64 if X.dtype == torch.float64 else torch.float32

    def __len__(self) -> int:
        return self.shape[0]

    def blocks(self, heads: torch.Tensor | None = None, dtype: torch.dtype | None = None,
               whole: bool = False) -> Iterator[Block]:
        """Blocks (items, head positions, x) with x [k, n, D] float, head-major and contiguous.

        ``heads`` selects and orders the heads read (positions then index into it); ``whole``
        puts every item in each block (heads one at a time if need be).
        """
        n_total, n_heads, dim = self.shape
        dtype = dtype or self.dtype
        width = n_heads if heads is None else len(heads)
        rows = n_total if whole else min(n_total, max(1, BLOCK_FLOATS // dim))
        step = max(1, BLOCK_FLOATS // (rows * dim))
        scratch = Scratch()
        for r0 in range(0, n_total, rows):
            items = slice(r0, min(r0 + rows, n_total))
            for k0 in range(0, width, step):
                cols = slice(k0, min(k0 + step, width))
                yield items, cols, self._read(items, cols if heads is None else heads[cols], dtype, scratch)

    def _read(self, items: slice, heads: slice | torch.Tensor, dtype: torch.dtype, scratch: Scratch) -> torch.Tensor:
        """The block [k, n, D] as contiguous ``dtype``: transposed in the stored dtype first, then
        cast (casting and transposing in one copy is many times slower for float16)."""
        part = self.data[items, heads if isinstance(heads, slice) else heads.to(self.data.device)].transpose(0, 1)
        if part.device.type != "cpu":
            part = part.contiguous().cpu()
        x = scratch.get("x", tuple(part.shape), dtype)
        if part.dtype == dtype:
            return x.copy_(part)
        return x.copy_(scratch.get("stored", tuple(part.shape), part.dtype).copy_(part))


def _as_tensor(X: np.ndarray) -> torch.Tensor:
    """A torch view of a numpy array, memory maps included (no copy; features are only read).
    Layouts torch cannot view (negative strides, other byte orders or float widths) are copied."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        try:
            return torch.from_numpy(X)
        except (TypeError, ValueError):
            wide = X.dtype.itemsize > 4
            return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64 if wide else np.float32))


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


def cosines(x: torch.Tensor, prototypes: torch.Tensor, scale: float = 1.0,
            loo: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
            norms: torch.Tensor | None = None, scratch: Scratch | None = None) -> torch.Tensor:
    """scale * cos [k, C, n] of x [k, n, D] with normalised prototypes [k, C, D].

    With ``loo=(labels [n], sums [k, C, D], counts [C])`` each item's own-class entry is its
    leave-one-out cosine (items of one-item classes keep the in-sample cosine). ``norms`` [k, n]
    are x's norms if already known; the result lives in ``scratch``'s "cos" buffer if given.
    """
    tiny = torch.finfo(x.dtype).tiny
    norms = torch.linalg.vector_norm(x, dim=-1) if norms is None else norms  # [k, n]
    shape = (x.shape[0], prototypes.shape[1], x.shape[1])
    raw = torch.empty(shape, dtype=x.dtype) if scratch is None else scratch.get("cos", shape, x.dtype)
    torch.bmm(prototypes, x.transpose(1, 2), out=raw)  # [k, C, n]: <mu_c / |mu_c|, x>
    if loo is not None:
        labels, sums, counts = loo
        index = labels.view(1, 1, -1).expand(shape[0], 1, -1)
        s_norm = torch.linalg.vector_norm(sums, dim=-1).gather(1, labels.view(1, -1).expand(shape[0], -1))
        dot = raw.gather(1, index).squeeze(1) * s_norm  # <x_i, S_c>
    inverse = (scale / norms.clamp_min(tiny)).masked_fill_(norms == 0, 0.0)
    out = raw.mul_(inverse.unsqueeze(1))
    if loo is not None:
        sq = norms.square()
        left_sq = (s_norm.square() - 2 * dot + sq).clamp_min(0)
        degenerate = left_sq <= 64 * torch.finfo(x.dtype).eps * (s_norm + norms).square()
        left = scale * (dot - sq) / (norms * left_sq.sqrt()).clamp_min(tiny)
        left = left.masked_fill_(degenerate | (norms == 0), 0.0)
        mixed = torch.where((counts >= 2)[labels].unsqueeze(0), left, out.gather(1, index).squeeze(1))
        out.scatter_(1, index, mixed.unsqueeze(1))
    return out


def support_pass(features: FeatureBlocks, labels: torch.Tensor, n_classes: int, cos: str | None = None,
                 consume: Callable[[Block], None] | None = None) -> ClassStats:
    """Read the support set once, head block by head block (each block holds every item): class
    sums, class sizes and constant heads; with ``cos="loo"`` or ``"in-sample"`` also hand each block's
    cosines [k, C, N] to ``consume``. Raises ValueError if the features hold NaN or inf.
    """
    n_items, n_heads, dim = features.shape
    counts = torch.bincount(labels, minlength=n_classes)
    sums = torch.empty(n_heads, n_classes, dim, dtype=features.dtype)
    constant = torch.empty(n_heads, dtype=torch.bool)
    scratch = Scratch()
    for items, cols, x in features.blocks(whole=True):
        norms = torch.linalg.vector_norm(x, dim=-1)
        if not bool(torch.isfinite(norms).all()):
            raise ValueError(f"{features.name} holds NaN or inf values (in heads {cols.start}..{cols.stop - 1})")
        block = sums[cols]
        block.zero_().index_add_(1, labels, x)
        constant[cols] = constant_heads(x, norms)
        if cos is not None and consume is not None:
            loo = (labels, block, counts) if cos == "loo" else None
            consume((items, cols, cosines(x, normalise(block), loo=loo, norms=norms, scratch=scratch)))
    return ClassStats(sums, counts, constant)


def constant_heads(x: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """[k] bool: heads whose items x [k, n, D] (norms [k, n]) all point the same way (or are all zero)."""
    inverse = (1.0 / norms.clamp_min(torch.finfo(x.dtype).tiny)).masked_fill_(norms == 0, 0.0)
    resultant = torch.bmm(inverse.unsqueeze(1), x).squeeze(1).to(torch.float64)  # sum of unit vectors
    length = torch.linalg.vector_norm(resultant, dim=-1) / x.shape[1]
    return (length >= 1.0 - CONSTANT_TOL) | (norms == 0).all(1)


def iter_cosines(features: FeatureBlocks, prototypes: torch.Tensor, *, heads: torch.Tensor | None = None,
                 scale: float = 1.0) -> Iterator[Block]:
    """Blocks (items, head positions, scale * cos [k, C, n]) of ``features`` against ``prototypes``
    [K', C, D] (already restricted to ``heads`` when those are given)."""
    scratch = Scratch()
    for items, cols, x in features.blocks(heads, prototypes.dtype):
        yield items, cols, cosines(x, prototypes[cols], scale, scratch=scratch)


def posteriors(logits: torch.Tensor, dim: int, inplace: bool = False, bound: float = math.inf) -> torch.Tensor:
    """softmax along ``dim`` (classes). When |logits| <= ``bound`` <= 80 (tau >= 1/80 on cosines)
    the max is not subtracted: exp cannot overflow or make a row all zero in float32."""
    if not inplace:
        logits = logits.clone()
    if bound > 80:
        logits.sub_(logits.amax(dim, keepdim=True))
    logits.exp_()
    return logits.div_(logits.sum(dim, keepdim=True))


def check_scores(scores: torch.Tensor, features: FeatureBlocks) -> np.ndarray:
    """Scores [N, C] as float64 numpy; a non-finite row means the features held NaN or inf."""
    bad = ~torch.isfinite(scores).all(1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise ValueError(f"{features.name} holds NaN or inf values (e.g. in items {rows})")
    return scores.to(torch.float64).numpy()


def warn_single_shot(who: str, what: str, classes: np.ndarray, counts: torch.Tensor) -> None:
    """Warn that leave-one-out is impossible for the one-item classes, which fall back to in-sample."""
    single = classes[(counts == 1).numpy()]
    if len(single):
        shown = ", ".join(map(str, single[:5].tolist())) + (" ..." if len(single) > 5 else "")
        warnings.warn(f"{who}: {len(single)} class(es) have a single support item ({shown}), so their "
                      f"{what} cannot be left-one-out; using in-sample values for them", UserWarning, stacklevel=3)

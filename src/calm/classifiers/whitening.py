"""Whitened head geometry: per head, the support's pooled within-class covariance, shrunk toward a
scaled identity, is whitened away before any cosine is taken.

Per head k, with q the head vector (L2-normalised first when ``normalize``):

    m        = mean of q over the support (0 when ``center`` is False)
    S        = sum_i (q_i - mu_{c(i)})(q_i - mu_{c(i)})^T / (N - C)   (pooled within-class covariance)
    t        = tr(S) / D
    S_lambda = (1 - lambda) S / t + lambda I                       (shrunk toward the identity)
    z(q)     = L^{-1} (q - m),  L L^T = S_lambda  (Cholesky)

S_lambda is (1 - lambda) S + lambda t I divided by t: a per-head scale, which no cosine sees. L^{-1}
differs from S_lambda^{-1/2} only by a rotation (L^{-T} L^{-1} = S_lambda^{-1}), so inner products
and cosines of whitened vectors are those of S_lambda^{-1/2}; the triangular factor costs a fraction
of an eigendecomposition. lambda = 1 gives L = I exactly, so with ``center=False`` and
``normalize=False`` z(q) = q and every classifier is today's cosine one.

lambda per head: a number, or ``"oas"`` (Chen et al. 2010, the closed form scikit-learn's OAS uses,
with N - C samples) or ``"ledoit-wolf"`` (Ledoit & Wolf 2004, from the within-class residuals).
Closed forms are kept at or above 0.01. Support statistics only. With one item per class there is
no within-class spread: lambda = 1.
Heads that are constant over the support get z = 0 (every classifier then leaves them out).

The latest fits, up to :data:`FIT_MEMORY` bytes of fitted arrays, are remembered, keyed by the
options and the exact bytes of the features and labels: an evaluation fits the same whitener on the
same support (and on the same calibration folds and open-set supports) for every method, and each
distinct one is computed once, with the same arrays, bit for bit.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from calm.classifiers._base import Estimator, encode_labels
from calm.classifiers._cosine import FeatureBlocks, Scratch, constant_heads, normalise

SHRINKAGE_RULES = ("oas", "ledoit-wolf")
MIN_RULE_SHRINKAGE = 0.01
"""The least lambda a closed-form rule may give: with fewer items than dimensions S is singular."""
FIT_MEMORY = 128 * 2 ** 20
"""Bytes of fitted arrays remembered: 128 MiB, about 80 fits at 96 heads of 64 dims, 1 at 1024
heads of 128 (67 MB each); 0 remembers none."""
_FITTED = ("classes_", "mean_", "matrix_", "shrinkage_", "constant_heads_", "n_heads_in_", "head_dim_in_")
_memory: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
_memory_lock = threading.Lock()
GEOMETRIES = ("cosine", "whitened")
WHITENED_DEFAULTS: dict[str, Any] = {"shrinkage": "oas", "center": False, "normalize": True}
"""What ``geometry="whitened"`` means; a dict ``geometry`` overrides some of these keys. Not centred:
on the dev tasks centring on the support mean helped a little in-domain and cost up to 30 points
when queries came from another source (docs/dev-results.md)."""


def check_shrinkage_rule(shrinkage: Any) -> str | float:
    """``"oas"``, ``"ledoit-wolf"`` or a number in [0, 1]."""
    if isinstance(shrinkage, str):
        if shrinkage not in SHRINKAGE_RULES:
            raise ValueError(f"shrinkage must be one of {SHRINKAGE_RULES} or a number in [0, 1], got {shrinkage!r}")
        return shrinkage
    if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(shrinkage) <= 1.0:
        raise ValueError(f"shrinkage must be one of {SHRINKAGE_RULES} or a number in [0, 1], got {shrinkage!r}")
    return float(shrinkage)


def whitener_options(geometry: Any) -> dict[str, Any] | None:
    """The :class:`HeadWhitener` parameters a ``geometry`` asks for (None: the plain cosine).

    ``geometry`` is ``"cosine"``, ``"whitened"`` (:data:`WHITENED_DEFAULTS`) or a dict of some of
    the whitener's parameters (``shrinkage``, ``center``, ``normalize``), the rest at their defaults.
    """
    if isinstance(geometry, str):
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES} or a dict of whitener options, got {geometry!r}")
        return None if geometry == "cosine" else dict(WHITENED_DEFAULTS)
    if isinstance(geometry, dict):
        unknown = set(geometry) - set(WHITENED_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown whitener option(s) {sorted(unknown)}; use {sorted(WHITENED_DEFAULTS)}")
        options = {**WHITENED_DEFAULTS, **geometry}
        check_shrinkage_rule(options["shrinkage"])
        return options
    raise ValueError(f"geometry must be one of {GEOMETRIES} or a dict of whitener options, got {geometry!r}")


def oas_shrinkage(S: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Oracle approximating shrinkage intensity [k] of covariances S [k, D, D] from ``n_samples``."""
    dim = S.shape[-1]
    mu = torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) / dim
    alpha = S.square().mean((-2, -1))
    num = alpha + mu.square()
    den = (n_samples + 1) * (alpha - mu.square() / dim)
    return torch.where(den > 0, (num / den.clamp_min(torch.finfo(S.dtype).tiny)).clamp_max(1.0), torch.ones_like(mu))


def ledoit_wolf_shrinkage(residuals: torch.Tensor) -> torch.Tensor:
    """Ledoit-Wolf shrinkage intensity [k] from residuals [k, n, D] (taken as centred samples)."""
    n, dim = residuals.shape[1], residuals.shape[2]
    gram = torch.bmm(residuals.transpose(1, 2), residuals)  # n S
    trace = torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1) / n
    mu = trace / dim
    delta_ = gram.square().sum((-2, -1)) / n ** 2
    beta_ = residuals.square().sum(-1).square().sum(-1)
    beta = (beta_ / n - delta_) / (dim * n)
    delta = (delta_ - 2 * mu * trace + dim * mu.square()) / dim
    beta = torch.minimum(beta, delta)
    return torch.where(beta > 0, beta / delta.clamp_min(torch.finfo(residuals.dtype).tiny), torch.zeros_like(mu))


def inverse_cholesky(A: torch.Tensor, out: torch.Tensor, floor: float | None = None) -> torch.Tensor:
    """Write L^{-1} into ``out`` [k, n, n], with L L^T = A [k, n, n] (symmetric, unit mean diagonal),
    and return [k] bool: heads whose A is not positive definite in working precision (a pivot at
    or below ``floor``, default n * eps; their ``out`` is meaningless).

    Recursive blocked Cholesky (as LAPACK's potrf2) that carries the inverse factor along instead
    of the factor: with A = [[A11, A21^T], [A21, A22]] and M1 = L11^{-1},
    L21 = A21 M1^T, M2 = chol(A22 - L21 L21^T)^{-1}, L^{-1} = [[M1, 0], [-M2 L21 M1, M2]].
    Every step is one batched matmul over all k heads: no per-head LAPACK call (which MKL runs
    multithreaded per 128 x 128 matrix, many times slower on a busy machine).
    """
    n = A.shape[-1]
    floor = n * torch.finfo(A.dtype).eps if floor is None else floor
    if n == 1:
        out.copy_(torch.rsqrt(A.clamp_min(torch.finfo(A.dtype).tiny)))
        return ~(A[:, 0, 0] > floor)
    h = n // 2
    singular = inverse_cholesky(A[:, :h, :h], out[:, :h, :h], floor)
    l21 = torch.bmm(A[:, h:, :h], out[:, :h, :h].mT)
    singular |= inverse_cholesky(torch.baddbmm(A[:, h:, h:], l21, l21.mT, alpha=-1), out[:, h:, h:], floor)
    out[:, h:, :h] = torch.bmm(out[:, h:, h:], torch.bmm(l21, out[:, :h, :h])).neg_()
    out[:, :h, h:] = 0.0
    return singular


class HeadWhitener(Estimator):
    """A scikit-learn-style transformer of head features [N, K, D]: ``fit(X, y)`` on the support,
    ``transform(X)`` any features (see the module docstring for the formulas).

    Args:
        shrinkage: lambda, a number in [0, 1], ``"oas"`` or ``"ledoit-wolf"`` (chosen per head).
        center: subtract the support mean.
        normalize: L2-normalise every head vector first.

    Fitted attributes: ``mean_`` [K, D], ``matrix_`` [K, D, D] (lower-triangular L^{-1}; zero for
    constant heads), ``shrinkage_`` [K] (lambda per head), ``constant_heads_`` [K], ``classes_``.
    """

    def __init__(self, shrinkage: str | float = "oas", center: bool = False, normalize: bool = True):
        self.shrinkage = shrinkage
        self.center = center
        self.normalize = normalize

    def fit(self, X: Any, y: Any) -> "HeadWhitener":
        """Support statistics, head block by head block (every item in each block); a fit of the
        same options on the same features and labels is taken from memory (see the module docstring)."""
        rule = check_shrinkage_rule(self.shrinkage)
        features = X if isinstance(X, FeatureBlocks) else FeatureBlocks(X)
        self.classes_, labels = encode_labels(y, len(features))
        key = self._memory_key(rule, features, labels)
        with _memory_lock:
            remembered = _memory.get(key) if key is not None else None
            if remembered is not None:
                _memory.move_to_end(key)
        if remembered is not None:
            self.__dict__.update({name: _copy(value) for name, value in remembered.items()})
            return self
        self._fit_statistics(rule, features, labels)
        if key is not None and FIT_MEMORY > 0:
            with _memory_lock:
                _memory[key] = {name: _copy(getattr(self, name)) for name in _FITTED}
                while sum(_size(fit) for fit in _memory.values()) > FIT_MEMORY:
                    _memory.popitem(last=False)
        return self

    def _memory_key(self, rule: str | float, features: FeatureBlocks, labels: torch.Tensor) -> tuple | None:
        """What determines a fit: the options and a hash of the features' and labels' bytes (None:
        features off the CPU, not remembered)."""
        if FIT_MEMORY <= 0 or features.data.device.type != "cpu":
            return None
        data = features.data.detach().contiguous()
        digest = hashlib.blake2b(data.view(-1).view(torch.uint8).numpy(), digest_size=16)
        digest.update(labels.numpy().tobytes())
        digest.update(self.classes_.astype(str).tobytes())
        return (rule, bool(self.center), bool(self.normalize), str(data.dtype), tuple(data.shape), digest.digest())

    def _fit_statistics(self, rule: str | float, features: FeatureBlocks, labels: torch.Tensor) -> None:
        """The fitted attributes from the features and class indices."""
        n_items, n_heads, dim = features.shape
        n_classes = len(self.classes_)
        counts = torch.bincount(labels, minlength=n_classes).to(features.dtype)
        mean = torch.zeros(n_heads, dim, dtype=features.dtype)
        shrunk = torch.empty(n_heads, dim, dim, dtype=features.dtype)  # S_lambda / t, factored once for all heads
        lam = torch.ones(n_heads, dtype=torch.float64)
        constant = torch.zeros(n_heads, dtype=torch.bool)
        eye = torch.eye(dim, dtype=features.dtype)
        for _, cols, x in features.blocks(whole=True):
            norms = torch.linalg.vector_norm(x, dim=-1)
            if not bool(torch.isfinite(norms).all()):
                raise ValueError(f"{features.name} holds NaN or inf values (in heads {cols.start}..{cols.stop - 1})")
            constant[cols] = constant_heads(x, norms)
            if self.normalize:
                x = x.div_(norms.clamp_min_(torch.finfo(x.dtype).tiny).unsqueeze(-1))
            class_means = torch.zeros(x.shape[0], n_classes, dim, dtype=x.dtype).index_add_(1, labels, x)
            class_means /= counts.view(1, -1, 1)
            if self.center:
                mean[cols] = x.mean(1)
            residuals = x.sub_(class_means[:, labels])
            S = torch.bmm(residuals.transpose(1, 2), residuals, out=shrunk[cols]).div_(max(n_items - n_classes, 1))
            block_lam = self._intensity(rule, S, residuals, n_items - n_classes)
            scale = torch.diagonal(S, dim1=-2, dim2=-1).mean(-1)
            spread = (scale > 0) & (n_items > n_classes)
            block_lam = torch.where(spread, block_lam, torch.ones_like(block_lam))
            rel = S.div_(scale.clamp_min(torch.finfo(S.dtype).tiny).view(-1, 1, 1)).mul_((1 - block_lam).view(-1, 1, 1))
            rel.diagonal(dim1=-2, dim2=-1).add_(block_lam.view(-1, 1))
            rel[block_lam == 1] = eye
            lam[cols] = block_lam.to(torch.float64)
        matrix = torch.empty_like(shrunk)
        singular = inverse_cholesky(shrunk, matrix)
        if bool(singular.any()):
            raise ValueError(f"HeadWhitener: shrinkage {rule!r} leaves the within-class covariance of "
                             f"{int(singular.sum())} head(s) singular; use a shrinkage above 0")
        matrix[constant] = 0.0
        mean[constant] = 0.0
        self.mean_, self.matrix_ = mean.numpy(), matrix.numpy()
        self.shrinkage_, self.constant_heads_ = lam.numpy(), constant.numpy()
        self.n_heads_in_, self.head_dim_in_ = n_heads, dim

    @staticmethod
    def _intensity(rule: str | float, S: torch.Tensor, residuals: torch.Tensor, n_samples: int) -> torch.Tensor:
        """lambda per head; a closed form is kept at or above MIN_RULE_SHRINKAGE (S may be singular)."""
        if rule == "oas":
            return oas_shrinkage(S, max(n_samples, 1)).clamp_min(MIN_RULE_SHRINKAGE)
        if rule == "ledoit-wolf":
            return ledoit_wolf_shrinkage(residuals).clamp_min(MIN_RULE_SHRINKAGE)
        return torch.full(S.shape[:1], float(rule), dtype=S.dtype)

    def view(self, features: FeatureBlocks) -> "WhitenedBlocks":
        """``features`` read through the fitted transform, block by block (nothing materialised)."""
        self._check_fitted()
        if features.shape[1:] != (self.n_heads_in_, self.head_dim_in_):
            raise ValueError(f"the whitener was fit on {self.n_heads_in_} heads x {self.head_dim_in_} dims, "
                             f"got {features.shape[1]} x {features.shape[2]}")
        return WhitenedBlocks(features, self.mean_, self.matrix_, self.normalize)

    def transform(self, X: Any) -> np.ndarray:
        """Whitened features [N, K, D] (float32, or float64 for float64 input)."""
        features = self.view(FeatureBlocks(X))
        out = torch.empty(features.shape, dtype=features.dtype)
        for items, cols, z in features.blocks():
            out[items, cols] = z.transpose(0, 1)
        return out.numpy()

    def fit_transform(self, X: Any, y: Any) -> np.ndarray:
        return self.fit(X, y).transform(X)


def _size(fit: dict[str, Any]) -> int:
    """Bytes of a remembered fit's arrays."""
    return sum(value.nbytes for value in fit.values() if isinstance(value, np.ndarray))


def _copy(value: Any) -> Any:
    """Arrays copied (what a fit hands out is its own), other values as they are."""
    return value.copy() if isinstance(value, np.ndarray) else value


class WhitenedBlocks(FeatureBlocks):
    """A :class:`FeatureBlocks` whose blocks are whitened on the fly: (normalised) q, minus ``mean``,
    times ``matrix`` transposed, per head."""

    def __init__(self, base: FeatureBlocks, mean: np.ndarray, matrix: np.ndarray, normalize: bool):
        self.data, self.name, self.shape, self.dtype = base.data, base.name, base.shape, base.dtype
        self.mean = torch.from_numpy(mean).to(self.dtype) if mean.any() else None  # not centred: nothing to subtract
        self.matrix_t = torch.from_numpy(matrix).to(self.dtype).transpose(1, 2)
        self.normalize = normalize

    def _read(self, items: slice, heads: slice | torch.Tensor, dtype: torch.dtype, scratch: Scratch) -> torch.Tensor:
        x = super()._read(items, heads, dtype, scratch)
        if self.normalize:
            norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
            x.div_(norms.clamp_min_(torch.finfo(x.dtype).tiny))
        if self.mean is not None:
            x.sub_(self.mean[heads].to(dtype).unsqueeze(1))
        out = scratch.get("white", tuple(x.shape), dtype)
        return torch.bmm(x, self.matrix_t[heads].to(dtype), out=out)

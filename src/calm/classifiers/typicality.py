"""How much a new clip looks like the support set, without any model, and whether a batch of clips
still does: the premise of every calibrated number calm gives (probabilities, rejection rate,
prediction-set coverage) is that new clips are exchangeable with the support clips.

**Sketch.** Each clip's heads are L2-normalised and their K x D values hashed, with fixed random
signs, into :data:`SKETCH_DIM` buckets (a count sketch with a fixed seed). Inner products, hence the
cosine geometry calm's methods use, are kept up to a small random error, a clip's sketch never
depends on other clips, and a support set of any backbone fits in a few kilobytes per clip.

**Typicality** (a full-conformal p-value, Vovk, Gammerman and Shafer 2005). A clip's strangeness is
its squared distance to the nearest other clip in the bag of the n support sketches plus the new one:
a(x) = min_i |x - z_i|^2 and a_i = min(min_{j != i} |z_i - z_j|^2, |z_i - x|^2). Then

    p(x) = (1 + #{i : a_i >= a(x)}) / (n + 1),

and for a clip exchangeable with the support, P(p(x) <= level) <= level exactly, for any n. A small
p means the clip lies farther from every support clip than the support clips lie from each other.

**Shift check** of a batch of m clips. Given the support, the chance q that a new exchangeable
clip has p <= level is (approximately, exactly for split conformal) Beta(k, n + 1 - k)
distributed, k = floor(level (n + 1)); so the number of such clips is beta-binomial. The batch is
flagged when that count is improbably high (upper tail below :data:`SHIFT_ALPHA`). With fewer than
1/level - 1 support clips (k = 0) no clip can score that low and nothing is ever flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import betabinom

from calm.classifiers._cosine import FeatureBlocks

SKETCH_DIM = 1024
SKETCH_SEED = 2005
ATYPICAL_LEVEL = 0.1
"""A clip is atypical when its typicality is at most this."""
SHIFT_ALPHA = 0.01
"""A batch is flagged when its count of atypical clips has an upper tail below this."""


def sketch(X: Any) -> np.ndarray:
    """The count sketch [N, SKETCH_DIM] (float32) of [N, K, D] head features, each head L2-normalised
    and the whole scaled by 1/sqrt(K), so a sketch has norm close to 1."""
    blocks = FeatureBlocks(X)
    n_items, n_heads, dim = blocks.shape
    rng = np.random.default_rng(SKETCH_SEED)
    bucket = torch.from_numpy(rng.integers(0, SKETCH_DIM, (n_heads, dim)))
    sign = torch.from_numpy(rng.choice(np.array([-1.0, 1.0], dtype=np.float32), (n_heads, dim)))
    out = torch.zeros(n_items, SKETCH_DIM, dtype=torch.float32)
    for items, heads, x in blocks.blocks(dtype=torch.float32):  # x [k, n, D]
        unit = x / x.norm(dim=2, keepdim=True).clamp_min(1e-12) * sign[heads, None, :]
        rows = unit.permute(1, 0, 2).reshape(unit.shape[1], -1)
        out[items].index_add_(1, bucket[heads].reshape(-1), rows)
    return (out / math.sqrt(n_heads)).numpy()


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a_i - b_j|^2 [len(a), len(b)], in float64, never below 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def typicality(support: np.ndarray, queries: np.ndarray, block: int = 1024) -> np.ndarray:
    """Full-conformal p-value [m] of each query sketch against the n support sketches (see the
    module), ``block`` queries at a time."""
    n = len(support)
    within = squared_distances(support, support)
    np.fill_diagonal(within, np.inf)
    nearest_other = within.min(axis=1)  # [n]; inf for a single support clip
    out = np.empty(len(queries))
    for start in range(0, len(queries), block):
        to_query = squared_distances(queries[start:start + block], support)  # [b, n]
        strangeness = to_query.min(axis=1)
        support_strangeness = np.minimum(nearest_other[None, :], to_query)
        out[start:start + block] = (1.0 + (support_strangeness >= strangeness[:, None]).sum(axis=1)) / (n + 1)
    return out


class ShiftWarning(UserWarning):
    """New clips, as a batch, do not look like the support set."""


@dataclass(frozen=True)
class ShiftCheck:
    """Whether a batch of clips still looks like the support set.

    Attributes:
        clips: clips checked.
        atypical: clips with typicality <= ``level``.
        expected: the share of atypical clips expected for clips like the support (<= ``level``).
        tail: probability of at least ``atypical`` atypical clips if the clips were like the support.
        shifted: ``tail`` < :data:`SHIFT_ALPHA`.
    """

    clips: int
    atypical: int
    expected: float
    tail: float
    shifted: bool
    level: float = ATYPICAL_LEVEL

    def message(self) -> str:
        """One sentence for people, saying what the numbers mean."""
        share = self.atypical / self.clips if self.clips else 0.0
        found = (f"{self.atypical} of {self.clips} clips ({share:.0%}) lie farther from every support clip than "
                 f"support clips lie from each other (typicality <= {self.level:g}; about {self.expected:.0%} "
                 "expected for clips like the support)")
        if self.shifted:
            return (found + ": these clips are unlike the support set (another recording condition or new "
                    "classes), so the calibrated probabilities, the rejection rate and the prediction-set "
                    "coverage may not hold for them (docs/trust.md)")
        return found


def shift_check(p_values: np.ndarray, n_support: int, level: float = ATYPICAL_LEVEL) -> ShiftCheck:
    """The :class:`ShiftCheck` of a batch's typicality ``p_values`` against n support clips."""
    p_values = np.asarray(p_values, dtype=np.float64)
    atypical = int((p_values <= level + 1e-12).sum())
    k = math.floor(level * (n_support + 1) + 1e-9)
    if k == 0 or len(p_values) == 0:
        return ShiftCheck(len(p_values), atypical, 0.0, 1.0, False, level)
    tail = float(betabinom.sf(atypical - 1, len(p_values), k, n_support + 1 - k))
    return ShiftCheck(len(p_values), atypical, k / (n_support + 1), tail, tail < SHIFT_ALPHA, level)

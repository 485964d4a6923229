"""Split-conformal quantiles of calibration scores: prediction sets and a rejection threshold.

Written here rather than taken from crepes or MAPIE: both fit their own models on 2-D feature
tables (MAPIE through scikit-learn's checks, which refuse [N, K, D] head features), while calm
already has the scores it needs, the support items scored out of fold, and the quantile below
is all that remains; crepes would add pandas, SciPy and scikit-learn for these few lines.

For n exchangeable calibration scores s_(1) <= ... <= s_(n) and a new score s, the rank of s among
the n + 1 is uniform, so P(s <= s_(k)) >= k / (n + 1). (With cross-fitted scores, as calm's,
the guarantee holds approximately: the fold models saw slightly fewer items than the final one.)
"""

from __future__ import annotations

import math

import numpy as np


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """q such that a new exchangeable score is <= q with probability >= ``coverage``: the
    ceil((n + 1) coverage)-th smallest score, or inf when that rank exceeds n (too few scores
    for this level: every class goes in the set)."""
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be a level strictly between 0 and 1, got {coverage!r}")
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    if ordered.size == 0:
        raise ValueError("no calibration scores")
    rank = math.ceil((ordered.size + 1) * coverage - 1e-9)
    return float(ordered[rank - 1]) if rank <= ordered.size else math.inf


def rejection_threshold(scores: np.ndarray, rate: float) -> float:
    """t such that a new exchangeable score falls below t with probability <= ``rate``: the
    floor((n + 1) rate)-th smallest score (reject strictly below it), or -inf when that rank is
    0 (too few scores to reject anything at this rate)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.floor((ordered.size + 1) * rate + 1e-9)
    return float(ordered[rank - 1]) if rank >= 1 else -math.inf

"""Split-conformal p-values and quantiles of calibration scores: prediction sets and a rejection threshold.

Written here rather than taken from crepes or MAPIE: both fit their own models on 2-D feature
tables (MAPIE through scikit-learn's checks, which refuse [N, K, D] head features), while calm
already has the scores it needs, the support items scored out of fold, and the ranks below
are all that remains; crepes would add a dependency for these few lines.

For n exchangeable calibration scores s_(1) <= ... <= s_(n) and a new score s, the rank of s among
the n + 1 is uniform, so P(s <= s_(k)) >= k / (n + 1), and a p-value that breaks the tie of ranks
at random is exactly uniform (Vovk, Gammerman and Shafer 2005, smoothed conformal predictors).
(With cross-fitted scores, as calm's, the guarantee holds approximately: the fold models saw
slightly fewer items than the final one.)
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any, Sequence

import numpy as np


def conformal_p_values(calibration: np.ndarray, scores: np.ndarray, tiebreak: np.ndarray | float = 1.0
                       ) -> np.ndarray:
    """The conformal p-value of each score (same shape as ``scores``) against n calibration scores:
    (#{s_i > s} + u (#{s_i = s} + 1)) / (n + 1), where higher scores are stranger.

    With u uniform on [0, 1) and independent of the scores (smoothed conformal prediction), a new
    exchangeable score has P(p <= alpha) = alpha exactly; with u = 1 (conservative), at most alpha,
    but fewer than 1/alpha - 1 calibration scores then never give p <= alpha. ``tiebreak`` is u,
    a number or an array that broadcasts against ``scores``."""
    ordered = np.sort(np.asarray(calibration, dtype=np.float64))
    if ordered.size == 0:
        raise ValueError("no calibration scores")
    scores = np.asarray(scores, dtype=np.float64)
    below_or_equal = np.searchsorted(ordered, scores, side="right")
    equal = below_or_equal - np.searchsorted(ordered, scores, side="left")
    return (ordered.size - below_or_equal + np.asarray(tiebreak) * (equal + 1)) / (ordered.size + 1)


def tiebreak(rows: np.ndarray) -> np.ndarray:
    """A number in [0, 1) per row [N, 1], from a hash of the row's bytes: spread uniformly over
    clips and unrelated to their scores, yet the same every time for one clip, so a clip's
    smoothed prediction set does not change between runs or batches."""
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    digests = [hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in rows]
    return np.array([int.from_bytes(d, "little") / 2.0**64 for d in digests]).reshape(-1, 1)


def rejection_threshold(scores: np.ndarray, rate: float) -> float:
    """t such that a new exchangeable score falls below t with probability <= ``rate``: the
    floor((n + 1) rate)-th smallest score (reject strictly below it), or -inf when that rank is
    0 (too few scores to reject anything at this rate)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.floor((ordered.size + 1) * rate + 1e-9)
    return float(ordered[rank - 1]) if rank >= 1 else -math.inf


LARGE_SET_SHARE = 0.3
"""Prediction sets are called large when they hold more than this share of the classes on average."""


class LargeSetWarning(UserWarning):
    """Prediction sets are wide: the coverage holds, but they say little about which class it is."""


def set_size_note(sizes: Sequence[int], n_classes: int, coverage: float, n_support: int | None = None) -> str | None:
    """One sentence for people when the prediction sets of a batch (``sizes``, classes per set) hold
    more than :data:`LARGE_SET_SHARE` of the ``n_classes`` classes (and more than one) on average:
    what the coverage guarantee then means and what narrows the sets. None when they are small."""
    mean = float(np.mean(sizes)) if len(sizes) else 0.0
    if mean <= max(1.0, LARGE_SET_SHARE * n_classes):
        return None
    shots = f" with {n_support / n_classes:.0f} support clips per class" if n_support else ""
    return (f"{shots.strip().capitalize() + ', t' if shots else 'T'}he {coverage:.0%} prediction sets hold {mean:.1f} "
            f"of {n_classes} classes on average here: the true class is in its set {coverage:.0%} of the time "
            "because the sets are wide; add labelled clips to narrow them")


def warn_large_sets(classifier: Any, sets: Sequence[Sequence[Any]], coverage: float) -> None:
    """A :class:`LargeSetWarning` with :func:`set_size_note` when the ``sets`` a calibrated
    ``classifier`` gave at ``coverage`` are large."""
    sketch = getattr(classifier, "support_sketch_", None)
    note = set_size_note([len(s) for s in sets], len(classifier.classes_), coverage,
                         None if sketch is None else len(sketch))
    if note is not None:
        warnings.warn(note, LargeSetWarning, stacklevel=3)

"""calm's recommended classifier when none is named: a soft vote of every head on whitened heads.

Chosen on six dev tasks (two in-domain, four with support and query from different sources;
docs/dev-results.md): whitening each head with the support's shrunk within-class covariance
(OAS lambda, no centring) lifted every voting scheme well past the cosine geometry in-domain, and
an equal-weight soft vote over all heads was the scheme that stayed close to the best under shift,
where reliability weights (CALM) and head selection (SAV) estimated on the support domain can
favour heads that do not transfer. Centring on the support mean helps in-domain but hurts badly
when queries come from another source, so it is off.
"""

from __future__ import annotations

from calm.classifiers._prototype import EqualVoteClassifier

DEFAULT_GEOMETRY = "whitened"
"""The whitened geometry's defaults (:data:`calm.classifiers.whitening.WHITENED_DEFAULTS`): OAS
lambda, normalised, not centred."""


class DefaultClassifier(EqualVoteClassifier):
    """The recommended method: argmax_c mean_k softmax_c(cos_{k,c}(x) / tau) over the non-constant
    heads, with cosines taken in the whitened geometry :data:`DEFAULT_GEOMETRY`
    (:mod:`calm.classifiers.whitening`).

    Args:
        tau: posterior temperature.
        geometry: as in every prototype classifier (default: whitened, OAS lambda, not centred).
    """

    def __init__(self, tau: float = 0.07, geometry: str | dict = DEFAULT_GEOMETRY):
        self.tau = tau
        self.geometry = geometry

"""The one registry of methods: name -> estimator, description, and how the evaluation runs it.

Everything that lists methods reads it: saving and loading classifiers (:mod:`calm.classifiers.io`),
:func:`calm.fit_classifier`, the CLI's ``--method``/``--methods`` choices, the demo and the
evaluation. Adding a method is one file (its estimator) and one :func:`register` line below.

    >>> import calm.methods
    >>> calm.methods.get("calm").make(tau=0.1)
    CALMClassifier(tau=0.1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from calm.errors import InputError
from calm.resolve import resolve

ESTIMATOR_STRATEGY = "calm.evaluation.strategies:EstimatorStrategy"


@dataclass(frozen=True)
class Method:
    """A method of calm.

    Attributes:
        name: what users type (``calm fit --method NAME``).
        estimator: the classifier it fits, as a class or ``"module:Class"`` (None: it fits none,
            like the zero-shot baseline).
        description: one line for reports and ``--help``.
        needs_chat_model: it asks the model questions (zero-shot, pseudo-labels), so it needs a
            chat model such as Qwen2-Audio; the evaluation skips it, with a note, on others.
        options: parameters of the method that are not the estimator's, with their defaults.
        strategy: how the evaluation runs it on an episode, as a class or ``"module:Class"``
            (:mod:`calm.evaluation.strategies`: it returns an ``Outcome``, the runner records it).
        defaults: estimator parameters this method sets (e.g. ``{"geometry": "whitened"}``), under
            the caller's.
    """

    name: str
    estimator: type | str | None
    description: str
    needs_chat_model: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    strategy: type | str = ESTIMATOR_STRATEGY
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def estimator_class(self) -> type:
        """The estimator class (imported on first use)."""
        if self.estimator is None:
            raise InputError(f"method {self.name!r} fits no estimator")
        return _resolve(self.estimator)

    def make(self, **params: Any) -> Any:
        """A new, unfitted estimator with these parameters (others at the method's defaults, then the
        estimator's)."""
        return self.estimator_class()(**{**self.defaults, **params})

    def parameter_names(self) -> list[str]:
        """The parameters ``--param`` may set: the estimator's (from its ``__init__``) and the
        method's own options, sorted."""
        return sorted({*self.estimator_class()._get_param_names(), *self.options})

    def check_params(self, params: Mapping[str, Any]) -> None:
        """ValueError for a parameter the method does not take (listing those it takes) or an
        invalid value (the estimator's own check), before any work is done."""
        valid = self.parameter_names()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise InputError(f"method {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                             f"its parameters: {', '.join(valid)}")
        try:
            self.make(**self.split(params)[0])._validate_params()
        except ValueError as error:
            raise InputError(f"method {self.name!r}: {error}") from None

    def split(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``params`` as (estimator parameters, options with defaults filled in)."""
        options = {k: params.get(k, v) for k, v in self.options.items()}
        return {k: v for k, v in params.items() if k not in self.options}, options

    def strategy_class(self) -> type:
        return _resolve(self.strategy)


_REGISTRY: dict[str, Method] = {}

FIGURE_METHOD = "calm"
"""The method whose head weights and confusion matrix evaluation reports draw: CALM, whose
class-conditional head weights are the method's point (the default ``auto`` weighs heads equally)."""

DEFAULT_METHOD = "auto"
"""What ``calm fit``, :func:`calm.fit_classifier` and the app use when no method is named: the
recommended :class:`~calm.classifiers.DefaultClassifier` (chosen on the dev tasks, docs/dev-results.md)."""


def register(method: Method) -> Method:
    """Add a method (its name must be new); returns it. Reports list methods in registration order."""
    if method.name in _REGISTRY:
        raise InputError(f"a method named {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (for tests and plug-ins that registered one)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Method:
    """The method called ``name``; ValueError listing the known ones otherwise."""
    if name not in _REGISTRY:
        raise InputError(f"unknown method {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def names(*, feature_only: bool = False) -> list[str]:
    """Method names in registration order; ``feature_only``: those that need no chat model (and fit
    an estimator), i.e. what ``calm fit`` and ``calm evaluate`` run by default."""
    return [n for n, m in _REGISTRY.items()
            if not feature_only or (not m.needs_chat_model and m.estimator is not None)]


def estimator_classes() -> dict[str, type]:
    """Class name -> class of every registered method's estimator (what a saved file may hold)."""
    classes: dict[str, type] = {}
    for method in _REGISTRY.values():
        if method.estimator is not None:
            cls = method.estimator_class()
            classes[cls.__name__] = cls
    return classes


def _resolve(target: type | str) -> type:
    return resolve(target) if isinstance(target, str) else target


register(Method("zero-shot", None, "greedy answer to a question naming every class, mapped to a class",
                needs_chat_model=True, strategy="calm.evaluation.strategies:ZeroShotStrategy"))
register(Method("sav", "calm.classifiers.sav:SAVClassifier", "SAV: majority vote of the top-n heads (LOO head scores)"))
register(Method("calm", "calm.classifiers.reliability_vote:CALMClassifier",
                "CALM: class-conditional reliability-weighted soft vote (LOO reliability)"))
register(Method("calm-tuned", "calm.classifiers.tuning:TunedCALMClassifier",
                "CALM with tau, tau_w, scheme, top_k chosen by LOO on the support"))
register(Method("uniform", "calm.classifiers.ablations:UniformVoteClassifier", "ablation: soft vote with equal head weights"))
register(Method("centroid", "calm.classifiers.ablations:ConcatCentroidClassifier",
                "ablation: nearest centroid on concatenated per-head cosines"))
register(Method("topn-soft", "calm.classifiers.ablations:TopNSoftVoteClassifier",
                "ablation: equal-weight soft vote over SAV's top-n heads"))
register(Method("agnostic", "calm.classifiers.ablations:ClassAgnosticCALMClassifier",
                "ablation: class-agnostic reliability weights"))
register(Method("probe", "calm.classifiers.probe:LogisticProbe", "logistic regression on all heads concatenated"))
register(Method("probe-tuned", "calm.classifiers.tuned_probe:TunedLogisticProbe",
                "logistic probe with C chosen by cross-validation on the support"))
register(Method("sav-white", "calm.classifiers.sav:SAVClassifier", "SAV on whitened heads",
                defaults={"geometry": "whitened"}))
register(Method("calm-white", "calm.classifiers.reliability_vote:CALMClassifier", "CALM on whitened heads",
                defaults={"geometry": "whitened"}))
register(Method("calm-tuned-white", "calm.classifiers.tuning:TunedCALMClassifier", "tuned CALM on whitened heads",
                defaults={"geometry": "whitened"}))
register(Method("auto", "calm.classifiers.default:DefaultClassifier",
                "the recommended method: soft vote of all whitened heads"))
register(Method("pseudo-label", "calm.classifiers.reliability_vote:CALMClassifier",
                "CALM fitted on the support clips the model labelled itself: majority of sampled answers, kept when "
                "its share of the samples >= threshold", needs_chat_model=True, options={"threshold": 0.6},
                strategy="calm.evaluation.strategies:PseudoLabelStrategy"))

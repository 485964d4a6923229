"""The rule every config object of calm follows (:class:`calm.backbones.BackboneOptions`,
:class:`calm.engine.ExtractionConfig`, :class:`calm.evaluation.config.EvaluationConfig` ...): a
function that runs with one takes it as ``config=`` or builds it from its keyword arguments, never
both, and an unknown keyword is refused naming the fields there are."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, TypeVar

from calm.errors import InputError

Config = TypeVar("Config")


def configured(cls: type[Config], config: Config | None, options: Mapping[str, Any], caller: str) -> Config:
    """``config``, or a ``cls`` built from keyword ``options`` (giving both is refused); a
    TypeError names an option ``cls`` does not have, as Python does for an unknown keyword."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                        f"{cls.__name__} has: {', '.join(known)}")
    if config is not None and options:
        raise InputError(f"{caller}(): give the run's settings either as keyword arguments or as config=, not both")
    return config if config is not None else cls(**options)


def split_options(options: Mapping[str, Any], *classes: type) -> list[dict[str, Any]]:
    """``options`` shared out by field name among ``classes`` (the rest in a last dict)."""
    parts: list[dict[str, Any]] = [{} for _ in range(len(classes) + 1)]
    for name, value in options.items():
        index = next((n for n, cls in enumerate(classes) if name in {f.name for f in fields(cls)}), len(classes))
        parts[index][name] = value
    return parts

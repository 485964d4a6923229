"""What produced an evaluation's numbers: model fingerprint, prompts, shots, seeds, methods and
their parameters, the split protocol and its episodes, counts, failed items and constant heads."""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import torch

from calm import __version__
from calm import methods as registry
from calm.classifiers._cosine import FeatureBlocks
from calm.classifiers._cosine import constant_heads as block_constant
from calm.data.episodes import Episode
from calm.data.items import Item
from calm.evaluation.config import EvaluationConfig
from calm.evaluation.trust import OPEN_SET_SHARE, SET_LEVEL
from calm.evaluation.zeroshot import ModelAnswers
from calm.features import HeadFeatures


def constant_heads(features: HeadFeatures) -> list[int]:
    """Heads that do not vary over the items, by the classifiers' own rule
    (:func:`calm.classifiers._cosine.constant_heads`); the classifiers leave them out of every vote."""
    if len(features) == 0:
        return []
    flags = torch.zeros(features.X.shape[1], dtype=torch.bool)
    for _, cols, x in FeatureBlocks(features.X).blocks(whole=True):
        flags[cols] = block_constant(x, torch.linalg.vector_norm(x, dim=-1))
    return torch.nonzero(flags).flatten().tolist()


def configuration(features: HeadFeatures, items: Sequence[Item], plan: dict[int, list[Episode]],
                  settings: dict[str, tuple[dict[str, Any], dict[str, Any]]], answers: ModelAnswers | None,
                  config: EvaluationConfig) -> dict[str, Any]:
    """Everything that produced the numbers (``evaluation``: the run's
    :class:`~calm.evaluation.config.EvaluationConfig`, its methods and task resolved)."""
    task, trust = config.task, config.trust
    have = set(features.ids)
    used = [i for i in items if i.id in have]
    methods = {}
    for name, (params, options) in settings.items():
        method = registry.get(name)
        entry: dict[str, Any] = {"description": method.description,
                                 "estimator": None if method.estimator is None else method.estimator_class().__name__}
        if method.estimator is not None:
            entry["params"] = method.make(**params).get_params()
        entry.update(options)
        methods[name] = entry
    first = next(iter(plan.values()))
    return {
        "calm_version": __version__,
        "task": task,
        "fingerprint": features.fingerprint,
        "prompt": features.fingerprint.get("prompt"),
        "answer_prompt": answers.prompt if answers is not None else None,
        "generation": answers.params if answers is not None else None,
        "shots": list(plan),
        "seeds": [ep.seed for ep in first],
        "methods": methods,
        "trust": {"open_set_share": OPEN_SET_SHARE, "set_level": SET_LEVEL} if trust and task != "multilabel" else None,
        "protocol": {
            "name": first[0].protocol,
            "support_query_disjoint": all({i.id for i in ep.support}.isdisjoint(i.id for i in ep.query)
                                          for eps in plan.values() for ep in eps),
            "episodes": [{"shots": shots, "seed": ep.seed, "query_fold": ep.query_fold, "n_support": len(ep.support),
                          "n_query": len(ep.query), "support": sorted(i.id for i in ep.support)}
                         for shots, eps in plan.items() for ep in eps],
        },
        "counts": {"items": len(items), "evaluated": len(used), "failed": len(features.failed),
                   "classes": dict(sorted(Counter(c for i in used for c in i.labels).items()))},
        "failed": dict(features.failed),
        "heads": {"count": len(features.heads), "head_dim": int(features.X.shape[2]),
                  "constant": [features.heads.label(k) for k in constant_heads(features)]},
        "evaluation": config.to_dict(),
    }

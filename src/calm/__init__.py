"""calm: few-shot audio classifiers from the attention heads of audio-language models.

The public names are imported lazily, so ``import calm`` (and the CLI's start) stays fast and
torch is only loaded by the parts that need it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Item": "calm.data.items",
    "load_dataset": "calm.data.loaders",
    "DatasetError": "calm.data.loaders",
    "Episode": "calm.data.episodes",
    "episodes": "calm.data.episodes",
    "sample_support": "calm.data.episodes",
    "map_answer": "calm.evaluate.answers",
    "class_list_prompt": "calm.evaluate.answers",
    "HeadFeatures": "calm.features",
    "HeadIndex": "calm.features",
    "AudioLoadError": "calm.audio",
    "load_audio": "calm.audio",
    "load_backbone": "calm.backbones",
    "Backbone": "calm.backbones.base",
    "extract": "calm.heads",
    "extract_ray": "calm.distributed",
    "FeatureStore": "calm.store",
    "evaluate_features": "calm.evaluate.protocol",
    "EvaluationReport": "calm.evaluate.report",
    "fit_classifier": "calm.predict",
    "predict_files": "calm.predict",
    "Prediction": "calm.predict",
    "SAVClassifier": "calm.classifiers",
    "CALMClassifier": "calm.classifiers",
    "TunedCALMClassifier": "calm.classifiers",
    "UniformVoteClassifier": "calm.classifiers",
    "TopNSoftVoteClassifier": "calm.classifiers",
    "ClassAgnosticCALMClassifier": "calm.classifiers",
    "ConcatCentroidClassifier": "calm.classifiers",
    "LogisticProbe": "calm.classifiers",
    "tune_calm": "calm.classifiers",
    "TuningResult": "calm.classifiers",
    "weight_maps": "calm.classifiers",
    "plot_weight_maps": "calm.classifiers",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'calm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

"""calm: few-shot audio classifiers from the attention heads of audio-language models.

    >>> import calm
    >>> backbone = calm.load_backbone("whisper-base")             # or a Qwen2-Audio folder, a hub id
    >>> clf = calm.fit_classifier(backbone, calm.load_dataset("clips/"), prompt="What sound is this?")
    >>> calm.save(clf, "clf.safetensors")
    >>> calm.predict_files(backbone, calm.load("clf.safetensors"), ["new.wav"])

The public names are imported lazily, so ``import calm`` (and the CLI's start) stays fast and
torch is only loaded by the parts that need it; type checkers see them through the imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

_EXPORTS: dict[str, str] = {
    "Item": "calm.data.items",
    "load_dataset": "calm.data.loaders",
    "DatasetError": "calm.data.loaders",
    "Episode": "calm.data.episodes",
    "episodes": "calm.data.episodes",
    "sample_support": "calm.data.episodes",
    "map_answer": "calm.evaluation.answers",
    "class_list_prompt": "calm.evaluation.answers",
    "HeadFeatures": "calm.features",
    "HeadIndex": "calm.features",
    "MediaLoadError": "calm.media",
    "AudioLoadError": "calm.media",
    "load_audio": "calm.media",
    "load_video": "calm.media",
    "load_backbone": "calm.backbones",
    "BackboneOptions": "calm.backbones",
    "Backbone": "calm.backbones",
    "extract": "calm.heads",
    "ExtractionConfig": "calm.engine",
    "extract_ray": "calm.distributed",
    "RayCluster": "calm.distributed",
    "FeatureStore": "calm.store",
    "evaluate": "calm.evaluation.protocol",
    "evaluate_features": "calm.evaluation.protocol",
    "EvaluationConfig": "calm.evaluation.config",
    "EvaluationReport": "calm.evaluation.report",
    "fit_classifier": "calm.predict",
    "predict_files": "calm.predict",
    "load_backbone_for": "calm.predict",
    "Prediction": "calm.predict",
    "scan": "calm.scanning",
    "ScanOptions": "calm.scanning",
    "Method": "calm.methods",
    "register_method": "calm.methods",
    "save": "calm.classifiers",
    "load": "calm.classifiers",
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

if TYPE_CHECKING:
    from calm.backbones import Backbone, BackboneOptions, load_backbone
    from calm.classifiers import (
        CALMClassifier,
        ClassAgnosticCALMClassifier,
        ConcatCentroidClassifier,
        LogisticProbe,
        SAVClassifier,
        TopNSoftVoteClassifier,
        TunedCALMClassifier,
        TuningResult,
        UniformVoteClassifier,
        load,
        plot_weight_maps,
        save,
        tune_calm,
        weight_maps,
    )
    from calm.data.episodes import Episode, episodes, sample_support
    from calm.data.items import Item
    from calm.data.loaders import DatasetError, load_dataset
    from calm.evaluation.answers import class_list_prompt, map_answer
    from calm.evaluation.config import EvaluationConfig
    from calm.evaluation.protocol import evaluate, evaluate_features
    from calm.evaluation.report import EvaluationReport
    from calm.features import HeadFeatures, HeadIndex
    from calm.distributed import RayCluster, extract_ray
    from calm.engine import ExtractionConfig
    from calm.heads import extract
    from calm.media import AudioLoadError, MediaLoadError, load_audio, load_video
    from calm.methods import Method
    from calm.methods import register as register_method
    from calm.predict import Prediction, fit_classifier, load_backbone_for, predict_files
    from calm.scanning import ScanOptions, scan
    from calm.store import FeatureStore


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'calm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), "register" if name == "register_method" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

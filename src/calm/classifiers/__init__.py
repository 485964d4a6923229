"""Few-shot classifiers on attention-head features [N, K, D]: SAV, CALM, ablations and a probe.

All are scikit-learn-style estimators (``fit`` / ``predict`` / ``predict_proba`` /
``decision_function`` / ``get_params`` / ``set_params``) that accept numpy arrays (float16 memory
maps included), torch tensors or :class:`~calm.features.HeadFeatures`, and labels of any sortable
type. ``save`` / ``load`` write and read them as safetensors + JSON.
"""

from calm.classifiers._base import NotFittedError
from calm.classifiers._cosine import CONSTANT_TOL
from calm.classifiers._reliability import SCHEMES
from calm.classifiers.ablations import (ClassAgnosticCALMClassifier, ConcatCentroidClassifier, TopNSoftVoteClassifier,
                                        UniformVoteClassifier)
from calm.classifiers.default import DefaultClassifier
from calm.classifiers.io import load, save
from calm.classifiers.plots import layer_profile, plot_layer_profile, plot_weight_maps, weight_maps
from calm.classifiers.probe import LogisticProbe
from calm.classifiers.reliability_vote import CALMClassifier
from calm.classifiers.sav import SAVClassifier
from calm.classifiers.trust import Calibrated
from calm.classifiers.tuned_probe import TunedLogisticProbe
from calm.classifiers.tuning import DEFAULT_GRID, TunedCALMClassifier, TuningResult, tune_calm
from calm.classifiers.whitening import HeadWhitener

__all__ = [
    "CALMClassifier", "CONSTANT_TOL", "Calibrated", "ClassAgnosticCALMClassifier", "ConcatCentroidClassifier",
    "DEFAULT_GRID", "DefaultClassifier",
    "LogisticProbe", "NotFittedError", "SAVClassifier", "SCHEMES", "TopNSoftVoteClassifier", "TunedCALMClassifier",
    "TunedLogisticProbe", "TuningResult", "UniformVoteClassifier", "HeadWhitener", "layer_profile", "load",
    "plot_layer_profile", "plot_weight_maps", "save", "tune_calm", "weight_maps",
]

"""Config objects: a run's settings as one frozen object that the CLI builds, the library takes as
``config=`` or builds from keyword arguments (never both), and reports embed."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
from test_evaluate import synthetic

from calm.cli import build_parser
from calm.cli.evaluate import evaluation_config
from calm.config import configured, split_options
from calm.distributed import RayCluster
from calm.engine import ExtractionConfig
from calm.errors import InputError
from calm.evaluation.config import EvaluationConfig
from calm.evaluation.protocol import evaluate_features
from calm.heads import extraction_config


def _quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_features(*args, **kwargs)


def test_a_config_and_the_keywords_that_build_it_give_the_same_report_which_embeds_it():
    features, items = synthetic(["dog", "cat", "bird"] * 6)
    config = EvaluationConfig(shots=[1, 2], seeds=2, methods=["sav", "calm"], trust=False)
    assert config.shots == (1, 2) and config.methods == ("sav", "calm")  # frozen and hashable-shaped
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seeds = 3
    by_config = _quiet(features, items, config=config)
    by_keywords = _quiet(features, items, shots=(1, 2), seeds=2, methods=["sav", "calm"], trust=False)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in by_config.results]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in by_keywords.results]
    embedded = by_config.config["evaluation"]
    assert embedded == {**config.to_dict(), "task": "multiclass"}  # the task as resolved
    assert embedded["shots"] == [1, 2] and embedded["methods"] == ["sav", "calm"] and embedded["trust"] is False


def test_config_and_keywords_together_or_an_unknown_keyword_are_refused():
    features, items = synthetic(["dog", "cat"] * 4)
    with pytest.raises(InputError, match=r"evaluate_features\(\): give the run's settings either"):
        evaluate_features(features, items, config=EvaluationConfig(), seeds=2)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) 'shot'; EvaluationConfig has: shots, seeds"):
        evaluate_features(features, items, shot=(1,))
    with pytest.raises(InputError, match="workers must be at least 1, got 0"):
        EvaluationConfig(workers=0)
    with pytest.raises(TypeError, match="'batch_sise'; ExtractionConfig has: batch_size"):
        extraction_config(None, {"batch_sise": 4}, "extract")
    with pytest.raises(InputError, match=r"extract\(\): give the run's settings"):
        extraction_config(ExtractionConfig(), {"batch_size": 4}, "extract")
    assert extraction_config(None, {"loader_threads": 2}, "extract") == ExtractionConfig(loaders=2)  # the old name


def test_keyword_options_are_shared_out_by_field():
    cluster, extraction, rest = split_options({"num_actors": 2, "batch_size": 4, "nope": 1}, RayCluster, ExtractionConfig)
    assert (cluster, extraction, rest) == ({"num_actors": 2}, {"batch_size": 4}, {"nope": 1})
    assert configured(RayCluster, None, cluster, "extract_ray") == RayCluster(num_actors=2)


def test_the_cli_builds_the_evaluation_config():
    parse = build_parser().parse_args
    named = evaluation_config(parse(["evaluate", "--data", "d", "--model", "m", "--methods", "calm", "zero-shot",
                                     "--shots", "2", "4", "--seeds", "3", "--no-pseudo-label", "--no-trust"]))
    assert named == EvaluationConfig(shots=(2, 4), seeds=3, methods=("calm", "zero-shot"), workers=None,
                                     trust=False, zero_shot=None, pseudo_label=False)
    default = evaluation_config(parse(["evaluate", "--data", "d", "--model", "m"]))
    assert default.methods is None and default.zero_shot is True and default.pseudo_label is True  # every method

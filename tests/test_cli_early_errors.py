"""Fail before work: what can be checked before a model loads is checked then, in one line (a shot
count no class can fill, an unknown or invalid ``--param``, a missing or undecodable file for
``predict``); and the messages, help texts and defaults a new user met first."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from calm.cli import build_parser, main
from calm.fingerprint import check_fingerprint
from test_cli_fit_predict import TONES, tone


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """3 classes: low and mid with 3 tones each, high with 2."""
    root = tmp_path_factory.mktemp("early")
    for name, hz in TONES.items():
        (root / name).mkdir()
        for k in range(2 if name == "high" else 3):
            tone(root / name / f"{name}{k}.wav", hz * (1 + 0.03 * k), seed=k)
    return root


def run(capsys, *args: str) -> tuple[int, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(list(args))
    err = capsys.readouterr().err.strip()
    return status, err


def test_a_shot_count_above_the_smallest_class_fails_before_extraction(folder, tmp_path, capsys, no_model):
    status, err = run(capsys, "evaluate", "--data", str(folder), "--model", "tiny:whisper", "--shots", "1", "3",
                      "--out", str(tmp_path / "report"))
    assert status == 1 and len(err.splitlines()) == 1
    assert err == "calm evaluate: class 'high' has 2 item(s) to draw from, 3-shot needs 3"


def test_an_unknown_param_lists_the_methods_parameters(folder, tmp_path, capsys, no_model):
    status, err = run(capsys, "fit", "--data", str(folder), "--out", str(tmp_path / "c.safetensors"),
                      "--param", "foo=1")
    assert status == 1
    assert err == "calm fit: method 'auto' has no parameter 'foo'; its parameters: geometry, tau"
    status, err = run(capsys, "fit", "--data", str(folder), "--out", str(tmp_path / "c.safetensors"),
                      "--method", "probe", "--param", "tau=1")
    assert err == "calm fit: method 'probe' has no parameter 'tau'; its parameters: C, max_iter"


@pytest.mark.parametrize("value, message", [("-1", "tau must be a positive number, got -1"),
                                            ("x", "tau must be a positive number, got 'x'")])
def test_a_bad_param_value_fails_before_the_model_loads(folder, tmp_path, capsys, no_model, value, message):
    status, err = run(capsys, "fit", "--data", str(folder), "--out", str(tmp_path / "c.safetensors"),
                      "--param", f"tau={value}")
    assert status == 1 and err == f"calm fit: method 'auto': {message}"


def test_a_bad_target_frr_and_an_output_folder_fail_before_the_model_loads(folder, tmp_path, capsys, no_model):
    status, err = run(capsys, "fit", "--data", str(folder), "--out", str(tmp_path / "c.safetensors"),
                      "--target-frr", "1.5")
    assert status == 1 and err == "calm fit: target_frr must be a rate in [0, 1), got 1.5"
    status, err = run(capsys, "fit", "--data", str(folder), "--out", str(tmp_path))
    assert status == 1 and "is a folder; give a file name" in err


def test_fit_help_lists_every_methods_parameters():
    text = build_parser()._subparsers._group_actions[0].choices["fit"].format_help()
    flat = " ".join(text.split())
    assert "auto: geometry, tau" in flat and "probe: C, max_iter" in flat


@pytest.fixture(scope="module")
def classifier(folder, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", "--data", str(folder), "--model", "tiny:whisper", "--out", str(path), "--quiet"]) == 0
    return path


def test_predict_checks_its_files_before_the_model_loads(classifier, folder, tmp_path, capsys, no_model):
    missing = tmp_path / "gone.wav"
    status, err = run(capsys, "predict", "--classifier", str(classifier), str(folder / "low" / "low0.wav"),
                      str(missing))
    assert status == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"calm predict: {missing}: ") and "before loading the model" in err
    garbage = tmp_path / "noise.wav"
    garbage.write_bytes(b"not audio at all" * 10)
    status, err = run(capsys, "predict", "--classifier", str(classifier), str(garbage))
    assert status == 1 and err.startswith(f"calm predict: {garbage}: ")


def test_fit_defaults_to_whisper_base_like_app_and_demo():
    args = build_parser().parse_args(["fit", "--data", "d", "--out", "c.safetensors"])
    assert args.model == "whisper-base"
    assert build_parser().parse_args(["demo"]).model == "whisper-base"


def test_demo_help_describes_the_command_and_its_batch_size():
    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    assert demo.description and "offline" in demo.description
    assert next(a for a in demo._actions if a.dest == "batch_size").help


def test_data_list_gives_whole_sentences(capsys):
    assert main(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.endswith((".", ")")) and line.count("(") == line.count(")") for line in lines)


def test_fingerprint_differences_are_one_line_and_lists_are_summarised():
    sites = [f"model.decoder.layers.{i}.self_attn" for i in range(4)]
    with pytest.raises(ValueError) as caught:
        check_fingerprint({"model_id": "a", "encoder_seconds": None, "sites": sites},
                          {"model_id": "a", "encoder_seconds": 5.0, "sites": sites[:2]}, "the classifier")
    message = str(caught.value)
    assert "\n" not in message and ":;" not in message
    assert message == ("the classifier: features from another backbone, options or prompt than expected ("
                       "encoder_seconds: expected None, got 5.0; sites: expected 4 entries, got 2; the same first 2); "
                       "refit, or use the same model, options and prompt")


def test_rejection_without_out_of_fold_items_says_so_in_a_sentence():
    import numpy as np

    from calm.classifiers import Calibrated
    from calm.classifiers.default import DefaultClassifier

    X = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = Calibrated(DefaultClassifier()).fit(X, ["a", "b"])
    with pytest.raises(ValueError) as caught:
        clf.predict_open(X)
    assert str(caught.value) == ("rejection: the classifier has no support items scored out of fold; fit it with at "
                                 "least 2 items per class")

"""Compile when it pays: the decision (a pure function), what a backbone does with it, and the
fingerprint (unchanged for runs that do not compile)."""

from __future__ import annotations

import argparse

import pytest

from calm.backbones import base
from calm.backbones.options import COMPILE_MIN_CLIPS, BackboneOptions, should_compile
from calm.backbones.tiny import tiny_backbone
from calm.cli._common import add_backbone_arguments, backbone_options


@pytest.mark.parametrize(("choice", "device", "clips", "expected"), [
    (None, "cuda", COMPILE_MIN_CLIPS, True),       # a large job on a GPU repays compilation
    (None, "cuda", COMPILE_MIN_CLIPS - 1, False),  # a smaller one does not
    (None, "cpu", 10 * COMPILE_MIN_CLIPS, False),  # nor does any job on a CPU
    (None, "mps", 10 * COMPILE_MIN_CLIPS, False),
    (True, "cpu", 1, True),                         # --compile
    (False, "cuda", 10 * COMPILE_MIN_CLIPS, False),  # --no-compile
])
def test_compile_only_where_it_pays_unless_told(choice, device, clips, expected):
    assert should_compile(choice, device, clips) is expected


def test_the_threshold_is_where_the_measured_compile_time_is_repaid():
    # 14-34 s of compilation against 1.4 ms saved per 5 s clip: repaid after 10,000-24,300 clips
    assert 14 / 1.4e-3 <= COMPILE_MIN_CLIPS <= 34 / 1.4e-3


def test_fingerprints_without_compilation_are_those_of_before():
    assert BackboneOptions().fingerprint() == BackboneOptions(compile=False).fingerprint() == {}
    assert BackboneOptions(compile=True).fingerprint() == {"compile": True}
    backbone = tiny_backbone("qwen2_audio")
    before = backbone.fingerprint()
    assert "compile" not in before and backbone.compile_for(10 * COMPILE_MIN_CLIPS) is False  # a CPU never
    assert backbone.fingerprint() == before


def test_a_backbone_that_compiles_for_a_job_is_keyed_apart(monkeypatch):
    backbone = tiny_backbone("qwen2_audio")
    told = tiny_backbone("qwen2_audio", options=BackboneOptions(compile=False))
    monkeypatch.setattr(base, "should_compile", lambda choice, device, clips: clips >= 100)
    assert backbone.compile_for(99) is False and "compile" not in backbone.fingerprint()
    assert backbone.compile_for(100) is True and backbone.fingerprint()["compile"] is True
    assert backbone.with_options(padding_side="right").fingerprint()["compile"] is True  # same weights
    assert told.compile_for(100) is False and "compile" not in told.fingerprint()  # --no-compile wins


@pytest.mark.parametrize(("argv", "compile_", "loaders"), [
    ([], None, None), (["--compile"], True, None), (["--no-compile", "--loaders", "0"], False, 0),
    (["--loaders", "3"], None, 3)])
def test_cli_compile_and_loaders_reach_the_options(argv, compile_, loaders):
    parser = argparse.ArgumentParser()
    add_backbone_arguments(parser)
    options = backbone_options(parser.parse_args(["--model", "tiny:qwen2_audio", *argv]))
    assert (options.compile, options.loaders) == (compile_, loaders)

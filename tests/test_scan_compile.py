"""A long scan compiles the layers where calm.extract would (the engine's own rule and threshold,
here made to apply on a CPU with a stand-in compiler): the windows are stored under the compiled
fingerprint, a classifier fitted without compiling scans them, and a short scan or --no-compile
does not compile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

import calm.backbones.base as base
from calm.backbones import BackboneOptions
from calm.backbones.tiny import tiny_backbone
from calm.data.items import Item
from calm.predict import fit_classifier
from calm.scanning import ScanOptions, scan

RATE = 16000
PROMPT = "What sound is this?"
OPTIONS = ScanOptions(window=0.5, hop=0.25)  # 23 windows over the 6 s file


@pytest.fixture()
def pretend_gpu(monkeypatch):
    """Jobs of 20 clips or more compile; compiling only marks the model (no compiler runs)."""
    monkeypatch.setattr(base, "should_compile", lambda choice, device, clips: clips >= 20)
    monkeypatch.setattr(base, "compile_layers", lambda model: setattr(model, base.COMPILED_MARK, True))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[list[Item], Path, Path]:
    root = tmp_path_factory.mktemp("compile")
    rng = np.random.default_rng(0)
    t = np.arange(RATE // 2) / RATE
    support = []
    for name, hz in (("low", 300.0), ("high", 2500.0)):
        for k in range(2):
            soundfile.write(root / f"{name}{k}.wav", 0.3 * np.sin(2 * np.pi * hz * (1 + 0.02 * k) * t), RATE)
            support.append(Item(f"{name}{k}", root / f"{name}{k}.wav", label=name))
    soundfile.write(root / "long.wav", 0.05 * rng.standard_normal(6 * RATE), RATE)
    soundfile.write(root / "short.wav", 0.05 * rng.standard_normal(2 * RATE), RATE)  # 7 windows
    return support, root / "long.wav", root / "short.wav"


def test_a_long_scan_compiles_and_stores_its_windows_apart(files, tmp_path, pretend_gpu):
    support, long, short = files
    backbone = tiny_backbone("whisper")
    clf = fit_classifier(backbone, support, PROMPT, method="sav")  # 4 clips: not compiled
    assert "compile" not in clf.fingerprint_
    plain = scan(tiny_backbone("whisper", options=BackboneOptions(compile=False)), clf, [long], OPTIONS)[0]
    scan(backbone, clf, [short], OPTIONS)
    assert not backbone.compiled  # 7 windows
    compiled = scan(backbone, clf, [long], OPTIONS, store=tmp_path / "store")[0]
    assert backbone.compiled and backbone.fingerprint()["compile"] is True
    np.testing.assert_array_equal(compiled.probabilities, plain.probabilities)  # the stand-in changes no number
    told = tiny_backbone("whisper", options=BackboneOptions(compile=False))
    scan(told, clf, [long], OPTIONS, store=tmp_path / "store")
    assert not told.compiled  # --no-compile wins
    keys = [p for p in (tmp_path / "store").iterdir() if p.is_dir()]
    assert len(keys) == 2  # the compiled windows and the others are kept apart

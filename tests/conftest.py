"""Shared test set-up.

* One torch thread: the unit tests run tiny models whose operations are too small to gain from
  threads; on a busy 2-core machine, threads made them up to 20x slower.
* Hermetic: what calm builds once (the converted offline Whisper, demo data), and what transformers
  and matplotlib cache, go to a cache in the repository (``.calm-test-cache``, ignored by git)
  unless the environment says otherwise, never under the user's home; nothing in the default suite needs the network (the demo data's
  ``apt-get download`` is skipped, not failed, when no package mirror answers).
"""

import os
from pathlib import Path

import pytest
import torch

import calm.backbones.loading

torch.set_num_threads(1)
_CACHE = Path(__file__).resolve().parents[1] / ".calm-test-cache"
os.environ.setdefault("CALM_CACHE", str(_CACHE))
os.environ.setdefault("HF_HOME", str(_CACHE / "huggingface"))  # transformers' caches
os.environ.setdefault("MPLCONFIGDIR", str(_CACHE / "matplotlib"))  # matplotlib's font cache


def demo_sounds() -> Path:
    """The Asterisk recordings the demo data is built from, or a skip saying why they are missing."""
    from calm.devdata.sources import DemoDataError, asterisk_sounds

    try:
        return asterisk_sounds()
    except DemoDataError as error:
        pytest.skip(f"the demo recordings are not available here: {error}")


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the error must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr(calm.backbones.loading, "load_backbone", refuse)
    monkeypatch.setattr(calm.backbones, "load_backbone", refuse)

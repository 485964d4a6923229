"""The prompt is rendered and tokenised once per prompt, and each clip splices in its own number of
audio tokens: the input ids and attention masks are exactly those calm built before, when every
batch tokenised every clip's expanded text, on every tiny family, both padding sides, the fast and
the reference path, with and without a prompt.

``prompt_ids_before_hoisting.json`` holds SHA-256 digests (first 16 hex digits) of the int64 ids
and masks built by commit 53467e5 (before the change) for these clips and prompts."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from calm.backbones.tiny import TINY_FAMILIES, tiny_backbone

BEFORE = json.loads((Path(__file__).parent / "prompt_ids_before_hoisting.json").read_text())
PROMPTS = ["What is this sound? Réponds en un mot.", ""]


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_input_ids_are_those_built_before(family):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = tiny_backbone(family)
    rng = np.random.default_rng(0)  # the clips of the recorded run: 0.5, 1.3 and 2.9 s of noise
    clips = [rng.standard_normal(int(s * backbone.sample_rate)).astype(np.float32) * 0.1 for s in (0.5, 1.3, 2.9)]
    checked = 0
    for prompt in PROMPTS:
        for side in ("left", "right"):
            for fast in (True, False):
                key = f"{family}|{prompt}|{side}|{'fast' if fast else 'reference'}"
                twin = backbone.with_options(padding_side=side, fast=fast)
                for _ in range(2):  # the second batch reuses the kept prompt ids
                    inputs = twin.build_inputs(clips, prompt)
                    ids = inputs.get("input_ids", inputs.get("decoder_input_ids"))
                    got = {"shape": list(ids.shape), "ids": _digest(ids), "mask": _digest(inputs["attention_mask"])}
                    assert got == BEFORE[key], key
                checked += 1
    assert checked == 8

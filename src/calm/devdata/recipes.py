"""The recipes of ``calm data prepare``: datasets built offline from Debian packages.

* the demo tasks (:mod:`calm.devdata.speech`): ``spoken-numbers`` and ``spoof``;
* the dev tasks that choose calm's methods and defaults (:mod:`calm.devdata.devsets`, described in
  docs/devsets.md): ``instruments``, ``instruments-shift``, ``languages``, ``languages-shift``,
  and ``drums``, ``drums-shift`` (:mod:`calm.devdata.drums`).

Adding one is a function ``prepare_<name>(out_dir, verbose=True) -> metadata CSV`` and one line in
:data:`RECIPES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from calm.cache import cache_dir
from calm.devdata import detection, devsets, drums, speech
from calm.errors import InputError

RECIPES: dict[str, Callable[..., Path]] = {
    "spoken-numbers": speech.prepare_spoken_numbers,
    "spoof": speech.prepare_spoof,
    "instruments": devsets.prepare_instruments,
    "instruments-shift": devsets.prepare_instruments_shift,
    "languages": devsets.prepare_languages,
    "languages-shift": devsets.prepare_languages_shift,
    "drums": drums.prepare_drums,
    "drums-shift": drums.prepare_drums_shift,
    "detection": detection.prepare_detection,
    "detection-ambient": detection.prepare_detection_ambient,
}
"""Recipe name -> function(out_dir) that builds the dataset there and returns its metadata CSV."""


def prepare(name: str, out_dir: Path | None = None, verbose: bool = True) -> Path:
    """Build dataset ``name`` into ``out_dir`` (default ``<cache>/data/<name>``); its metadata CSV."""
    if name not in RECIPES:
        raise InputError(f"unknown dataset recipe {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name](out_dir if out_dir is not None else cache_dir("data", name), verbose=verbose)

"""Where calm keeps what it builds once and reuses (converted models, demo datasets, downloads),
and how it builds them so that a folder that exists is complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def cache_dir(*parts: str) -> Path:
    """``$CALM_CACHE`` (default ``~/.cache/calm``) joined with ``parts``; created if missing."""
    root = os.environ.get("CALM_CACHE") or Path.home() / ".cache" / "calm"
    path = Path(root).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_built(target: Path, stamp_name: str, stamp: dict[str, Any]) -> bool:
    """Whether ``target`` holds a complete build whose stamp file equals ``stamp``."""
    marker = target / stamp_name
    try:
        return marker.is_file() and json.loads(marker.read_text()) == stamp
    except ValueError:
        return False


def build_atomically(target: Path, stamp_name: str, stamp: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """``target``, built once: ``build(staging)`` writes into a temporary sibling folder, which gets
    the stamp file and is renamed into place, so ``target`` is complete or absent. A complete build
    with the same stamp is reused; an older one is replaced; a concurrent builder that finished
    first wins."""
    if is_built(target, stamp_name, stamp):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(staging)
        (staging / stamp_name).write_text(json.dumps(stamp))
        for path in (staging, *staging.rglob("*")):  # mkdtemp and some writers leave owner-only modes
            path.chmod(0o755 if path.is_dir() else 0o644)
        if target.exists():
            if is_built(target, stamp_name, stamp):
                return target
            stale = target.with_name(f".{target.name}.stale.{os.getpid()}")
            target.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            if not is_built(target, stamp_name, stamp):  # lost a race to a builder that did not finish
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target

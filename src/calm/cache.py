"""Where calm keeps what it builds once and reuses: converted models, demo datasets, downloads."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$CALM_CACHE`` (default ``~/.cache/calm``) joined with ``parts``; created if missing."""
    root = os.environ.get("CALM_CACHE") or Path.home() / ".cache" / "calm"
    path = Path(root).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path

"""Durable writes: whole writes at a position, atomic replacement of a file, fsynced folders."""

from __future__ import annotations

import os
from pathlib import Path


def write_all(fd: int, payload: bytes) -> None:
    """Write all of ``payload`` at the descriptor's position (os.write may write less)."""
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def pwrite_all(fd: int, payload: bytes, offset: int) -> None:
    """Write all of ``payload`` at ``offset``."""
    view = memoryview(payload)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` at once: written to a temporary file, fsynced, renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

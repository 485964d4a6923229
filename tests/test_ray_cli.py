"""``calm extract --ray`` at its edges: an address where no cluster answers fails within the
timeout with one line naming it (it used to retry for minutes), a ``ray://`` address says what it
needs, and ``--quiet`` on a local cluster prints nothing of Ray's on stderr."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install 'calm-audio[ray]'")
pytest.importorskip("ray.data", reason="the Ray tests need Ray Data (pyarrow): pip install 'calm-audio[ray]'")

SRC = Path(__file__).resolve().parents[1] / "src"


def _calm(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``calm`` in a child process (a hang fails the test instead of stalling it)."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = "import sys; from calm.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for label, hz in (("low", 200.0), ("high", 900.0)):
        (root / label).mkdir()
        t = np.arange(8000) / 16000
        soundfile.write(root / label / f"{label}.wav", (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 16000)
    return root


def test_an_address_without_a_cluster_fails_fast_in_one_line(tmp_path, folder):
    done = _calm("extract", "--data", str(folder), "--out", str(tmp_path / "out"), "--model", "tiny:qwen2_audio",
                 "--ray", "127.0.0.1:1", "--ray-timeout", "5", "--quiet")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("calm extract: 127.0.0.1:1: no Ray cluster answers there")


def test_a_ray_client_address_says_what_it_needs(tmp_path, folder):
    done = _calm("extract", "--data", str(folder), "--out", str(tmp_path / "out"), "--model", "tiny:qwen2_audio",
                 "--ray", "ray://127.0.0.1:1", "--ray-timeout", "5", "--quiet")
    has_client = importlib.util.find_spec("grpc") is not None
    expected = "no Ray cluster answers there" if has_client else "ray:// addresses need Ray's client"
    assert done.returncode == 1 and expected in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_quiet_prints_nothing_of_rays_on_a_local_cluster(tmp_path, folder):
    done = _calm("extract", "--data", str(folder), "--out", str(tmp_path / "out"), "--model", "tiny:qwen2_audio",
                 "--ray", "--quiet", "--batch-size", "1")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "" and "done: 2" in done.stdout

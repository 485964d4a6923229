"""benchmarks/gpu_check.sh parses and, with --dry-run, lists its steps without a GPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def test_gpu_check_parses_and_lists_its_steps():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run"], check=True, capture_output=True, text=True).stdout
    assert "extract_throughput.py --device cuda --seconds 5 10" in out and "--compile" in out
    assert "Ray multi-GPU" in out and "ray_extract.py --gpus --actors 1" in out and "done in" in out

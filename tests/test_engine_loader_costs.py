"""What a loader process spends per clip: the downmix (calm.media.downmix) has the bits of
numpy's channel mean, which it replaces because numpy's reduction along short rows was half the
cost of loading a stereo clip; and a loader keeps freed memory (calm.clips.keep_freed_memory)
rather than faulting each clip's arrays in again."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile

from calm.media import PAIRWISE_FROM, downmix, load_audio


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 7, PAIRWISE_FROM, 12])
def test_downmix_has_the_bits_of_numpys_mean(channels):
    rng = np.random.default_rng(channels)
    samples = (rng.standard_normal((5000, channels)) * 10.0 ** rng.integers(-9, 1, (5000, channels)))
    samples = samples.astype(np.float32)
    samples[:7] = -0.0  # numpy's sum starts from +0.0: an all -0.0 row averages to +0.0
    samples[7:9, 0] = np.float32(1e-38)  # subnormal sums
    mono = downmix(samples)
    assert mono.dtype == np.float32 and mono.shape == (5000,)
    expected = samples[:, 0] if channels == 1 else samples.mean(axis=1, dtype=np.float32)  # mono: as it is
    np.testing.assert_array_equal(mono.view(np.uint32), expected.view(np.uint32))


def test_a_stereo_file_loads_as_the_mean_of_its_channels(tmp_path):
    rng = np.random.default_rng(0)
    stereo = (0.3 * rng.standard_normal((16000, 2))).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", stereo, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav", 16000), stereo.mean(axis=1, dtype=np.float32))


FAULTS = """
import resource, sys
import numpy as np
from calm.clips import keep_freed_memory
from calm.logmel import LogMel
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
rng = np.random.default_rng(0)
mel = LogMel(400, 160, 480000, 3000, rng.random((201, 80), dtype=np.float32))
audio = rng.standard_normal(80000).astype(np.float32)  # 5 s at 16 kHz
mel(audio)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    mel(audio)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_loader_process_reuses_freed_memory_instead_of_faulting_it_in_again():
    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, check=True, text=True)
        kept, count = out.stdout.split()
        return kept, int(count)

    kept, reused = faults("keep")
    _, fresh = faults("default")
    assert kept == "True"
    assert fresh >= 20 * 200 and reused < 100  # a clip's log-mel faults hundreds of pages in, unless kept

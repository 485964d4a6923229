"""The loaders' downmix (calm.media.downmix): the bits of numpy's channel mean, which it replaces
because numpy's reduction along short rows was half the cost of loading a stereo clip."""

from __future__ import annotations

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

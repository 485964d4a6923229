"""Audio decoding: resampling, downmix, containers via PyAV, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from calm.media import AudioLoadError, content_hash, duration, load_audio


def _sine(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("source_rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_frequency_and_length(tmp_path, source_rate):
    path = tmp_path / "sine.wav"
    soundfile.write(path, _sine(440.0, source_rate), source_rate)
    x = load_audio(path, 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 16000) <= 1
    assert abs(_peak_hz(x, 16000) - 440.0) < 2.0
    assert np.max(np.abs(x)) == pytest.approx(0.5, abs=0.02)


def test_same_rate_is_untouched(tmp_path):
    path = tmp_path / "sine.flac"
    soundfile.write(path, _sine(1000.0, 16000), 16000, subtype="PCM_24")
    np.testing.assert_allclose(load_audio(path, 16000), _sine(1000.0, 16000), atol=1e-6)


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = _sine(300.0, 16000), _sine(700.0, 16000)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 16000), (left + right) / 2, atol=1e-6)


def test_duration_from_header(tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, _sine(440.0, 8000, 2.5), 8000)
    assert duration(path) == pytest.approx(2.5)


def _bad_files(tmp_path):
    good = tmp_path / "good.wav"
    soundfile.write(good, _sine(440.0, 16000), 16000)
    raw = bytearray(good.read_bytes())
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("these are my notes, not audio\n")
    corrupt = tmp_path / "corrupt.wav"
    raw[20:36] = b"\xff" * 16  # the fmt chunk
    corrupt.write_bytes(bytes(raw))
    header_only = tmp_path / "header_only.wav"
    header_only.write_bytes(good.read_bytes()[:44])
    nan = tmp_path / "nan.wav"
    samples = _sine(440.0, 16000)
    samples[100] = np.nan
    soundfile.write(nan, samples, 16000, subtype="FLOAT")
    return {
        "empty": (empty, "empty file"),
        "text": (text, "not a decodable audio file"),
        "corrupt": (corrupt, "not a decodable audio file"),
        "header_only": (header_only, "truncated: the WAV header declares 32000 data bytes, the file holds 0"),
        "nan": (nan, "NaN"),
        "missing": (tmp_path / "missing.wav", "no such file"),
    }


@pytest.mark.parametrize("kind", ["empty", "text", "corrupt", "header_only", "nan", "missing"])
def test_bad_files_raise_naming_file_and_reason(tmp_path, kind):
    path, reason = _bad_files(tmp_path)[kind]
    with pytest.raises(AudioLoadError) as caught:
        load_audio(path, 16000)
    assert str(path) in str(caught.value) and reason in str(caught.value)
    assert caught.value.path == path
    assert isinstance(caught.value, ValueError)


def test_content_hash_follows_bytes(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    soundfile.write(a, _sine(440.0, 16000), 16000)
    b.write_bytes(a.read_bytes())
    assert content_hash(a) == content_hash(b) and len(content_hash(a)) == 64
    soundfile.write(b, _sine(441.0, 16000), 16000)
    assert content_hash(a) != content_hash(b)
    with pytest.raises(AudioLoadError, match="missing.wav"):
        content_hash(tmp_path / "missing.wav")


def _write_container(path, codec: str, rate: int) -> None:
    av = pytest.importorskip("av")
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build cannot encode {codec}")
    tone = _sine(440.0, rate)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


@pytest.mark.parametrize("name,codec,rate", [("clip.m4a", "aac", 44100), ("clip.mp4", "aac", 48000), ("clip.webm", "libopus", 48000)])
def test_containers_decode_through_av(tmp_path, name, codec, rate):
    path = tmp_path / name
    _write_container(path, codec, rate)
    x = load_audio(path, 16000)
    assert x.dtype == np.float32 and 15000 < len(x) < 17500  # encoders add a little priming
    assert abs(_peak_hz(x, 16000) - 440.0) < 2.0
    assert duration(path) == pytest.approx(1.0, abs=0.05)


def test_container_without_audio_says_so(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "silent_film.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(AudioLoadError, match="silent_film.mp4: no audio stream"):
        load_audio(path, 16000)

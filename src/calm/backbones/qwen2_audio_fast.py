"""The fast extraction path for Qwen2-Audio: the audio encoder runs only on the mel frames that
carry audio.

The reference path (``Qwen2AudioForConditionalGeneration`` called with the processor's inputs)
pads every clip to 30 s of log-mel frames (3000), computes the STFT over all of it on the CPU, and
runs the 32-layer audio encoder on all 1500 positions, although a 5 s clip fills only a sixth of
them. Here, for a batch whose longest clip has ``L`` mel frames, only the first
``T = min(3000, L + TRIM_MARGIN)`` frames are computed (in torch, on the model's device) and
encoded; the encoder's output is pooled, normed, projected and scattered into the token
embeddings exactly as the model does, and the decoder body (never the LM head) runs with the
attention mask and position ids of the reference path.

Why it is exact (not an approximation). Let ``L_i`` be clip i's frame count (the processor's
``feature_attention_mask`` sum) and ``F_i = (L_i - 1) // 2 + 1`` its count of encoder positions.

* Log-mel: frame t of the STFT (centred, ``n_fft`` 400, hop 160) sees samples
  [160 t - 200, 160 t + 200); past ``t = L_i + 1`` every frame is pure zero padding, whose
  log-mel is the floor ``log10(1e-10)``. So the clamp ``max(log_mel, max - 8)``, whose maximum the
  feature extractor takes over the whole 30 s, has the same maximum over the first ``L_i + 2``
  frames, and every kept frame (including padded frames near the end of the audio, which carry part
  of its last samples) has the processor's value, not zeros. Frames are cut from a zero-padded
  signal long enough that the STFT's reflect padding at the end never reaches a kept frame; at the
  full 30 s the signal is the processor's own (padded or truncated to 480000 samples).
* Convolutions: encoder position p (after ``conv1``: kernel 3, and ``conv2``: kernel 3, stride 2)
  reads mel frames 2p - 2 .. 2p + 2, so the valid positions p < F_i read frames up to
  ``L_i + 1 < T``: they see the same values as on 3000 frames. Positions past the cut (and the
  conv's zero padding at the new end) only change positions p >= F_i.
* Attention: positions past the longest clip's ``F`` are dropped; the encoder mask hides keys
  p >= F_i of shorter clips from every query, as in the reference path (the same bidirectional
  mask, only shorter; none at all when the batch's clips are equally long), and position
  embeddings are sliced to the kept positions, so valid positions never see the changed ones.
* Pooling and scatter: the reference path keeps ``(F_i - 2) // 2 + 1`` pooled frames per clip,
  each the mean of two valid positions; the same frames are scattered into the same audio tokens.

Hence valid features equal the reference path's up to floating-point summation order (matrix
shapes differ); the tests hold float32 to 1e-4 and the benchmark reports the per-head cosine.
The mel shortcut needs ``dither == 0`` (the default; dither is random); otherwise the processor's
mel is kept (still trimmed before the encoder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from calm.backbones.base import StopForward, find_decoder

if TYPE_CHECKING:
    from calm.backbones.qwen2_audio import Qwen2AudioBackbone

TRIM_MARGIN = 4
"""Mel frames kept past the longest clip: the convolutions' reach and the log-mel maximum need 2
(see the module docstring); 2 more are spare."""


@dataclass(frozen=True)
class AudioParts:
    """The modules of a Qwen2-Audio model the fast path calls, found by walking the model.

    Attributes:
        tower: the audio encoder (``conv1``, ``conv2``, ``embed_positions``, ``layers``,
            ``avg_pooler``, ``layer_norm``).
        projector: audio features -> text embedding width.
        decoder: the language model body (owns the token embedding; no LM head).
        audio_token_id: id of the ``<|AUDIO|>`` placeholder tokens.
    """

    tower: nn.Module
    projector: nn.Module
    decoder: nn.Module
    audio_token_id: int

    @classmethod
    def find(cls, model: nn.Module) -> "AudioParts":
        """Walk ``model`` for its audio encoder, projector and decoder body."""
        tower = projector = None
        for name, module in model.named_modules():
            if tower is None and all(hasattr(module, a) for a in ("conv1", "conv2", "embed_positions", "avg_pooler")):
                tower = module
            if projector is None and name.rsplit(".", 1)[-1] == "multi_modal_projector":
                projector = module
        if tower is None or projector is None:
            raise ValueError(f"{type(model).__name__}: no Qwen2-Audio encoder and projector found")
        config = model.config
        token = getattr(config, "audio_token_id", None)
        token = token if token is not None else getattr(config, "audio_token_index", None)
        if token is None:
            raise ValueError(f"{type(model).__name__}: the config names no audio token id")
        return cls(tower, projector, find_decoder(model)[1], int(token))

    def output_lengths(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder positions and audio tokens for clips of ``frames`` mel frames (the model's rule)."""
        return self.tower._get_feat_extract_output_lengths(frames)

    @property
    def max_frames(self) -> int:
        """Mel frames the encoder is built for (3000 = 30 s)."""
        return int(self.tower.config.max_source_positions) * self.tower.conv1.stride[0] * self.tower.conv2.stride[0]


# ---- inputs --------------------------------------------------------------------------------------
def mel_lengths(audios: Sequence[np.ndarray], feature_extractor: Any) -> list[int]:
    """Mel frames per clip as the processor's ``feature_attention_mask`` counts them (30 s at most)."""
    hop, limit = int(feature_extractor.hop_length), int(feature_extractor.n_samples)
    return [math.ceil(min(len(a), limit) / hop) for a in audios]


def kept_frames(longest: int, max_frames: int) -> int:
    """Mel frames the fast path computes for a batch whose longest clip has ``longest`` frames."""
    return min(max_frames, longest + TRIM_MARGIN)


def log_mel(
    audios: Sequence[np.ndarray], feature_extractor: Any, frames: int, device: torch.device
) -> torch.Tensor:
    """[B, mels, frames] float32: the first ``frames`` frames of the Whisper feature extractor's
    30 s log-mel spectrogram, computed in torch on ``device`` (equal to the processor's; see the
    module docstring). Needs ``frames`` >= each clip's mel length + 2 and no dither."""
    fe = feature_extractor
    hop, n_fft, limit = int(fe.hop_length), int(fe.n_fft), int(fe.n_samples)
    samples = min(limit, frames * hop + n_fft)
    wave = torch.zeros(len(audios), samples, dtype=torch.float32, pin_memory=device.type == "cuda")
    for row, audio in zip(wave, audios):
        clip = torch.from_numpy(np.asarray(audio, dtype=np.float32)[:samples])
        row[: len(clip)] = clip
    wave = wave.to(device, non_blocking=True)
    window = torch.hann_window(n_fft, device=device)
    stft = torch.stft(wave, n_fft, hop, window=window, return_complex=True)
    power = (stft[..., :frames].abs() ** 2).contiguous()
    mel_filters = torch.as_tensor(fe.mel_filters, dtype=torch.float32, device=device)
    spec = (mel_filters.T @ power).clamp(min=1e-10).log10()
    spec = torch.maximum(spec, spec.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (spec + 4.0) / 4.0


def build_fast_inputs(backbone: "Qwen2AudioBackbone", audios: Sequence[np.ndarray], prompt: str) -> dict[str, Any]:
    """Inputs for :func:`fast_forward`: the token sequence the processor would build (one
    ``<|AUDIO|>`` per audio token) and only the mel frames the encoder needs, computed on the
    backbone's device (the feature extractor must not dither)."""
    fe = backbone.processor.feature_extractor
    parts = backbone.audio_parts
    lengths = mel_lengths(audios, fe)
    frames = kept_frames(max(lengths), parts.max_frames)
    features = log_mel(audios, fe, frames, backbone.device).to(backbone.dtype)
    length_tensor = torch.tensor(lengths)
    tokens = parts.output_lengths(length_tensor)[1].tolist()
    text = backbone.render_prompt(prompt)
    placeholder = backbone.processor.audio_token
    if text.count(placeholder) != 1:
        raise ValueError(f"the rendered prompt has {text.count(placeholder)} {placeholder} tokens; expected 1")
    texts = [text.replace(placeholder, placeholder * n) for n in tokens]
    batch = backbone.tokenizer(texts, return_tensors="pt", padding=True, padding_side=backbone.padding_side)
    mask = (torch.arange(frames)[None, :] < length_tensor[:, None]).long()
    out = backbone.to_device({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                              "feature_attention_mask": mask})
    out["input_features"] = features
    return out


# ---- running -------------------------------------------------------------------------------------
def encoder_mask(tower: nn.Module, valid: torch.Tensor, like: torch.Tensor) -> Any:
    """The encoder's bidirectional attention mask hiding padded positions (keys), in the form its
    attention implementation takes (as the model builds it)."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # transformers before the masking utilities: the additive 4D mask
        blocked = ~valid.bool()[:, None, None, :]
        return torch.zeros(blocked.shape, dtype=like.dtype, device=like.device).masked_fill(
            blocked, torch.finfo(like.dtype).min)
    return create_bidirectional_mask(config=tower.config, inputs_embeds=like, attention_mask=valid.long())


def encoder_states(
    tower: nn.Module, features: torch.Tensor, frames: int, position_lengths: torch.Tensor | None
) -> torch.Tensor:
    """[B, positions, d]: a Whisper-style encoder trunk (convolutions, position embeddings sliced
    to match, layers) run on the first ``frames`` mel frames. With ``position_lengths``, only the
    longest clip's positions are kept and later keys of shorter clips are masked; None: all
    positions, no mask (as in Whisper itself). Pooling and the final norm are the caller's."""
    weight = tower.conv1.weight
    x = features[..., :frames].to(weight.device, weight.dtype)
    x = nn.functional.gelu(tower.conv1(x))
    x = nn.functional.gelu(tower.conv2(x)).permute(0, 2, 1)
    mask = None
    if position_lengths is not None:
        x = x[:, : int(position_lengths.max())]
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < position_lengths.to(x.device)[:, None]
        mask = encoder_mask(tower, valid, x)
    hidden = x + tower.embed_positions.weight[: x.shape[1]]
    for layer in tower.layers:
        out = layer(hidden, mask)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def encode_audio(parts: AudioParts, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """[total audio tokens, hidden]: the projected audio features of every clip, clip after clip,
    from the encoder run on the first ``kept_frames`` mel frames only."""
    tower = parts.tower
    frame_lengths = frame_lengths.cpu()
    frames = kept_frames(int(frame_lengths.max()), parts.max_frames)
    positions, tokens = parts.output_lengths(frame_lengths)
    hidden = encoder_states(tower, features, frames, positions)
    hidden = tower.avg_pooler(hidden.permute(0, 2, 1)).permute(0, 2, 1)
    hidden = parts.projector(tower.layer_norm(hidden))
    keep = torch.arange(hidden.shape[1])[None, :] < tokens[:, None]
    return hidden[keep.to(hidden.device)]


def fast_forward(backbone: "Qwen2AudioBackbone", inputs: dict[str, torch.Tensor]) -> None:
    """One forward pass for feature capture on the fast path (inputs from
    :func:`build_fast_inputs` or the processor); sites' hooks fire as on the reference path."""
    parts = backbone.audio_parts
    ids = inputs["input_ids"]
    embeds = parts.decoder.get_input_embeddings()(ids)
    audio = encode_audio(parts, inputs["input_features"], inputs["feature_attention_mask"].sum(-1))
    placeholders = ids == parts.audio_token_id
    if int(placeholders.sum()) != audio.shape[0]:
        raise ValueError(f"{int(placeholders.sum())} audio tokens in the prompt but {audio.shape[0]} audio features")
    embeds = embeds.masked_scatter(placeholders[..., None], audio.to(embeds.dtype))
    mask = inputs["attention_mask"]
    try:
        parts.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=backbone.positions(mask),
                      use_cache=False)
    except StopForward:
        pass


def compile_layers(parts: AudioParts, **options: Any) -> None:
    """Opt-in (GPU): ``torch.compile`` every encoder and decoder layer in place (``options`` go to
    :meth:`torch.nn.Module.compile`). Numerics change slightly; judge by per-head cosine."""
    decoder_layers = next(m for m in parts.decoder.children() if isinstance(m, nn.ModuleList))
    for layer in list(parts.tower.layers) + list(decoder_layers):
        layer.compile(**options)

"""What Whisper-style audio encoders share (Whisper, Qwen2-Audio): the log-mel spectrogram in
torch and the encoder trunk run on a chosen number of mel frames."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn


def log_mel(
    audios: Sequence[np.ndarray], feature_extractor: Any, frames: int, device: torch.device
) -> torch.Tensor:
    """[B, mels, frames] float32: the first ``frames`` frames of the Whisper feature extractor's
    30 s log-mel spectrogram, computed in torch on ``device`` (equal to the processor's; see
    :mod:`calm.backbones.qwen2_audio_fast`). Needs ``frames`` >= each clip's mel length + 2 and no dither."""
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

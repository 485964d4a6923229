"""The pieces of Qwen2-Audio's fast extraction path (used by :class:`~calm.backbones.qwen2_audio.Qwen2AudioBackbone`):
the audio encoder runs only on the mel frames that carry audio.

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
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from calm.backbones.audio_encoder import encoder_states
from calm.backbones.sites import find_decoder

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

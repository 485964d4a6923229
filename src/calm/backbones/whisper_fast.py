"""Whisper's exact fast path (used by :class:`~calm.backbones.whisper.WhisperBackbone` when
``BackboneOptions.fast``, the default): the encoder as in the model, then the decoder prefix run
here without ever projecting the encoder's 1500 positions into cross-attention keys and values.

The reference decoder projects the encoder output ``H`` [1500, d] into keys ``H Wk^T`` and values
``H Wv^T + bv`` in every layer: 2 x 1500 x d x d multiply-adds per layer and clip (whisper-base:
9.4 of its ~97 GFLOP per clip), although only a few decoder tokens ever query them. Attention is
linear in both, so for head h with query rows ``q`` (already scaled), key and value weights
``Wk_h``, ``Wv_h`` [head_dim, d]:

* scores ``q (H Wk_h^T)^T = (q Wk_h) H^T`` (Whisper's key projection has no bias);
* output ``P (H Wv_h^T + bv_h) = (P H) Wv_h^T + bv_h``, since each row of the softmax ``P`` sums to 1.

Both sides cost ``heads x rows x 1500 x d`` multiply-adds instead of ``1500 x d x d``: fewer
whenever ``heads x rows < d`` (whisper-base: 8 heads x the 4-20 prefix tokens against 512), so
each layer takes the cheaper form; either way the result is the reference's up to floating-point
summation order (the tests hold float32 to 1e-4, the benchmark reports the per-head cosine).
Self-attention (over the prefix, causal; the prefix is never padded) and the MLPs are the
model's own computation; every output projection is called as a module, so the capture hooks
fire on the same inputs as in the reference path, and ``StopForward`` from the last site ends the
pass before the last MLP.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, heads * d_head] -> [B, heads, T, d_head]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, T, d_head] -> [B, T, heads * d_head]."""
    return x.transpose(1, 2).flatten(2)


def causal_self_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Whisper self-attention block on an unpadded prefix (its output projection included)."""
    heads = attn.num_heads
    q, k, v = (split_heads(proj(x), heads) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling)
    return attn.out_proj(merge_heads(out))


def cross_attention(attn: nn.Module, x: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
    """A Whisper cross-attention block over ``encoded`` [B, P, d] (output projection included),
    with keys and values folded into the queries when that is cheaper (module docstring)."""
    heads, d = attn.num_heads, encoded.shape[-1]
    q = split_heads(attn.q_proj(x) * attn.scaling, heads)  # [B, h, T, dh]
    if heads * x.shape[1] >= d:  # the model's own order is cheaper for long prefixes
        k, v = (split_heads(proj(encoded), heads) for proj in (attn.k_proj, attn.v_proj))
        return attn.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v, scale=1.0)))
    wk = attn.k_proj.weight.unflatten(0, (heads, -1))  # [h, dh, d]
    wv = attn.v_proj.weight.unflatten(0, (heads, -1))
    folded = (q @ wk).flatten(1, 2)  # [B, h * T, d]: one batched matmul per side for all heads
    scores = torch.bmm(folded, encoded.transpose(1, 2))  # [B, h * T, P]
    mixed = torch.bmm(scores.softmax(-1), encoded).unflatten(1, (heads, -1))  # [B, h, T, d]
    out = mixed @ wv.transpose(1, 2)  # [B, h, T, dh]
    if attn.v_proj.bias is not None:
        out = out + attn.v_proj.bias.unflatten(0, (heads, 1, -1))
    return attn.out_proj(merge_heads(out))


def decoder_sites(decoder: nn.Module, ids: torch.Tensor, encoded: torch.Tensor) -> None:
    """Run Whisper's decoder layers on the prefix ``ids`` [B, T] over ``encoded`` [B, P, d] for
    the capture hooks (nothing is returned; the final norm and LM head never run)."""
    hidden = decoder.embed_tokens(ids) + decoder.embed_positions.weight[: ids.shape[1]]
    for layer in decoder.layers:
        hidden = hidden + causal_self_attention(layer.self_attn, layer.self_attn_layer_norm(hidden))
        hidden = hidden + cross_attention(layer.encoder_attn, layer.encoder_attn_layer_norm(hidden), encoded)
        hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))

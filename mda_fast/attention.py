"""Attention patterns computed from a captured ``query_key_value`` output.

Applies GPT-NeoX partial rotary embeddings, scale 1/√d_head and a causal mask, exactly like HF's eager attention.
HF's rotary embedding has ``⌈r/2⌉`` frequencies ``base^(-2i/r)`` for ``r = rotary_ndims`` and rotates (rotate-half
convention) the first ``2·⌈r/2⌉`` channels of each head: for odd ``r`` that is ``r + 1`` channels, not ``r``.
"""
from __future__ import annotations

import math

import torch

from .errors import ModelError
from .model import NeoXShape


def rotary_width(rotary_ndims: int) -> int:
    """How many leading channels of a head HF rotates: ``2·⌈rotary_ndims/2⌉`` (the width of its cos/sin tables)."""
    return rotary_ndims + rotary_ndims % 2


def rotary_cos_sin(T: int, rotary_ndims: int, base: float, device, dtype=torch.float32):
    """HF's ``cos, sin [T, rotary_width(rotary_ndims)]`` (computed in float32 like HF, then cast to ``dtype``)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_ndims, 2, dtype=torch.float32, device=device) / rotary_ndims))
    freqs = torch.arange(T, dtype=torch.float32, device=device)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., T, d_head]; rotates the first ``cos.shape[-1]`` dims."""
    r = cos.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    half = r // 2
    rotated = torch.cat([-x_rot[..., half:], x_rot[..., :half]], dim=-1)
    return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)


def split_qkv(qkv: torch.Tensor, shape: NeoXShape, heads=None):
    """qkv [N, T, 3·d_model] -> q, k, v each [N, H', T, d_head] (rows interleaved [head][q,k,v][d_head])."""
    N, T, _ = qkv.shape
    x = qkv.view(N, T, shape.n_heads, 3 * shape.d_head)
    if heads is not None:
        x = x[:, :, heads]
    x = x.transpose(1, 2)
    dh = shape.d_head
    return x[..., :dh], x[..., dh:2 * dh], x[..., 2 * dh:]


def attention_pattern(qkv: torch.Tensor, shape: NeoXShape, heads=None) -> torch.Tensor:
    """Causal attention probabilities ``[N, H', T, T]`` (query, key) from a layer's qkv output.

    Computed in float64 for a float64 ``qkv``, else in float32."""
    width = rotary_width(shape.rotary_ndims)
    if width > shape.d_head:
        raise ModelError(f"the model's rotary embedding covers {width} channels of a {shape.d_head}-channel head "
                         f"(rotary_ndims={shape.rotary_ndims}); HF's attention has no well-defined pattern there, "
                         "expected at most d_head rotated channels (rotary_pct < 1 or an even d_head)")
    q, k, _ = split_qkv(qkv, shape, heads)
    T = q.shape[-2]
    dt = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    cos, sin = rotary_cos_sin(T, shape.rotary_ndims, shape.rotary_base, q.device, dt)
    q = apply_rotary(q.to(dt), cos, sin)
    k = apply_rotary(k.to(dt), cos, sin)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(shape.d_head)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    return torch.softmax(scores, dim=-1)

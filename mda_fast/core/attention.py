"""Attention patterns computed from a captured ``qkv_module`` output (``query_key_value`` for GPT-NeoX).

The model's adapter splits q, k, v (``ModelAdapter.split_qkv``) and applies its positional rotation
(``rotate_qk``: GPT-NeoX's partial rotary); then scale 1/√d_head and a causal mask, exactly like HF's eager
attention (the scale is the adapter's ``softmax_scale``: GPT-2's options). ``rotary_width``, ``rotary_cos_sin``, ``apply_rotary`` and ``split_qkv`` are the GPT-NeoX adapter's.
"""

from __future__ import annotations

import torch

from ..adapters import ModelShape, adapter_for_type
from ..adapters.gpt_neox import apply_rotary, rotary_cos_sin, rotary_width, split_qkv

__all__ = ["apply_rotary", "attention_pattern", "rotary_cos_sin", "rotary_width", "split_qkv"]


def attention_pattern(qkv: torch.Tensor, shape: ModelShape, heads=None, layer: int | None = None) -> torch.Tensor:
    """Causal attention probabilities ``[N, H', T, T]`` (query, key) from layer ``layer``'s qkv output.

    Computed in float64 for a float64 ``qkv``, else in float32. The scores are scaled by the adapter's
    ``softmax_scale(shape, layer)`` (``d_head^-0.5``; GPT-2's scaling options can make it depend on the layer,
    and then ``layer`` is required)."""
    adapter = adapter_for_type(shape.model_type)
    adapter.check_attention(shape)
    q, k, _ = adapter.split_qkv(qkv, shape, heads)
    T = q.shape[-2]
    dt = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    q, k = adapter.rotate_qk(q.to(dt), k.to(dt), shape)
    scale = adapter.softmax_scale(shape, layer)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    return torch.softmax(scores, dim=-1)

"""Attention patterns computed from captured attention-module outputs.

The model's adapter gives the rotated q and k of each head (``ModelAdapter.query_key``: the q/k split of its
``pattern_modules`` outputs, any q/k norms and clipping, its positional rotation, and with grouped-query attention
each query head's K of its KV group), scales the scores as the model does (``scale_scores``: by default the adapter's ``softmax_scale``, d_head^-0.5 or GPT-2's per-layer options), and names a sliding
window (``sliding_window``); then a causal (or sliding-window) mask and a softmax, exactly like HF's eager attention.
``rotary_width``, ``rotary_cos_sin``, ``apply_rotary`` and ``split_qkv`` are the GPT-NeoX adapter's.
"""

from __future__ import annotations

import torch

from ..adapters import ModelAdapter, ModelShape, adapter_for_type
from ..adapters.gpt_neox import apply_rotary, rotary_cos_sin, rotary_width, split_qkv
from ..errors import ModelError
from .handle import handle

__all__ = ["apply_rotary", "attention_pattern", "layer_pattern", "rotary_cos_sin", "rotary_width", "split_qkv"]


def _dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _softmax(scores: torch.Tensor, window: int | None) -> torch.Tensor:
    T = scores.shape[-1]
    i = torch.arange(T, device=scores.device)
    seen = i[None, :] <= i[:, None]
    if window is not None:
        seen &= i[None, :] > i[:, None] - window
    return torch.softmax(scores.masked_fill(~seen, float("-inf")), dim=-1)


def layer_pattern(model, layer: int, outputs: dict, heads=None) -> torch.Tensor:
    """Attention probabilities ``[N, H', T, T]`` (query, key) of ``layer``'s heads ``heads`` (all: None) from
    ``outputs`` = ``{module: output}`` of the adapter's ``pattern_modules`` (captured by a forward hook).

    Computed in float64 for float64 outputs, else in float32 (q/k norms and clipping run in the model's dtype, as
    in the model)."""
    h = handle(model)
    adapter, shape = h.adapter, h.shape
    adapter.check_attention(shape)
    dt = _dtype(next(iter(outputs.values())))
    q, k = adapter.query_key(h.model, layer, outputs, shape, heads, dt)
    scores = adapter.scale_scores(torch.matmul(q, k.transpose(-1, -2)), h.model, layer, shape)
    return _softmax(scores, adapter.sliding_window(h.model, layer))


def attention_pattern(qkv: torch.Tensor, shape: ModelShape, heads=None, layer: int | None = None) -> torch.Tensor:
    """Causal attention probabilities ``[N, H', T, T]`` (query, key) from layer ``layer``'s ``qkv_module`` output, for a
    layout whose pattern needs that output alone and no weights (GPT-NeoX, GPT-2); every layout: :func:`layer_pattern`.

    Computed in float64 for a float64 ``qkv``, else in float32. The scores are scaled by the adapter's
    ``softmax_scale(shape, layer)`` (``d_head^-0.5``; GPT-2's scaling options can make it depend on the layer,
    and then ``layer`` is required)."""
    adapter = adapter_for_type(shape.model_type)
    if adapter.pattern_modules() != (adapter.qkv_module,) or type(adapter).query_key is not ModelAdapter.query_key:
        raise ModelError(
            f"a {adapter.family} attention pattern needs the model (q/k norms, rotary tables, KV groups); "
            "expected layer_pattern(model, layer, outputs)"
        )
    adapter.check_attention(shape)
    q, k, _ = adapter.split_qkv(qkv, shape, heads)
    dt = _dtype(qkv)
    q, k = adapter.rotate_qk(q.to(dt), k.to(dt), shape)
    return _softmax(adapter.scale_scores(torch.matmul(q, k.transpose(-1, -2)), None, layer, shape), None)

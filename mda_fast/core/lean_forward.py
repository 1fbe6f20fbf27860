"""A lean capture forward: the model's own arithmetic, differentiating only what a capture needs.

``capture`` needs the tracked blocks' module inputs ``X`` and the gradients ``Y`` of the objective with respect
to the module outputs. Running HF's forward with hooks gets them, but HF's attention backward then covers every
head of the tracked layer, and its forward builds a causal mask, rotary tables and per-head copies on every call.
This forward calls the model's own submodules (embedding, layer norms, linears, MLPs, LM head weight) through the
model's adapter (``ModelAdapter.lean_begin / lean_layer / lean_end``) and replaces only the attention glue:

- layers below the lowest tracked layer run without autograd;
- in the lowest tracked layer, the heads whose q/k/v a tracked block owns are attended with autograd and the
  other heads without it, so the attention backward touches only those heads;
- from there up, activations are differentiated (parameters never are);
- the loss is the fused chunked LM head + cross-entropy (``mda_fast.core.lm_head``).

``supports(model, attention_mask)`` says when it applies (the adapter's ``lean_supports``; for GPT-NeoX see
``mda_fast.adapters.gpt_neox``: sdpa attention, eval mode, claimed transformers releases
:data:`CLAIMED_TRANSFORMERS`, a rotary width that fits a head, no padding mask). ``capture`` uses HF's forward
otherwise.

``capture_loss(..., compile=True)`` runs the adapter's ``torch.compile``d pieces (GPT-NeoX: the rotary + attention
and the MLP + residual of each layer): the same arithmetic up to floating-point rounding, opt-in.
"""

from __future__ import annotations

import torch

from ..adapters.gpt_neox import CLAIMED_TRANSFORMERS, RotateHalf, claims_transformers, head_runs
from .handle import handle
from .lm_head import linear_cross_entropy

__all__ = ["CLAIMED_TRANSFORMERS", "capture_loss", "claims_transformers", "heads_touched", "supports"]

_Rotary = RotateHalf  # names kept for callers of the pre-adapter module
_runs = head_runs


def supports(model, attention_mask: torch.Tensor | None = None) -> bool:
    """True when :func:`capture_loss` reproduces ``model``'s forward exactly (the adapter's ``lean_supports``)."""
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or getattr(config, "model_type", None) is None:
        return False
    try:
        adapter = handle(model).adapter
    except (TypeError, ValueError):
        return False
    return adapter.lean_supports(model, attention_mask)


def heads_touched(adapter, shape, blocks, layer: int) -> set[int]:
    """Heads of ``layer`` whose ``qkv_module`` rows (per ``adapter.head_parts``) meet a tracked block's rows."""

    def spans(segments):
        return [(s.out_start, s.out_stop) for s in segments if s.module == adapter.qkv_module]

    tracked = spans(s for b in blocks if b.layer == layer for s in b.segments)
    touched = set()
    for h in range(shape.n_heads):
        rows = spans(s for p in adapter.head_parts(shape, h, "qkvo").values() for s in p.segments)
        if any(s < e2 and s2 < e for s, e in tracked for s2, e2 in rows):
            touched.add(h)
    return touched


class _Taps:
    """The capture points of one lean forward: records tracked module inputs, makes their outputs leaves."""

    def __init__(self, adapter, shape, blocks):
        self.adapter, self.shape, self.blocks = adapter, shape, blocks
        self.keys = {(b.layer, s.module) for b in blocks for s in b.segments}
        self.inputs, self.outputs, self.leaves = {}, {}, set()

    def __call__(self, layer: int, module: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        key = (layer, module)
        if key in self.keys:
            self.inputs[key] = x.detach()
            if not out.requires_grad:
                out = out.detach().requires_grad_(True)
                self.leaves.add(key)
            self.outputs[key] = out
        return out

    def grad_heads(self, layer: int, qkv: torch.Tensor) -> set[int] | None:
        """The heads to attend with autograd, or None for all (the usual case above the lowest tracked layer)."""
        if (layer, self.adapter.qkv_module) not in self.leaves:
            return None
        heads = heads_touched(self.adapter, self.shape, self.blocks, layer)
        return None if len(heads) == self.shape.n_heads else heads


def capture_loss(model, input_ids: torch.Tensor, blocks, objective, compile: bool = False):
    """One forward of ``model`` on ``input_ids [N, T]`` with a summed token cross-entropy (``capture.TokenLoss``:
    its ``labels_for(hidden, weight)`` gives the labels, its ``mask`` the token weights).

    Returns ``(value [N], inputs, outputs)``: ``inputs[(layer, module)]`` is the detached module input and
    ``outputs[(layer, module)]`` the module output to differentiate ``value`` against, for every tracked block.
    Parameters must already be frozen (``capture`` does it).
    """
    h = handle(model)
    adapter, model = h.adapter, h.model
    taps = _Taps(adapter, h.shape, blocks)
    low = min(layer for layer, _ in taps.keys)
    with torch.no_grad():
        h, state = adapter.lean_begin(model, input_ids, compile=compile)
    for L in range(len(adapter.layers(model))):
        with torch.set_grad_enabled(L >= low):
            h = adapter.lean_layer(model, L, h, state, taps, taps.grad_heads)
    hidden, weight = adapter.lean_end(model, h)
    value = linear_cross_entropy(hidden, weight, objective.labels_for(hidden, weight), objective.mask)
    return value, taps.inputs, taps.outputs

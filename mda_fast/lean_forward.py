"""A lean GPT-NeoX forward for capture: HF's arithmetic, differentiating only what a capture needs.

``capture`` needs the tracked blocks' module inputs ``X`` and the gradients ``Y`` of the objective with respect
to the module outputs. Running HF's forward with hooks gets them, but HF's attention backward then covers every
head of the tracked layer, and its forward builds a causal mask, rotary tables and per-head copies on every call.
This forward calls the model's own submodules (embedding, layer norms, linears, MLPs, LM head weight) and
replaces only the attention glue:

- layers below the lowest tracked layer run without autograd;
- in the lowest tracked layer, the heads whose q/k/v a tracked block owns go through scaled-dot-product
  attention with autograd and the other heads without it, so the attention backward touches only those heads;
- from there up, activations are differentiated (parameters never are);
- the loss is the fused chunked LM head + cross-entropy (``mda_fast.lm_head``).

``supports(model, attention_mask)`` says when it applies: an eval-mode ``GPTNeoXForCausalLM`` of a claimed
transformers layout (4.49 to 5.x, :data:`CLAIMED_TRANSFORMERS`) with HF's "sdpa" attention (the default; "eager" computes its softmax in float32 even for
float64 models, so its numbers differ in the last digits), the default rotary embedding rotating no more channels
than a head has, a bias-free linear LM head, and no padding mask. ``capture`` uses HF's forward otherwise.

Rotary width: HF rotates ``cos.shape[-1] = 2·len(inv_freq) = 2·⌈r/2⌉`` leading channels of each head, where
``r = int(d_head · partial_rotary_factor)`` (``rotary_ndims``); for odd ``r`` that is ``r + 1``, not ``r``. This
forward takes the width from the model's own rotary embedding, so it rotates exactly HF's channels. Where that
width exceeds ``d_head`` (odd ``d_head`` with ``rotary_pct = 1``) HF's forward itself breaks or broadcasts, and this
forward declines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ModelError
from .lm_head import linear_cross_entropy

__all__ = ["CLAIMED_TRANSFORMERS", "capture_loss", "claims_transformers", "supports"]


def supports(model, attention_mask: torch.Tensor | None = None) -> bool:
    """True when :func:`capture_loss` reproduces ``model``'s forward exactly (see the module docstring)."""
    nx = getattr(model, "gpt_neox", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if nx is None or model.training or not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return False
    if getattr(model.config, "_attn_implementation", None) != "sdpa":  # eager/flash round differently
        return False
    if type(head).forward is not torch.nn.Linear.forward:
        return False
    rope = getattr(nx, "rotary_emb", None)
    if rope is None or getattr(rope, "rope_type", "default") != "default" or getattr(rope, "attention_scaling", 1.0) != 1.0:
        return False
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        return False
    if not claims_transformers():
        return False
    # the attributes read below exist in transformers 5.x
    if not all(hasattr(layer, "use_parallel_residual") and all(hasattr(layer.attention, a) for a in
               ("head_size", "scaling", "query_key_value", "dense")) for layer in nx.layers):
        return False
    inv_freq = getattr(rope, "inv_freq", None)
    head_sizes = {layer.attention.head_size for layer in nx.layers}
    if not isinstance(inv_freq, torch.Tensor) or inv_freq.dim() != 1 or len(head_sizes) != 1:
        return False
    return 2 * inv_freq.numel() <= head_sizes.pop()  # HF's rotated width fits in a head


CLAIMED_TRANSFORMERS = ((4, 49), (6, 0))
"""Transformers releases ``[from, to)`` (major, minor) whose GPT-NeoX forward this module mirrors: a model-level
``rotary_emb`` whose cos/sin width HF's ``apply_rotary_pos_emb`` rotates, ``attention.scaling``, the same layer
arithmetic. Tested: 5.x (the main suite) and 4.49.0 (``scripts/ci_transformers4.sh``); older releases take HF's
forward."""


def claims_transformers(version: str | None = None) -> bool:
    """True when transformers ``version`` (default: the installed one) lies in :data:`CLAIMED_TRANSFORMERS`."""
    if version is None:
        import transformers

        version = transformers.__version__
    major, minor = (int(p) for p in version.split(".")[:2])
    lo, hi = CLAIMED_TRANSFORMERS
    return lo <= (major, minor) < hi


class _Rotary:
    """HF's ``apply_rotary_pos_emb`` for q and k of every head at once, without ``cat``.

    HF rotates the first ``r = cos.shape[-1]`` channels of q and k (an even number, ``2·⌈rotary_ndims/2⌉``).
    Over the ``2·d_head`` q/k channels of a head, ``rope(x) = x ⊙ C + x[perm] ⊙ S``: ``C`` holds cos on the rotary
    channels and 1 elsewhere, ``S`` holds −sin / +sin on the two rotary halves and 0 elsewhere, and ``perm`` swaps
    the halves (HF's ``rotate_half``); ``x[perm]`` is computed as ``x @ swap`` with a permutation matrix.
    """

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor, d_head: int):
        T, r = cos.shape[-2], cos.shape[-1]
        if r % 2 or r > d_head:
            raise ModelError(f"rotary width {r} must be even and at most d_head={d_head}; supports() declines this model")
        cos, sin = cos.reshape(T, r), sin.reshape(T, r)
        half = r // 2
        self.C = torch.ones(T, 2 * d_head, dtype=cos.dtype, device=cos.device)
        self.S = torch.zeros_like(self.C)
        perm = torch.arange(2 * d_head, device=cos.device)
        for base in (0, d_head):  # q, then k
            self.C[:, base:base + r] = cos
            self.S[:, base:base + half] = -sin[:, :half]
            self.S[:, base + half:base + r] = sin[:, half:]
            perm[base:base + half] += half
            perm[base + half:base + r] -= half
        # the half swap as a permutation matrix: a GEMM against it is exact and far faster on CPU than indexing
        self.swap = torch.eye(2 * d_head, dtype=cos.dtype, device=cos.device)[:, perm]
        self.identity = r == 0

    def __call__(self, qk: torch.Tensor) -> torch.Tensor:
        """``qk [..., T, 2·d_head]`` → the same with rotary applied to q and k."""
        if self.identity:
            return qk
        return torch.addcmul(qk * self.C, qk @ self.swap, self.S)


def _attend(heads: torch.Tensor, rope: _Rotary, scale: float) -> torch.Tensor:
    """Causal attention of ``heads [N, h, T, 3·d_head]`` (per-head ``[q, k, v]``) → ``[N, T, h, d_head]``."""
    d_head = heads.shape[-1] // 3
    qk = rope(heads[..., :2 * d_head])
    out = F.scaled_dot_product_attention(qk[..., :d_head], qk[..., d_head:], heads[..., 2 * d_head:],
                                         is_causal=True, scale=scale)
    return out.transpose(1, 2)


def _runs(n_heads: int, grad_heads: set[int]) -> list[tuple[int, int, bool]]:
    """Maximal runs ``(start, stop, differentiated)`` of consecutive heads."""
    runs = []
    for h in range(n_heads):
        g = h in grad_heads
        if runs and runs[-1][2] == g:
            runs[-1] = (runs[-1][0], h + 1, g)
        else:
            runs.append((h, h + 1, g))
    return runs


def _attention(qkv: torch.Tensor, n_heads: int, grad_heads: set[int] | None, rope: _Rotary,
               scale: float) -> torch.Tensor:
    """Attention output ``[N, T, d_model]`` from the ``query_key_value`` output ``qkv [N, T, 3·d_model]``.

    With ``grad_heads``, only those heads are attended with autograd; the others run without it.
    """
    N, T, _ = qkv.shape
    heads = qkv.view(N, T, n_heads, -1).transpose(1, 2)
    if grad_heads is None:
        return _attend(heads, rope, scale).reshape(N, T, -1)
    parts = []
    for a, b, g in _runs(n_heads, grad_heads):
        with torch.set_grad_enabled(g):
            parts.append(_attend(heads[:, a:b] if g else heads.detach()[:, a:b], rope, scale))
    return torch.cat(parts, dim=2).reshape(N, T, -1)


def _grad_heads(blocks, layer: int, n_heads: int, width: int) -> set[int]:
    """Heads whose ``query_key_value`` columns (``width = 3·d_head`` each) meet a tracked block of ``layer``."""
    spans = [(b.out_start, b.out_stop) for b in blocks if b.layer == layer and b.module == "query_key_value"]
    return {h for h in range(n_heads) if any(s < (h + 1) * width and h * width < e for s, e in spans)}


def capture_loss(model, input_ids: torch.Tensor, blocks, objective):
    """One forward of ``model`` on ``input_ids [N, T]`` with a summed token cross-entropy (``capture.TokenLoss``:
    its ``labels_for(hidden, weight)`` gives the labels, its ``mask`` the token weights).

    Returns ``(value [N], inputs, outputs)``: ``inputs[(layer, module)]`` is the detached module input and
    ``outputs[(layer, module)]`` the module output to differentiate ``value`` against, for every tracked block.
    Parameters must already be frozen (``capture`` does it).
    """
    nx = model.gpt_neox
    keys = {(b.layer, b.module) for b in blocks}
    low = min(layer for layer, _ in keys)
    N, T = input_ids.shape
    inputs, outputs = {}, {}
    with torch.no_grad():
        h = nx.embed_in(input_ids)
        cos, sin = nx.rotary_emb(h, torch.arange(T, device=h.device).unsqueeze(0))
        att0 = nx.layers[0].attention
        rope = _Rotary(cos, sin, att0.head_size)
    for L, layer in enumerate(nx.layers):
        with torch.set_grad_enabled(L >= low):
            att = layer.attention
            x = layer.input_layernorm(h)
            qkv = att.query_key_value(x)
            n_heads = qkv.shape[-1] // (3 * att.head_size)
            grad_heads = None
            if (L, "query_key_value") in keys:
                inputs[(L, "query_key_value")] = x.detach()
                if not qkv.requires_grad:
                    qkv = qkv.detach().requires_grad_(True)
                    grad_heads = _grad_heads(blocks, L, n_heads, 3 * att.head_size)
                    if len(grad_heads) == n_heads:
                        grad_heads = None
                outputs[(L, "query_key_value")] = qkv
            z = _attention(qkv, n_heads, grad_heads, rope, att.scaling)
            o = att.dense(z)
            if (L, "dense") in keys:
                inputs[(L, "dense")] = z.detach()
                if not o.requires_grad:
                    o = o.detach().requires_grad_(True)
                outputs[(L, "dense")] = o
            if layer.use_parallel_residual:
                h = layer.mlp(layer.post_attention_layernorm(h)) + o + h
            else:
                a = o + h
                h = layer.mlp(layer.post_attention_layernorm(a)) + a
    hidden = nx.final_layer_norm(h)
    weight = model.get_output_embeddings().weight
    value = linear_cross_entropy(hidden, weight, objective.labels_for(hidden, weight), objective.mask)
    return value, inputs, outputs

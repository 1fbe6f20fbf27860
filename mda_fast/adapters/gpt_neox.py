"""The GPT-NeoX (Pythia) adapter: HF ``GPTNeoXForCausalLM`` / ``GPTNeoXModel``.

Layout: ``attention.query_key_value.weight`` has shape ``[3·d_model, d_model]`` with rows interleaved per head as
``[head][q, k, v][d_head]``, so head h's ``[W_Q | W_K]`` rows are ``h·3·d_head : h·3·d_head + 2·d_head`` and its
``W_V`` rows follow; head h owns columns ``h·d_head : (h+1)·d_head`` of ``attention.dense.weight``.

Config: the transformers 4.4x layout (``rotary_pct``, ``rotary_emb_base``) and the 5.x layout
(``rope_parameters = {"rope_theta", "partial_rotary_factor"}``). Tested: transformers 5.x and 4.49.

Rotary: HF's rotary embedding has ``⌈r/2⌉`` frequencies ``base^(-2i/r)`` for ``r = rotary_ndims`` and rotates
(rotate-half convention) the first ``2·⌈r/2⌉`` channels of each head: for odd ``r`` that is ``r + 1`` channels.

Lean forward (``mda_fast.core.lean_forward``): :meth:`GPTNeoXAdapter.lean_supports` says when the lean hooks reproduce
HF's forward: an eval-mode ``GPTNeoXForCausalLM`` of a claimed transformers layout (:data:`CLAIMED_TRANSFORMERS`)
with HF's "sdpa" attention (the default; "eager" computes its softmax in float32 even for float64 models, so its
numbers differ in the last digits), the default rotary embedding rotating no more channels than a head has (the
width is taken from the model's own rotary embedding, so it rotates exactly HF's channels), a bias-free linear LM
head, and no padding mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ModelError
from .base import HeadPart, ModelAdapter, ModelShape, Segment

NeoXShape = ModelShape

CLAIMED_TRANSFORMERS = ((4, 49), (6, 0))
"""Transformers releases ``[from, to)`` (major, minor) whose GPT-NeoX forward the lean forward mirrors: a
model-level ``rotary_emb`` whose cos/sin width HF's ``apply_rotary_pos_emb`` rotates, ``attention.scaling``, the
same layer arithmetic. Tested: 5.x (the main suite) and 4.49.0 (``scripts/ci_transformers4.sh``); older releases
take HF's forward."""


def claims_transformers(version: str | None = None) -> bool:
    """True when transformers ``version`` (default: the installed one) lies in :data:`CLAIMED_TRANSFORMERS`."""
    if version is None:
        import transformers

        version = transformers.__version__
    major, minor = (int(p) for p in version.split(".")[:2])
    lo, hi = CLAIMED_TRANSFORMERS
    return lo <= (major, minor) < hi


# ---- rotary ---------------------------------------------------------------------------------------------------
def rotary_params(config) -> tuple[int, float]:
    """(rotary_ndims, base) for both config layouts."""
    d_head = config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict) and ("partial_rotary_factor" in rope or "rope_theta" in rope):
        pct = rope.get("partial_rotary_factor", getattr(config, "rotary_pct", 1.0))
        base = rope.get("rope_theta", getattr(config, "rotary_emb_base", 10000.0))
        rope_type = rope.get("rope_type", "default")
        if rope_type not in (None, "default"):
            raise ValueError(f"rope_type {rope_type!r} is not supported; expected 'default' (Pythia)")
    else:
        pct = getattr(config, "rotary_pct", 1.0)
        base = getattr(config, "rotary_emb_base", 10000.0)
    return int(d_head * pct), float(base)


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


def split_qkv(qkv: torch.Tensor, shape: ModelShape, heads=None):
    """qkv [N, T, 3·d_model] -> q, k, v each [N, H', T, d_head] (rows interleaved [head][q,k,v][d_head])."""
    N, T, _ = qkv.shape
    x = qkv.view(N, T, shape.n_heads, 3 * shape.d_head)
    if heads is not None:
        x = x[:, :, heads]
    x = x.transpose(1, 2)
    dh = shape.d_head
    return x[..., :dh], x[..., dh : 2 * dh], x[..., 2 * dh :]


class RotateHalf:
    """HF's ``apply_rotary_pos_emb`` for q and k of every head at once, without ``cat`` (the lean forward's).

    HF rotates the first ``r = cos.shape[-1]`` channels of q and k (an even number, ``2·⌈rotary_ndims/2⌉``).
    Over the ``2·d_head`` q/k channels of a head, ``rope(x) = x ⊙ C + x[perm] ⊙ S``: ``C`` holds cos on the rotary
    channels and 1 elsewhere, ``S`` holds −sin / +sin on the two rotary halves and 0 elsewhere, and ``perm`` swaps
    the halves (HF's ``rotate_half``); ``x[perm]`` is computed as ``x @ swap`` with a permutation matrix.
    """

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor, d_head: int):
        T, r = cos.shape[-2], cos.shape[-1]
        if r % 2 or r > d_head:
            raise ModelError(
                f"rotary width {r} must be even and at most d_head={d_head}; supports() declines this model"
            )
        cos, sin = cos.reshape(T, r), sin.reshape(T, r)
        half = r // 2
        self.C = torch.ones(T, 2 * d_head, dtype=cos.dtype, device=cos.device)
        self.S = torch.zeros_like(self.C)
        perm = torch.arange(2 * d_head, device=cos.device)
        for base in (0, d_head):  # q, then k
            self.C[:, base : base + r] = cos
            self.S[:, base : base + half] = -sin[:, :half]
            self.S[:, base + half : base + r] = sin[:, half:]
            perm[base : base + half] += half
            perm[base + half : base + r] -= half
        # the half swap as a permutation matrix: a GEMM against it is exact and far faster on CPU than indexing
        self.swap = torch.eye(2 * d_head, dtype=cos.dtype, device=cos.device)[:, perm]
        self.identity = r == 0

    def __call__(self, qk: torch.Tensor) -> torch.Tensor:
        """``qk [..., T, 2·d_head]`` → the same with rotary applied to q and k."""
        if self.identity:
            return qk
        return torch.addcmul(qk * self.C, qk @ self.swap, self.S)


def attend(heads: torch.Tensor, rope: RotateHalf, scale: float) -> torch.Tensor:
    """Causal attention of ``heads [N, h, T, 3·d_head]`` (per-head ``[q, k, v]``) → ``[N, T, h, d_head]``."""
    d_head = heads.shape[-1] // 3
    qk = rope(heads[..., : 2 * d_head])
    out = F.scaled_dot_product_attention(
        qk[..., :d_head], qk[..., d_head:], heads[..., 2 * d_head :], is_causal=True, scale=scale
    )
    return out.transpose(1, 2)


def head_runs(n_heads: int, grad_heads: set[int]) -> list[tuple[int, int, bool]]:
    """Maximal runs ``(start, stop, differentiated)`` of consecutive heads."""
    runs = []
    for h in range(n_heads):
        g = h in grad_heads
        if runs and runs[-1][2] == g:
            runs[-1] = (runs[-1][0], h + 1, g)
        else:
            runs.append((h, h + 1, g))
    return runs


def attention(
    qkv: torch.Tensor, n_heads: int, grad_heads: set[int] | None, rope: RotateHalf, scale: float, attend_fn=attend
) -> torch.Tensor:
    """Attention output ``[N, T, d_model]`` from the ``query_key_value`` output ``qkv [N, T, 3·d_model]``.

    With ``grad_heads``, only those heads are attended with autograd; the others run without it.
    """
    N, T, _ = qkv.shape
    heads = qkv.view(N, T, n_heads, -1).transpose(1, 2)
    if grad_heads is None:
        return attend_fn(heads, rope, scale).reshape(N, T, -1)
    parts = []
    for a, b, g in head_runs(n_heads, grad_heads):
        with torch.set_grad_enabled(g):
            parts.append(attend_fn(heads[:, a:b] if g else heads.detach()[:, a:b], rope, scale))
    return torch.cat(parts, dim=2).reshape(N, T, -1)


# ---- the adapter ----------------------------------------------------------------------------------------------
class GPTNeoXAdapter(ModelAdapter):
    """Pythia's layout: ``query_key_value`` rows ``[head][q,k,v][d_head]``, ``dense`` columns per head, partial
    rotary, parallel residual; the lean capture forward."""

    model_type = "gpt_neox"
    family = "Pythia / GPT-NeoX"
    modules = ("query_key_value", "dense")
    qkv_module = "query_key_value"
    check_name, example_class, backbone_where = "GPT-NeoX", "GPTNeoXForCausalLM", ".gpt_neox or .layers"
    backbone_attr, embed_attr = "gpt_neox", "embed_in"

    def config_shape(self, config) -> ModelShape:
        rot, base = rotary_params(config)
        return ModelShape(
            n_layers=config.num_hidden_layers,
            n_heads=config.num_attention_heads,
            d_model=config.hidden_size,
            d_head=config.hidden_size // config.num_attention_heads,
            rotary_ndims=rot,
            rotary_base=base,
            vocab_size=config.vocab_size,
            max_positions=config.max_position_embeddings,
            model_type=self.model_type,
        )

    def config_class(self):
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig

    def model_class(self):
        from transformers import GPTNeoXForCausalLM

        return GPTNeoXForCausalLM

    def attention_module(self, model, layer: int, module: str) -> torch.nn.Linear:
        return getattr(self.layers(model)[layer].attention, module)

    def head_parts(self, shape: ModelShape, head: int, mode: str) -> dict[str, HeadPart]:
        dh, dm, base = shape.d_head, shape.d_model, head * 3 * shape.d_head
        qkv, own = "query_key_value", (head,)
        q, k = Segment(qkv, base, base + dh), Segment(qkv, base + dh, base + 2 * dh)
        parts = {"qk": HeadPart((q, k), 0, dm, True, own)}
        if mode == "qkvo":
            parts["v"] = HeadPart((Segment(qkv, base + 2 * dh, base + 3 * dh),), 0, dm, True, own)
            parts["o"] = HeadPart((Segment("dense", 0, dm),), head * dh, (head + 1) * dh, False, own)
        return parts

    def split_qkv(self, qkv, shape, heads=None):
        return split_qkv(qkv, shape, heads)

    def check_attention(self, shape: ModelShape) -> None:
        width = rotary_width(shape.rotary_ndims)
        if width > shape.d_head:
            raise ModelError(
                f"the model's rotary embedding covers {width} channels of a {shape.d_head}-channel head "
                f"(rotary_ndims={shape.rotary_ndims}); HF's attention has no well-defined pattern there, "
                "expected at most d_head rotated channels (rotary_pct < 1 or an even d_head)"
            )

    def rotate_qk(self, q, k, shape):
        cos, sin = rotary_cos_sin(q.shape[-2], shape.rotary_ndims, shape.rotary_base, q.device, q.dtype)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    # ---- lean forward ----------------------------------------------------------------------------------------
    def lean_supports(self, model, attention_mask=None) -> bool:
        nx = getattr(model, "gpt_neox", None)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if nx is None or model.training or not isinstance(head, torch.nn.Linear) or head.bias is not None:
            return False
        if getattr(model.config, "_attn_implementation", None) != "sdpa":  # eager/flash round differently
            return False
        if type(head).forward is not torch.nn.Linear.forward:
            return False
        rope = getattr(nx, "rotary_emb", None)
        if (
            rope is None
            or getattr(rope, "rope_type", "default") != "default"
            or getattr(rope, "attention_scaling", 1.0) != 1.0
        ):
            return False
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            return False
        if not claims_transformers():
            return False
        # the attributes read below exist in transformers 5.x
        if not all(
            hasattr(layer, "use_parallel_residual")
            and all(hasattr(layer.attention, a) for a in ("head_size", "scaling", "query_key_value", "dense"))
            for layer in nx.layers
        ):
            return False
        inv_freq = getattr(rope, "inv_freq", None)
        head_sizes = {layer.attention.head_size for layer in nx.layers}
        if not isinstance(inv_freq, torch.Tensor) or inv_freq.dim() != 1 or len(head_sizes) != 1:
            return False
        return 2 * inv_freq.numel() <= head_sizes.pop()  # HF's rotated width fits in a head

    def lean_begin(self, model, input_ids, compile: bool = False):
        nx = model.gpt_neox
        h = nx.embed_in(input_ids)
        cos, sin = nx.rotary_emb(h, torch.arange(input_ids.shape[1], device=h.device).unsqueeze(0))
        rope = RotateHalf(cos, sin, nx.layers[0].attention.head_size)
        if compile:
            return h, LeanState(rope, compiled(attend), compiled(residual))
        return h, LeanState(rope, attend, residual)

    def lean_layer(self, model, layer, h, state, tap, grad_heads):
        block = model.gpt_neox.layers[layer]
        att = block.attention
        x = block.input_layernorm(h)
        qkv = tap(layer, "query_key_value", x, att.query_key_value(x))
        n_heads = qkv.shape[-1] // (3 * att.head_size)
        z = attention(qkv, n_heads, grad_heads(layer, qkv), state.rope, att.scaling, state.attend)
        o = tap(layer, "dense", z, att.dense(z))
        return state.residual(block, h, o)

    def lean_end(self, model, h):
        return model.gpt_neox.final_layer_norm(h), model.get_output_embeddings().weight


def residual(block, h: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """A GPT-NeoX layer's MLP and residual sums, given its input ``h`` and attention output ``o``."""
    if block.use_parallel_residual:
        return block.mlp(block.post_attention_layernorm(h)) + o + h
    a = o + h
    return block.mlp(block.post_attention_layernorm(a)) + a


@dataclass
class LeanState:
    """What the layers of one lean forward share: the rotary tables and the attend / residual functions (eager,
    or their ``torch.compile`` versions)."""

    rope: RotateHalf
    attend: Callable
    residual: Callable


_COMPILED: dict = {}


def compiled(fn):
    """``torch.compile(fn)``, built once per function (the compiled code is cached inside it)."""
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=False)
    return _COMPILED[fn]

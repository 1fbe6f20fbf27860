"""Head subspaces: which rows / columns of which attention weights a head owns.

The model's adapter (``mda_fast.adapters``) says which slices a head owns (``ModelAdapter.head_parts``); the
convention on every layout (``head_blocks`` states it for each):

- head h of a model with H query heads and H_kv key/value heads belongs to KV group g = h // (H / H_kv) (HF's
  ``repeat_kv`` order); H_kv = H without grouped-query attention;
- block **qk** = [W_Q rows of head h ; W_K rows of group g], block **v** = W_V rows of group g, block **o** = W_O
  columns of head h; every block in ``nn.Linear`` orientation ``[d_out, d_in]``; with ``bias=True`` the q/k/v bias
  entries of those rows are a ones column.

GPT-NeoX: head h's W_Q, W_K, W_V rows of ``query_key_value.weight`` are ``h·3·d_head + (0, 1, 2)·d_head`` (d_head
each), its W_O columns of ``attention.dense.weight`` are ``h·d_head : (h+1)·d_head``.

GPT-2 (``Conv1D``, weight stored ``[d_in, d_out]``, read through the adapter's ``linear_weight`` as its transpose):
``c_attn``'s outputs are [Q of all heads | K | V], so head h's W_Q, W_K, W_V rows are ``(0, 1, 2)·d_model +
h·d_head`` (d_head each; qk is two segments of ``c_attn``), its W_O columns of ``c_proj`` are
``h·d_head : (h+1)·d_head`` (rows of ``c_proj.weight`` as stored).

A :class:`Block` is one Kronecker-factored parameter block: one input slice (columns ``in_start:in_stop`` of the
input that all its modules read) and a list of output :class:`~mda_fast.adapters.Segment` s (rows of one or more
modules), stacked in segment order. Its token inputs ``X`` are that input slice, its output gradients ``Y`` the
segments' output gradients concatenated in segment order, so ``G_n = Σ_t y_t x̃_tᵀ`` is the gradient of the
stacked weight slice ``[d_out, d_in (+1 bias column)]`` (``block_weight``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..adapters.base import Segment
from .handle import handle

MODES = ("qkvo", "qk")
MODULES = ("query_key_value", "dense")  # the GPT-NeoX adapter's modules (every adapter names its own: ``modules``)


@dataclass(frozen=True)
class HeadSpec:
    """One attention head's subspace. mode "qkvo": blocks qk, v, o; mode "qk": block qk only.

    ``bias=True`` adds the matching bias entries (a ones column on the input side) to the qk and v blocks.
    The o block's bias is shared by all heads and is never a head parameter.
    """

    layer: int
    head: int
    mode: str = "qkvo"
    bias: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown HeadSpec mode {self.mode!r}; expected one of {MODES}")
        for name in ("layer", "head"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"HeadSpec.{name} must be a non-negative int, got {v!r}")

    @property
    def name(self) -> str:
        return (
            f"L{self.layer}H{self.head}"
            + ("" if self.mode == "qkvo" else f".{self.mode}")
            + (".b" if self.bias else "")
        )


@dataclass(frozen=True)
class ModuleSpec:
    """A whole attention module of one layer (all heads, bias included): a baseline and the kronfluence check.
    ``module`` is one of the model adapter's ``modules`` (checked against the model by ``head_blocks``)."""

    layer: int
    module: str = "query_key_value"

    def __post_init__(self):
        if not isinstance(self.module, str) or not self.module:
            raise ValueError(f"ModuleSpec.module must name an attention module (e.g. {MODULES}), got {self.module!r}")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise ValueError(f"ModuleSpec.layer must be a non-negative int, got {self.layer!r}")

    @property
    def name(self) -> str:
        return f"L{self.layer}.{self.module}"


@dataclass(frozen=True)
class Block:
    """A parameter block of layer ``layer``: the rows of every segment (stacked in segment order) of the attention
    linears the segments name, restricted to input columns ``in_start:in_stop`` (+ a bias column).

    All segments' modules read the same input (the first segment's module input is the block's ``X``).
    ``shared_by``: the query heads whose subspaces contain some of these parameters (see ``head_blocks``)."""

    name: str
    layer: int
    segments: tuple
    in_start: int
    in_stop: int
    bias: bool
    shared_by: tuple = ()

    def __post_init__(self):
        segs = tuple(s if isinstance(s, Segment) else Segment(**s) for s in self.segments)
        if not segs:
            raise ValueError(f"Block {self.name!r} needs at least one output segment")
        object.__setattr__(self, "segments", segs)
        object.__setattr__(self, "shared_by", tuple(self.shared_by))

    @property
    def modules(self) -> tuple[str, ...]:
        """The distinct modules of the segments, in segment order."""
        return tuple(dict.fromkeys(s.module for s in self.segments))

    @property
    def input_module(self) -> str:
        """The module whose input is the block's ``X`` (every segment's module reads the same input)."""
        return self.segments[0].module

    def runs(self) -> tuple[Segment, ...]:
        """The segments with consecutive rows of one module merged (same rows, same order, fewer slices)."""
        out: list[Segment] = []
        for s in self.segments:
            if out and out[-1].module == s.module and out[-1].out_stop == s.out_start:
                out[-1] = Segment(s.module, out[-1].out_start, s.out_stop)
            else:
                out.append(s)
        return tuple(out)

    @property
    def d_out(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def d_in(self) -> int:
        """Input width without the bias column."""
        return self.in_stop - self.in_start

    @property
    def d_in_total(self) -> int:
        return self.d_in + int(self.bias)

    def to_dict(self) -> dict:
        """A JSON-ready dict (``Block.from_dict`` reads it back)."""
        d = asdict(self)
        d["shared_by"] = list(self.shared_by)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Block:
        """The inverse of ``to_dict``; also reads the one-module form ``{module, out_start, out_stop, ...}`` that
        factors saved before blocks had segments."""
        d = dict(d)
        if "segments" not in d:
            d["segments"] = (Segment(d.pop("module"), d.pop("out_start"), d.pop("out_stop")),)
        return cls(**d)


def check_spec(model, spec) -> None:
    h = handle(model)
    adapter, s = h.adapter, h.shape
    if not 0 <= spec.layer < s.n_layers:
        raise ValueError(
            f"{type(spec).__name__}.layer={spec.layer} out of range: the model has {s.n_layers} layers (0..{s.n_layers - 1})"
        )
    if isinstance(spec, HeadSpec):
        if not 0 <= spec.head < s.n_heads:
            raise ValueError(
                f"HeadSpec.head={spec.head} out of range: the model has {s.n_heads} heads per layer (0..{s.n_heads - 1})"
            )
    elif not isinstance(spec, ModuleSpec):
        raise TypeError(f"expected a HeadSpec or ModuleSpec, got {type(spec).__name__}")
    elif spec.module not in adapter.modules:
        raise ValueError(
            f"unknown module {spec.module!r} for a {adapter.family} model; expected one of {adapter.modules}"
        )
    if isinstance(spec, HeadSpec) and spec.bias:
        parts = adapter.head_parts(s, spec.head, spec.mode).values()
        biased = {seg.module for p in parts if p.head_bias for seg in p.segments}
        if any(module_of(model, spec.layer, m).bias is None for m in biased):
            raise ValueError(f"{spec} asks for bias entries but the model's {'/'.join(sorted(biased))} has no bias")


def spec_has_bias(spec, model=None) -> bool:
    """Whether a spec's blocks carry a bias column: a HeadSpec's ``bias`` flag; a ModuleSpec's module bias (True
    without a model, the Pythia case)."""
    if isinstance(spec, HeadSpec):
        return spec.bias
    return True if model is None else module_of(model, spec.layer, spec.module).bias is not None


def head_blocks(model, spec) -> list[Block]:
    """The blocks of a HeadSpec or ModuleSpec, in a fixed order (qk, v, o).

    The head convention (every layout): head h belongs to KV group g = h // (H / H_kv) (HF's ``repeat_kv``
    order); block qk = [W_Q rows of head h ; W_K rows of group g], v = W_V rows of group g, o = W_O columns of
    head h, in ``nn.Linear`` orientation, with the q/k/v bias entries of those rows as a ones column when
    ``spec.bias``. ``Block.shared_by`` lists the query heads whose blocks contain some of the block's parameters:
    ``(h,)`` without grouped-query attention; with it, the qk and v blocks of every head of group g share the K / V
    rows of g (two heads of one group have the same v block and qk blocks that overlap in their K rows, so their
    subspaces are not disjoint: their influence scores are not independent, and a sum over the heads of a group
    counts the shared rows once per head). A ModuleSpec's block is the whole module, shared by every head.
    """
    check_spec(model, spec)
    L = spec.layer
    if isinstance(spec, ModuleSpec):
        mod = module_of(model, L, spec.module)
        has_b = mod.bias is not None
        d_out, d_in = handle(model).adapter.linear_weight(mod).shape
        every = tuple(range(handle(model).shape.n_heads))
        return [Block(spec.name, L, (Segment(spec.module, 0, d_out),), 0, d_in, has_b, every)]
    h = handle(model)
    parts = h.adapter.head_parts(h.shape, spec.head, spec.mode)
    return [
        Block(
            f"{spec.name}.{part}",
            L,
            p.segments,
            p.in_start,
            p.in_stop,
            spec.bias and p.head_bias,
            p.shared_by or (spec.head,),
        )
        for part, p in parts.items()
    ]


def module_of(model, layer: int, module: str) -> torch.nn.Linear:
    """The attention linear ``module`` of layer ``layer`` (the adapter's ``attention_module``)."""
    return handle(model).attention_module(layer, module)


def block_weight(model, block: Block, grad: bool = False) -> torch.Tensor:
    """The HF weight slice of a block, ``[d_out, d_in(+1)]``: the segments' rows stacked in segment order, bias
    entries appended as the last column.

    With ``grad=True`` returns the same slice of ``weight.grad`` / ``bias.grad`` (for tests against autograd).
    """
    rows = []
    adapter = handle(model).adapter
    for seg in block.segments:
        mod = module_of(model, block.layer, seg.module)
        w = adapter.linear_weight(mod, grad)  # nn.Linear orientation [d_out, d_in] (GPT-2's Conv1D: transposed)
        out = w[seg.out_start : seg.out_stop, block.in_start : block.in_stop]
        if block.bias:
            b = mod.bias.grad if grad else mod.bias
            out = torch.cat([out, b[seg.out_start : seg.out_stop, None]], dim=1)
        rows.append(out)
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)

"""Head subspaces: which rows / columns of which attention weight a head owns.

The model's adapter (``mda_fast.adapters``) says which slices a head owns (``ModelAdapter.head_parts``); for
GPT-NeoX, head h's ``[W_Q | W_K]`` rows of ``query_key_value.weight`` are ``h·3·d_head : h·3·d_head + 2·d_head``, its
``W_V`` rows follow, and it owns columns ``h·d_head : (h+1)·d_head`` of ``attention.dense.weight``.

A :class:`Block` is one Kronecker-factored parameter block with token inputs ``X`` (a slice of the module
input) and output gradients ``Y`` (a slice of the module output gradient). Its gradient uses the HF weight
slice layout ``[d_out, d_in (+1 bias column)]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .handle import handle

MODES = ("qkvo", "qk")
MODULES = ("query_key_value", "dense")  # the GPT-NeoX adapter's modules


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
    """A whole attention module of one layer (all heads, bias included): a baseline and the kronfluence check."""

    layer: int
    module: str = "query_key_value"

    def __post_init__(self):
        if self.module not in MODULES:
            raise ValueError(f"unknown module {self.module!r}; expected one of {MODULES}")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise ValueError(f"ModuleSpec.layer must be a non-negative int, got {self.layer!r}")

    @property
    def name(self) -> str:
        return f"L{self.layer}.{self.module}"


@dataclass(frozen=True)
class Block:
    """A parameter block ``W[out_slice, in_slice]`` of ``layers[layer].attention.<module>`` (+ bias column)."""

    name: str
    layer: int
    module: str  # "query_key_value" | "dense"
    out_start: int
    out_stop: int
    in_start: int
    in_stop: int
    bias: bool

    @property
    def d_out(self) -> int:
        return self.out_stop - self.out_start

    @property
    def d_in(self) -> int:
        """Input width without the bias column."""
        return self.in_stop - self.in_start

    @property
    def d_in_total(self) -> int:
        return self.d_in + int(self.bias)


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
    if isinstance(spec, HeadSpec) and spec.bias:
        biased = {p.module for p in adapter.head_parts(s, spec.head, spec.mode).values() if p.head_bias}
        if any(module_of(model, spec.layer, m).bias is None for m in biased):
            raise ValueError(f"{spec} asks for bias entries but the model's {'/'.join(sorted(biased))} has no bias")


def spec_has_bias(spec, model=None) -> bool:
    """Whether a spec's blocks carry a bias column: a HeadSpec's ``bias`` flag; a ModuleSpec's module bias (True
    without a model, the Pythia case)."""
    if isinstance(spec, HeadSpec):
        return spec.bias
    return True if model is None else module_of(model, spec.layer, spec.module).bias is not None


def head_blocks(model, spec) -> list[Block]:
    """The blocks of a HeadSpec or ModuleSpec, in a fixed order (qk, v, o)."""
    check_spec(model, spec)
    L = spec.layer
    if isinstance(spec, ModuleSpec):
        mod = module_of(model, L, spec.module)
        has_b = mod.bias is not None
        d_out, d_in = mod.weight.shape
        return [Block(spec.name, L, spec.module, 0, d_out, 0, d_in, has_b)]
    h = handle(model)
    parts = h.adapter.head_parts(h.shape, spec.head, spec.mode)
    return [
        Block(
            f"{spec.name}.{part}",
            L,
            p.module,
            p.out_start,
            p.out_stop,
            p.in_start,
            p.in_stop,
            spec.bias and p.head_bias,
        )
        for part, p in parts.items()
    ]


def module_of(model, layer: int, module: str) -> torch.nn.Linear:
    """The attention linear ``module`` of layer ``layer`` (the adapter's ``attention_module``)."""
    return handle(model).attention_module(layer, module)


def block_weight(model, block: Block, grad: bool = False) -> torch.Tensor:
    """The HF weight slice of a block, ``[d_out, d_in(+1)]`` (bias appended as last column).

    With ``grad=True`` returns the same slice of ``weight.grad`` / ``bias.grad`` (for tests against autograd).
    """
    mod = module_of(model, block.layer, block.module)
    w = mod.weight.grad if grad else mod.weight
    out = w[block.out_start : block.out_stop, block.in_start : block.in_stop]
    if block.bias:
        b = mod.bias.grad if grad else mod.bias
        out = torch.cat([out, b[block.out_start : block.out_stop, None]], dim=1)
    return out

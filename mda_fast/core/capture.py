"""Capture of block token inputs X and output gradients Y with forward hooks and ``torch.autograd.grad``.

Hooks sit on the attention modules of the tracked layers that the model's adapter names (``mda_fast.adapters``;
GPT-NeoX: ``attention.query_key_value``, input x, output qkv, and ``attention.dense``, input z, output). Parameters are frozen during capture, so no weight gradient is ever computed; where a hooked
output does not already depend on something that requires grad, the hook turns it into a fresh leaf, so the
backward pass stops at the lowest tracked layer. One forward + backward serves every tracked block.

Sign/shape conventions: ``Y[n, t]`` is d(objective_n)/d(module output at token t), and the per-sample gradient of
a block is ``G_n = Σ_t y_t x̃_tᵀ`` with ``x̃ = [x, 1]`` when the block has a bias column.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from . import lean_forward
from .handle import handle
from .heads import Block, head_blocks
from .lm_head import linear_cross_entropy, sample_from_logits, sample_labels

_HF_FORWARD = contextvars.ContextVar("mda_fast_hf_forward", default=False)


@contextlib.contextmanager
def hf_forward():
    """Within the block, every ``capture`` (so ``per_sample_head_grads``, ``fit_ekfac``, ``InfluenceScorer``) runs
    HF's own forward with hooks, never the lean forward (``mda_fast.core.lean_forward``). The lean forward is chosen
    only where it reproduces HF's arithmetic; this switch is the reference it is checked against, and a way out.
    """
    token = _HF_FORWARD.set(True)
    try:
        yield
    finally:
        _HF_FORWARD.reset(token)


def uses_lean_forward(model, objective, blocks, attention_mask: torch.Tensor | None = None) -> bool:
    """True when ``capture`` with these arguments runs the lean forward (outside :func:`hf_forward`)."""
    return (
        not _HF_FORWARD.get()
        and isinstance(objective, TokenLoss)
        and bool(blocks)
        and lean_forward.supports(model, attention_mask)
    )


@contextlib.contextmanager
def frozen(model):
    """Temporarily set ``requires_grad=False`` on every parameter (restored afterwards)."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield model
    finally:
        for p, r in saved:
            p.requires_grad_(r)


def split_rows(input_ids: torch.Tensor, labels: torch.Tensor | None = None):
    """Pythia convention: a row of T+1 tokens gives inputs ``row[:T]`` and labels ``row[1:T+1]``.

    ``labels[:, t]`` is the target predicted at position t. When ``labels`` is given, ``input_ids`` are the
    inputs already.
    """
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be 2-D [N, T], got shape {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point:
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if labels is None:
        if input_ids.shape[1] < 2:
            raise ValueError(f"sequences must have at least 2 tokens (input + label), got length {input_ids.shape[1]}")
        return input_ids[:, :-1], input_ids[:, 1:]
    if labels.shape != input_ids.shape:
        raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(labels.shape)}")
    if input_ids.shape[1] < 1:
        raise ValueError("sequences must have at least 1 input token")
    return input_ids, labels


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Summed token cross-entropy per sequence, ``[N]`` (Pythia training loss, not averaged)."""
    acc = logits if logits.dtype == torch.float64 else logits.float()  # float32 at least, float64 kept
    ce = F.cross_entropy(acc.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    if mask is not None:
        ce = ce * mask.to(ce.dtype)
    return ce.sum(dim=1)


@dataclass
class CaptureResult:
    """Per-layer module inputs / output grads; ``x(block)``, ``y(block)`` give contiguous block slices."""

    inputs: dict = field(default_factory=dict)  # (layer, module) -> module input [N, T, d_in] (detached)
    grads: dict = field(default_factory=dict)  # (layer, module) -> module output gradient [N, T, d_out]
    value: torch.Tensor | None = None  # objective per sequence [N] (detached)

    def x(self, block: Block) -> torch.Tensor:
        return self.inputs[(block.layer, block.input_module)][..., block.in_start : block.in_stop].contiguous()

    def y(self, block: Block) -> torch.Tensor:
        """The output gradients of the block's segments, concatenated in segment order ``[N, T, d_out]``."""
        parts = [self.grads[(block.layer, s.module)][..., s.out_start : s.out_stop] for s in block.runs()]
        return parts[0].contiguous() if len(parts) == 1 else torch.cat(parts, dim=-1)


def block_keys(blocks) -> set:
    """``{(layer, module)}`` of every segment of ``blocks``: the module outputs a capture differentiates."""
    return {(b.layer, s.module) for b in blocks for s in b.segments}


class _Hooks:
    """Forward hooks that record module inputs and make module outputs differentiable targets."""

    def __init__(self, model, keys: set, keep_qkv_layers: Iterable[int] = ()):
        h = handle(model)
        adapter, model = h.adapter, h.model
        self.qkv_module = adapter.qkv_module
        self.pattern_modules = adapter.pattern_modules()
        self.copy = adapter.copies_hooked_outputs(model)
        self.keys = set(keys)
        self.keep_qkv = set(keep_qkv_layers)
        self.inputs, self.outputs, self.handles = {}, {}, []
        for L in range(len(adapter.layers(model))):
            for module in adapter.modules:
                key = (L, module)
                if key in self.keys or (module in self.pattern_modules and L in self.keep_qkv):
                    mod = adapter.attention_module(model, L, module)
                    self.handles.append(mod.register_forward_hook(self._hook(key)))

    def _hook(self, key):
        def hook(mod, args, out):
            if key in self.keys:
                self.inputs[key] = args[0].detach()
                if not out.requires_grad:
                    out = out.detach().requires_grad_(True)
            self.outputs[key] = out
            # the model changes this output in place: it gets a copy, the linear output stays differentiable
            return out.clone() if self.copy else out

        return hook

    def qkv(self, layer: int) -> torch.Tensor:
        """The (differentiable) ``qkv_module`` output of a layer (GPT-NeoX: ``[N, T, 3·d_model]``)."""
        return self.outputs[(layer, self.qkv_module)]

    def pattern_outputs(self, layer: int) -> dict:
        """``{module: output}`` of the adapter's ``pattern_modules`` in ``layer`` (``attention.layer_pattern``'s)."""
        return {m: self.outputs[(layer, m)] for m in self.pattern_modules}

    def remove(self):
        for h in self.handles:
            h.remove()


Objective = Callable[[torch.Tensor, "_Hooks"], torch.Tensor]


def capture(
    model,
    input_ids: torch.Tensor,
    blocks: list[Block],
    objective: Objective,
    qkv_layers: Iterable[int] = (),
    attention_mask: torch.Tensor | None = None,
    compile: bool = False,
) -> CaptureResult:
    """Run one forward and one backward pass and return X / Y for every block.

    ``objective(logits, hooks) -> [N]`` is differentiated (summed over sequences; sequences do not interact,
    so row n of Y is the gradient of objective_n alone). ``hooks.qkv(layer)`` exposes the captured q/k/v of any
    layer in ``qkv_layers`` or of a tracked block, for attention-based objectives.

    A token loss on a model ``lean_forward.supports`` runs the lean forward (same numbers, only the tracked heads
    differentiated); everything else, and everything inside ``with hf_forward():``, runs HF's forward with hooks.
    ``compile=True`` runs the lean forward's ``torch.compile``d pieces (equal up to fp rounding; HF's forward is
    never compiled).
    """
    h = handle(model)
    adapter, model = h.adapter, h.model
    keys = block_keys(blocks)
    if uses_lean_forward(model, objective, blocks, attention_mask):
        return _capture_lean(model, input_ids, blocks, objective, compile)
    hooks = _Hooks(model, keys, qkv_layers)
    try:
        with frozen(model), torch.enable_grad():
            if isinstance(objective, TokenLoss) and plain_lm_head(model) is not None:
                # a token loss: fused chunked LM head + cross-entropy, no [N, T, vocab] logits
                hidden = adapter.backbone(model)(
                    input_ids=input_ids, attention_mask=attention_mask, use_cache=False
                ).last_hidden_state
                weight = model.get_output_embeddings().weight
                value = linear_cross_entropy(hidden, weight, objective.labels_for(hidden, weight), objective.mask)
            else:
                logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
                value = objective(logits, hooks)
            if value.dim() != 1 or value.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"objective must return one value per sequence [N={input_ids.shape[0]}], got {tuple(value.shape)}"
                )
            order = sorted(keys)
            targets = [hooks.outputs[k] for k in order]
            grads = torch.autograd.grad(value.sum(), targets, allow_unused=True) if targets else []
    finally:
        hooks.remove()
    res = CaptureResult(value=value.detach())
    for k, g in zip(order, grads):
        out = hooks.outputs[k]
        res.grads[k] = torch.zeros_like(out) if g is None else g.detach()
        res.inputs[k] = hooks.inputs[k]
    return res


def _capture_lean(model, input_ids, blocks, objective, compile: bool = False) -> CaptureResult:
    """``capture`` of the training loss through ``lean_forward`` (HF's arithmetic, tracked heads only)."""
    with frozen(model), torch.enable_grad():
        value, inputs, outputs = lean_forward.capture_loss(model, input_ids, blocks, objective, compile=compile)
        order = sorted(outputs)
        grads = torch.autograd.grad(value.sum(), [outputs[k] for k in order], allow_unused=True)
    res = CaptureResult(value=value.detach(), inputs=inputs)
    for k, g in zip(order, grads):
        res.grads[k] = torch.zeros_like(outputs[k]) if g is None else g.detach()
    return res


class TokenLoss(abc.ABC):
    """A summed token cross-entropy ``Σ_t m_t · CE(logits_t, labels_t)`` per sequence. ``capture`` computes it with
    the fused chunked LM head (``mda_fast.core.lm_head``) and asks ``labels_for(hidden, weight)`` for the labels;
    called on logits (the unfused path) it is ``sequence_loss``. Subclasses say where the labels come from."""

    mask: torch.Tensor | None = None

    @abc.abstractmethod
    def labels_for(self, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Labels ``[N, T]`` given the final hidden states ``[N, T, d]`` and the unembedding ``[vocab, d]``."""

    @abc.abstractmethod
    def labels_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Labels ``[N, T]`` given the logits ``[N, T, vocab]``."""

    def __call__(self, logits, hooks):
        return sequence_loss(logits, self.labels_from_logits(logits), self.mask)


class LossObjective(TokenLoss):
    """The training loss: cross-entropy against the given ``labels`` (token weights ``mask``)."""

    def __init__(self, labels: torch.Tensor, mask: torch.Tensor | None = None):
        self.labels, self.mask = labels, mask

    def labels_for(self, hidden, weight):
        return self.labels

    def labels_from_logits(self, logits):
        return self.labels


class FisherObjective(TokenLoss):
    """Cross-entropy against labels drawn from the model's own predictive distribution (true Fisher).

    One uniform per token comes from ``generator`` (drawn on the generator's device, then moved), and the label is
    the inverse-CDF draw, so the fused and unfused paths, and every device, draw the same labels up to rounding.
    """

    def __init__(self, mask: torch.Tensor | None, generator: torch.Generator):
        self.mask, self.generator = mask, generator

    def _uniforms(self, shape, device):
        return torch.rand(tuple(shape), generator=self.generator, dtype=torch.float64, device=self.generator.device).to(
            device
        )

    def labels_for(self, hidden, weight):
        return sample_labels(hidden.detach(), weight, self._uniforms(hidden.shape[:2], hidden.device))

    def labels_from_logits(self, logits):
        N, T, V = logits.shape
        u = self._uniforms((N, T), logits.device).reshape(N * T)
        return sample_from_logits(logits.detach().reshape(N * T, V), u).view(N, T)


def plain_lm_head(model):
    """``(backbone, unembedding weight)`` when logits = ``backbone(...).last_hidden_state @ weightᵀ`` with a bias-free
    linear output head (GPT-NeoX: ``embed_out`` in transformers 4.x, ``lm_head`` in 5.x), else ``None``."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    inner = handle(model).backbone()
    ok = (
        inner is not None
        and inner is not model
        and isinstance(head, torch.nn.Linear)
        and head.bias is None
        and type(head).forward is torch.nn.Linear.forward
    )
    return (inner, head.weight) if ok else None


def loss_objective(labels: torch.Tensor, mask: torch.Tensor | None = None) -> Objective:
    return LossObjective(labels, mask)


def fisher_objective(mask: torch.Tensor | None, generator: torch.Generator) -> Objective:
    """Summed cross-entropy against labels sampled from the model itself (true Fisher)."""
    return FisherObjective(mask, generator)


def resolve_blocks(model, specs) -> tuple[list, list[list[Block]]]:
    """Normalise specs to a list and return (specs, blocks per spec)."""
    if not isinstance(specs, (list, tuple)):
        specs = [specs]
    if len(specs) == 0:
        raise ValueError("specs must name at least one HeadSpec or ModuleSpec")
    return list(specs), [head_blocks(model, s) for s in specs]


def check_mask(mask: torch.Tensor | None, shape) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor [N, T], got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask must have shape [N, T] = {tuple(shape)} (aligned with labels), got {tuple(mask.shape)}")
    return mask


def block_grad(x: torch.Tensor, y: torch.Tensor, bias: bool) -> torch.Tensor:
    """Materialised per-sample gradients ``[N, d_out, d_in(+1)]`` = Σ_t y_t x̃_tᵀ (reference, user API)."""
    g = torch.einsum("nto,nti->noi", y, x)
    if bias:
        g = torch.cat([g, y.sum(dim=1).unsqueeze(-1)], dim=-1)
    return g


def per_sample_head_grads(model, input_ids, specs, labels=None, mask=None) -> list[dict]:
    """Per-sample gradients of the summed token cross-entropy of each sequence w.r.t. each block.

    Returns, for each spec, ``{block_name: tensor [N, d_out, d_in(+1)]}`` in the HF weight-slice layout, so
    that ``out[i][name][n]`` equals the ``weight.grad`` slice of sequence n's loss alone.
    ``labels[:, t]`` is the target at position t; without labels, ``input_ids`` holds rows of T+1 tokens.
    """
    specs, blocks = resolve_blocks(model, specs)
    inputs, labels = split_rows(input_ids, labels)
    mask = check_mask(mask, labels.shape)
    flat = [b for bs in blocks for b in bs]
    res = capture(model, inputs, flat, loss_objective(labels, mask))
    return [{b.name: block_grad(res.x(b), res.y(b), b.bias) for b in bs} for bs in blocks]

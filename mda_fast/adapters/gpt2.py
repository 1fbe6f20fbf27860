"""The GPT-2 adapter: HF ``GPT2LMHeadModel`` / ``GPT2Model``, the fused ``Conv1D`` layout (model_type ``gpt2``).

Layout: ``attn.c_attn`` and ``attn.c_proj`` are ``transformers.pytorch_utils.Conv1D`` modules, which store their
weight as ``[d_in, d_out]`` (``y = x @ W + b``), the transpose of ``nn.Linear``. Every block and every per-sample
gradient is in ``nn.Linear`` orientation ``[d_out, d_in]`` as for every other family (:meth:`GPT2Adapter.linear_weight`
transposes). ``c_attn``'s output is ``[Q of all heads | K of all heads | V of all heads]``, each ``d_model`` wide, so
head h's block **qk** is two segments of ``c_attn``: output rows ``h·d_head : (h+1)·d_head`` (W_Q) and
``d_model + h·d_head : d_model + (h+1)·d_head`` (W_K); its **v** block is rows ``2·d_model + h·d_head : …``; its
**o** block is the input columns ``h·d_head : (h+1)·d_head`` of ``c_proj`` (in ``Conv1D`` storage those are rows
of ``c_proj.weight``). The q/k/v biases of those rows are head h's (``HeadSpec(bias=True)``: a ones column);
``c_proj``'s bias is no head's.

Attention: learned absolute positions (``wpe``), no rotary (:meth:`GPT2Adapter.rotate_qk` is the identity); scores
``q·kᵀ`` scaled by ``d_head^-0.5`` when ``scale_attn_weights``, and by ``1/(layer + 1)`` when
``scale_attn_by_inverse_layer_idx``; ``reorder_and_upcast_attn`` (HF's eager attention computes the scores and the
softmax in float32) changes the rounding, not the pattern. Tied embeddings (``lm_head`` is ``wte``) need nothing
special: the LM head is a bias-free ``nn.Linear`` whichever parameter it holds.

Refused with one line: cross-attention (``add_cross_attention``); on transformers 4.x, a model using HF's "sdpa"
attention with non-default scaling (4.x's sdpa path ignores ``scale_attn_weights`` and
``scale_attn_by_inverse_layer_idx``, so the model would not compute the attention its config describes).

Capture runs HF's forward with hooks on ``c_attn`` / ``c_proj`` (no lean forward: see ``benchmarks/end_to_end.py
--capture-ratio``). Tested: transformers 5.x and 4.49.
"""

from __future__ import annotations

import torch

from ..errors import ModelError
from .base import HeadPart, ModelAdapter, ModelShape, Segment

__all__ = ["GPT2Adapter", "attention_scales", "is_conv1d"]


def attention_scales(config) -> tuple[float, ...]:
    """The softmax scale of each layer's scores, as HF's eager attention computes it: ``d_head^-0.5`` if
    ``scale_attn_weights`` (else 1), divided by ``layer + 1`` if ``scale_attn_by_inverse_layer_idx``."""
    d_head = config.n_embd // config.n_head
    base = d_head**-0.5 if getattr(config, "scale_attn_weights", True) else 1.0
    by_layer = bool(getattr(config, "scale_attn_by_inverse_layer_idx", False))
    return tuple(base / float(layer + 1) if by_layer else base for layer in range(config.n_layer))


def default_scaling(config) -> bool:
    return bool(getattr(config, "scale_attn_weights", True)) and not getattr(
        config, "scale_attn_by_inverse_layer_idx", False
    )


def is_conv1d(module) -> bool:
    """True for HF's ``Conv1D`` (weight ``[d_in, d_out]``)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


class GPT2Adapter(ModelAdapter):
    """GPT-2's fused ``Conv1D`` layout (weights stored ``[d_in, d_out]``, read transposed): ``c_attn`` outputs
    [Q all heads | K | V], ``c_proj`` reads the heads' outputs; learned positions; per-layer softmax scales."""

    model_type = "gpt2"
    family = "GPT-2"
    modules = ("c_attn", "c_proj")
    qkv_module = "c_attn"
    check_name, example_class, backbone_where = "GPT-2", "GPT2LMHeadModel", ".transformer or .h"
    backbone_attr, layers_attr, embed_attr = "transformer", "h", "wte"

    # ---- what the model is -----------------------------------------------------------------------------------
    def check_layout(self, model) -> None:
        config = model.config
        attn = self.layers(model)[0].attn if len(self.layers(model)) else None
        if attn is not None and not (is_conv1d(attn.c_attn) and is_conv1d(attn.c_proj)):
            raise ModelError(
                f"{type(model).__name__}'s attention projections are {type(attn.c_attn).__name__} modules; "
                "expected HF's Conv1D (weight [d_in, d_out]) of the GPT-2 layout"
            )
        impl = getattr(config, "_attn_implementation", None)
        if impl == "sdpa" and not default_scaling(config) and not transformers_5():
            raise ModelError(
                "transformers 4.x's sdpa attention ignores GPT-2's scale_attn_weights / "
                "scale_attn_by_inverse_layer_idx, so this model does not compute the attention its config describes; "
                "expected attn_implementation='eager' (or transformers >= 5)"
            )

    def config_shape(self, config) -> ModelShape:
        if getattr(config, "add_cross_attention", False):
            raise ModelError(
                "GPT-2 with add_cross_attention=True (cross-attention) is not supported; mda-fast attributes the "
                "self-attention heads of decoder-only models"
            )
        n_embd, n_head = config.n_embd, config.n_head
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} is not a multiple of n_head {n_head}")
        return ModelShape(
            n_layers=config.n_layer,
            n_heads=n_head,
            d_model=n_embd,
            d_head=n_embd // n_head,
            rotary_ndims=0,
            rotary_base=0.0,
            vocab_size=config.vocab_size,
            max_positions=config.n_positions,
            model_type=self.model_type,
            attn_scales=attention_scales(config),
        )

    def config_class(self):
        from transformers import GPT2Config

        return GPT2Config

    def model_class(self):
        from transformers import GPT2LMHeadModel

        return GPT2LMHeadModel

    # ---- where things are ------------------------------------------------------------------------------------
    def attention_module(self, model, layer: int, module: str):
        return getattr(self.layers(model)[layer].attn, module)

    def linear_weight(self, module, grad: bool = False) -> torch.Tensor:
        """``Conv1D`` stores ``[d_in, d_out]``: the transpose (a view) is the ``nn.Linear`` orientation."""
        w = module.weight.grad if grad else module.weight
        return None if w is None else w.t()

    # ---- which parameters a head owns ------------------------------------------------------------------------
    def head_parts(self, shape: ModelShape, head: int, mode: str) -> dict[str, HeadPart]:
        dh, dm = shape.d_head, shape.d_model
        lo, hi, own = head * dh, (head + 1) * dh, (head,)
        q, k = Segment("c_attn", lo, hi), Segment("c_attn", dm + lo, dm + hi)
        parts = {"qk": HeadPart((q, k), 0, dm, True, own)}
        if mode == "qkvo":
            parts["v"] = HeadPart((Segment("c_attn", 2 * dm + lo, 2 * dm + hi),), 0, dm, True, own)
            parts["o"] = HeadPart((Segment("c_proj", 0, dm),), lo, hi, False, own)
        return parts

    # ---- attention -------------------------------------------------------------------------------------------
    def split_qkv(self, qkv, shape, heads=None):
        """``c_attn``'s output ``[N, T, 3·d_model]`` = [Q | K | V] → q, k, v each ``[N, H', T, d_head]``."""
        N, T, _ = qkv.shape
        q, k, v = (
            x.reshape(N, T, shape.n_heads, shape.d_head).transpose(1, 2) for x in qkv.split(shape.d_model, dim=-1)
        )
        if heads is not None:
            q, k, v = q[:, heads], k[:, heads], v[:, heads]
        return q, k, v

    def rotate_qk(self, q, k, shape):
        return q, k  # learned absolute positions (wpe): nothing rotates q and k


def transformers_5() -> bool:
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5

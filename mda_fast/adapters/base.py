"""The model adapter interface: everything the core needs to know about one architecture.

The core (heads → capture → EK-FAC → kernels → scorer) never names a module of a particular model; it asks the
model's :class:`ModelAdapter` (``mda_fast.adapters.adapter_for(model)``, dispatched on ``config.model_type``):

* **what the model is**: :meth:`~ModelAdapter.check` (raise unless the object is a usable model of this
  architecture), :meth:`~ModelAdapter.config_shape` (a :class:`ModelShape` from a config, no weights),
  :meth:`~ModelAdapter.shape`, and for loading :meth:`~ModelAdapter.config_class` / :meth:`~ModelAdapter.model_class`;
* **where things are**: :meth:`~ModelAdapter.backbone` (the transformer without its LM head),
  :meth:`~ModelAdapter.layers` (the layer loop), :meth:`~ModelAdapter.attention_module` (the linear of layer L
  named by one of :attr:`~ModelAdapter.modules`; a capture hooks its input X and its output gradient Y there);
* **which parameters a head owns**: :meth:`~ModelAdapter.head_parts`, the row / column ranges of head h in each
  module, as :class:`HeadPart` slices (``heads.head_blocks`` turns them into Kronecker blocks);
* **attention**: :meth:`~ModelAdapter.split_qkv` (per-head q, k, v from the captured ``qkv_module`` output) and
  :meth:`~ModelAdapter.rotate_qk` (the positional rotation applied before the scores) and
  :meth:`~ModelAdapter.softmax_scale` (the factor on each layer's scores), for attention-pattern
  probes and localization;
* **the lean forward** (optional, ``mda_fast.core.lean_forward``): :meth:`~ModelAdapter.lean_supports`,
  :meth:`~ModelAdapter.lean_begin`, :meth:`~ModelAdapter.lean_layer`, :meth:`~ModelAdapter.lean_end`. An adapter
  that leaves them out gets HF's forward with hooks, which is always correct.

A second architecture (GPT-2, Llama, ...) is one new file: a subclass of :class:`ModelAdapter` implementing these
methods, registered with ``mda_fast.adapters.register_adapter``. GPT-NeoX (``adapters/gpt_neox.py``) and GPT-2
(``adapters/gpt2.py``, the fused ``Conv1D`` layout) are registered.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import torch

from ..errors import ModelError


class UnsupportedModelError(ModelError, TypeError):
    """A model whose ``config.model_type`` has no registered adapter (also a ``TypeError``, as before adapters)."""


@dataclass(frozen=True)
class ModelShape:
    """The sizes the core needs: layers, heads, widths, rotary, vocabulary, context (and which adapter)."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    rotary_ndims: int
    rotary_base: float
    vocab_size: int
    max_positions: int
    model_type: str = "gpt_neox"
    attn_scales: tuple = ()  # softmax scale of each layer's scores (GPT-2's options); empty: d_head^-0.5 everywhere
    n_kv_heads: int = 0  # key/value heads (grouped-query attention); 0 in the constructor means n_heads
    rope_type: str = "default"  # the rotary kind (HF's rope_type: default, linear, dynamic, llama3, yarn)

    def __post_init__(self):
        if not self.n_kv_heads:
            object.__setattr__(self, "n_kv_heads", self.n_heads)

    @property
    def group_size(self) -> int:
        """Query heads per KV group, ``n_heads // n_kv_heads``; head h belongs to KV group ``h // group_size``."""
        return self.n_heads // self.n_kv_heads


@dataclass(frozen=True)
class Segment:
    """Rows ``out_start:out_stop`` of the attention linear ``module`` (HF ``nn.Linear`` orientation: a row is one
    output of the module)."""

    module: str
    out_start: int
    out_stop: int

    def __post_init__(self):
        if not (isinstance(self.module, str) and 0 <= self.out_start < self.out_stop):
            raise ValueError(f"a Segment needs a module name and 0 <= out_start < out_stop, got {self!r}")

    @property
    def size(self) -> int:
        return self.out_stop - self.out_start


@dataclass(frozen=True)
class HeadPart:
    """The slice of the attention weights that one part (qk, v or o) of a head owns: the rows of every
    :class:`Segment`, stacked in segment order, restricted to input columns ``in_start:in_stop``.

    All segments' modules read the same input (GPT-NeoX: one ``query_key_value``, its q rows then its k rows;
    Llama: ``q_proj`` and ``k_proj``, both fed the same normed hidden state), so the part is one
    ``[Σ rows, in_stop - in_start]`` matrix with one input.

    ``head_bias``: the modules' bias entries of those rows belong to this part (so a ``HeadSpec(bias=True)`` tracks
    them as a ones column); False for a bias no head owns (an output projection's). ``shared_by``: the query heads
    of the layer whose parts contain some of these parameters (the head itself; with grouped-query attention,
    every head of the KV group for a part holding K or V rows)."""

    segments: tuple
    in_start: int
    in_stop: int
    head_bias: bool
    shared_by: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "segments", tuple(self.segments))
        object.__setattr__(self, "shared_by", tuple(self.shared_by))
        if not self.segments or not all(isinstance(s, Segment) for s in self.segments):
            raise ValueError(f"a HeadPart needs at least one Segment, got {self.segments!r}")


Tap = Callable[[int, str, torch.Tensor, torch.Tensor], torch.Tensor]
"""``tap(layer, module, module_input, module_output) -> module_output``: the lean forward's capture point."""


class ModelAdapter(abc.ABC):
    """One architecture's answers to the core's questions (see the module docstring)."""

    model_type: ClassVar[str]  # config.model_type this adapter serves
    family: ClassVar[str]  # human name for messages, e.g. "Pythia / GPT-NeoX"
    modules: ClassVar[tuple[str, ...]]  # attention module names a Block may live in
    qkv_module: ClassVar[str]  # the module whose output split_qkv reads

    # ---- what the model is -----------------------------------------------------------------------------------
    #: for messages: the family's name as users say it, a HF class of it, and where its layers sit
    check_name: str = ""
    example_class: str = ""
    backbone_where: str = ""

    def check(self, model) -> None:
        """Raise ``TypeError`` unless ``model`` is a HF module of this ``model_type`` with a backbone to hook, then
        the family's own checks (:meth:`check_layout`)."""
        config = getattr(model, "config", None)
        mtype = getattr(config, "model_type", None)
        if not isinstance(model, torch.nn.Module) or config is None or mtype != self.model_type:
            raise TypeError(
                f"expected a HF {self.check_name or self.family} model ({self.example_class}, config.model_type == "
                f"{self.model_type!r}); got {type(model).__name__}" + (f" with model_type={mtype!r}" if mtype else "")
            )
        if self.backbone(model) is None:
            raise TypeError(
                f"{type(model).__name__} has no {self.check_name or self.family} backbone ({self.backbone_where}) "
                "to hook"
            )
        self.check_layout(model)

    def check_layout(self, model) -> None:
        """Checks beyond the model type and backbone (default: none); raise ``ModelError`` naming what is wrong."""

    @abc.abstractmethod
    def config_shape(self, config) -> ModelShape:
        """The :class:`ModelShape` of a config (no weights needed); ``ValueError`` for an unsupported one."""

    def shape(self, model) -> ModelShape:
        self.check(model)
        return self.config_shape(model.config)

    @abc.abstractmethod
    def config_class(self):
        """The HF config class that reads a local ``config.json`` of this architecture."""

    @abc.abstractmethod
    def model_class(self):
        """The HF causal-LM class that ``load_pythia`` builds with ``from_pretrained``."""

    # ---- where things are ------------------------------------------------------------------------------------
    #: where the transformer sits: the causal LM's attribute holding it, the transformer's attribute holding the
    #: layers, and an attribute only the bare transformer has (its token embedding)
    backbone_attr: str = ""
    layers_attr: str = "layers"
    embed_attr: str = ""

    def backbone(self, model):
        """The transformer without its LM head (``model`` itself for a bare backbone), or None."""
        inner = getattr(model, self.backbone_attr, None) if self.backbone_attr else None
        if isinstance(inner, torch.nn.Module) and hasattr(inner, self.layers_attr):
            return inner
        if hasattr(model, self.layers_attr) and hasattr(model, self.embed_attr):
            return model
        return None

    def layers(self, model) -> Sequence[torch.nn.Module]:
        """The transformer layers, bottom to top."""
        return getattr(self.backbone(model), self.layers_attr)

    @abc.abstractmethod
    def attention_module(self, model, layer: int, module: str) -> torch.nn.Linear:
        """The linear ``module`` (one of :attr:`modules`) of layer ``layer``'s attention."""

    def linear_weight(self, module: torch.nn.Module, grad: bool = False) -> torch.Tensor | None:
        """An attention module's weight (``grad=True``: its ``.grad``, None if unset) in ``nn.Linear`` orientation
        ``[d_out, d_in]``, whatever the storage (default: ``module.weight`` as stored; GPT-2's ``Conv1D``
        transposes)."""
        return module.weight.grad if grad else module.weight

    # ---- which parameters a head owns ------------------------------------------------------------------------
    @abc.abstractmethod
    def head_parts(self, shape: ModelShape, head: int, mode: str) -> dict[str, HeadPart]:
        """``{part: HeadPart}`` of head ``head`` in a fixed order: ``qk`` (W_Q|W_K), then in mode "qkvo" ``v``
        (W_V) and ``o`` (W_O)."""

    # ---- attention -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def split_qkv(self, qkv: torch.Tensor, shape: ModelShape, heads=None):
        """The ``qkv_module`` output ``[N, T, d]`` → q, k, v each ``[N, H', T, d_head]`` (heads ``heads``)."""

    @abc.abstractmethod
    def rotate_qk(self, q: torch.Tensor, k: torch.Tensor, shape: ModelShape):
        """q, k ``[..., T, d_head]`` with the model's positional rotation applied (computed in q's dtype)."""

    def softmax_scale(self, shape: ModelShape, layer: int | None) -> float:
        """The factor on layer ``layer``'s scores ``q·kᵀ`` before the softmax: ``shape.attn_scales[layer]`` where
        the shape has them (GPT-2), else ``d_head^-0.5``. ``layer=None`` is only allowed where every layer has the
        same scale."""
        scales = shape.attn_scales
        if not scales:
            return shape.d_head**-0.5
        if layer is None:
            if len(set(scales)) > 1:
                raise ValueError("this model scales each layer's attention differently; pass the layer")
            return scales[0]
        return scales[layer]

    def check_attention(self, shape: ModelShape) -> None:
        """Raise ``ModelError`` where the attention pattern is not well defined (default: always defined)."""

    def pattern_modules(self) -> tuple[str, ...]:
        """The attention modules whose outputs :meth:`query_key` reads (default: ``qkv_module`` alone)."""
        return (self.qkv_module,)

    def query_key(self, model, layer: int, outputs: dict, shape: ModelShape, heads=None, dtype=torch.float32):
        """The rotated q and k of query heads ``heads`` (all: None) of ``layer``, each ``[N, H', T, d_head]`` in
        ``dtype`` (k of each query head's KV group), from ``outputs`` = ``{module: output}`` of
        :meth:`pattern_modules` (differentiable where they are). Default: :meth:`split_qkv` + :meth:`rotate_qk`."""
        q, k, _ = self.split_qkv(outputs[self.qkv_module], shape, heads)
        return self.rotate_qk(q.to(dtype), k.to(dtype), shape)

    def scale_scores(self, scores: torch.Tensor, model, layer: int | None, shape: ModelShape) -> torch.Tensor:
        """``q·kᵀ`` of ``layer`` scaled as the model's attention scales it (default: × :meth:`softmax_scale`,
        ``d_head^-0.5`` or the shape's per-layer scales)."""
        return scores * self.softmax_scale(shape, layer)

    def sliding_window(self, model, layer: int) -> int | None:
        """The sliding attention window of ``layer`` (key j is seen from query i when ``i - window < j <= i``), or
        None for full causal attention (default)."""
        return None

    def copies_hooked_outputs(self, model) -> bool:
        """True when the model modifies a hooked module output in place (OLMo's ``clip_qkv`` clamps q, k, v), so a
        capture hook must hand the model a copy and keep the linear output itself (default: False)."""
        return False

    # ---- lean forward (optional) -----------------------------------------------------------------------------
    def lean_supports(self, model, attention_mask: torch.Tensor | None = None) -> bool:
        """True when the lean hooks below reproduce ``model``'s forward exactly (default: no lean forward)."""
        return False

    def lean_begin(self, model, input_ids: torch.Tensor, compile: bool = False):
        """``(h, state)``: the embedded inputs and whatever the layers share (rotary tables); run without grad.
        With ``compile``, the layers may run ``torch.compile``d pieces (same arithmetic up to fp rounding)."""
        raise UnsupportedModelError(
            f"{type(self).__name__} has no lean forward (lean_supports is False); expected capture to use HF's forward"
        )

    def lean_layer(self, model, layer: int, h: torch.Tensor, state, tap: Tap, grad_heads) -> torch.Tensor:
        """One layer on ``h``; every module output passes ``tap``; ``grad_heads(layer, qkv) -> set | None`` says
        which heads' attention needs autograd (None: all)."""
        raise UnsupportedModelError(
            f"{type(self).__name__} has no lean forward (lean_supports is False); expected capture to use HF's forward"
        )

    def lean_end(self, model, h: torch.Tensor):
        """``(hidden, lm_weight)``: the final hidden states and the bias-free unembedding ``[vocab, d_model]``."""
        raise UnsupportedModelError(
            f"{type(self).__name__} has no lean forward (lean_supports is False); expected capture to use HF's forward"
        )

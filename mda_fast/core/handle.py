"""One model handle: the HF model with its adapter and shape, resolved once per model.

Every public function of the core accepts a plain HF model (or a :class:`ModelHandle`) and calls :func:`handle`
at its door. The first call on a model object checks it with its adapter (``config.model_type``), derives its
:class:`~mda_fast.adapters.ModelShape`, and keeps the handle on the model, so the rest of the core reads the
adapter and the shape from the handle instead of re-deriving them from the raw model. ``load_pythia`` makes the
handle when it loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..adapters import ModelAdapter, ModelShape, adapter_for

__all__ = ["ModelHandle", "handle"]

_ATTR = "_mda_fast_handle"


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A HF causal LM (or its backbone) with what the core needs to know about it.

    ``model``: the HF module; ``adapter``: its family's :class:`~mda_fast.adapters.ModelAdapter`; ``shape``: its
    sizes (layers, heads, widths, rotary, vocabulary, context). ``device`` and ``dtype`` are read from the
    parameters each time (a model may be moved after it was wrapped)."""

    model: torch.nn.Module
    adapter: ModelAdapter
    shape: ModelShape

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def layers(self):
        """The model's transformer layers (the adapter's ``layers``)."""
        return self.adapter.layers(self.model)

    def backbone(self):
        """The transformer inside the causal LM (the adapter's ``backbone``)."""
        return self.adapter.backbone(self.model)

    def attention_module(self, layer: int, module: str) -> torch.nn.Module:
        """The attention linear ``module`` of ``layer``."""
        return self.adapter.attention_module(self.model, layer, module)


def handle(model) -> ModelHandle:
    """The :class:`ModelHandle` of ``model``: ``model`` itself if it is one, else the handle kept on the model
    (made, after the adapter's checks, on the first call). Raises ``TypeError`` for an object that is no HF model
    and ``UnsupportedModelError`` for a model_type no adapter serves."""
    if isinstance(model, ModelHandle):
        return model
    h = getattr(model, "__dict__", {}).get(_ATTR)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if h is None or h.model is not model or h.shape.model_type != model_type:  # a copied or re-typed model
        adapter = adapter_for(model)
        shape = adapter.shape(model)  # checks the model
        h = ModelHandle(model, adapter, shape)
        model.__dict__[_ATTR] = h  # not nn.Module.__setattr__: the handle is no submodule, buffer or parameter
    return h

"""Model adapters: the one place that knows an architecture (see :mod:`mda_fast.adapters.base`).

``adapter_for(model)`` picks the adapter of ``model.config.model_type``; ``register_adapter`` adds one. A second
architecture is one new file implementing :class:`ModelAdapter`, plus a ``register_adapter`` call.
"""

from __future__ import annotations

import torch

from .base import HeadPart, ModelAdapter, ModelShape, Segment, UnsupportedModelError
from .gpt2 import GPT2Adapter
from .gpt_neox import GPTNeoXAdapter
from .llama import FAMILIES as LLAMA_FAMILIES
from .llama import LlamaAdapter

__all__ = [
    "GPT2Adapter",
    "GPTNeoXAdapter",
    "HeadPart",
    "LlamaAdapter",
    "ModelAdapter",
    "ModelShape",
    "Segment",
    "UnsupportedModelError",
    "adapter_for",
    "adapter_for_type",
    "register_adapter",
    "registered_model_types",
    "unregister_adapter",
]

_ADAPTERS: dict[str, ModelAdapter] = {}

REFUSED = {
    "bloom": "ALiBi position biases",
    "mpt": "ALiBi position biases",
    "falcon": "ALiBi and multi-query variants",
    "mixtral": "a mixture of experts",
    "olmoe": "a mixture of experts",
    "qwen2_moe": "a mixture of experts",
    "qwen3_moe": "a mixture of experts",
    "deepseek_v2": "a mixture of experts with latent attention",
    "deepseek_v3": "a mixture of experts with latent attention",
    "jamba": "a mixture of experts and state-space layers",
    "gemma2": "attention logit soft-capping",
    "gemma3": "attention logit soft-capping and local/global layers",
    "mllama": "cross-attention layers",
    "t5": "an encoder-decoder with cross-attention",
    "bart": "an encoder-decoder with cross-attention",
    "whisper": "an encoder-decoder with cross-attention",
}
"""model_types mda-fast refuses by name, and why (no adapter proves its heads' parameter subspace exact there)."""


def register_adapter(adapter: ModelAdapter) -> ModelAdapter:
    """Serve ``adapter.model_type`` with ``adapter`` (replacing any earlier one); returns it."""
    if not isinstance(adapter, ModelAdapter):
        raise TypeError(f"register_adapter expects a ModelAdapter instance, got {type(adapter).__name__}")
    _ADAPTERS[adapter.model_type] = adapter
    return adapter


def unregister_adapter(model_type: str) -> None:
    """Stop serving ``model_type`` (no error if it was not registered)."""
    _ADAPTERS.pop(model_type, None)


def registered_model_types() -> tuple[str, ...]:
    return tuple(sorted(_ADAPTERS))


def adapter_for_type(model_type, where: str = "the model") -> ModelAdapter:
    """The adapter of ``model_type``; ``UnsupportedModelError`` (a ``ModelError``, one line) if none serves it."""
    adapter = _ADAPTERS.get(model_type)
    if adapter is None:
        why = REFUSED.get(model_type)
        reason = f" ({why}, which no adapter reproduces exactly)" if why else ""
        raise UnsupportedModelError(
            f"{where} has model_type {model_type!r}{reason}; expected one of the supported families: "
            f"{supported_families()}"
        )
    return adapter


def supported_families() -> str:
    """The registered families, for messages: ``'gpt_neox' (Pythia / GPT-NeoX), ...``."""
    return ", ".join(f"{t!r} ({_ADAPTERS[t].family})" for t in registered_model_types())


def adapter_for(model) -> ModelAdapter:
    """The adapter of a HF model (by ``model.config.model_type``). An object that is no HF model at all raises
    ``TypeError`` (the GPT-NeoX adapter's message); an unknown model_type raises ``UnsupportedModelError``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model, torch.nn.Module) or model_type is None:
        _ADAPTERS.get("gpt_neox", GPTNeoXAdapter()).check(model)  # raises the TypeError naming what was expected
    return adapter_for_type(model_type, f"{type(model).__name__}")


register_adapter(GPTNeoXAdapter())
register_adapter(GPT2Adapter())
for _type in LLAMA_FAMILIES:
    register_adapter(LlamaAdapter(_type))

"""GPT-NeoX (Pythia) adapter: validation, module lookup, rotary parameters, loading.

Works with the transformers 4.4x config layout (``rotary_pct``, ``rotary_emb_base``) and the 5.x layout
(``rope_parameters = {"rope_theta", "partial_rotary_factor"}``). Tested: transformers 5.23.0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NeoXShape:
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    rotary_ndims: int
    rotary_base: float
    vocab_size: int
    max_positions: int


def check_gpt_neox(model) -> None:
    """Raise TypeError unless ``model`` is a HF GPT-NeoX causal LM (``GPTNeoXForCausalLM`` or ``GPTNeoXModel``)."""
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None or getattr(config, "model_type", None) != "gpt_neox":
        got = type(model).__name__
        mtype = getattr(config, "model_type", None)
        raise TypeError(
            f"expected a HF GPT-NeoX model (GPTNeoXForCausalLM, config.model_type == 'gpt_neox'); got {got}"
            + (f" with model_type={mtype!r}" if mtype else "")
        )
    if backbone(model) is None:
        raise TypeError(f"{type(model).__name__} has no GPT-NeoX backbone (.gpt_neox or .layers) to hook")


def backbone(model):
    """The ``GPTNeoXModel`` inside a causal LM (or the model itself)."""
    if hasattr(model, "gpt_neox"):
        return model.gpt_neox
    if hasattr(model, "layers") and hasattr(model, "embed_in"):
        return model
    return None


def layers(model):
    return backbone(model).layers


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


def neox_shape(model) -> NeoXShape:
    check_gpt_neox(model)
    c = model.config
    rot, base = rotary_params(c)
    return NeoXShape(
        n_layers=c.num_hidden_layers,
        n_heads=c.num_attention_heads,
        d_model=c.hidden_size,
        d_head=c.hidden_size // c.num_attention_heads,
        rotary_ndims=rot,
        rotary_base=base,
        vocab_size=c.vocab_size,
        max_positions=c.max_position_embeddings,
    )


def load_pythia(name_or_path: str, revision: str | None = None, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu", attn_implementation: str | None = None):
    """Load a Pythia / GPT-NeoX checkpoint with ``GPTNeoXForCausalLM.from_pretrained``.

    ``revision`` selects a training checkpoint on the hub (e.g. ``"step1000"``); it is ignored for local paths.
    The model is returned in eval mode with its parameters frozen.
    """
    from transformers import GPTNeoXForCausalLM

    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype (e.g. torch.float32), got {dtype!r}")
    kwargs = {"revision": revision} if revision is not None else {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = GPTNeoXForCausalLM.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    except TypeError:  # transformers 4.4x spells it torch_dtype
        model = GPTNeoXForCausalLM.from_pretrained(name_or_path, torch_dtype=dtype, **kwargs)
    check_gpt_neox(model)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def read_model_config(name_or_path: str, revision: str | None = None):
    """The HF config of a GPT-NeoX checkpoint, without loading weights (local ``config.json`` or the HF cache).

    Raises ``ModelError`` for a missing or non-GPT-NeoX config, naming the directory or hub name.
    """
    import json
    import os

    from .errors import ModelError

    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, "config.json")
        try:
            with open(path) as fh:
                mtype = json.load(fh).get("model_type")
        except FileNotFoundError:
            raise ModelError(f"{name_or_path}: no config.json; expected a HF GPT-NeoX model directory") from None
        except (OSError, ValueError) as e:
            raise ModelError(f"{path}: unreadable ({e}); expected a HF GPT-NeoX config.json") from None
        if mtype != "gpt_neox":
            raise ModelError(f"{path}: model_type is {mtype!r}; mda-fast supports GPT-NeoX (Pythia) models only "
                             f"(model_type 'gpt_neox')")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, **({"revision": revision} if revision else {}))
    except (OSError, ValueError) as e:
        raise ModelError(
            f"model {name_or_path!r}" + (f" at revision {revision!r}" if revision else "") + " is not available: "
            f"it must be a local HF directory or in the local HF cache (HF_HOME, default ~/.cache/huggingface/hub); "
            f"download it once where there is network (huggingface-cli download {name_or_path}"
            + (f" --revision {revision}" if revision else "") + f") ({type(e).__name__})") from None
    if getattr(config, "model_type", None) != "gpt_neox":
        raise ModelError(f"model {name_or_path!r} has model_type {config.model_type!r}; mda-fast supports GPT-NeoX "
                         f"(Pythia) models only")
    return config

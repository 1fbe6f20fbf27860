"""GPT-NeoX (Pythia) adapter: validation, module lookup, rotary parameters, loading.

Works with the transformers 4.4x config layout (``rotary_pct``, ``rotary_emb_base``) and the 5.x layout
(``rope_parameters = {"rope_theta", "partial_rotary_factor"}``). Tested: transformers 5.23.0.
"""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass

import torch
from safetensors import SafetensorError

from .errors import ModelError, one_line

try:  # huggingface_hub >= 1.0 validates configs as strict dataclasses
    from huggingface_hub.errors import StrictDataclassError as _ConfigInvalid
except ImportError:  # pragma: no cover - older huggingface_hub
    _ConfigInvalid = ValueError


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


def config_shape(config) -> NeoXShape:
    """The ``NeoXShape`` of a GPT-NeoX config (no weights needed)."""
    rot, base = rotary_params(config)
    return NeoXShape(
        n_layers=config.num_hidden_layers,
        n_heads=config.num_attention_heads,
        d_model=config.hidden_size,
        d_head=config.hidden_size // config.num_attention_heads,
        rotary_ndims=rot,
        rotary_base=base,
        vocab_size=config.vocab_size,
        max_positions=config.max_position_embeddings,
    )


def neox_shape(model) -> NeoXShape:
    check_gpt_neox(model)
    return config_shape(model.config)


# ---- loading --------------------------------------------------------------------------------------------------
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _looks_like_path(name: str) -> bool:
    """A filesystem path rather than a hub id (``org/name``): absolute, relative (``./``, ``../``), ``~`` or deeper."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants
        return constants.HF_HUB_CACHE
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")


def _unreachable(name: str, revision: str | None, error: BaseException) -> ModelError:
    rev = f" --revision {revision}" if revision else ""
    at = f" at revision {revision!r}" if revision else ""
    return ModelError(
        f"model {name!r}{at} is not in the local Hugging Face cache ({_hub_cache()}) and could not be downloaded "
        f"({type(error).__name__}: {one_line(error)}); expected it in the cache (HF_HOME / HF_HUB_CACHE): download "
        f"it once on a machine with network with `hf download {name}{rev}` (older huggingface_hub: "
        f"`huggingface-cli download`), or point model.name at a "
        f"local save_pretrained directory (and set HF_HUB_OFFLINE=1 to never try the network)")


def _check_model_type(model_type, where: str) -> None:
    if model_type != "gpt_neox":
        raise ModelError(f"{where} has model_type {model_type!r}; expected 'gpt_neox' "
                         "(mda-fast supports Pythia / GPT-NeoX checkpoints only)")


def _check_local_dir(path: str) -> str:
    """Validate a local checkpoint directory before anything is built: ``config.json`` is GPT-NeoX and a weight
    file (or every shard of a sharded index) is present. Returns the path of ``config.json``."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ModelError(f"model directory {path!r} has no config.json; expected a save_pretrained GPT-NeoX checkpoint "
                         f"(config.json and one of {', '.join(WEIGHT_FILES)})")
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{cfg_path} is not readable JSON ({one_line(e)}); expected a GPT-NeoX model config") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{cfg_path} holds a JSON {type(raw).__name__}; expected a GPT-NeoX model config object")
    _check_model_type(raw.get("model_type"), cfg_path)
    present = [f for f in WEIGHT_FILES if os.path.isfile(os.path.join(path, f))]
    if not present:
        raise ModelError(f"model directory {path!r} has config.json but no weight file; expected one of "
                         f"{', '.join(WEIGHT_FILES)} (the checkpoint is incomplete: copy or re-save it)")
    if all(f.endswith(".index.json") for f in present):  # sharded: every listed shard must be there
        index = os.path.join(path, present[0])
        try:
            with open(index, encoding="utf-8") as fh:
                shards = sorted(set(json.load(fh)["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ModelError(f"{index} is not a readable shard index ({one_line(e)}); expected "
                             "{\"weight_map\": {tensor: shard file}}") from None
        missing = [f for f in shards if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise ModelError(f"model directory {path!r} lacks {len(missing)} of the {len(shards)} weight shards listed "
                             f"in {present[0]} (first: {missing[0]}); expected every shard (the checkpoint is incomplete)")
    return cfg_path


def _read_config(name_or_path: str, revision: str | None):
    """The validated HF GPT-NeoX config of a local directory or a hub model (weights untouched)."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ModelError(f"model name must be a non-empty HF model id or directory, got {name_or_path!r}")
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        where = _check_local_dir(name)
        try:
            from transformers import GPTNeoXConfig
            config = GPTNeoXConfig.from_pretrained(name)
        except (OSError, ValueError, TypeError, KeyError, _ConfigInvalid) as e:
            raise ModelError(f"{where} is not a valid GPT-NeoX config ({one_line(e)})") from None
    elif os.path.exists(name):
        raise ModelError(f"model path {name!r} is a file; expected a checkpoint directory (config.json + weights) "
                         "or a Hugging Face model id such as EleutherAI/pythia-14m")
    elif _looks_like_path(name):
        raise ModelError(f"model directory {name!r} does not exist; expected a save_pretrained checkpoint directory "
                         "or a Hugging Face model id such as EleutherAI/pythia-14m")
    else:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
        from transformers import AutoConfig

        where = f"model {name!r}" + (f" at revision {revision!r}" if revision else "")
        try:
            validate_repo_id(name)
        except HFValidationError as e:
            raise ModelError(f"model {name!r} is neither a local directory nor a valid Hugging Face model id "
                             f"({one_line(e)}); expected a directory or an id such as EleutherAI/pythia-14m") from None
        kwargs = {"revision": revision} if revision is not None else {}
        try:
            config = AutoConfig.from_pretrained(name, **kwargs)
        except OSError as e:
            raise _unreachable(name, revision, e) from None
        except (ValueError, _ConfigInvalid) as e:  # a config transformers cannot parse
            raise ModelError(f"{where}: {one_line(e)}; expected a local directory or a Hugging Face model id "
                             "such as EleutherAI/pythia-14m") from None
        _check_model_type(getattr(config, "model_type", None), where)
    try:
        config_shape(config)
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of "
                             f"num_attention_heads {config.num_attention_heads}")
    except (ValueError, TypeError, AttributeError, ZeroDivisionError) as e:
        raise ModelError(f"{where}: unsupported GPT-NeoX config ({one_line(e)})") from None
    return config


def read_model_config(name_or_path: str, revision: str | None = None) -> NeoXShape:
    """The shape of a GPT-NeoX checkpoint (layers, heads, widths, rotary, vocabulary, context) read from its
    ``config.json`` only: cheap, and it raises the same ``ModelError`` as ``load_pythia`` for a non-GPT-NeoX
    config, a local directory without weights, or a hub model that is not in the local cache without network."""
    return config_shape(_read_config(name_or_path, revision))


def load_pythia(name_or_path: str, revision: str | None = None, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu", attn_implementation: str | None = None):
    """Load a Pythia / GPT-NeoX checkpoint with ``GPTNeoXForCausalLM.from_pretrained``.

    ``revision`` selects a training checkpoint on the hub (e.g. ``"step1000"``); it is ignored for local paths.
    The config is read and checked first (``ModelError`` before any model is built, see ``read_model_config``);
    a weight file that cannot be read or lacks some of the model's weights also raises ``ModelError``.
    The model is returned in eval mode with its parameters frozen.
    """
    from transformers import GPTNeoXForCausalLM

    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype (e.g. torch.float32), got {dtype!r}")
    config = _read_config(name_or_path, revision)
    name = os.fspath(name_or_path)
    local = os.path.isdir(name)
    kwargs = {"revision": revision} if revision is not None and not local else {}
    kwargs["ignore_mismatched_sizes"] = True  # reported below as one ModelError naming a mismatched tensor
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no load-report table before our one-line error; missing keys raise below
    try:
        try:
            model, info = GPTNeoXForCausalLM.from_pretrained(name, config=config, dtype=dtype,
                                                             output_loading_info=True, **kwargs)
        except TypeError:  # transformers 4.4x spells it torch_dtype
            model, info = GPTNeoXForCausalLM.from_pretrained(name, config=config, torch_dtype=dtype,
                                                             output_loading_info=True, **kwargs)
    except OSError as e:
        if not local:
            raise _unreachable(name, revision, e) from None
        raise ModelError(f"cannot read the weights in {name!r} ({one_line(e)}); expected an intact "
                         f"{' or '.join(WEIGHT_FILES[::2])} (the checkpoint is damaged: copy or re-save it)") from None
    except torch.cuda.OutOfMemoryError:
        raise
    except (SafetensorError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
        # a damaged safetensors / torch.load file, or tensor sizes that do not match config.json
        where = repr(name) if local else f"model {name!r}" + (f" at revision {revision!r}" if revision else "")
        raise ModelError(f"cannot load the weights of {where} ({type(e).__name__}: {one_line(e)}); expected "
                         "weights that match its config.json (the checkpoint is damaged or mixed up)") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda t: str(t[0]))
    if mismatched:
        key, *shapes = mismatched[0]
        got, want = (list(shapes[0]), list(shapes[1])) if len(shapes) == 2 else ("?", "?")
        raise ModelError(f"the weights of {name!r} do not match its config.json: {len(mismatched)} tensors differ "
                         f"(first: {key} is {got} in the checkpoint, {want} per config.json); expected a config.json "
                         "and weights from the same checkpoint")
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelError(f"the weights of {name!r} lack {len(missing)} of the model's tensors (first: {missing[0]}); "
                         "expected a complete GPT-NeoX checkpoint (they would be left randomly initialised)")
    check_gpt_neox(model)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


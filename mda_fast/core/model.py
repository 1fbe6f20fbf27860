"""Loading checkpoints, revision names, and the model-facing names of the core (re-exported from the model's adapter).

``load_model`` / ``read_model_config`` validate a checkpoint's ``config.json`` first (its ``model_type`` picks the
adapter from the registry, ``mda_fast.adapters``; a family no adapter serves is one ``ModelError`` naming the
supported ones, and why, for the known unsupported kinds: ALiBi, mixture-of-experts, soft-capping, cross-attention),
then build the adapter's HF model class. ``load_pythia`` is the Pythia entry point (the same loader).

Revisions: a hub checkpoint's revision name carries its training step as ``step<k>`` (Pythia's ``step1000``,
OLMo-2's ``stage1-step1000-tokens3B``); :func:`revision_step` reads it, :func:`order_revisions` orders a list of
them by step, :func:`revision_for_step` finds the name of a step in such a list, and :func:`run_dir_steps` lists the
``step<k>/`` checkpoints of a mda-fast training run. ``main`` (or any name without a step) names one checkpoint and
is accepted only where a single checkpoint is meant (``model.revision``). ``neox_shape``, ``check_gpt_neox``,
``backbone``, ``layers`` dispatch to the model's handle (``core.handle``); ``rotary_params``, ``config_shape`` and ``NeoXShape``
(an alias of ``ModelShape``) are the GPT-NeoX adapter's.
"""

from __future__ import annotations

import json
import os
import pickle

import torch
from safetensors import SafetensorError

from ..adapters import REFUSED, ModelShape, adapter_for_type
from ..adapters.gpt_neox import GPTNeoXAdapter, NeoXShape, rotary_params
from ..errors import ModelError, one_line
from ..io import load_json_as
from ..revisions import order_revisions, revision_for_step, revision_step, run_dir_steps
from .handle import handle

try:  # huggingface_hub >= 1.0 validates configs as strict dataclasses
    from huggingface_hub.errors import StrictDataclassError as _ConfigInvalid
except ImportError:  # pragma: no cover - older huggingface_hub
    _ConfigInvalid = ValueError

__all__ = [
    "ModelShape",
    "NeoXShape",
    "WEIGHT_FILES",
    "backbone",
    "check_gpt_neox",
    "check_model",
    "config_shape",
    "layers",
    "load_model",
    "load_pythia",
    "order_revisions",
    "revision_for_step",
    "revision_step",
    "run_dir_steps",
    "UNSUPPORTED_FAMILIES",
    "model_shape",
    "neox_shape",
    "read_model_config",
    "rotary_params",
]

_NEOX = GPTNeoXAdapter()


def check_gpt_neox(model) -> None:
    """Raise TypeError unless ``model`` is a HF GPT-NeoX causal LM (``GPTNeoXForCausalLM`` or ``GPTNeoXModel``)."""
    _NEOX.check(model)


def check_model(model) -> None:
    """Raise unless ``model`` is a usable model of a registered architecture (``TypeError`` / ``ModelError``)."""
    handle(model)


def backbone(model):
    """The transformer inside a causal LM (or the model itself); None if there is none."""
    return handle(model).backbone()


def layers(model):
    return handle(model).layers()


def config_shape(config) -> ModelShape:
    """The ``ModelShape`` of a config (no weights needed), by its ``model_type`` (GPT-NeoX if it has none)."""
    return adapter_for_type(getattr(config, "model_type", None) or "gpt_neox", "the config").config_shape(config)


def model_shape(model) -> ModelShape:
    """The ``ModelShape`` of a model (checked by its adapter)."""
    return handle(model).shape


neox_shape = model_shape


# ---- families ---------------------------------------------------------------------------------------------------
UNSUPPORTED_FAMILIES = REFUSED


def family_adapter(model_type, where: str):
    """The registered adapter of ``model_type`` (asked of the registry, ``mda_fast.adapters``); otherwise one
    ``UnsupportedModelError`` line naming the supported families, and why for a known unsupported kind."""
    return adapter_for_type(model_type, where)


# ---- loading --------------------------------------------------------------------------------------------------
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


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
        f"local save_pretrained directory (and set HF_HUB_OFFLINE=1 to never try the network)"
    )


def _local_adapter(path: str):
    """``(config.json path, adapter)`` of a local checkpoint directory, from its raw ``config.json``."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ModelError(
            f"model directory {path!r} has no config.json; expected a save_pretrained Hugging Face checkpoint "
            f"(config.json and one of {', '.join(WEIGHT_FILES)})"
        )
    raw = load_json_as(cfg_path, ModelError, "a Hugging Face model config")
    if not isinstance(raw, dict):
        raise ModelError(f"{cfg_path} holds a JSON {type(raw).__name__}; expected a Hugging Face model config object")
    return cfg_path, family_adapter(raw.get("model_type"), cfg_path)


def _check_weight_files(path: str) -> None:
    """A weight file (or every shard of a sharded index) is present in the checkpoint directory ``path``."""
    present = [f for f in WEIGHT_FILES if os.path.isfile(os.path.join(path, f))]
    if not present:
        raise ModelError(
            f"model directory {path!r} has config.json but no weight file; expected one of "
            f"{', '.join(WEIGHT_FILES)} (the checkpoint is incomplete: copy or re-save it)"
        )
    if all(f.endswith(".index.json") for f in present):  # sharded: every listed shard must be there
        index = os.path.join(path, present[0])
        try:
            with open(index, encoding="utf-8") as fh:
                shards = sorted(set(json.load(fh)["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ModelError(
                f"{index} is not a readable shard index ({one_line(e)}); expected "
                '{"weight_map": {tensor: shard file}}'
            ) from None
        missing = [f for f in shards if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise ModelError(
                f"model directory {path!r} lacks {len(missing)} of the {len(shards)} weight shards listed "
                f"in {present[0]} (first: {missing[0]}); expected every shard (the checkpoint is incomplete)"
            )


def _local_config(name: str):
    """``(config, adapter, where)`` of a local checkpoint directory, validated before anything is built."""
    where, adapter = _local_adapter(name)
    _check_weight_files(name)
    try:
        config = adapter.config_class().from_pretrained(name)
    except (OSError, ValueError, TypeError, KeyError, _ConfigInvalid) as e:
        raise ModelError(f"{where} is not a valid {adapter.family} config ({one_line(e)})") from None
    return config, adapter, where


def _hub_config(name: str, revision: str | None):
    """``(config, adapter, where)`` of a Hugging Face model id (from the cache, or downloaded)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from transformers import AutoConfig

    where = f"model {name!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        validate_repo_id(name)
    except HFValidationError as e:
        raise ModelError(
            f"model {name!r} is neither a local directory nor a valid Hugging Face model id "
            f"({one_line(e)}); expected a directory or an id such as EleutherAI/pythia-14m"
        ) from None
    kwargs = {"revision": revision} if revision is not None else {}
    try:
        config = AutoConfig.from_pretrained(name, **kwargs)
    except OSError as e:
        raise _unreachable(name, revision, e) from None
    except (ValueError, _ConfigInvalid) as e:  # a config transformers cannot parse
        raise ModelError(
            f"{where}: {one_line(e)}; expected a local directory or a Hugging Face model id "
            "such as EleutherAI/pythia-14m"
        ) from None
    return config, family_adapter(getattr(config, "model_type", None), where), where


def _read_config(name_or_path: str, revision: str | None):
    """``(config, adapter)``: the validated HF config of a local directory or a hub model (weights untouched)."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ModelError(f"model name must be a non-empty HF model id or directory, got {name_or_path!r}")
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        config, adapter, where = _local_config(name)
    elif os.path.exists(name):
        raise ModelError(
            f"model path {name!r} is a file; expected a checkpoint directory (config.json + weights) "
            "or a Hugging Face model id such as EleutherAI/pythia-14m"
        )
    elif _looks_like_path(name):
        raise ModelError(
            f"model directory {name!r} does not exist; expected a save_pretrained checkpoint directory "
            "or a Hugging Face model id such as EleutherAI/pythia-14m"
        )
    else:
        config, adapter, where = _hub_config(name, revision)
    try:
        adapter.config_shape(config)
        if getattr(config, "head_dim", None) is None and config.hidden_size % config.num_attention_heads:
            raise ValueError(
                f"hidden_size {config.hidden_size} is not a multiple of "
                f"num_attention_heads {config.num_attention_heads}"
            )
    except (ValueError, TypeError, AttributeError, ZeroDivisionError) as e:
        raise ModelError(f"{where}: unsupported {adapter.family} config ({one_line(e)})") from None
    return config, adapter


def read_model_config(name_or_path: str, revision: str | None = None) -> ModelShape:
    """The shape of a checkpoint of any registered family (layers, heads, widths, rotary, vocabulary, context, read
    by its adapter with the family's own config keys) from its ``config.json`` only: cheap, and it raises the same
    ``ModelError`` as ``load_model`` for a family no adapter serves, a local directory without weights, or a hub
    model that is not in the local cache without network."""
    config, adapter = _read_config(name_or_path, revision)
    return adapter.config_shape(config)


def _from_pretrained(cls, name: str, revision: str | None, kwargs: dict, dtype: torch.dtype):
    """``cls.from_pretrained`` with loading info, every failure turned into one ``ModelError``."""
    from transformers.utils import logging as hf_logging

    local = os.path.isdir(name)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no load-report table before our one-line error; missing keys raise below
    try:
        try:
            return cls.from_pretrained(name, dtype=dtype, output_loading_info=True, **kwargs)
        except TypeError:  # transformers 4.4x spells it torch_dtype
            return cls.from_pretrained(name, torch_dtype=dtype, output_loading_info=True, **kwargs)
    except OSError as e:
        if not local:
            raise _unreachable(name, revision, e) from None
        raise ModelError(
            f"cannot read the weights in {name!r} ({one_line(e)}); expected an intact "
            f"{' or '.join(WEIGHT_FILES[::2])} (the checkpoint is damaged: copy or re-save it)"
        ) from None
    except torch.cuda.OutOfMemoryError:
        raise
    except (SafetensorError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
        # a damaged safetensors / torch.load file, or tensor sizes that do not match config.json
        where = repr(name) if local else f"model {name!r}" + (f" at revision {revision!r}" if revision else "")
        raise ModelError(
            f"cannot load the weights of {where} ({type(e).__name__}: {one_line(e)}); expected "
            "weights that match its config.json (the checkpoint is damaged or mixed up)"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)


def _check_loading_info(name: str, info: dict) -> None:
    """Refuse weights whose shapes differ from config.json, or that lack some of the model's tensors."""
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda t: str(t[0]))
    if mismatched:
        key, *shapes = mismatched[0]
        got, want = (list(shapes[0]), list(shapes[1])) if len(shapes) == 2 else ("?", "?")
        raise ModelError(
            f"the weights of {name!r} do not match its config.json: {len(mismatched)} tensors differ "
            f"(first: {key} is {got} in the checkpoint, {want} per config.json); expected a config.json "
            "and weights from the same checkpoint"
        )
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelError(
            f"the weights of {name!r} lack {len(missing)} of the model's tensors (first: {missing[0]}); "
            "expected a complete checkpoint (they would be left randomly initialised)"
        )


def load_model(
    name_or_path: str,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
):
    """Load a checkpoint of any registered family (a local ``save_pretrained`` directory, or a hub id read from the
    local HF cache) with its adapter's HF causal-LM class.

    ``revision`` selects a hub revision (``step1000``, ``stage1-step1000-tokens3B``, ``main``); it is ignored for
    local paths. The config is read and checked first (``ModelError`` before any model is built, see
    ``read_model_config``); a weight file that cannot be read or lacks some of the model's weights also raises
    ``ModelError``. The model is returned in eval mode with its parameters frozen, its handle made.
    """
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype (e.g. torch.float32), got {dtype!r}")
    config, adapter = _read_config(name_or_path, revision)
    name = os.fspath(name_or_path)
    kwargs = {"revision": revision} if revision is not None and not os.path.isdir(name) else {}
    kwargs["config"] = config
    kwargs["ignore_mismatched_sizes"] = True  # reported below as one ModelError naming a mismatched tensor
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model, info = _from_pretrained(adapter.model_class(), name, revision, kwargs, dtype)
    _check_loading_info(name, info)
    handle(model)  # checks the model and keeps its adapter and shape on it
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_pythia(name_or_path: str, revision: str | None = None, **kwargs):
    """The Pythia entry point: :func:`load_model` (e.g. ``load_pythia("EleutherAI/pythia-14m", "step1000")``).

    Any registered family loads through it as well (the config's ``model_type`` picks the adapter); ``kwargs``:
    :func:`load_model`'s ``dtype``, ``device``, ``attn_implementation``."""
    return load_model(name_or_path, revision, **kwargs)


def hub_checkpoint_dir(name: str, revision, what: str = "") -> str:
    """The local directory of hub model ``name`` at ``revision`` (a revision name, or a step ``k`` meaning
    ``step<k>``), from the local HF cache only (no network); ``ModelError`` saying how to download it otherwise
    (``what``: the checkpoint's role, for the message)."""
    rev = f"step{int(revision)}" if isinstance(revision, int) else str(revision)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, revision=rev, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any miss of the local cache reads the same to the user
        raise ModelError(
            f"model {name!r} at revision {rev!r}{what} is not in the local Hugging "
            f"Face cache ({type(e).__name__}); download it once where there is network: hf download "
            f"{name} --revision {rev}"
        ) from None


def pythia_revisions(end_step: int) -> list:
    """The default hub revisions up to ``end_step``: Pythia's ``step0, step1, step2, step4, ..., step512`` below
    it, then ``step<end_step>``."""
    return [f"step{s}" for s in [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512] if s < end_step] + [f"step{end_step}"]


def resolve_device(name: str) -> torch.device:
    """``model.device`` as a torch device: ``"auto"`` is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)

"""What a stage reads, from its config: the data, the checkpoint, the device, the target heads, the probes."""

from __future__ import annotations

import os

import torch

from ..config import Config
from ..core import model as core_model
from ..core.heads import HeadSpec
from ..core.model import hub_checkpoint_dir, resolve_device
from ..errors import ConfigError, DataError, StateError
from ..io import read_json
from ..revisions import revision_for_step

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def device_of(cfg: Config) -> torch.device:
    """``model.device`` of the config as a torch device."""
    return resolve_device(cfg.model.device)


def open_data(cfg: Config, check_window: bool = True):
    """The training batches of ``data``: ``PythiaBatches`` over ``data.path`` (``data.format = "pythia"``) or
    ``OLMoBatches`` over the token files it lists (``"olmo"``), with the window checked against the data's length
    (unless ``check_window`` is false: training needs no window)."""
    from ..data import PythiaBatches

    d, w = cfg.data, cfg.window
    if not d.path:
        what = "the list of OLMo token files" if d.format == "olmo" else "the Megatron prefix or .npy file"
        raise ConfigError(f"data.path is empty: name {what} of the training data")
    try:
        if d.format == "olmo":
            from ..data.olmo import OLMoBatches

            data = OLMoBatches(
                d.path,
                batch_size=d.batch_size,
                seq_len=d.seq_len,
                seed=d.olmo_seed,
                epoch=d.olmo_epoch,
                dtype=d.olmo_dtype,
                order_file=d.olmo_order_file or None,
                root=d.olmo_root or None,
            )
        else:
            data = PythiaBatches(d.path, batch_size=d.batch_size, seq_len=d.seq_len)
    except FileNotFoundError as e:
        raise DataError(f"data.path {d.path!r}: {e}") from None
    except (ValueError, OSError) as e:
        raise DataError(f"data.path {d.path!r}: {e}") from None
    if check_window and w.end_step > data.n_steps:
        raise ConfigError(
            f"window.end_step = {w.end_step} is beyond the data: {d.path} holds {data.n_steps} steps "
            f"of {d.batch_size} sequences"
        )
    return data


def hub_revision(cfg: Config, step: int) -> str:
    """The hub revision name of training step ``step``: the one of ``localize.revisions`` carrying that step
    (OLMo-2's ``stage1-step2000-tokens5B``), else Pythia's ``step<k>``."""
    try:
        return revision_for_step(cfg.localize.revisions, step)
    except ValueError as e:
        raise ConfigError(f"localize.revisions: {e}") from None


def checkpoint_ref(cfg: Config, step: int | None = None) -> tuple[str, str | None]:
    """(name_or_path, revision) of the checkpoint at ``step`` (default: the window end, or ``model.revision``)."""
    m = cfg.model
    step = cfg.window.end_step if step is None else step
    if m.run_dir:
        if not os.path.isdir(m.run_dir):
            raise ConfigError(f"model.run_dir {m.run_dir!r} does not exist (expected a mda-fast training run)")
        path = os.path.join(m.run_dir, f"step{step}")
        if not os.path.isdir(path):
            raise ConfigError(f"model.run_dir has no checkpoint for step {step}: {path} does not exist")
        return path, None
    if not m.name:
        raise ConfigError("model: set model.name (HF name or local directory) or model.run_dir (a mda-fast run)")
    if os.path.isdir(m.name):
        return m.name, None
    return m.name, (m.revision or hub_revision(cfg, step))


def hf_checkpoint_dir(cfg: Config, step: int) -> str:
    """The local directory of hub checkpoint ``model.name`` at the revision of ``step`` (``hub_revision``; the local
    HF cache only)."""
    name = cfg.model.name
    if not name:
        raise ConfigError("model: set model.run_dir (a mda-fast training run) or model.name (a Pythia hub name)")
    if os.path.isdir(name):
        raise ConfigError(
            f"model.name {name!r} is a local directory (one checkpoint, step unknown); intervene "
            f"needs the window-start checkpoint: use model.run_dir (step<k>/ dirs) or a hub name"
        )
    return hub_checkpoint_dir(name, hub_revision(cfg, step), " (the window start)")


def load_model(cfg: Config, step: int | None = None):
    name, rev = checkpoint_ref(cfg, step)
    return core_model.load_model(
        name,
        revision=rev,
        dtype=DTYPES[cfg.model.dtype],
        device=device_of(cfg),
        attn_implementation=cfg.model.attn_implementation,
    )


def load_targets(out: str) -> tuple[dict, list]:
    t = read_json(os.path.join(out, "targets.json"), "run `mda-fast fit` first (it chooses the target heads)")
    try:
        return t, [HeadSpec(L, h, m, b) for L, h, m, b in t["specs"]]
    except (KeyError, TypeError, ValueError) as e:
        raise StateError(f"{os.path.join(out, 'targets.json')} is damaged ({e}); re-run `mda-fast fit`") from None


def make_probes(cfg: Config) -> list:
    """The configured probes, each built with its own keyword arguments."""
    from ..core.probes import get_probe

    return [get_probe(p, **cfg.probe_kwargs(p)) for p in cfg.targets.probes]


def pretrained_start(cfg: Config) -> tuple[str, dict]:
    """(window-start checkpoint directory, recipe) for arms from a published checkpoint without optimizer state:
    the Pythia recipe for the preset of the checkpoint's shape over ``intervene.schedule_steps``, AdamW restarted
    from zero moments (an approximation, recorded in ``interventions.json`` and said in the report)."""
    from ..core.model import read_model_config
    from ..train import preset_for_shape

    ck = hf_checkpoint_dir(cfg, cfg.window.start_step)
    s = read_model_config(ck)
    try:
        preset = preset_for_shape(s.n_layers, s.d_model, s.n_heads, s.vocab_size)
    except ValueError as e:
        raise ConfigError(f"model.name {cfg.model.name!r}: {e}") from None
    return ck, {
        "preset": preset.name,
        "family": s.model_type,
        "total_steps": cfg.intervene.schedule_steps,
        "seed": 0,
        "attn_implementation": cfg.model.attn_implementation,
        "save_optimizer": False,
    }

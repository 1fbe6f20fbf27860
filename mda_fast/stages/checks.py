"""Checks a command makes before any work: the config against the data, the model and what ``--out`` holds.

``validate(cmd, cfg, out)`` raises one ``MdaFastError`` (a line naming the key or file, and what was expected)
or returns the facts it read (the data's size, the model's shape), so that no stage starts on a config that
would fail later, and no output is written by a command that cannot finish.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

from ..config import Config
from ..core.model import read_model_config
from ..errors import ConfigError, DataError, StateError
from ..io import SCORE_FILES
from .inputs import checkpoint_ref, open_data

NEEDS_DATA = ("fit", "score", "categorize", "analyze", "intervene")
NEEDS_MODEL = ("localize", "fit", "score", "intervene")


@dataclass
class Facts:
    """What validation read: the data (``PythiaBatches``) and the model config, where the command needs them."""

    data: Optional[object] = None
    model_config: Optional[object] = None  # mda_fast.adapters.ModelShape


def check_device(cfg: Config) -> None:
    d = cfg.model.device
    if d.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        idx = int(d.split(":")[1]) if ":" in d else 0
        if idx >= n:
            raise ConfigError(
                f"model.device = {d!r}: no such CUDA device ({n} visible; torch.cuda.is_available() is "
                f"{torch.cuda.is_available()}); expected cpu, auto or one of cuda:0..cuda:{max(n - 1, 0)}"
            )
    if d == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("model.device = 'mps': MPS is not available here; expected cpu, cuda or auto")


def check_model(cfg: Config, mc) -> None:
    """The config's heads, probe and localization lengths and token ranges against the model's shape."""
    n_layers, n_heads, vocab, ctx = mc.n_layers, mc.n_heads, mc.vocab_size, mc.max_positions
    t, loc = cfg.targets, cfg.localize
    if t.heads != "auto":
        for L, h in t.heads:
            if not (0 <= L < n_layers and 0 <= h < n_heads):
                raise ConfigError(
                    f"targets.heads: head [{L}, {h}] is out of range for a model with {n_layers} "
                    f"layers and {n_heads} heads"
                )
    else:
        if t.n_induction + t.n_control > n_layers * n_heads:
            raise ConfigError(
                f"targets.n_induction + n_control = {t.n_induction + t.n_control} exceeds the model's "
                f"{n_layers * n_heads} heads"
            )
    for key, L in (("targets.probe_L", t.probe_L), ("localize.seq_len", loc.seq_len)):
        if 2 * L > ctx:
            raise ConfigError(f"{key} = {L}: rows of 2L = {2 * L} tokens exceed the model's context of {ctx}")
    for key, lo, hi in (("targets.probe", t.probe_low, t.probe_high), ("localize", loc.low, loc.high)):
        sep = "_" if "." in key else "."
        if hi > vocab:
            raise ConfigError(f"{key}{sep}high = {hi} exceeds the model's vocabulary size {vocab}")
        if lo >= (hi or vocab):
            raise ConfigError(f"{key}{sep}low = {lo}: expected a token id below {hi or vocab}")


def check_data_fits_model(cfg: Config, data, mc) -> None:
    if data.seq_len - 1 > mc.max_positions:
        raise ConfigError(
            f"data.seq_len = {data.seq_len}: {data.seq_len - 1} input tokens exceed the model's "
            f"context of {mc.max_positions}"
        )
    if getattr(data, "dtype", None) is not None and data.dtype.itemsize <= 2 and mc.vocab_size > 65536:
        raise DataError(
            f"data.path {cfg.data.path!r}: {data.dtype} tokens cannot hold the model's vocabulary of {mc.vocab_size}"
        )


def validate(cmd: str, cfg: Config, out: str) -> Facts:
    """Everything ``cmd`` needs, checked before it starts (see the module docstring)."""
    from ..core.probes import get_probe

    cfg.validate()
    check_device(cfg)
    for p in cfg.targets.probes:
        try:
            get_probe(p, **cfg.probe_kwargs(p))
        except (ValueError, KeyError) as e:
            raise ConfigError(f"targets.probes: {e}") from None
    if not cfg.targets.probes:
        raise ConfigError('targets.probes is empty: expected at least one probe, e.g. ["induction"]')
    facts = Facts()
    if cmd in ("train", "demo"):
        check_preset(cfg)
        check_family(cfg, needs_adapter=cmd == "demo" or cfg.train.after_emergence >= 0)
    if cmd == "train":
        facts.data = open_data(cfg, check_window=False)
        check_tokens_fit_preset(cfg, facts.data)
    if cmd in NEEDS_DATA:
        facts.data = open_data(cfg)
    per_token = cmd == "analyze" and cfg.analyze.per_token_k > 0  # analyze then loads the model and factors
    if cmd in NEEDS_MODEL or per_token:
        name, rev = checkpoint_ref(cfg)
        facts.model_config = read_model_config(name, rev)
        check_model(cfg, facts.model_config)
        if facts.data is not None:
            check_data_fits_model(cfg, facts.data, facts.model_config)
        if cmd == "localize" and cfg.model.run_dir and cfg.localize.steps:
            for s in cfg.localize.steps:
                checkpoint_ref(cfg, s)
        if cmd == "localize" and cfg.model.name and os.path.isdir(cfg.model.name) and cfg.localize.revisions:
            raise ConfigError(
                f"localize.revisions is set but model.name {cfg.model.name!r} is a local directory "
                f"(one checkpoint, no revisions); use hub revisions or model.run_dir with step<k>/"
            )
    if cmd in ("score",):
        require(out, "targets.json", "run `mda-fast fit` first (it chooses the target heads)")
        require(out, os.path.join("factors", "factors.json"), "run `mda-fast fit` first")
    if cmd in ("categorize", "analyze", "intervene"):
        require_complete_scores(out)
    if cmd == "categorize":
        from .categorize import check_tokenizer

        check_tokenizer(cfg)
    if per_token:
        require(out, "targets.json", "run `mda-fast fit` first (it chooses the target heads)")
        require(out, os.path.join("factors", "factors.json"), "run `mda-fast fit` first")
    if cmd == "intervene" and not cfg.model.run_dir:
        from .inputs import pretrained_start

        pretrained_start(cfg)  # the window-start checkpoint is in the local HF cache and has a known preset
    if cmd == "report":
        require(
            out,
            os.path.join("analyze", "analysis.json"),
            "nothing has been analysed; run `mda-fast analyze` (after localize, fit and score) first",
        )
    return facts


def check_preset(cfg: Config) -> None:
    from ..train import get_preset

    try:
        get_preset(cfg.train.preset)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"train.preset: {e}") from None


def check_family(cfg: Config, needs_adapter: bool = True) -> None:
    """``train.family`` builds a model (``train.FAMILIES``); with ``needs_adapter`` (the emergence monitor, localize,
    fit and score read its heads) an adapter must serve it (``mda_fast.adapters``). Training alone needs none:
    ``mda-fast train`` with ``train.after_emergence = -1`` runs without the monitor."""
    from ..adapters import registered_model_types
    from ..train import FAMILIES

    fam = cfg.train.family
    if fam not in FAMILIES:
        raise ConfigError(f"train.family = {fam!r}: expected one of {list(FAMILIES)}")
    if needs_adapter and fam not in registered_model_types():
        raise ConfigError(
            f"train.family = {fam!r}: no model adapter serves it in this installation (registered: "
            f"{', '.join(registered_model_types())}), so its heads cannot be scored; expected a registered family, "
            "or for mda-fast train alone train.after_emergence = -1 (no emergence monitor)"
        )


def check_tokens_fit_preset(cfg: Config, data) -> None:
    """The first step's token ids must lie within the preset's vocabulary (a cheap look, not a full scan)."""
    import numpy as np

    from ..train import get_preset

    p = get_preset(cfg.train.preset)
    if data.n_steps < 1:
        raise DataError(f"data.path {cfg.data.path!r} holds fewer rows than one batch of {data.batch_size}")
    top = int(np.max(data.rows(np.arange(min(data.n_rows, data.batch_size)))))
    if top >= p.vocab_size:
        raise ConfigError(
            f"train.preset = {p.name!r} has a vocabulary of {p.vocab_size} but data.path holds token "
            f"id {top}; expected a preset whose vocabulary covers the tokenizer (bytes: tiny-*, "
            f"GPT-NeoX: pythia-*)"
        )


def require(out: str, rel: str, hint: str) -> str:
    path = os.path.join(out, rel)
    if not os.path.exists(path):
        raise StateError(f"{path} not found: {hint}")
    return path


def require_complete_scores(out: str) -> dict:
    """The finished ``score/`` of ``out`` (progress complete, every array present)."""
    from ..io import read_json

    d = os.path.join(out, "score")
    prog_path = os.path.join(d, "progress.json")
    if not os.path.exists(prog_path):
        raise StateError(f"{d} holds no scores: run `mda-fast score` first")
    prog = read_json(prog_path)
    if prog.get("n_done") != prog.get("n_total"):
        raise StateError(
            f"{d}: scoring is incomplete ({prog.get('n_done')}/{prog.get('n_total')} sequences); "
            f"finish it with `mda-fast score --resume`"
        )
    for k in SCORE_FILES:
        if not os.path.exists(os.path.join(d, f"{k}.npy")):
            raise StateError(
                f"{os.path.join(d, k + '.npy')} is missing: the scores are damaged; re-run "
                f"`mda-fast score` into a fresh --out"
            )
    return prog

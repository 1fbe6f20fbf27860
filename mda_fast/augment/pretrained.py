"""Hub sizes of the study: a Pythia model's published checkpoints are its base run (no base training).

A size of ``augment.sizes`` that is not a preset of ``mda_fast.train.PRESETS`` is a Hugging Face hub name (e.g.
``EleutherAI/pythia-14m``), read from the local HF cache only. Its revisions ``step<k>`` (``localize.revisions``, or
``stages.localize.pythia_revisions(train.total_steps)``; those beyond ``train.total_steps`` are left out, so no
model ever saw the held-out rows) are evaluated once (cached in the size's directory) and give the emergence step
``E`` (the first revision whose best head reaches ``localize.threshold``; without one, the latest revision that
leaves ``augment.train_after`` steps before ``train.total_steps``), the window ``[start, E)`` with ``start`` the
latest revision ``<= E - augment.window_steps`` (arms branch from it) and ``until = E + train_after``.

Arms branch with ``train.branch_from_pretrained``: the checkpoint has no optimizer state, so AdamW restarts from
zero moments at the start revision's step and LR (the Pythia recipe of the preset of its shape, over
``augment.schedule_steps``). The restart is an approximation, so every arm of a hub size is trained, ``none`` too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import List

from ..errors import ConfigError
from ..revisions import order_revisions, revision_for_step
from .base_runs import base_record
from .cache import fingerprint

__all__ = [
    "is_hub_size",
    "size_dir",
    "revision_steps",
    "pretrained_window",
    "pretrained_base",
    "arm_trainer",
    "arm_recipe",
]


def is_hub_size(name: str) -> bool:
    """Whether size ``name`` is a hub model (anything that is not a preset name)."""
    from ..train import PRESETS

    return name not in PRESETS


def size_dir(name: str) -> str:
    """A size's directory name under ``OUT/sizes`` (``owner/name`` -> ``owner--name``; presets unchanged)."""
    return name.replace("/", "--")


def revision_steps(cfg) -> List[int]:
    """The steps of the revisions evaluated for a hub size, ascending, none beyond ``train.total_steps``."""
    from ..core.model import pythia_revisions

    revs = cfg.localize.revisions or pythia_revisions(cfg.train.total_steps)
    try:
        return [k for k, _ in order_revisions(revs) if k <= cfg.train.total_steps]
    except ValueError as e:
        raise ConfigError(f"localize.revisions: {e}") from None


def size_checkpoint(cfg, name: str, step: int, what: str = "") -> str:
    """The local HF cache directory of hub size ``name`` at training step ``step`` (its revision in
    ``localize.revisions``, else ``step<k>``)."""
    from ..core.model import hub_checkpoint_dir

    return hub_checkpoint_dir(name, revision_for_step(cfg.localize.revisions, step), what)


def pretrained_window(steps: List[int], scores: List[float], threshold: float, a, last: int) -> tuple:
    """``(emergence or None, start, end, until)`` from the revisions ``steps`` and their best-head ``scores``.

    ``last`` is the most steps any arm may train (``train.total_steps``: the held-out rows come after it).
    """
    em = next((s for s, v in zip(steps, scores) if v >= threshold), None)
    if em is not None:
        end = em
    else:
        cands = [s for s in steps if s + a.train_after <= last]
        end = max(cands) if cands else steps[-1]
    starts = [s for s in steps if s <= end - a.window_steps] or ([0] if 0 in steps else [])
    if not starts or end <= max(starts):
        raise ConfigError(
            f"localize.revisions: no revision at or before step {max(0, end - a.window_steps)} (window end {end} "
            f"- augment.window_steps {a.window_steps}) to start the window from; add one (e.g. step0)"
        )
    return em, max(starts), end, min(last, end + a.train_after)


def _revision_evals(cfg, name: str, steps: List[int], eval_fn, out: str) -> dict:
    """step -> ``eval_fn`` record of every revision, cached in ``out/revisions.json`` (a rerun does not reload)."""
    from ..core.model import load_model, resolve_device

    path = os.path.join(out, "revisions.json")
    key = fingerprint(
        {
            "name": name,
            "localize": dataclasses.asdict(cfg.localize),
            "data": dataclasses.asdict(cfg.data),
            "heldout": [cfg.augment.n_heldout, cfg.train.total_steps],
        }
    )
    cached = json.load(open(path)) if os.path.exists(path) else {}
    evals = {int(s): r for s, r in cached.get("evals", {}).items()} if cached.get("key") == key else {}
    for s in steps:
        if s in evals:
            continue
        model = load_model(size_checkpoint(cfg, name, s), device=resolve_device(cfg.model.device))
        evals[s] = {"step": s, **eval_fn(model, s)}
        del model
        os.makedirs(out, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"key": key, "evals": {str(k): v for k, v in sorted(evals.items())}}, f)
        os.replace(path + ".tmp", path)
    return evals


def pretrained_base(cfg, name: str, data, out: str, eval_fn, progress: bool) -> dict:
    """The "base run" of hub size ``name``: its revisions evaluated, its window; ``train_base``'s dict shape."""
    from ..core.model import read_model_config
    from ..train import preset_for_shape

    a = cfg.augment
    t0 = time.perf_counter()
    steps = revision_steps(cfg)
    evals = _revision_evals(cfg, name, steps, eval_fn, out)
    em, start, end, until = pretrained_window(
        steps, [evals[s]["max_prefix_matching"] for s in steps], cfg.localize.threshold, a, cfg.train.total_steps
    )
    s = read_model_config(size_checkpoint(cfg, name, start, " (the window start)"))
    try:
        preset = preset_for_shape(s.n_layers, s.d_model, s.n_heads, s.vocab_size).name
    except ValueError as e:
        raise ConfigError(f"augment.sizes {name!r}: {e}") from None
    grid = range(start, until + 1, a.eval_every)
    base = base_record(preset, None, em, (start, end, until), t0, {k: evals[k] for k in steps})
    eval_steps = sorted({*grid, int(end), int(until)})
    return {**base, "name": name, "family": s.model_type, "pretrained": True, "eval_steps": eval_steps}


def arm_trainer(cfg, base: dict, data, out: str, iv, eval_fn, progress: bool):
    """A ``Trainer`` of one arm of hub size ``base``: branched from its window-start revision, AdamW from zero
    moments (``branch_from_pretrained``), checkpointed and evaluated at ``base["eval_steps"]``."""
    from ..train import branch_from_pretrained

    start = base["window"][0]
    tc = arm_recipe(cfg, base, out, progress)
    ck = size_checkpoint(cfg, base["name"], start, " (the window start)")
    return branch_from_pretrained(ck, data, out, start, tc, interventions=iv, eval_fn=eval_fn)


def arm_recipe(cfg, base: dict, out: str, progress: bool):
    """The ``TrainConfig`` of a hub size's arms: the Pythia recipe of its preset (its peak LR) over
    ``augment.schedule_steps``, ``train.seed``, ``model.device``, ``augment.micro_batch_size``."""
    from ..train import TrainConfig

    a = cfg.augment
    return TrainConfig(
        preset=base["preset"],
        family=base.get("family", "gpt_neox"),
        total_steps=a.schedule_steps,
        seed=cfg.train.seed,
        checkpoint_every=10**9,
        checkpoint_extra=tuple(base["eval_steps"]),
        save_optimizer=False,
        device=cfg.model.device,
        micro_batch_size=a.micro_batch_size or None,
        attn_implementation=cfg.model.attn_implementation,
        out_dir=out,
        progress=progress,
    )

"""``mda-fast train``: train a model preset (``train.family``: GPT-NeoX, Llama, OLMo-2, GPT-2, ...) on any Megatron
data set with the Pythia recipe and checkpoints.

The run goes to ``out/run/``: ``step<k>/`` checkpoints (HF weights + ``trainer_state.pt`` with the optimizer
state, so ``intervene`` can branch from them), ``metrics.jsonl``, ``batches.jsonl`` and ``eval.jsonl`` (every
head's prefix-matching score at each checkpoint, so ``localize`` and the emergence step need no second pass; a family
no adapter serves trains without it, with ``train.after_emergence = -1``).
Training stops at ``train.total_steps`` (or the data's end), or ``train.after_emergence`` steps after a head
first reaches ``localize.threshold``; a rerun continues from the last checkpoint.
"""

from __future__ import annotations

import logging
import os

from ..config import Config, fields_for
from ..core.localize import emergence_monitor
from ..errors import ConfigError
from ..revisions import run_dir_steps
from ..train import STATE_FILE
from .inputs import device_of, open_data

logger = logging.getLogger(__name__)


def latest_checkpoint(run_dir: str):
    steps = [s for s in run_dir_steps(run_dir) if os.path.exists(os.path.join(run_dir, f"step{s}", STATE_FILE))]
    return max(steps) if steps else None


def stop_step(run_dir: str, threshold: float, after: int):
    """The step at which training may stop: ``after`` steps past the first checkpoint whose best
    prefix-matching score reaches ``threshold`` (None while no head has formed)."""
    from ..train import read_jsonl

    hits = [
        r["step"]
        for r in read_jsonl(os.path.join(run_dir, "eval.jsonl"))
        if r.get("max_prefix_matching", 0.0) >= threshold
    ]
    return min(hits) + after if hits else None


def _monitor(cfg: Config):
    """The emergence monitor (every head's prefix matching at each checkpoint), or None for a family no adapter
    serves when training does not stop on emergence (``train.after_emergence = -1``)."""
    from ..adapters import registered_model_types

    if cfg.train.family in registered_model_types():
        return emergence_monitor(cfg.localize)
    if cfg.train.after_emergence >= 0:
        raise ConfigError(
            f"train.family = {cfg.train.family!r}: no model adapter serves it, so the emergence monitor cannot score "
            "its heads; expected a registered family or train.after_emergence = -1"
        )
    return None


def train_base(cfg: Config, out: str, progress: bool, data=None) -> str:
    """Train until an induction head forms (and ``after_emergence`` steps more), or ``total_steps``; returns
    ``out/run`` and sets ``model.run_dir`` to it.

    Checkpoints every ``checkpoint_every`` steps; each is scored for prefix matching as it is saved (the run's
    ``eval.jsonl``), so an interrupted run resumes from its last checkpoint with its history intact.
    """
    from ..data import PythiaBatches
    from ..train import TrainConfig, Trainer

    tr, d = cfg.train, cfg.data
    run_dir = os.path.join(out, "run")
    data = data or PythiaBatches(d.path, batch_size=d.batch_size, seq_len=d.seq_len)
    cap, after = min(tr.total_steps, data.n_steps), tr.after_emergence
    tc = TrainConfig(
        **fields_for(
            TrainConfig,
            tr,
            total_steps=max(tr.schedule_steps, cap),
            device=str(device_of(cfg)),
            out_dir=run_dir,
            progress=progress,
        )
    )
    trainer = Trainer(tc, data, eval_fn=_monitor(cfg))
    last = latest_checkpoint(run_dir)
    if last is not None:
        trainer.load_checkpoint(os.path.join(run_dir, f"step{last}"))

    def done(step):
        s = stop_step(run_dir, cfg.localize.threshold, after) if after >= 0 else None
        return s is not None and step >= s

    if trainer.step < cap and not done(trainer.step):
        trainer.train(end_step=cap, stop=done)
    stop = stop_step(run_dir, cfg.localize.threshold, 0)
    logger.info(
        f"trained to step {trainer.step}: "
        + (
            f"a head reached prefix-matching {cfg.localize.threshold} at step {stop}"
            if stop is not None
            else "no head reached the threshold"
        )
    )
    cfg.model.run_dir = run_dir
    return run_dir


def run_train(cfg: Config, out: str, progress: bool = True) -> str:
    """``mda-fast train``: ``train_base`` on ``data.path`` (validated first); returns the run directory."""
    data = open_data(cfg, check_window=False)
    run_dir = train_base(cfg, out, progress, data=data)
    logger.info(f'run: {run_dir}; next: mda-fast localize --set model.run_dir="{run_dir}" ...')
    return run_dir

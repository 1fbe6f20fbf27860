"""``branch_from_checkpoint``: a new run (an experiment arm) starting from a saved checkpoint.

Arms branched from one checkpoint share initial weights, optimizer state, data order and schedule, so they differ
only by their ``Interventions``. (Its own module: it builds a ``Trainer``, which itself reads checkpoints.)
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .checkpoint import read_state
from .interventions import Interventions
from .loop import Trainer
from .train_config import TrainConfig

__all__ = ["branch_from_checkpoint", "branch_from_pretrained"]


def branch_from_checkpoint(
    checkpoint_dir: str,
    data,
    out_dir: str,
    interventions: Optional[Interventions] = None,
    eval_fn: Optional[Callable[[Any, int], dict]] = None,
    **overrides,
) -> Trainer:
    """A new run starting from ``checkpoint_dir`` (weights, optimizer, schedule, RNG) writing to ``out_dir``.

    The config is the checkpoint's, with ``out_dir`` and ``overrides`` (any ``TrainConfig`` field) applied;
    ``metrics_file`` is reset to ``out_dir``'s default unless overridden. Arms branched from one checkpoint share
    initial weights, optimizer state, data order and schedule, so they differ only by ``interventions``.
    Call ``.train(end_step=...)`` on the result.
    """
    state = read_state(checkpoint_dir)
    cfg = dict(state["config"])
    cfg["metrics_file"] = None
    cfg.update(overrides)
    cfg["out_dir"] = out_dir
    trainer = Trainer(TrainConfig.from_dict(cfg), data, interventions, eval_fn)
    trainer.load_checkpoint(checkpoint_dir)
    return trainer


def branch_from_pretrained(
    checkpoint_dir: str,
    data,
    out_dir: str,
    step: int,
    config: TrainConfig,
    interventions: Optional[Interventions] = None,
    eval_fn: Optional[Callable[[Any, int], dict]] = None,
) -> Trainer:
    """A new run from a HF checkpoint without optimizer state (published Pythia checkpoints) at ``step``:
    ``config`` (its ``out_dir`` replaced) gives the recipe and LR schedule; AdamW restarts from zero moments
    (``Trainer.start_from_weights``). Arms branched this way still share weights, optimizer state (zero), data
    order and schedule, so they differ only by ``interventions``; the restart itself is an approximation."""
    import dataclasses

    trainer = Trainer(dataclasses.replace(config, out_dir=out_dir, metrics_file=None), data, interventions, eval_fn)
    trainer.start_from_weights(checkpoint_dir, step)
    return trainer

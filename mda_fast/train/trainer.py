"""Pythia-recipe trainer for GPT-NeoX with per-sample interventions (deletion, insertion): the old entry point,
re-exporting the names now defined in one module per concern.

Recipe: AdamW (beta 0.9/0.95, eps 1e-8, weight decay 0.1 except biases and LayerNorm parameters), linear warmup
over 1% of ``total_steps`` then cosine decay to 0.1x peak (``schedule.CosineSchedule``), grad-norm clip 1.0,
bf16 autocast on CUDA only (fp32 master weights). Step ``k`` trains on ``data.step(k)``; checkpoint ``step{k}``
holds the weights after ``k`` updates (Pythia's convention: ``step0`` is the initialisation).

* ``interventions``: ``Insertion``, ``Interventions`` and the pure ``compose`` (the exact delete / insert semantics);
* ``loss``: ``lm_loss`` (the Pythia / Megatron loss) and ``param_groups``;
* ``train_config``: ``TrainConfig``;
* ``loop``: ``Trainer`` and ``StepBatch``;
* ``checkpoint``: ``STATE_FILE``, checkpoint I/O and ``load_checkpoint_model``; ``branch``: ``branch_from_checkpoint``;
* ``logs``: ``read_jsonl`` and the other log readers and writers.

Every step's composition goes to ``out_dir/batches.jsonl``.
"""

from __future__ import annotations

from .branch import branch_from_checkpoint
from .checkpoint import STATE_FILE, load_checkpoint_model
from .interventions import Insertion, Interventions
from .logs import read_jsonl
from .loop import StepBatch, Trainer
from .loss import lm_loss, param_groups
from .train_config import TrainConfig

__all__ = [
    "Insertion",
    "Interventions",
    "TrainConfig",
    "Trainer",
    "StepBatch",
    "lm_loss",
    "param_groups",
    "branch_from_checkpoint",
    "load_checkpoint_model",
    "read_jsonl",
    "STATE_FILE",
]

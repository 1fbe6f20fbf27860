"""Pythia-recipe GPT-NeoX trainer with per-sample interventions (see ``trainer`` for the exact semantics)."""
from .presets import PRESETS, Preset, get_preset, make_model, model_config
from .schedule import CosineSchedule, checkpoint_steps
from .trainer import (
    Insertion,
    Interventions,
    StepBatch,
    TrainConfig,
    Trainer,
    branch_from_checkpoint,
    lm_loss,
    load_checkpoint_model,
    param_groups,
    read_jsonl,
)

__all__ = [
    "PRESETS",
    "Preset",
    "get_preset",
    "make_model",
    "model_config",
    "CosineSchedule",
    "checkpoint_steps",
    "Insertion",
    "Interventions",
    "StepBatch",
    "TrainConfig",
    "Trainer",
    "branch_from_checkpoint",
    "lm_loss",
    "load_checkpoint_model",
    "param_groups",
    "read_jsonl",
]

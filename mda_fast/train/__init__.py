"""Pythia-recipe trainer (GPT-NeoX and the other families of ``presets.FAMILIES``) with per-sample interventions (see ``interventions`` for the exact semantics)."""

from .branch import branch_from_checkpoint, branch_from_pretrained
from .checkpoint import STATE_FILE, load_checkpoint_model
from .interventions import Insertion, Interventions
from .logs import read_jsonl
from .loop import StepBatch, Trainer
from .loss import lm_loss, param_groups
from .presets import FAMILIES, PRESETS, Preset, get_preset, make_model, model_config, preset_for_shape
from .schedule import CosineSchedule, checkpoint_steps
from .train_config import TrainConfig

__all__ = [
    "FAMILIES",
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
    "branch_from_pretrained",
    "preset_for_shape",
    "lm_loss",
    "load_checkpoint_model",
    "param_groups",
    "read_jsonl",
    "STATE_FILE",
]

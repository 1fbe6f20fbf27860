"""Trainer checkpoints: a ``step{k}`` directory holding HF weights + config (``save_pretrained``) and
``STATE_FILE`` (step, optimizer, schedule, config, data shape, RNG state). Step ``k``'s checkpoint holds the weights
after ``k`` updates (Pythia's convention: ``step0`` is the initialisation).
"""

from __future__ import annotations

import os

import torch

from ..io import atomic_dir
from .presets import from_pretrained_kwargs

__all__ = [
    "STATE_FILE",
    "step_dir",
    "has_state",
    "read_state",
    "check_state",
    "write_checkpoint",
    "load_checkpoint_model",
]

#: the trainer-state file inside a ``step{k}`` checkpoint directory
STATE_FILE = "trainer_state.pt"


class _QuietHF:
    """Silence transformers' per-file progress bars inside the trainer's own bar (restored on exit)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._log = hf_logging
        self._was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        if self._was:
            self._log.enable_progress_bar()


def step_dir(out_dir: str, step: int) -> str:
    """The checkpoint directory of step ``step`` in the run directory ``out_dir``."""
    return os.path.join(out_dir, f"step{int(step)}")


def has_state(checkpoint_dir: str) -> bool:
    """Whether ``checkpoint_dir`` holds a (complete) trainer checkpoint."""
    return os.path.exists(os.path.join(checkpoint_dir, STATE_FILE))


def read_state(checkpoint_dir: str) -> dict:
    """The trainer state saved in ``checkpoint_dir`` (on the CPU); ``ValueError`` if it is not a checkpoint."""
    if not has_state(checkpoint_dir):
        raise ValueError(f"{checkpoint_dir!r}: no {STATE_FILE}; not a trainer checkpoint")
    return torch.load(os.path.join(checkpoint_dir, STATE_FILE), map_location="cpu", weights_only=True)


def check_state(
    state: dict, checkpoint_dir: str, batch_size: int, seq_len: int, preset: str, family: str = "gpt_neox"
) -> None:
    """``ValueError`` unless ``state`` (read from ``checkpoint_dir``) was saved with this data shape, preset and
    family (a state without one is GPT-NeoX's, saved before families existed) and with optimizer state."""
    d = state["data"]
    if (d["batch_size"], d["seq_len"]) != (batch_size, seq_len):
        raise ValueError(
            f"{checkpoint_dir!r}: saved with batch_size={d['batch_size']}, seq_len={d['seq_len']}; the data has "
            f"batch_size={batch_size}, seq_len={seq_len}"
        )
    if state["config"]["preset"] != preset:
        raise ValueError(
            f"{checkpoint_dir!r}: preset {state['config']['preset']!r} differs from config.preset {preset!r}"
        )
    saved = state["config"].get("family", "gpt_neox")
    if saved != family:
        raise ValueError(f"{checkpoint_dir!r}: model family {saved!r} differs from config.family {family!r}")
    if state.get("optimizer") is None:
        raise ValueError(f"{checkpoint_dir!r}: saved without optimizer state (save_optimizer=False)")


def write_checkpoint(final: str, model, state: dict) -> str:
    """Save ``model`` (``save_pretrained``) and ``state`` (as ``STATE_FILE``) to the directory ``final``, replacing
    it; written to ``final + ".tmp"`` first, so ``final`` is either the old or the complete new checkpoint."""
    with atomic_dir(final) as tmp, _QuietHF():
        model.save_pretrained(tmp)
        torch.save(state, os.path.join(tmp, STATE_FILE))
    return final


def load_checkpoint_model(checkpoint_dir: str, attn_implementation: str = "sdpa"):
    """The causal LM of a ``step{k}`` directory (any family: its ``config.json``'s ``model_type`` picks the HF
    class), in fp32, for training (no adapter is needed)."""
    from transformers import AutoModelForCausalLM

    if not os.path.isfile(os.path.join(checkpoint_dir, "config.json")):
        raise ValueError(f"{checkpoint_dir!r}: no config.json; not a save_pretrained checkpoint directory")
    with _QuietHF():
        model = AutoModelForCausalLM.from_pretrained(checkpoint_dir, **from_pretrained_kwargs(attn_implementation))
    return model.float()

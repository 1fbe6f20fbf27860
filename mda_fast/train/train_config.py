"""``TrainConfig``: the settings of one training run (Pythia recipe defaults)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .presets import check_family, get_preset
from .schedule import CosineSchedule, checkpoint_steps

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Training run settings. ``total_steps`` defines the LR schedule; ``train(end_step=...)`` may stop earlier.

    Attributes:
        preset: model preset name (``presets.PRESETS``).
        family: the model family (HF ``model_type``) the preset is built as (``presets.FAMILIES``: gpt_neox,
            llama, mistral, qwen2, qwen3, olmo2, gpt2).
        total_steps: length of the LR schedule in optimizer updates (>= 1).
        lr: peak learning rate; ``None`` uses the preset's Pythia peak LR (1e-3; 6e-4 for pythia-160m).
        warmup_frac: fraction of ``total_steps`` of linear warmup (``0 <= warmup_frac < 1``).
        min_lr_frac: the cosine decay's floor as a fraction of the peak LR (``0 <= min_lr_frac <= 1``).
        betas: AdamW ``(beta1, beta2)``.
        eps: AdamW epsilon.
        weight_decay: AdamW weight decay (>= 0) on every parameter except biases and norm weights (LayerNorm,
            RMSNorm).
        clip: grad-norm clip (> 0), or ``None`` for no clipping.
        seed: seed of the model initialisation.
        checkpoint_every: save ``out_dir/step{k}`` every this many steps (with ``checkpoint_extra``, see
            ``schedule.checkpoint_steps``); the last step of every ``train`` call is saved too.
        checkpoint_extra: further steps to checkpoint at.
        save_optimizer: keep the optimizer state in checkpoints (needed to resume or branch from them).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:i]"``.
        bf16: bf16 autocast (fp32 master weights); ``None`` means on CUDA and off on CPU (CUDA only).
        micro_batch_size: rows per gradient-accumulation chunk of a step (same denominator, same result up to fp
            rounding); ``None`` runs each step in one chunk.
        attn_implementation: HF attention implementation (``"sdpa"`` or ``"eager"``).
        out_dir: the run directory (checkpoints and logs).
        metrics_file: the per-step metrics log; ``None`` means ``out_dir/metrics.jsonl``.
        progress: show a progress bar.
    """

    preset: str = "tiny-2l"
    family: str = "gpt_neox"
    total_steps: int = 1000
    lr: Optional[float] = None
    warmup_frac: float = 0.01
    min_lr_frac: float = 0.1
    betas: Tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip: Optional[float] = 1.0
    seed: int = 0
    checkpoint_every: int = 1000
    checkpoint_extra: Tuple[int, ...] = ()
    save_optimizer: bool = True
    device: str = "auto"
    bf16: Optional[bool] = None
    micro_batch_size: Optional[int] = None
    attn_implementation: str = "sdpa"
    out_dir: str = "runs/train"
    metrics_file: Optional[str] = None
    progress: bool = True

    def __post_init__(self):
        get_preset(self.preset)
        check_family(self.family)
        self.betas = tuple(float(b) for b in self.betas)
        self.checkpoint_extra = tuple(int(s) for s in self.checkpoint_extra)
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip: expected > 0 or None, got {self.clip!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay!r}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size: expected >= 1 or None, got {self.micro_batch_size!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")
        self.schedule()  # validates total_steps, lr, warmup_frac, min_lr_frac
        checkpoint_steps(self.total_steps, self.checkpoint_every, self.checkpoint_extra)

    @property
    def peak_lr(self) -> float:
        return float(self.lr) if self.lr is not None else get_preset(self.preset).peak_lr

    def schedule(self) -> CosineSchedule:
        return CosineSchedule(self.peak_lr, self.total_steps, self.warmup_frac, self.min_lr_frac)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

"""Pythia learning-rate schedule (linear warmup, cosine decay to a floor) and checkpoint steps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, List

__all__ = ["CosineSchedule", "checkpoint_steps"]


@dataclass(frozen=True)
class CosineSchedule:
    """LR of the optimizer update that consumes batch ``step`` (0-based).

    * warmup (``step < W``, ``W = max(1, ceil(warmup_frac * total_steps))``): ``peak * (step + 1) / W``,
      so the first update is not wasted and update ``W - 1`` runs at the peak;
    * cosine (``W <= step``): ``min + (peak - min) * (1 + cos(pi * p)) / 2`` with
      ``p = min(1, (step - W) / (total_steps - W))`` and ``min = min_lr_frac * peak``; constant ``min`` after
      ``total_steps``.

    The LR is a pure function of the step, so resuming needs no scheduler state beyond these fields.
    """

    peak_lr: float
    total_steps: int
    warmup_frac: float = 0.01
    min_lr_frac: float = 0.1

    def __post_init__(self):
        if not (isinstance(self.total_steps, int) and self.total_steps >= 1):
            raise ValueError(f"total_steps: expected an int >= 1, got {self.total_steps!r}")
        if not (self.peak_lr > 0 and math.isfinite(self.peak_lr)):
            raise ValueError(f"peak_lr: expected a finite value > 0, got {self.peak_lr!r}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac: expected 0 <= warmup_frac < 1, got {self.warmup_frac!r}")
        if not 0 <= self.min_lr_frac <= 1:
            raise ValueError(f"min_lr_frac: expected 0 <= min_lr_frac <= 1, got {self.min_lr_frac!r}")

    @property
    def warmup_steps(self) -> int:
        return max(1, math.ceil(self.warmup_frac * self.total_steps))

    @property
    def min_lr(self) -> float:
        return self.min_lr_frac * self.peak_lr

    def lr(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step: expected >= 0, got {step}")
        w = self.warmup_steps
        if step < w:
            return self.peak_lr * (step + 1) / w
        span = self.total_steps - w
        p = 1.0 if span <= 0 else min(1.0, (step - w) / span)
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))


def checkpoint_steps(total_steps: int, every: int = 1000, extra: Iterable[int] = ()) -> List[int]:
    """Pythia's checkpoint steps up to ``total_steps``: 0, 1, 2, 4, ..., 512, every multiple of ``every``,
    ``total_steps`` itself and ``extra``. Checkpoint ``k`` holds the weights after ``k`` updates
    (batches ``0 .. k-1``)."""
    if not (isinstance(total_steps, int) and total_steps >= 0):
        raise ValueError(f"total_steps: expected an int >= 0, got {total_steps!r}")
    if not (isinstance(every, int) and every >= 1):
        raise ValueError(f"checkpoint_every: expected an int >= 1, got {every!r}")
    steps = {0, total_steps}
    steps.update(2**i for i in range(10) if 2**i <= total_steps)
    steps.update(range(every, total_steps + 1, every))
    for s in extra:
        if not (isinstance(s, int) and 0 <= s <= total_steps):
            raise ValueError(f"extra checkpoint step {s!r}: expected an int in [0, total_steps={total_steps}]")
        steps.add(s)
    return sorted(steps)

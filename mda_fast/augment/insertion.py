"""Insertion: a token budget of synthetic rows mixed into training through the trainer's insertion path.

``budget_rows(window_rows, frac)`` = ``ceil(frac * window_rows)`` rows (a fraction of the window's tokens, since
every row has ``seq_len`` tokens; the issue's default ``frac`` is 2%). ``plan_insertions(rows, steps)`` spreads
them evenly over the window steps (row ``j`` at ``steps[floor(j * len(steps) / n)]``), each an
``Insertion(step, tokens=row, name=<arm>-<j>)`` appended to its batch (``insert_mode="append"``: every other sample
keeps its weight). ``plan_duplicates(indices, steps)`` does the same for copies of dataset rows (``index=``).
The trainer logs each step's composition in ``batches.jsonl`` (``inserted`` names every extra row);
``insertion_log`` gives the per-step counts and tokens for the study's record.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np

from ..train import Insertion, Interventions

__all__ = ["budget_rows", "spread", "plan_insertions", "plan_duplicates", "insertion_log"]


def budget_rows(window_rows: int, frac: float) -> int:
    """Rows of a ``frac`` token budget of a window of ``window_rows`` rows (at least 1)."""
    if not 0 < frac <= 10:
        raise ValueError(f"budget fraction: expected 0 < frac <= 10, got {frac!r}")
    return max(1, int(math.ceil(frac * int(window_rows))))


def spread(n: int, steps: Sequence[int]) -> List[int]:
    """The step of each of ``n`` rows spread evenly over ``steps``."""
    steps = [int(s) for s in steps]
    if not steps:
        raise ValueError("steps: expected at least one step")
    return [steps[(j * len(steps)) // max(1, n)] for j in range(int(n))]


def plan_insertions(rows, steps: Sequence[int], name: str = "synthetic", seed: int = 0) -> Interventions:
    """``Interventions`` appending each of ``rows`` (``[n, seq_len]`` token rows) once, spread over ``steps``."""
    rows = np.asarray(rows, np.int64)
    at = spread(rows.shape[0], steps)
    return Interventions(
        insert=[Insertion(step=s, tokens=rows[j], name=f"{name}-{j}") for j, s in enumerate(at)],
        insert_mode="append",
        seed=seed,
    )


def plan_duplicates(indices: Sequence[int], steps: Sequence[int], name: str = "dup", seed: int = 0) -> Interventions:
    """``Interventions`` appending a copy of each dataset row in ``indices``, spread over ``steps``."""
    at = spread(len(indices), steps)
    return Interventions(
        insert=[Insertion(step=s, index=int(i), name=f"{name}-{int(i)}") for s, i in zip(at, indices)],
        insert_mode="append",
        seed=seed,
    )


def insertion_log(iv: Interventions, seq_len: int) -> Dict[str, object]:
    """``{"n_rows", "n_tokens", "per_step": {step: rows}}`` of an insertion plan."""
    per: Dict[int, int] = {}
    for it in iv.insert:
        per[int(it.step)] = per.get(int(it.step), 0) + 1
    return {
        "n_rows": len(iv.insert),
        "n_tokens": len(iv.insert) * int(seq_len),
        "per_step": {str(k): v for k, v in sorted(per.items())},
    }

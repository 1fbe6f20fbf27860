"""What the intervention arms measure: the evaluation at each eval step (head scores, probe, loss, ICL), the ICL
token positions, the held-out rows, and each run's derived figures (emergence step, area vs baseline, changes).

Definitions: the docstring of :mod:`mda_fast.study.interventions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

import numpy as np
import torch

from ...core.localize import localize_all
from ...core.probes import InductionProbe, icl_positions
from .summary import CHANGE_KEYS, summarize

if TYPE_CHECKING:
    from .config import InterventionConfig

__all__ = ["icl_positions", "heldout_tokens", "make_eval_fn", "emergence_step", "add_seed_figures", "derive"]


def heldout_tokens(config: InterventionConfig) -> np.ndarray:
    """The held-out rows ``[n, seq_len]`` int64 (validated never to be trained on by any arm)."""
    b = config.batches
    rows = (
        np.asarray(config.heldout_rows, np.int64)
        if config.heldout_rows is not None
        else np.arange(b.n_rows - config.n_heldout, b.n_rows, dtype=np.int64)
    )
    first_free = config.train_until * config.batch_size
    if rows.size == 0 or rows.min() < first_free or rows.max() >= b.n_rows:
        raise ValueError(
            f"held-out rows must lie in [{first_free}, {b.n_rows}) (at or after step train_until="
            f"{config.train_until}, inside the data); got "
            f"{'none' if rows.size == 0 else f'[{rows.min()}, {rows.max()}]'}. Pass heldout_rows= or "
            f"a smaller n_heldout / train_until"
        )
    return np.asarray(b.rows(rows)).astype(np.int64)


def make_eval_fn(config: InterventionConfig, heldout: np.ndarray):
    """``eval_fn(model, step) -> dict`` for the trainer (empty dict at steps not in ``config.eval_steps()``)."""
    planned = set(config.eval_steps())
    probe = InductionProbe(L=config.probe_L, n=config.probe_n, seed=config.probe_seed, low=config.low, high=config.high)
    T = config.seq_len - 1
    (early, late), band = config.icl_tokens, config.icl_band
    # CE at position p predicts 1-based token p + 1
    early_pos = torch.arange(early - 1 - band, early + band)
    late_pos = torch.arange(late - 1 - band, late + band)
    rows = torch.from_numpy(heldout)

    @torch.no_grad()
    def eval_fn(model, step):
        if step not in planned:
            return {}
        dev = next(model.parameters()).device
        loc = localize_all(
            model,
            ("prefix_matching", "prev_token"),
            config.localize_seq_len,
            config.localize_n,
            config.localize_seed,
            config.eval_batch_size,
            config.low,
            config.high,
        )
        pm = loc["prefix_matching"]
        targets = [float(pm[l, h]) for l, h in config.heads]
        ids = probe.inputs(model)
        f = 0.0
        for lo in range(0, ids.shape[0], config.eval_batch_size):
            b = ids[lo : lo + config.eval_batch_size]
            logits = model(input_ids=b, use_cache=False).logits
            f += float(probe.objective(model, None, b, logits, None).double().sum())
        ce = torch.empty(rows.shape[0], T, dtype=torch.float64)
        for lo in range(0, rows.shape[0], config.eval_batch_size):
            b = rows[lo : lo + config.eval_batch_size].to(dev)
            logits = model(input_ids=b[:, :-1], use_cache=False).logits.float()
            ce[lo : lo + b.shape[0]] = (
                torch.nn.functional.cross_entropy(logits.transpose(1, 2), b[:, 1:], reduction="none").double().cpu()
            )
        icl = ce[:, late_pos].mean(dim=1) - ce[:, early_pos].mean(dim=1)
        return {
            "head_score": float(np.mean(targets)),
            "target_scores": targets,
            "head_scores": pm.tolist(),
            "prev_token_scores": loc["prev_token"].tolist(),
            "probe_f": f,
            "loss": float(ce.mean()),
            "icl": float(icl.mean()),
        }

    return eval_fn


def emergence_step(steps: Sequence[int], values: Sequence[float], threshold: float) -> Optional[int]:
    """The first step whose value is ``>= threshold``; ``None`` if none is."""
    for s, v in zip(steps, values):
        if v >= threshold:
            return int(s)
    return None


def add_seed_figures(arms: Dict[str, Dict[str, Any]], config: InterventionConfig) -> None:
    """Add each run's derived figures to every ``arms[arm]["seeds"][seed]`` curve dict (in place):
    ``emergence_step``, ``emergence_step_per_target``, ``area_vs_baseline`` and ``<key>_change`` at ``end_step``
    and ``train_until`` against the same seed's baseline."""
    fixed = sorted({config.end_step, config.train_until})
    base = arms["baseline"]["seeds"]
    for arm, a in arms.items():
        for seed, d in a["seeds"].items():
            steps = np.asarray(d["steps"], np.float64)
            d["emergence_step"] = emergence_step(d["steps"], d["head_score"], config.threshold)
            d["emergence_step_per_target"] = [
                emergence_step(d["steps"], [t[j] for t in d["target_scores"]], config.threshold)
                for j in range(len(config.heads))
            ]
            b = base[seed]
            if list(b["steps"]) != list(d["steps"]):
                raise ValueError(f"arm {arm} seed {seed}: eval steps differ from the baseline's")
            diff = np.asarray(d["head_score"]) - np.asarray(b["head_score"])
            d["area_vs_baseline"] = float(np.sum((diff[1:] + diff[:-1]) * np.diff(steps)) / 2)
            idx = {s: i for i, s in enumerate(d["steps"])}
            for key in CHANGE_KEYS:
                d[f"{key}_change"] = {str(s): float(d[key][idx[s]] - b[key][idx[s]]) for s in fixed}


def derive(arms: Dict[str, Dict[str, Any]], config: InterventionConfig) -> Dict[str, Any]:
    """Add the derived figures to every run (in place, :func:`add_seed_figures`); return the per-arm summary
    (``summarize(...)["arms"]``)."""
    add_seed_figures(arms, config)
    return summarize({"arms": arms, "threshold": config.threshold})["arms"]

"""The sample sets of the intervention arms (top / bottom / random / category-matched) and the arms' plans.

Definitions: the docstring of :mod:`mda_fast.study.interventions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Tuple

import numpy as np

from ...train import Interventions

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .config import InterventionConfig

__all__ = ["RANDOM_STREAM", "MATCHED_STREAM", "select_sets", "ArmPlan", "is_deterministic", "plan_arms"]

RANDOM_STREAM = 0x5EED
MATCHED_STREAM = 0x3A7C


def _window_scores(config: InterventionConfig, scores, global_index) -> Tuple[np.ndarray, np.ndarray]:
    """(global indices sorted, ranking score per index) after validating them against the window."""
    s = np.asarray(scores)
    g = np.asarray(global_index)
    n = config.window_size
    if g.ndim != 1 or g.dtype.kind not in "iu":
        raise ValueError(f"global_index: expected a 1-D integer array, got shape {g.shape} dtype {g.dtype}")
    if s.ndim not in (1, 2) or s.shape[0] != g.shape[0]:
        raise ValueError(
            f"scores: expected shape [{g.shape[0]}] or [{g.shape[0]}, n_targets] (one row per "
            f"global_index), got {s.shape}"
        )
    if g.shape[0] != n:
        raise ValueError(
            f"scores: {g.shape[0]} rows, but the window [{config.start_step}, {config.end_step}) holds "
            f"{n} samples ({config.end_step - config.start_step} steps x batch {config.batch_size})"
        )
    order = np.argsort(g, kind="stable")
    g = g[order].astype(np.int64)
    lo = config.start_step * config.batch_size
    if not np.array_equal(g, np.arange(lo, lo + n)):
        raise ValueError(f"global_index: expected each of the window's indices {lo} .. {lo + n - 1} exactly once")
    s = s[order].astype(np.float64)
    if s.ndim == 2:
        if config.score_column is None:
            s = s.mean(axis=1)
        elif not 0 <= config.score_column < s.shape[1]:
            raise ValueError(f"score_column={config.score_column}: scores have {s.shape[1]} columns")
        else:
            s = s[:, config.score_column]
    elif config.score_column not in (None, 0):
        raise ValueError(f"score_column={config.score_column}: scores are 1-D")
    if not np.isfinite(s).all():
        raise ValueError(f"scores: {int((~np.isfinite(s)).sum())} non-finite values")
    return g, s


def select_sets(config: InterventionConfig, scores, global_index) -> Dict[str, Any]:
    """``{"top": [k] (rank order), "bottom": [k] (most negative first), "random": {seed: [k] (draw order)}}``."""
    g, s = _window_scores(config, scores, global_index)
    k = config.k
    needs_random = any(a.endswith("-random") for a in config.arms)
    if needs_random and 2 * k > g.size:
        raise ValueError(
            f"top_frac={config.top_frac}: random sets of {k} disjoint from a top set of {k} need "
            f"2k <= window size {g.size}"
        )
    desc = np.lexsort((g, -s))  # by score descending, ties by lower index
    asc = np.lexsort((g, s))
    top = g[desc[:k]]
    pool = np.setdiff1d(g, top)
    random = {
        seed: np.random.default_rng([seed, RANDOM_STREAM]).choice(pool, size=k, replace=False) for seed in config.seeds
    }
    out = {
        "k": k,
        "top": top,
        "bottom": g[asc[:k]],
        "random": random,
        "top_scores": s[desc[:k]],
        "bottom_scores": s[asc[:k]],
    }
    if any(a.endswith("-matched") for a in config.arms):
        out["matched"], out["matched_composition"] = _matched_sets(config, top, pool)
    return out


def _matched_sets(config: InterventionConfig, top: np.ndarray, pool: np.ndarray):
    """Per seed, ``len(top)`` samples from ``pool`` with the top set's count of every dominant category, in a
    seeded random order; and the composition ``{category: count}``.

    A category with fewer rows in ``pool`` than the top set holds (real corpora have rare file types) gives all
    of them, and the shortfall is filled with uniformly random rows of the other categories; the composition
    then records ``{"shortfall": {category: rows not matched}}`` and a warning names it."""
    dom, names = config.dominant_categories()
    if (dom[top] < 0).any():
        raise ValueError(
            f"matched arms: {int((dom[top] < 0).sum())} rows of the top set carry no category; categorize the "
            "top set first (`mda-fast categorize`)"
        )
    pool = pool[dom[pool] >= 0]  # only rows with a category can be matched (a sampled categorization: the sample)
    if pool.size < top.size:
        raise ValueError(
            f"matched arms: only {pool.size} rows outside the top set carry a category, fewer than the top set's "
            f"{top.size}; categorize more of the window (categorize.sample_rows, 0: every row)"
        )
    need = np.bincount(dom[top], minlength=len(names))
    pool_dom = dom[pool]
    take = np.minimum(need, np.bincount(pool_dom, minlength=len(names)))
    short = {names[c]: int(need[c] - take[c]) for c in np.flatnonzero(need > take)}
    if short:
        logger.warning(
            "matched arms: the rest of the window lacks rows of %s for the top set's mix; filled with random "
            "rows of the other categories",
            ", ".join(f"{n} {c!r}" for c, n in short.items()),
        )
    sets = {}
    for seed in config.seeds:
        rng = np.random.default_rng([seed, MATCHED_STREAM])
        parts = [rng.choice(pool[pool_dom == c], size=int(take[c]), replace=False) for c in np.flatnonzero(take)]
        if short:
            rest = np.setdiff1d(pool, np.concatenate(parts)) if parts else pool
            parts.append(rng.choice(rest, size=int(need.sum() - take.sum()), replace=False))
        sets[seed] = rng.permutation(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    comp = {names[c]: int(take[c]) for c in np.flatnonzero(take)}
    return sets, ({**comp, "shortfall": short} if short else comp)


@dataclass
class ArmPlan:
    """One training run: ``arm`` under ``seed`` with its ``interventions`` and selected global indices."""

    arm: str
    seed: int
    interventions: Interventions
    selected: np.ndarray
    deterministic: bool


def is_deterministic(arm: str, insert_mode: str) -> bool:
    """Whether ``arm`` trains the same run under every seed (no random set, no random replaced slots)."""
    return not arm.endswith(("-random", "-matched")) and not (arm.startswith("augment") and insert_mode == "replace")


def plan_arms(config: InterventionConfig, scores, global_index) -> Tuple[Dict[Tuple[str, int], ArmPlan], dict]:
    """``({(arm, seed): ArmPlan}, sets)`` for every configured arm and seed (see the module docstring)."""
    sets = select_sets(config, scores, global_index)
    plans = {}
    aug_steps = config.resolved_augment_steps()
    for seed in config.seeds:
        for arm in config.arms:
            if arm == "baseline":
                sel = np.zeros(0, np.int64)
            elif arm.endswith("-top"):
                sel = sets["top"]
            elif arm.endswith("-bottom"):
                sel = sets["bottom"]
            elif arm.endswith("-matched"):
                sel = sets["matched"][seed]
            else:
                sel = sets["random"][seed]
            if arm.startswith("augment"):
                iv = Interventions.duplicate(
                    np.tile(sel, config.augment_copies), aug_steps, insert_mode=config.insert_mode, seed=seed
                )
            elif arm.startswith("delete"):
                iv = Interventions(delete=sel, seed=seed)
            else:
                iv = Interventions(seed=seed)
            plans[(arm, seed)] = ArmPlan(
                arm, seed, iv, np.asarray(sel, np.int64), is_deterministic(arm, config.insert_mode)
            )
    return plans, sets

"""The one summary of intervention results: per-arm figures across seeds, used by the runner (stored in
``interventions.json``), the analysis (``analysis.summarize_interventions``) and the report.

Input: ``{"arms": {arm: {"seeds": {seed: curves}, "deterministic"?, "n_selected"?}}, "threshold"?}`` where each
seed's curves hold ``steps``, ``head_score`` and ``icl`` (equal-length, finite) and optionally ``loss``,
``emergence_step`` and the runner's per-seed derived figures (``area_vs_baseline``, ``<key>_change``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..stats import pearson

__all__ = ["SEED_KEYS", "CHANGE_KEYS", "mean_std", "summarize", "intervention_summary"]

SEED_KEYS = ("steps", "head_score", "icl")
CHANGE_KEYS = ("icl", "head_score", "loss", "probe_f")


def mean_std(values) -> Dict[str, Optional[float]]:
    """``{"mean", "std", "n"}`` over the values that are not ``None`` (mean and std ``None`` when there are none)."""
    v = [x for x in values if x is not None]
    return {"mean": float(np.mean(v)) if v else None, "std": float(np.std(v)) if v else None, "n": len(v)}


def _seed_columns(arm: str, seed: str, d: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """A seed's curves as float arrays, validated (present, one shape, non-empty, finite)."""
    missing = [key for key in SEED_KEYS if key not in d]
    if missing:
        raise ValueError(f"arm {arm!r} seed {seed!r} is missing {missing}")
    cols = {key: np.asarray(d[key], dtype=np.float64) for key in SEED_KEYS + (("loss",) if "loss" in d else ())}
    n = cols["steps"].shape
    for key, v in cols.items():
        if v.ndim != 1 or v.shape != n or v.size == 0:
            raise ValueError(
                f"arm {arm!r} seed {seed!r}: {key!r} has shape {v.shape}, expected steps' shape {n} (non-empty)"
            )
        if not np.isfinite(v).all():
            raise ValueError(f"arm {arm!r} seed {seed!r}: {key!r} contains non-finite values")
    return cols


def _derived(seeds: List[Mapping[str, Any]]) -> Dict[str, Any]:
    """Mean/std across seeds of the runner's per-seed figures, where every seed has them."""
    out: Dict[str, Any] = {}
    if all("area_vs_baseline" in d for d in seeds):
        out["area_vs_baseline"] = mean_std([d["area_vs_baseline"] for d in seeds])
    for key in CHANGE_KEYS:
        if all(f"{key}_change" in d for d in seeds):
            out[f"{key}_change"] = {
                s: mean_std([d[f"{key}_change"][s] for d in seeds]) for s in seeds[0][f"{key}_change"]
            }
    return out


def _arm(arm: str, a: Any) -> Tuple[Dict[str, Any], List[np.ndarray], List[np.ndarray]]:
    """One arm's figures, and its distinct runs' head-score and ICL curves."""
    seeds = a.get("seeds") if isinstance(a, Mapping) else None
    if not isinstance(seeds, Mapping) or not seeds:
        raise ValueError(f"arm {arm!r} must have a non-empty 'seeds' dict")
    if a.get("deterministic"):  # a seed-free arm was trained once; its other seeds are copies of that run
        seeds = dict(list(seeds.items())[:1])
    cols = {str(seed): _seed_columns(arm, seed, d) for seed, d in seeds.items()}
    em = {str(seed): None if d.get("emergence_step") is None else int(d["emergence_step"]) for seed, d in seeds.items()}
    reached = [v for v in em.values() if v is not None]
    out: Dict[str, Any] = {"deterministic": bool(a.get("deterministic")), "n_seeds": len(em)}
    if "n_selected" in a:
        out["n_selected"] = a["n_selected"]
    out.update(
        {
            "emergence_steps": em,
            "emergence": mean_std(em.values()),
            **_derived(list(seeds.values())),
            "n_reached": len(reached),
            "emergence_mean": float(np.mean(reached)) if reached else None,
            "emergence_std": float(np.std(reached)) if reached else None,
            "final_head_score": float(np.mean([c["head_score"][-1] for c in cols.values()])),
            "final_icl": float(np.mean([c["icl"][-1] for c in cols.values()])),
        }
    )
    return out, [c["head_score"] for c in cols.values()], [c["icl"] for c in cols.values()]


def summarize(data: Mapping[str, Any], baseline: str = "baseline") -> Dict[str, Any]:
    """Validate intervention curves and derive per-arm figures across seeds.

    Returns ``{"threshold", "baseline" (``None`` when that arm is absent), "arms", "score_icl_pearson",
    "n_points"}``. Per arm: ``deterministic``, ``n_seeds``, ``n_selected`` (when given), ``emergence_steps``
    (seed → step, ``None`` = never crossed), ``emergence`` (``mean``/``std``/``n`` over the seeds that crossed),
    ``n_reached``, ``emergence_mean``/``emergence_std`` (the same mean and std), ``emergence_delta`` (mean minus
    the ``baseline`` arm's mean), ``final_head_score`` and ``final_icl`` (mean over seeds of the last
    checkpoint), and, when the seeds carry them, ``area_vs_baseline`` and ``<key>_change`` (step → mean/std/n).
    ``score_icl_pearson`` is taken over every checkpoint of every distinct run, ``n_points`` counts them. An arm
    marked ``deterministic`` was trained once (its seeds repeat one run): it counts as one run everywhere.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("arms"), Mapping) or not data["arms"]:
        raise ValueError("interventions data must be a dict with a non-empty 'arms' dict")
    xs: List[np.ndarray] = []
    ys: List[np.ndarray] = []
    arms: Dict[str, Any] = {}
    for arm, a in data["arms"].items():
        arms[str(arm)], x, y = _arm(arm, a)
        xs += x
        ys += y
    base = arms.get(baseline, {}).get("emergence_mean")
    for v in arms.values():
        v["emergence_delta"] = None if base is None or v["emergence_mean"] is None else v["emergence_mean"] - base
    x, y = np.concatenate(xs), np.concatenate(ys)
    thr = data.get("threshold")
    return {
        "threshold": None if thr is None else float(thr),
        "baseline": baseline if baseline in arms else None,
        "arms": arms,
        "score_icl_pearson": pearson(x, y),
        "n_points": int(x.size),
    }


def intervention_summary(data: Mapping[str, Any]) -> Dict[str, Any]:
    """The summary of intervention results as :func:`summarize` returns it: the one ``run_interventions`` stored
    (``summary``, ``score_icl_pearson`` and ``n_points`` beside ``arms`` in ``interventions.json``), or computed
    from the curves when there is none (curves from elsewhere, or a file written before it was stored)."""
    if isinstance(data, Mapping) and isinstance(data.get("summary"), Mapping) and "n_points" in data:
        thr = data.get("threshold")
        return {
            "threshold": None if thr is None else float(thr),
            "baseline": data.get("baseline"),
            "arms": data["summary"],
            "score_icl_pearson": data.get("score_icl_pearson"),
            "n_points": data["n_points"],
        }
    return summarize(data)

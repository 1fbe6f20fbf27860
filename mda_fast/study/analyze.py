"""``analyze``: every influence statistic of a scores matrix, written as ``analysis.json`` and ``top.csv``.

The statistics themselves live in :mod:`mda_fast.study.stats` (conventions there), the sample table in
:mod:`mda_fast.study.tables`. Everything :func:`analyze` returns is JSON-serialisable (NaN and infinities become
``None``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..io import jsonable, write_json
from .stats import (
    check_categories,
    check_vector,
    cumulative_influence,
    enrichment_intervals,
    influence_per_step,
    jaccard_of_sets,
    power_law_fit,
    ranking,
    score_stats,
    top_count,
    validate_scores,
)
from .tables import top_bottom_table, write_table_csv

__all__ = ["analyze"]


def _sizes(n: int, top_fraction: float, k, table_k, fit_max_rank) -> tuple:
    """``(k_top, k, table_k, fit_max_rank)`` with their defaults (see :func:`analyze`), validated."""
    k_top = top_count(n, top_fraction)
    k = k_top if k is None else k
    table_k = k if table_k is None else table_k
    for name, v in (("k", k), ("table_k", table_k)):
        if not isinstance(v, (int, np.integer)) or not 1 <= v <= n:
            raise ValueError(f"{name} must be an integer in [1, n_samples={n}], got {v!r}")
    return k_top, k, table_k, k_top if fit_max_rank is None else fit_max_rank


def _columns(n: int, global_index, step, position, loss) -> Dict[str, Optional[np.ndarray]]:
    """The per-sample columns, validated: ``gi``, ``st``, ``po`` and ``lo`` (``None`` without losses)."""
    gi = check_vector("global_index", global_index, n, "int")
    st = check_vector("step", step, n, "int")
    po = check_vector("position", position, n, "int")
    lo = None if loss is None else check_vector("loss", loss, n, "float")
    if lo is not None and not np.isfinite(lo).all():
        raise ValueError("loss contains non-finite values")
    if np.unique(gi).shape[0] != n:
        raise ValueError("global_index contains duplicates: every scored sample must appear exactly once")
    return {"gi": gi, "st": st, "po": po, "lo": lo}


def _target_entry(
    s: np.ndarray,
    order: np.ndarray,
    top_fraction: float,
    fit_max_rank: int,
    k_top: int,
    lo: Optional[np.ndarray],
    cat_rows: Optional[np.ndarray],
    cat_names: List[str],
    cat_base: Optional[np.ndarray] = None,
    boot: tuple = (1000, 0),
) -> Dict[str, Any]:
    """One target's cumulative curve, score summary, power-law fit, Pearson with the loss and enrichment."""
    entry: Dict[str, Any] = {
        "cumulative": cumulative_influence(s, top_fraction, order=order),
        "score_stats": score_stats(s),
    }
    try:
        entry["power_law"] = power_law_fit(s, max_rank=fit_max_rank, order=order)
    except ValueError as e:
        entry["power_law"] = {"error": str(e)}
    if lo is not None and s.std() > 0 and lo.std() > 0:
        entry["score_loss_pearson"] = float(np.corrcoef(s, lo.astype(np.float64))[0, 1])
    if cat_rows is not None:
        sets = {"top": order[:k_top], "bottom": order[-k_top:]}
        if all(np.isfinite(cat_rows[ix]).all() for ix in sets.values()):
            base = np.arange(len(s)) if cat_base is None else cat_base
            entry["category_enrichment"] = enrichment_intervals(
                cat_rows, sets, base, cat_names, n_boot=boot[0], seed=boot[1], resample_base=cat_base is not None
            )
        else:
            entry["category_note"] = "its top or bottom set was not classified (categorize.targets = 'all' does)"
    return entry


def _aligned_categories(rows, names, base, n: int) -> tuple:
    """``category_rows`` (aligned with the scores, NaN where unclassified) and its names and base positions, checked."""
    fr = np.asarray(rows, dtype=np.float64)
    if names is None or fr.ndim != 2 or fr.shape != (n, len(names)):
        raise ValueError(f"category_rows must be [n_samples={n}, n_categories] with category_names, got {fr.shape}")
    known = np.isfinite(fr).all(axis=1)
    if ((fr[known] < 0) | (fr[known] > 1 + 1e-6)).any():
        raise ValueError("category fractions must lie within [0, 1]")
    b = np.asarray(base if base is not None else np.flatnonzero(known), dtype=np.int64)
    if b.size == 0 or not known[b].all():
        raise ValueError("category_base must index a non-empty set of classified rows")
    return fr, [str(c) for c in names]


def _per_step(scores: np.ndarray, st: np.ndarray, names: List[str]) -> Dict[str, Any]:
    ps = influence_per_step(scores, st)
    return {
        "steps": ps["steps"],
        "count": ps["count"],
        "sum": {name: ps["sum"][:, j] for j, name in enumerate(names)},
        "mean": {name: ps["mean"][:, j] for j, name in enumerate(names)},
    }


def _categories(category_fractions, category_names, gi: np.ndarray) -> tuple[Optional[np.ndarray], List[str]]:
    """(the scored rows' category fractions, category names), or ``(None, [])`` without ``category_fractions``."""
    if category_fractions is not None:
        return check_categories(category_fractions, category_names, gi)
    if category_names is not None:
        raise ValueError("category_names given without category_fractions")
    return None, []


def _per_target(
    scores, names, top_fraction, fit_max_rank, k_top, lo, cat_rows, cat_names, cat_base=None, boot=(1000, 0)
):
    """``({target: its entry}, [ranking of each target])``."""
    per_target: Dict[str, Any] = {}
    orders = []
    for j, name in enumerate(names):
        s = np.asarray(scores[:, j], dtype=np.float64)
        orders.append(ranking(s))
        per_target[name] = _target_entry(
            s, orders[-1], top_fraction, fit_max_rank, k_top, lo, cat_rows, cat_names, cat_base, boot
        )
    return per_target, orders


def analyze(
    scores: np.ndarray,
    target_names: Sequence[str],
    *,
    global_index: np.ndarray,
    step: np.ndarray,
    position: np.ndarray,
    loss: Optional[np.ndarray] = None,
    category_fractions: Optional[np.ndarray] = None,
    category_names: Optional[Sequence[str]] = None,
    category_rows: Optional[np.ndarray] = None,
    category_base: Optional[np.ndarray] = None,
    bootstrap: int = 1000,
    seed: int = 0,
    top_fraction: float = 0.1,
    k: Optional[int] = None,
    table_k: Optional[int] = None,
    fit_max_rank: Optional[int] = None,
    row_tokens: Optional[Callable[[int], Sequence[int]]] = None,
    decode: Optional[Callable[[Sequence[int]], str]] = None,
    snippet_tokens: int = 64,
    out_dir: Optional[str] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """All influence statistics for a scores matrix; writes ``top.csv`` and ``analysis.json`` into ``out_dir``.

    ``k`` (default: the top ``top_fraction`` of samples) sizes the top sets for the Jaccard overlap; the top
    share and the category enrichment always use the top ``top_fraction``. ``table_k`` (default ``k``) rows of
    each end go into ``top.csv``. The power-law fit covers positive ranks ``1..fit_max_rank`` (default: the top
    ``top_fraction`` of samples). ``category_fractions`` ``[n_rows, n_categories]`` is indexed by global index; instead, ``category_rows``
    ``[n_samples, n_categories]`` is aligned with the scores' rows, NaN on rows that were not classified, and
    ``category_base`` the positions of the rows whose mean is the base rate (a random sample). Each category's
    enrichment in the top and bottom sets has a bootstrap 95% interval (``bootstrap`` resamples, ``seed``;
    :func:`mda_fast.study.stats.enrichment_intervals`); the base rate is resampled only when it is a sample.

    Returns a JSON-serialisable dict: ``n_samples``, ``targets``, ``primary_target`` (the first target),
    ``top_share`` (the share held by the top ``top_fraction``, beside it) and ``category_enrichment`` (category
    → ratio) of the primary target, ``per_target`` (cumulative curve, power-law fit, enrichment, score summary),
    ``jaccard``, ``per_step`` and ``files``.
    """
    scores = validate_scores(scores, target_names)
    names = [str(x) for x in target_names]
    n, t = scores.shape
    col = _columns(n, global_index, step, position, loss)
    k_top, k, table_k, fit_max_rank = _sizes(n, top_fraction, k, table_k, fit_max_rank)
    if category_rows is not None:
        cat_rows, cat_names = _aligned_categories(category_rows, category_names, category_base, n)
    else:
        cat_rows, cat_names = _categories(category_fractions, category_names, col["gi"])
        category_base = None
    per_target, orders = _per_target(scores, names, top_fraction, fit_max_rank, k_top, col["lo"], cat_rows, cat_names,
                                     category_base, (bootstrap, seed))  # fmt: skip
    primary = names[0]
    result: Dict[str, Any] = {
        "n_samples": n, "n_targets": t, "targets": names, "top_fraction": float(top_fraction), "k_top": k_top,
        "k": int(k), "table_k": int(table_k), "primary_target": primary,
        "top_share": per_target[primary]["cumulative"]["top_share"], "categories": cat_names,
        "per_target": per_target,
        "jaccard": {"targets": names, "k": int(k), "matrix": jaccard_of_sets([o[:k] for o in orders])},
        "per_step": _per_step(scores, col["st"], names), "files": {},
    }  # fmt: skip
    if cat_rows is not None and "category_enrichment" in per_target[primary]:
        result["category_enrichment"] = {c: v["ratio"] for c, v in per_target[primary]["category_enrichment"].items()}
        result["category_base"] = "sample" if category_base is not None else "window"
    if out_dir is not None:
        rows = top_bottom_table(scores, names, global_index=col["gi"], step=col["st"], position=col["po"],
                                k=int(table_k), loss=col["lo"], category_rows=cat_rows, category_names=cat_names,
                                row_tokens=row_tokens, decode=decode, snippet_tokens=snippet_tokens,
                                progress=progress)  # fmt: skip
        result["files"] = _write(out_dir, rows, result)
    return jsonable(result)


def _write(out_dir: str, rows: List[Dict[str, Any]], result: Dict[str, Any]) -> Dict[str, str]:
    """Write ``top.csv`` and ``analysis.json`` (with ``files`` set) into ``out_dir``; return ``files``."""
    os.makedirs(out_dir, exist_ok=True)
    top_path = os.path.join(out_dir, "top.csv")
    write_table_csv(rows, top_path)
    json_path = os.path.join(out_dir, "analysis.json")
    files = {"top_csv": top_path, "analysis_json": json_path}
    write_json(json_path, {**result, "files": files})
    return files

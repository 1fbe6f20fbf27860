"""Influence statistics over a scores matrix ``[n_samples, n_targets]`` (pure numpy).

Conventions used throughout:

* The *top set* of a target is its ``k`` highest-scoring samples, ``k = top_count(n_samples, fraction)``;
  ties are broken by row order (stable sort), so results are deterministic.
* *Positive influence* is ``max(score, 0)``. The top share is the positive influence held by the top set
  divided by the positive influence of all scored samples.
* A power law ``score ≈ C · rank^(-exponent)`` is fitted by least squares on ``log(score)`` against
  ``log(rank)`` over the positive scores with ranks ``min_rank..max_rank`` (1-based, descending order).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

__all__ = [
    "top_count",
    "validate_scores",
    "check_vector",
    "check_categories",
    "ranking",
    "curve_points",
    "cumulative_influence",
    "power_law_fit",
    "category_enrichment",
    "enrichment_intervals",
    "score_stats",
    "top_sets",
    "jaccard_matrix",
    "jaccard_of_sets",
    "influence_per_step",
    "pearson",
    "spearman",
]

MAX_CURVE_POINTS = 1000


# ----------------------------------------------------------------------------------------------- validation


def top_count(n: int, fraction: float) -> int:
    """Number of samples in the top ``fraction`` of ``n``: ``ceil(fraction * n)``, at least 1."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not (isinstance(fraction, (int, float, np.floating)) and 0.0 < float(fraction) <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    # round() first so that 0.1 * 300 = 30.000000000000004 gives 30, not 31.
    return max(1, int(math.ceil(round(float(fraction) * int(n), 9))))


def validate_scores(scores: Any, target_names: Optional[Sequence[str]] = None) -> np.ndarray:
    """Check ``scores`` is a finite float ``[n_samples, n_targets]`` array matching ``target_names``.

    Returns the array itself (a memmap stays a memmap). Raises ``TypeError``/``ValueError`` naming the problem.
    """
    if not isinstance(scores, np.ndarray):
        raise TypeError(f"scores must be a numpy array [n_samples, n_targets], got {type(scores).__name__}")
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D [n_samples, n_targets], got shape {tuple(scores.shape)}")
    if not np.issubdtype(scores.dtype, np.floating):
        raise TypeError(f"scores must have a floating dtype, got {scores.dtype}")
    n, t = scores.shape
    if n < 1 or t < 1:
        raise ValueError(f"scores must have at least one sample and one target, got shape {tuple(scores.shape)}")
    if target_names is not None:
        names = list(target_names)
        if len(names) != t:
            raise ValueError(f"target_names has {len(names)} names but scores has {t} columns (shape {scores.shape})")
        if len(set(names)) != len(names):
            raise ValueError(f"target_names must be unique, got {names}")
    bad = ~np.isfinite(scores)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(
            f"scores contains {int(bad.sum())} non-finite values (NaN/inf); first at sample row {int(rows[0])}, "
            f"target column {int(cols[0])}"
        )
    return scores


def check_vector(name: str, a: Any, n: int, kind: str) -> np.ndarray:
    """``a`` as a 1-D array of length ``n`` with an integer (``kind="int"``) or numeric (``"float"``) dtype."""
    arr = np.asarray(a)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with length n_samples={n}, got shape {tuple(arr.shape)}")
    if kind == "int" and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {arr.dtype}")
    if kind == "float":
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"{name} must be numeric, got {arr.dtype}")
    return arr


def check_categories(
    fractions: Any, names: Optional[Sequence[str]], global_index: np.ndarray
) -> tuple[np.ndarray, List[str]]:
    """The category fractions of the scored rows ``fractions[global_index]`` (validated) and the names."""
    fr = np.asarray(fractions)
    if fr.ndim != 2:
        raise ValueError(f"category fractions must be 2-D [n_rows, n_categories], got shape {tuple(fr.shape)}")
    if not np.issubdtype(fr.dtype, np.floating):
        raise TypeError(f"category fractions must have a floating dtype, got {fr.dtype}")
    if names is None:
        raise ValueError("category_names is required when category_fractions is given")
    names = [str(x) for x in names]
    if len(names) != fr.shape[1]:
        raise ValueError(f"category_names has {len(names)} names but fractions has {fr.shape[1]} columns")
    if len(set(names)) != len(names):
        raise ValueError(f"category_names must be unique, got {names}")
    if global_index.size and (global_index.min() < 0 or global_index.max() >= fr.shape[0]):
        raise ValueError(
            f"global_index range [{int(global_index.min())}, {int(global_index.max())}] is outside the category "
            f"sidecar's {fr.shape[0]} rows"
        )
    rows = np.asarray(fr[global_index], dtype=np.float64)
    if not np.isfinite(rows).all() or (rows < 0).any() or (rows > 1 + 1e-6).any():
        raise ValueError("category fractions of the scored samples must be finite and within [0, 1]")
    return rows, names


# ----------------------------------------------------------------------------------------------- statistics


def ranking(s: np.ndarray) -> np.ndarray:
    """Row indices of ``s`` (1-D) by descending score; ties keep row order."""
    s = np.asarray(s)
    if s.ndim != 1:
        raise ValueError(f"expected a 1-D score vector, got shape {tuple(s.shape)}")
    return np.argsort(-s.astype(np.float64), kind="stable")


def curve_points(n: int, max_points: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Sorted unique 1-based ranks, linear and log spaced, always containing 1 and n."""
    if n <= max_points:
        return np.arange(1, n + 1)
    lin = np.linspace(1, n, max_points // 2)
    log = np.geomspace(1, n, max_points // 2)
    return np.unique(np.concatenate([np.rint(lin), np.rint(log), [1, n]]).astype(np.int64))


def cumulative_influence(s: np.ndarray, fraction: float = 0.1, order: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Cumulative share of positive influence held by the top ranks of one target's scores.

    Returns ``top_share`` (share held by the top ``fraction``), ``k``, ``n_positive``, ``total_positive`` and the
    curve ``rank_fraction`` (rank / n) against ``share``, downsampled to at most ~1000 points. ``top_share`` is
    ``None`` when no score is positive.
    """
    s = np.asarray(s, dtype=np.float64)
    n = s.shape[0]
    k = top_count(n, fraction)
    if order is None:
        order = ranking(s)
    pos = np.maximum(s[order], 0.0)
    total = float(pos.sum())
    n_pos = int((s > 0).sum())
    ranks = curve_points(n)
    if total > 0:
        cum = np.cumsum(pos) / total
        top_share: Optional[float] = float(cum[k - 1])
        share = cum[ranks - 1]
    else:
        top_share = None
        share = np.zeros(ranks.shape[0])
    return {
        "fraction": float(fraction),
        "k": k,
        "top_share": top_share,
        "n_positive": n_pos,
        "total_positive": total,
        "rank_fraction": (ranks / n).tolist(),
        "share": share.tolist(),
    }


def power_law_fit(
    s: np.ndarray, *, min_rank: int = 1, max_rank: Optional[int] = None, order: Optional[np.ndarray] = None
) -> Dict[str, Any]:
    """Least-squares fit of ``log score = log C - exponent · log rank`` over the positive scores.

    Ranks are 1-based in descending order; the fit uses ranks ``min_rank..max_rank`` (``max_rank`` defaults to
    the number of positive scores and is clipped to it). Returns ``exponent``, ``log10_c``, ``r2``,
    ``min_rank``, ``max_rank``, ``n_points`` and log-spaced ``ranks``/``scores`` of the whole positive tail
    for plotting. Raises ``ValueError`` when fewer than 3 positive scores fall in the range.
    """
    s = np.asarray(s, dtype=np.float64)
    if order is None:
        order = ranking(s)
    sorted_s = s[order]
    n_pos = int((sorted_s > 0).sum())
    if not isinstance(min_rank, (int, np.integer)) or min_rank < 1:
        raise ValueError(f"min_rank must be an integer >= 1, got {min_rank!r}")
    hi = n_pos if max_rank is None else min(int(max_rank), n_pos)
    if hi - min_rank + 1 < 3:
        raise ValueError(
            f"power-law fit needs at least 3 positive scores in ranks {min_rank}..{max_rank or n_pos}; "
            f"there are {n_pos} positive scores"
        )
    r = np.arange(min_rank, hi + 1, dtype=np.float64)
    x = np.log(r)
    y = np.log(sorted_s[min_rank - 1 : hi])
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    syy = float(((y - ym) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / syy if syy > 0 else 1.0
    pts = curve_points(n_pos, 400)
    return {
        "exponent": -slope,
        "log10_c": intercept / math.log(10.0),
        "r2": r2,
        "min_rank": int(min_rank),
        "max_rank": int(hi),
        "n_points": int(hi - min_rank + 1),
        "n_positive": n_pos,
        "ranks": pts.tolist(),
        "scores": sorted_s[pts - 1].tolist(),
    }


def score_stats(s: np.ndarray) -> Dict[str, Any]:
    """Mean, std, min, max and the counts of positive and negative scores of one target."""
    s = np.asarray(s, dtype=np.float64)
    return {
        "mean": float(s.mean()),
        "std": float(s.std()),
        "min": float(s.min()),
        "max": float(s.max()),
        "n_positive": int((s > 0).sum()),
        "n_negative": int((s < 0).sum()),
    }


def category_enrichment(
    top_idx: np.ndarray, category_rows: np.ndarray, category_names: Sequence[str]
) -> Dict[str, Dict[str, Optional[float]]]:
    """Each category's token-fraction-weighted share in the top set against its base rate over all samples.

    ``category_rows`` is ``[n_samples, n_categories]``: the fractions of each scored sample's tokens in each
    category. ``top_share`` is the mean fraction over the rows ``top_idx``, ``base_share`` the mean over all rows,
    ``ratio = top_share / base_share`` (``None`` when the base share is 0).
    """
    rows = np.asarray(category_rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(category_names):
        raise ValueError(f"category_rows must be [n_samples, {len(category_names)}], got shape {tuple(rows.shape)}")
    idx = np.asarray(top_idx)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError("top_idx must be a non-empty 1-D index array")
    top = rows[idx].mean(axis=0)
    base = rows.mean(axis=0)
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for c, name in enumerate(category_names):
        out[name] = {
            "top_share": float(top[c]),
            "base_share": float(base[c]),
            "ratio": float(top[c] / base[c]) if base[c] > 0 else None,
        }
    return out


def _boot_means(rows: np.ndarray, n_boot: int, rng: np.random.Generator, block: int = 64) -> np.ndarray:
    """``[n_boot, n_categories]``: the mean of ``rows`` over ``n_boot`` resamples with replacement."""
    k = rows.shape[0]
    out = np.empty((n_boot, rows.shape[1]))
    for b0 in range(0, n_boot, block):
        b1 = min(n_boot, b0 + block)
        w = np.stack([np.bincount(rng.integers(0, k, size=k), minlength=k) for _ in range(b1 - b0)]).astype(np.float64)
        out[b0:b1] = w @ rows / k
    return out


def enrichment_intervals(
    rows: np.ndarray,
    sets: Dict[str, np.ndarray],
    base_idx: np.ndarray,
    category_names: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    resample_base: bool = True,
) -> Dict[str, Dict[str, Any]]:
    """Each category's share in each set of ``sets`` (``{"top": idx, "bottom": idx}``) against its base rate over
    ``base_idx``, with a percentile bootstrap interval of every ratio.

    ``rows`` ``[n, n_categories]`` are the fractions of each row's tokens per category (float64, finite on every
    indexed row). Per category: ``base_share`` and, for each set ``s``, ``s_share``, ``s_ratio = s_share /
    base_share`` (``None`` when the base share is 0) and ``s_ratio_95`` ``[lo, hi]``: the ``(1-level)/2`` and
    ``(1+level)/2`` quantiles of the ratio over ``n_boot`` resamples, each set and the base rows resampled
    independently with replacement (seeded); with ``resample_base=False`` the base rate is taken as exact (the base
    rows are the whole population, e.g. every row of the window) and only the sets are resampled. The set ``"top"`` also appears under the names ``top_share`` and
    ``ratio`` of :func:`category_enrichment`.
    """
    rows = np.asarray(rows, dtype=np.float64)
    names = [str(c) for c in category_names]
    if rows.ndim != 2 or rows.shape[1] != len(names):
        raise ValueError(f"rows must be [n, {len(names)}], got shape {tuple(rows.shape)}")
    rng = np.random.default_rng([seed, 0xB007])
    base_rows = rows[np.asarray(base_idx)]
    if base_rows.shape[0] == 0 or not np.isfinite(base_rows).all():
        raise ValueError("base_idx must index a non-empty set of classified (finite) rows")
    base = base_rows.mean(axis=0)
    base_b = _boot_means(base_rows, n_boot, rng) if resample_base else np.broadcast_to(base, (n_boot, base.size))
    q = [(1 - level) / 2, (1 + level) / 2]
    out: Dict[str, Dict[str, Any]] = {c: {"base_share": float(base[j]), "n_base": int(base_rows.shape[0])}
                                      for j, c in enumerate(names)}  # fmt: skip
    for sname, idx in sets.items():
        srows = rows[np.asarray(idx)]
        if srows.shape[0] == 0 or not np.isfinite(srows).all():
            raise ValueError(f"set {sname!r} must index a non-empty set of classified (finite) rows")
        share = srows.mean(axis=0)
        share_b = _boot_means(srows, n_boot, rng)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_b = share_b / base_b
        for j, c in enumerate(names):
            e = out[c]
            e[f"{sname}_share"] = float(share[j])
            e[f"n_{sname}"] = int(srows.shape[0])
            if base[j] > 0:
                e[f"{sname}_ratio"] = float(share[j] / base[j])
                # inf where a resampled base is 0 (an unbounded upper end); 0/0 resamples are left out
                lo, hi = np.nanquantile(ratio_b[:, j], q, method="inverted_cdf")
                e[f"{sname}_ratio_95"] = [float(lo), float(hi)]
            else:
                e[f"{sname}_ratio"] = None
                e[f"{sname}_ratio_95"] = None
    for e in out.values():
        if "top_share" in e:
            e["ratio"] = e["top_ratio"]
    return out


def top_sets(scores: np.ndarray, k: int) -> List[np.ndarray]:
    """The row indices of each target's ``k`` highest scores (descending, ties by row order)."""
    scores = validate_scores(scores)
    n = scores.shape[0]
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, n_samples={n}], got {k!r}")
    return [ranking(np.asarray(scores[:, j]))[:k] for j in range(scores.shape[1])]


def jaccard_matrix(scores: np.ndarray, k: int) -> np.ndarray:
    """``[n_targets, n_targets]`` Jaccard overlap ``|A∩B| / |A∪B|`` of the targets' top-``k`` sets."""
    return jaccard_of_sets(top_sets(scores, k))


def jaccard_of_sets(sets: Sequence[np.ndarray]) -> np.ndarray:
    """``[t, t]`` Jaccard overlap of ``t`` index sets (each without repeats)."""
    t = len(sets)
    m = np.eye(t)
    for i in range(t):
        for j in range(i + 1, t):
            inter = np.intersect1d(sets[i], sets[j], assume_unique=True).size
            m[i, j] = m[j, i] = inter / (sets[i].size + sets[j].size - inter)
    return m


def influence_per_step(scores: np.ndarray, step: np.ndarray) -> Dict[str, Any]:
    """Sum and mean of each target's scores per training step.

    Returns ``steps`` (sorted unique), ``count`` per step, and ``sum``/``mean`` as ``[n_steps, n_targets]`` arrays.
    """
    scores = validate_scores(scores)
    st = check_vector("step", step, scores.shape[0], "int")
    steps, inv, count = np.unique(st, return_inverse=True, return_counts=True)
    sums = np.zeros((steps.shape[0], scores.shape[1]), dtype=np.float64)
    np.add.at(sums, inv, np.asarray(scores, dtype=np.float64))
    return {"steps": steps, "count": count, "sum": sums, "mean": sums / count[:, None]}


def pearson(x: Any, y: Any) -> Optional[float]:
    """Pearson correlation of two equal-length 1-D arrays; ``None`` when undefined (n < 2 or zero variance)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"pearson needs two 1-D arrays of equal length, got shapes {a.shape} and {b.shape}")
    if a.size < 2:
        return None
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else None


def spearman(a: Any, b: Any) -> Optional[float]:
    """Spearman's rank correlation (average ranks for ties): :func:`pearson` of the ranks; ``None`` when
    undefined."""

    def ranks(x):
        o = np.argsort(x, kind="stable")
        r = np.empty(x.size, dtype=np.float64)
        r[o] = np.arange(x.size, dtype=np.float64)
        _, inv, cnt = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return sums[inv] / cnt[inv]

    return pearson(ranks(np.asarray(a, np.float64)), ranks(np.asarray(b, np.float64)))

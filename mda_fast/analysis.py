"""Influence statistics over a scores matrix ``[n_samples, n_targets]`` (pure numpy).

Conventions used throughout:

* The *top set* of a target is its ``k`` highest-scoring samples, ``k = top_count(n_samples, fraction)``;
  ties are broken by row order (stable sort), so results are deterministic.
* *Positive influence* is ``max(score, 0)``. The top share is the positive influence held by the top set
  divided by the positive influence of all scored samples.
* A power law ``score ≈ C · rank^(-exponent)`` is fitted by least squares on ``log(score)`` against
  ``log(rank)`` over the positive scores with ranks ``min_rank..max_rank`` (1-based, descending order).

Everything :func:`analyze` returns is JSON-serialisable (NaN and infinities become ``None``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "top_count",
    "validate_scores",
    "ranking",
    "cumulative_influence",
    "power_law_fit",
    "category_enrichment",
    "top_sets",
    "jaccard_matrix",
    "influence_per_step",
    "top_bottom_table",
    "write_table_csv",
    "read_table_csv",
    "analyze",
    "pearson",
    "summarize_interventions",
]

_MAX_CURVE_POINTS = 1000


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


def _check_vector(name: str, a: Any, n: int, kind: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with length n_samples={n}, got shape {tuple(arr.shape)}")
    if kind == "int" and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {arr.dtype}")
    if kind == "float":
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"{name} must be numeric, got {arr.dtype}")
    return arr


def _check_categories(
    fractions: Any, names: Optional[Sequence[str]], global_index: np.ndarray
) -> tuple[np.ndarray, List[str]]:
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


def _curve_points(n: int, max_points: int = _MAX_CURVE_POINTS) -> np.ndarray:
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
    ranks = _curve_points(n)
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
    pts = _curve_points(n_pos, 400)
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
        raise ValueError(
            f"category_rows must be [n_samples, {len(category_names)}], got shape {tuple(rows.shape)}"
        )
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


def top_sets(scores: np.ndarray, k: int) -> List[np.ndarray]:
    """The row indices of each target's ``k`` highest scores (descending, ties by row order)."""
    scores = validate_scores(scores)
    n = scores.shape[0]
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, n_samples={n}], got {k!r}")
    return [ranking(np.asarray(scores[:, j]))[:k] for j in range(scores.shape[1])]


def jaccard_matrix(scores: np.ndarray, k: int) -> np.ndarray:
    """``[n_targets, n_targets]`` Jaccard overlap ``|A∩B| / |A∪B|`` of the targets' top-``k`` sets."""
    return _jaccard(top_sets(scores, k))


def _jaccard(sets: Sequence[np.ndarray]) -> np.ndarray:
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
    st = _check_vector("step", step, scores.shape[0], "int")
    steps, inv, count = np.unique(st, return_inverse=True, return_counts=True)
    sums = np.zeros((steps.shape[0], scores.shape[1]), dtype=np.float64)
    np.add.at(sums, inv, np.asarray(scores, dtype=np.float64))
    return {"steps": steps, "count": count, "sum": sums, "mean": sums / count[:, None]}


# ----------------------------------------------------------------------------------------------- top table


def top_bottom_table(
    scores: np.ndarray,
    target_names: Sequence[str],
    *,
    global_index: np.ndarray,
    step: np.ndarray,
    position: np.ndarray,
    k: int,
    loss: Optional[np.ndarray] = None,
    category_rows: Optional[np.ndarray] = None,
    category_names: Optional[Sequence[str]] = None,
    row_tokens: Optional[Callable[[int], Sequence[int]]] = None,
    decode: Optional[Callable[[Sequence[int]], str]] = None,
    snippet_tokens: int = 64,
    progress: bool = True,
) -> List[Dict[str, Any]]:
    """Rows of the top-``k`` and bottom-``k`` samples of every target.

    Each row: ``target``, ``kind`` (``"top"``/``"bottom"``), ``rank`` (1 = highest for top, 1 = lowest for
    bottom), ``global_index``, ``step``, ``position``, ``score``, ``loss`` (``None`` without losses), ``text``
    (the decoded first ``snippet_tokens`` tokens of ``row_tokens(global_index)``, ``None`` without a decoder)
    and one ``frac_<category>`` column per category.
    """
    scores = validate_scores(scores, target_names)
    n = scores.shape[0]
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"table k must be an integer in [1, n_samples={n}], got {k!r}")
    if (row_tokens is None) != (decode is None):
        raise ValueError("row_tokens and decode must be given together (both or neither)")
    if not isinstance(snippet_tokens, (int, np.integer)) or snippet_tokens < 1:
        raise ValueError(f"snippet_tokens must be a positive integer, got {snippet_tokens!r}")
    gi = _check_vector("global_index", global_index, n, "int")
    st = _check_vector("step", step, n, "int")
    po = _check_vector("position", position, n, "int")
    lo = None if loss is None else _check_vector("loss", loss, n, "float")
    cats = list(category_names or [])
    if category_rows is not None and np.asarray(category_rows).shape != (n, len(cats)):
        raise ValueError(f"category_rows must be [n_samples={n}, {len(cats)}], got {np.shape(category_rows)}")

    picks = []
    for j, name in enumerate(target_names):
        order = ranking(np.asarray(scores[:, j]))
        picks += [(j, name, "top", r + 1, int(i)) for r, i in enumerate(order[:k])]
        picks += [(j, name, "bottom", r + 1, int(i)) for r, i in enumerate(order[::-1][:k])]

    texts: Dict[int, str] = {}
    if decode is not None:
        need = sorted({int(gi[i]) for *_, i in picks})
        it = need
        if progress and len(need) > 1000:
            from tqdm.auto import tqdm

            it = tqdm(need, desc="decode top/bottom", unit="sample")
        for g in it:
            toks = list(row_tokens(g))[:snippet_tokens]  # type: ignore[misc]
            texts[g] = decode(toks)

    rows = []
    for j, name, kind, rank, i in picks:
        row: Dict[str, Any] = {
            "target": name,
            "kind": kind,
            "rank": rank,
            "global_index": int(gi[i]),
            "step": int(st[i]),
            "position": int(po[i]),
            "score": float(scores[i, j]),
            "loss": None if lo is None else float(lo[i]),
            "text": texts.get(int(gi[i])) if decode is not None else None,
        }
        for c, cname in enumerate(cats):
            row[f"frac_{cname}"] = float(category_rows[i, c])  # type: ignore[index]
        rows.append(row)
    return rows


_INT_COLS = ("rank", "global_index", "step", "position")
_FLOAT_COLS = ("score", "loss")


def write_table_csv(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    """Write table rows to ``path`` (CSV, header from the first row; ``None`` is an empty cell), atomically."""
    if not rows:
        raise ValueError("no rows to write")
    fields = list(rows[0].keys())
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({key: ("" if r.get(key) is None else r.get(key)) for key in fields})
    os.replace(tmp, path)


def read_table_csv(path: str) -> List[Dict[str, Any]]:
    """Read a table written by :func:`write_table_csv`, restoring numeric types (empty cells become ``None``)."""
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row: Dict[str, Any] = {}
            for key, v in r.items():
                if v == "":
                    row[key] = None
                elif key in _INT_COLS:
                    row[key] = int(v)
                elif key in _FLOAT_COLS or key.startswith("frac_"):
                    row[key] = float(v)
                else:
                    row[key] = v
            out.append(row)
    return out


# ----------------------------------------------------------------------------------------------- analyze


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    return x


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
    ``top_fraction`` of samples). ``category_fractions`` ``[n_rows, n_categories]`` is indexed by global index.

    Returns a JSON-serialisable dict: ``n_samples``, ``targets``, ``primary_target`` (the first target),
    ``top_share`` (the share held by the top ``top_fraction``, beside it) and ``category_enrichment`` (category → ratio) of the primary target, ``per_target``
    (cumulative curve, power-law fit, enrichment, score summary), ``jaccard``, ``per_step`` and ``files``.
    """
    scores = validate_scores(scores, target_names)
    names = [str(x) for x in target_names]
    n, t = scores.shape
    gi = _check_vector("global_index", global_index, n, "int")
    st = _check_vector("step", step, n, "int")
    po = _check_vector("position", position, n, "int")
    lo = None if loss is None else _check_vector("loss", loss, n, "float")
    if lo is not None and not np.isfinite(lo).all():
        raise ValueError("loss contains non-finite values")
    if np.unique(gi).shape[0] != n:
        raise ValueError("global_index contains duplicates: every scored sample must appear exactly once")
    k_top = top_count(n, top_fraction)
    if k is None:
        k = k_top
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, n_samples={n}], got {k!r}")
    table_k = k if table_k is None else table_k
    if not isinstance(table_k, (int, np.integer)) or not 1 <= table_k <= n:
        raise ValueError(f"table_k must be an integer in [1, n_samples={n}], got {table_k!r}")
    fit_max_rank = k_top if fit_max_rank is None else fit_max_rank
    cat_rows: Optional[np.ndarray] = None
    cat_names: List[str] = []
    if category_fractions is not None:
        cat_rows, cat_names = _check_categories(category_fractions, category_names, gi)
    elif category_names is not None:
        raise ValueError("category_names given without category_fractions")

    per_target: Dict[str, Any] = {}
    orders = []
    for j, name in enumerate(names):
        s = np.asarray(scores[:, j], dtype=np.float64)
        order = ranking(s)
        orders.append(order)
        entry: Dict[str, Any] = {
            "cumulative": cumulative_influence(s, top_fraction, order=order),
            "score_stats": {
                "mean": float(s.mean()),
                "std": float(s.std()),
                "min": float(s.min()),
                "max": float(s.max()),
                "n_positive": int((s > 0).sum()),
                "n_negative": int((s < 0).sum()),
            },
        }
        try:
            entry["power_law"] = power_law_fit(s, max_rank=fit_max_rank, order=order)
        except ValueError as e:
            entry["power_law"] = {"error": str(e)}
        if lo is not None and s.std() > 0 and lo.std() > 0:
            entry["score_loss_pearson"] = float(np.corrcoef(s, lo.astype(np.float64))[0, 1])
        if cat_rows is not None:
            entry["category_enrichment"] = category_enrichment(order[:k_top], cat_rows, cat_names)
        per_target[name] = entry

    jac = _jaccard([o[:k] for o in orders])
    ps = influence_per_step(scores, st)

    primary = names[0]
    result: Dict[str, Any] = {
        "n_samples": n,
        "n_targets": t,
        "targets": names,
        "top_fraction": float(top_fraction),
        "k_top": k_top,
        "k": int(k),
        "table_k": int(table_k),
        "primary_target": primary,
        "top_share": per_target[primary]["cumulative"]["top_share"],
        "categories": cat_names,
        "per_target": per_target,
        "jaccard": {"targets": names, "k": int(k), "matrix": jac},
        "per_step": {
            "steps": ps["steps"],
            "count": ps["count"],
            "sum": {name: ps["sum"][:, j] for j, name in enumerate(names)},
            "mean": {name: ps["mean"][:, j] for j, name in enumerate(names)},
        },
        "files": {},
    }
    if cat_rows is not None:
        result["category_enrichment"] = {
            c: v["ratio"] for c, v in per_target[primary]["category_enrichment"].items()
        }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        rows = top_bottom_table(
            scores,
            names,
            global_index=gi,
            step=st,
            position=po,
            k=int(table_k),
            loss=lo,
            category_rows=cat_rows,
            category_names=cat_names,
            row_tokens=row_tokens,
            decode=decode,
            snippet_tokens=snippet_tokens,
            progress=progress,
        )
        top_path = os.path.join(out_dir, "top.csv")
        write_table_csv(rows, top_path)
        json_path = os.path.join(out_dir, "analysis.json")
        result["files"] = {"top_csv": top_path, "analysis_json": json_path}
        result = _jsonable(result)
        tmp = json_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, json_path)
        return result
    return _jsonable(result)


# ----------------------------------------------------------------------------------------------- interventions


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


_SEED_KEYS = ("steps", "head_score", "icl")


def summarize_interventions(data: Mapping[str, Any], baseline: str = "baseline") -> Dict[str, Any]:
    """Validate intervention curves and derive per-arm figures.

    ``data = {"arms": {arm: {"seeds": {seed: {"steps", "head_score", "icl", "loss", "emergence_step"}}}},
    "threshold": float}``; ``loss`` and ``emergence_step`` are optional per seed. Returns, per arm:
    ``n_seeds``, ``emergence_steps`` (seed → step or ``None`` = never crossed), ``n_reached``,
    ``emergence_mean``/``emergence_std`` over the seeds that crossed, ``emergence_delta`` (mean minus the
    ``baseline`` arm's mean), ``final_head_score`` and ``final_icl`` (mean over seeds of the last checkpoint);
    plus ``score_icl_pearson`` over every checkpoint of every distinct run, and ``n_points``. An arm marked
    ``deterministic`` was trained once (its seeds repeat one run): it counts as one run everywhere.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("arms"), Mapping) or not data["arms"]:
        raise ValueError("interventions data must be a dict with a non-empty 'arms' dict")
    xs, ys = [], []
    arms: Dict[str, Any] = {}
    for arm, a in data["arms"].items():
        seeds = a.get("seeds") if isinstance(a, Mapping) else None
        if not isinstance(seeds, Mapping) or not seeds:
            raise ValueError(f"arm {arm!r} must have a non-empty 'seeds' dict")
        em: Dict[str, Optional[int]] = {}
        finals_s, finals_i = [], []
        if a.get("deterministic"):  # a seed-free arm was trained once; its other seeds are copies of that run
            seeds = dict(list(seeds.items())[:1])
        for seed, d in seeds.items():
            missing = [key for key in _SEED_KEYS if key not in d]
            if missing:
                raise ValueError(f"arm {arm!r} seed {seed!r} is missing {missing}")
            cols = {key: np.asarray(d[key], dtype=np.float64) for key in _SEED_KEYS + (("loss",) if "loss" in d else ())}
            n = cols["steps"].shape
            for key, v in cols.items():
                if v.ndim != 1 or v.shape != n or v.size == 0:
                    raise ValueError(
                        f"arm {arm!r} seed {seed!r}: {key!r} has shape {v.shape}, expected steps' shape {n} (non-empty)"
                    )
                if not np.isfinite(v).all():
                    raise ValueError(f"arm {arm!r} seed {seed!r}: {key!r} contains non-finite values")
            xs.append(cols["head_score"])
            ys.append(cols["icl"])
            finals_s.append(cols["head_score"][-1])
            finals_i.append(cols["icl"][-1])
            e = d.get("emergence_step")
            em[str(seed)] = None if e is None else int(e)
        reached = [v for v in em.values() if v is not None]
        arms[str(arm)] = {
            "deterministic": bool(a.get("deterministic")),
            "n_seeds": len(em),
            "emergence_steps": em,
            "n_reached": len(reached),
            "emergence_mean": float(np.mean(reached)) if reached else None,
            "emergence_std": float(np.std(reached)) if reached else None,
            "final_head_score": float(np.mean(finals_s)),
            "final_icl": float(np.mean(finals_i)),
        }
    base = arms.get(baseline, {}).get("emergence_mean")
    for v in arms.values():
        v["emergence_delta"] = None if base is None or v["emergence_mean"] is None else v["emergence_mean"] - base
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    thr = data.get("threshold")
    return {
        "threshold": None if thr is None else float(thr),
        "baseline": baseline if baseline in arms else None,
        "arms": arms,
        "score_icl_pearson": pearson(x, y),
        "n_points": int(x.size),
    }

"""Where inside the top rows the influence sits: per-token influence aggregated by token kind (pure numpy).

A loss token ``t`` of a row (the prediction of ``x_{t+1}`` from ``x_{≤t}``) is an *induction position* when
plain induction predicts it: ``x_t`` occurred earlier and ``x_{t+1}`` is the token that followed its last earlier
occurrence, i.e. ``t`` lies inside the second occurrence of a repeated span (the positions that
:func:`mda_fast.core.text_probes.induction_hits` counts as hits). The same index ``t`` is the position of the
head's computation in the position decomposition.

:func:`induction_share` compares the share of the rows' positive influence that sits on induction positions with
the share of positions that are induction positions (their base rate): a ratio above 1 means the influence
concentrates where induction is used.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from ..core.text_probes import induction_text_targets

__all__ = ["induction_positions", "induction_share", "share_by_category"]


def induction_positions(row: Sequence[int]) -> np.ndarray:
    """``[T]`` bool over the loss tokens of a row of ``T + 1`` tokens: True where induction predicts the label."""
    x = np.asarray(row, dtype=np.int64)
    if x.ndim != 1 or x.shape[0] < 2:
        raise ValueError(f"row must be 1-D with at least 2 tokens, got shape {x.shape}")
    pos, tgt = (a.numpy() for a in induction_text_targets(x))
    keep = pos < x.shape[0] - 1
    pos, tgt = pos[keep], tgt[keep]
    out = np.zeros(x.shape[0] - 1, dtype=bool)
    out[pos[x[pos + 1] == tgt]] = True
    return out


def _share(values: np.ndarray, mask: np.ndarray) -> Dict[str, Any]:
    pos = np.clip(values.astype(np.float64), 0, None)
    total = float(pos.sum())
    n = int(mask.size)
    on = float(pos[mask].sum())
    base = float(mask.sum()) / n if n else float("nan")
    share = on / total if total > 0 else float("nan")
    return {
        "positive_share_on_induction": share,
        "induction_position_share": base,
        "ratio": share / base if total > 0 and base > 0 else float("nan"),
        "positive_total": total,
        "net_on_induction": float(values[mask].sum()),
        "net_elsewhere": float(values[~mask].sum()),
        "n_positions": n,
        "n_induction_positions": int(mask.sum()),
    }


def induction_share(values: np.ndarray, rows: np.ndarray) -> Dict[str, Any]:
    """Share of the positive per-token influence ``values [n, T]`` of rows ``rows [n, T + 1]`` on induction
    positions, against the share of such positions; also the net influence on and off them."""
    values, rows = np.asarray(values), np.asarray(rows)
    if values.ndim != 2 or rows.shape != (values.shape[0], values.shape[1] + 1):
        raise ValueError(f"values must be [n, T] and rows [n, T + 1], got {values.shape} and {rows.shape}")
    mask = np.stack([induction_positions(r) for r in rows]) if len(rows) else np.zeros(values.shape, bool)
    return _share(values, mask)


def share_by_category(
    values: np.ndarray, rows: np.ndarray, categories: Optional[Sequence[str]]
) -> Optional[Dict[str, Dict[str, Any]]]:
    """:func:`induction_share` per row category (each row's dominant category); ``None`` without categories."""
    if categories is None:
        return None
    cats = np.asarray(list(categories))
    return {str(c): induction_share(values[cats == c], rows[cats == c]) for c in sorted(set(cats.tolist()))}

"""The top/bottom sample table of a scores matrix and its CSV file (``top.csv``)."""

from __future__ import annotations

import csv
import io
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..io import atomic_file
from .stats import check_vector, ranking, validate_scores

__all__ = ["top_bottom_table", "write_table_csv", "read_table_csv"]


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
    _check_table_args(n, k, row_tokens, decode, snippet_tokens)
    gi = check_vector("global_index", global_index, n, "int")
    st = check_vector("step", step, n, "int")
    po = check_vector("position", position, n, "int")
    lo = None if loss is None else check_vector("loss", loss, n, "float")
    cats = list(category_names or [])
    if category_rows is not None and np.asarray(category_rows).shape != (n, len(cats)):
        raise ValueError(f"category_rows must be [n_samples={n}, {len(cats)}], got {np.shape(category_rows)}")

    picks = _picks(scores, target_names, k)
    texts: Dict[int, str] = {}
    if decode is not None:
        texts = _decode_rows(sorted({int(gi[i]) for *_, i in picks}), row_tokens, decode, snippet_tokens, progress)

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


def _check_table_args(n: int, k, row_tokens, decode, snippet_tokens) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"table k must be an integer in [1, n_samples={n}], got {k!r}")
    if (row_tokens is None) != (decode is None):
        raise ValueError("row_tokens and decode must be given together (both or neither)")
    if not isinstance(snippet_tokens, (int, np.integer)) or snippet_tokens < 1:
        raise ValueError(f"snippet_tokens must be a positive integer, got {snippet_tokens!r}")


def _picks(scores: np.ndarray, target_names: Sequence[str], k: int) -> List[tuple]:
    """``(column, target, kind, rank, row)`` of each target's top ``k`` then bottom ``k`` rows."""
    picks = []
    for j, name in enumerate(target_names):
        order = ranking(np.asarray(scores[:, j]))
        picks += [(j, name, "top", r + 1, int(i)) for r, i in enumerate(order[:k])]
        picks += [(j, name, "bottom", r + 1, int(i)) for r, i in enumerate(order[::-1][:k])]
    return picks


def _decode_rows(need: List[int], row_tokens, decode, snippet_tokens: int, progress: bool) -> Dict[int, str]:
    """Global index -> the decoded first ``snippet_tokens`` tokens of that row."""
    it = need
    if progress and len(need) > 1000:
        from tqdm.auto import tqdm

        it = tqdm(need, desc="decode top/bottom", unit="sample")
    return {g: decode(list(row_tokens(g))[:snippet_tokens]) for g in it}


_INT_COLS = ("rank", "global_index", "step", "position")
_FLOAT_COLS = ("score", "loss")


def write_table_csv(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    """Write table rows to ``path`` (CSV, header from the first row; ``None`` is an empty cell), atomically."""
    if not rows:
        raise ValueError("no rows to write")
    fields = list(rows[0].keys())
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({key: ("" if r.get(key) is None else r.get(key)) for key in fields})
    with atomic_file(path, "wb") as f:
        f.write(buf.getvalue().encode("utf-8"))


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

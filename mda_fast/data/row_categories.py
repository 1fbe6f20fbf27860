"""Categories of token rows that carry none: split each row at EOD into its document pieces, decode each piece, classify
it by content (:func:`mda_fast.data.content.classify_text`, the classifier the file corpus uses too) and give the row
the fraction of its tokens in each category.

Conventions (the same as the corpus builder's sidecar): an EOD token counts toward the piece it ends; a piece made of
an EOD alone (a document that ended in the previous row, or an empty document) takes the category of the piece after
it (of the piece before it at the row's end; ``other`` when the row holds nothing else). Fractions of a row sum to 1.
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import numpy as np

from .content import CATEGORIES, classify_text

__all__ = ["split_at_eod", "row_fractions", "rows_fractions"]

_INDEX = {c: i for i, c in enumerate(CATEGORIES)}


def split_at_eod(row: np.ndarray, eod_id: int) -> List[Tuple[int, int]]:
    """``[(start, end)]`` of the row's pieces; each ends after its EOD (the last may end without one)."""
    ends = (np.flatnonzero(np.asarray(row) == eod_id) + 1).tolist()
    n = int(np.asarray(row).shape[0])
    if not ends or ends[-1] != n:
        ends.append(n)
    out, start = [], 0
    for e in ends:
        out.append((start, e))
        start = e
    return out


def row_fractions(row: np.ndarray, decode: Callable[[Sequence[int]], str], eod_id: int) -> np.ndarray:
    """float64 ``[len(CATEGORIES)]``: the share of the row's tokens in each category (see the module docstring)."""
    row = np.asarray(row)
    pieces = split_at_eod(row, eod_id)
    cats: List[int] = []
    for s, e in pieces:
        body = row[s:e]
        if body.size and body[-1] == eod_id:
            body = body[:-1]
        cats.append(_INDEX[classify_text(decode(body))[0]] if body.size else -1)
    known = [c for c in cats if c >= 0]
    if not known:
        cats = [_INDEX["other"]] * len(cats)
    else:
        nxt = -1
        for j in range(len(cats) - 1, -1, -1):  # an EOD-only piece: the next piece's category ...
            if cats[j] >= 0:
                nxt = cats[j]
            else:
                cats[j] = nxt
        prev = -1
        for j in range(len(cats)):  # ... or the previous one's at the row's end
            if cats[j] >= 0:
                prev = cats[j]
            else:
                cats[j] = prev
    out = np.zeros(len(CATEGORIES), dtype=np.float64)
    for (s, e), c in zip(pieces, cats):
        out[c] += e - s
    return out / max(row.shape[0], 1)


def rows_fractions(rows: np.ndarray, decode: Callable[[Sequence[int]], str], eod_id: int) -> np.ndarray:
    """float32 ``[n_rows, len(CATEGORIES)]`` for a block of rows ``[n_rows, seq_len]``."""
    rows = np.asarray(rows)
    out = np.zeros((rows.shape[0], len(CATEGORIES)), dtype=np.float32)
    for i in range(rows.shape[0]):
        out[i] = row_fractions(rows[i], decode, eod_id)
    return out

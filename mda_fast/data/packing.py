"""Packing tokenized documents into training rows, the Pythia way or row-aligned, and the rows' category shares."""

from __future__ import annotations

from typing import List

import numpy as np


def pack_documents(docs: List[np.ndarray], cats: List[int], seq_len: int, packing: str, eod: int, dtype):
    """(rows [n_rows, seq_len], category of every row token [n_rows * seq_len], start token of every document in
    the flattened rows, dropped_tokens, pad_tokens)."""
    S = seq_len
    if packing == "stream":
        sizes = np.array([d.size + 1 for d in docs], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        total = int(sizes.sum())
        n_rows = total // S
        stream = np.empty(total, dtype=dtype)
        for d, s in zip(docs, starts.tolist()):
            stream[s : s + d.size] = d
            stream[s + d.size] = eod
        labels = np.repeat(np.asarray(cats, dtype=np.int32), sizes)
        keep = n_rows * S
        return stream[:keep].reshape(n_rows, S), labels[:keep], starts, total - keep, 0
    lens = np.array([d.size + 1 for d in docs], dtype=np.int64)
    spans = -(-lens // S) * S
    starts = np.concatenate([[0], np.cumsum(spans)[:-1]]).astype(np.int64)
    total = int(spans.sum())
    flat = np.full(total, eod, dtype=dtype)
    for d, s in zip(docs, starts.tolist()):
        flat[s : s + d.size] = d
    labels = np.repeat(np.asarray(cats, dtype=np.int32), spans)
    return flat.reshape(total // S, S), labels, starts, 0, int((spans - lens).sum())


def row_fractions(labels: np.ndarray, n_rows: int, seq_len: int, n_cat: int) -> np.ndarray:
    out = np.zeros((n_rows, n_cat), dtype=np.float64)
    step = max(1, (1 << 24) // seq_len)  # rows per chunk: bounded temporary memory
    for r0 in range(0, n_rows, step):
        r1 = min(n_rows, r0 + step)
        lab = labels[r0 * seq_len : r1 * seq_len].astype(np.int64)
        row = np.repeat(np.arange(r1 - r0, dtype=np.int64), seq_len)
        out[r0:r1] = np.bincount(row * n_cat + lab, minlength=(r1 - r0) * n_cat).reshape(r1 - r0, n_cat)
    return (out / seq_len).astype(np.float32)

"""The top-k samples per target (``out/score/topk.json``), reduced across ranks without gathering the scores.

``k = study.stats.top_count(n_window, analyze.top_frac)``. The order is the analysis's: score descending, ties
broken by the lower global index. Each rank computes the top k of its own rows per target (``candidates``,
reading its memmap one column at a time); rank 0 joins the K lists (``combine``). Every element of the global top
k is in the top k of its own shard, so the join is exact: ``combine`` of the shards' candidates equals
``candidates`` of the merged scores (``python_tests/test_torchrun.py`` checks it).
"""

from __future__ import annotations

import os

import numpy as np

from ..io import read_json, score_dir, write_json

TOPK_FILE = "topk.json"


def candidates(scores: np.ndarray, global_index: np.ndarray, k: int) -> list[dict]:
    """Per target column: ``{"global_index": [...], "score": [...]}`` of the top ``k`` rows, best first."""
    g = np.asarray(global_index, dtype=np.int64)
    out = []
    for j in range(scores.shape[1]):
        s = np.asarray(scores[:, j], dtype=np.float64)
        order = np.lexsort((g, -s))[:k]
        out.append({"global_index": g[order].tolist(), "score": s[order].tolist()})
    return out


def combine(parts: list[list[dict]], k: int) -> list[dict]:
    """Join the per-shard candidate lists (one list of per-target dicts per shard) into the global top ``k``."""
    out = []
    for j in range(len(parts[0])):
        g = np.concatenate([np.asarray(p[j]["global_index"], dtype=np.int64) for p in parts])
        s = np.concatenate([np.asarray(p[j]["score"], dtype=np.float64) for p in parts])
        order = np.lexsort((g, -s))[:k]
        out.append({"global_index": g[order].tolist(), "score": s[order].tolist()})
    return out


def shard_candidates(out: str, shard: tuple[int, int] | None, k: int) -> list[dict]:
    """``candidates`` of the finished rows in ``score_dir(out, shard)`` (memory-mapped)."""
    d = score_dir(out, shard)
    scores = np.load(os.path.join(d, "scores.npy"), mmap_mode="r")
    gi = np.load(os.path.join(d, "global_index.npy"), mmap_mode="r")
    return candidates(scores, gi, k)


def write_topk(out: str, cands: list[dict], k: int, top_frac: float, n_window: int) -> str:
    names = read_json(os.path.join(score_dir(out), "targets.json"))["target_names"]
    path = os.path.join(score_dir(out), TOPK_FILE)
    write_json(
        path,
        {
            "k": k,
            "top_frac": top_frac,
            "n_window": n_window,
            "order": "score descending, ties by the lower global index",
            "targets": dict(zip(names, cands)),
        },
    )
    return path

"""Per-token influence of the top and bottom ``analyze.per_token_k`` rows of every target, into ``out/per_token/``.

Run by ``mda-fast analyze`` after the statistics. One file per target, ``<target>.npz`` (``global_index``,
``side`` 0 top / 1 bottom, ``rank``, the stored ``stored_score`` and the recomputed ``score``, ``position`` and
``loss_token`` ``[2k, T]``, the rows' ``tokens`` ``[2k, T+1]``, ``fingerprint``), each written atomically, and
``summary.json`` (per target: how exactly the decompositions sum to the stored scores, and where the top rows'
loss-token influence sits: on induction positions or not, by category). Resumable: a target whose file carries the
current fingerprint (the scores' fingerprint, k, the targets) is not recomputed.
"""

from __future__ import annotations

import io
import logging
import os
import re
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config
from ..errors import StateError
from ..io import atomic_file, fingerprint, read_json, write_json

logger = logging.getLogger(__name__)

PER_TOKEN_DIR = "per_token"
ARRAYS = ("global_index", "side", "rank", "stored_score", "score", "position", "loss_token", "tokens")


def target_file(out: str, name: str) -> str:
    """``out/per_token/<name>.npz`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``."""
    return os.path.join(out, PER_TOKEN_DIR, re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".npz")


def chosen_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window rows, side, rank) of the top ``k`` (side 0, by descending score) and bottom ``k`` (side 1, lowest
    first) of one target's scores; ``k`` is capped at the number of rows (the two ends may then share rows)."""
    from ..study.stats import ranking

    order = ranking(scores)
    k = min(int(k), order.shape[0])
    idx = np.concatenate([order[:k], order[::-1][:k]])
    side = np.repeat(np.array([0, 1], dtype=np.int8), k)
    rank = np.concatenate([np.arange(k), np.arange(k)])
    return idx, side, rank


def load_target(path: str) -> Dict[str, np.ndarray]:
    """One target's arrays (``StateError`` naming the file when it is damaged)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in (*ARRAYS, "fingerprint")}
    except (OSError, ValueError, KeyError) as e:
        raise StateError(f"{path} is damaged ({e}); re-run `mda-fast analyze`") from None


def _done(path: str, fp: str) -> bool:
    if not os.path.exists(path):
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["fingerprint"]) == fp and all(k in z for k in ARRAYS)
    except (OSError, ValueError, KeyError):
        return False


def _save(path: str, arrays: Dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_file(path, "wb") as fh:
        fh.write(buf.getvalue())


def open_scorer(cfg: Config, out: str):
    """The ``InfluenceScorer`` of ``out``'s targets and factors on ``cfg``'s model (what ``score`` ran)."""
    from ..core.ekfac import Factors
    from ..core.influence import InfluenceScorer
    from .inputs import load_model, load_targets, make_probes

    _, specs = load_targets(out)
    model = load_model(cfg)
    factors = Factors.load(os.path.join(out, "factors"), device=next(model.parameters()).device)
    return InfluenceScorer(
        model, specs, factors, probe=make_probes(cfg), backend=cfg.score.backend or None, tf32=cfg.score.tf32
    )


def _compute(scorer, data, name: str, gi: np.ndarray, batch: int, bar) -> Dict[str, np.ndarray]:
    dev = next(scorer.model.parameters()).device
    tokens = data.rows(gi).astype(np.int64)
    parts: Dict[str, List[np.ndarray]] = {"position": [], "loss_token": [], "score": []}
    for i in range(0, len(gi), batch):
        ids = torch.from_numpy(tokens[i : i + batch]).to(dev)
        r = scorer.per_token(ids, targets=[name])[name]
        for k in parts:
            parts[k].append(r[k].float().cpu().numpy())
        bar.update(len(ids))
    return {**{k: np.concatenate(v) for k, v in parts.items()}, "tokens": tokens}


def _row_categories(cfg: Config, gi: np.ndarray) -> Optional[List[str]]:
    from ..data.categories import load_category_sidecar

    side = load_category_sidecar(cfg.data.path)
    if side is None:
        return None
    fr, names = side
    return [names[int(j)] for j in np.asarray(fr)[gi].argmax(1)]


def summarize(arrays: Dict[str, np.ndarray], categories: Optional[List[str]]) -> Dict[str, Any]:
    """Exactness against the stored scores and where the top rows' influence sits (``study.per_token``)."""
    from ..study.per_token import induction_share, share_by_category

    stored = arrays["stored_score"].astype(np.float64)
    scale = max(float(np.abs(stored).max()), 1e-30)
    top = arrays["side"] == 0
    out: Dict[str, Any] = {
        "k": int(top.sum()),
        "max_rel_diff": {
            part: float(np.abs(arrays[part].astype(np.float64).sum(1) - stored).max() / scale)
            for part in ("position", "loss_token")
        },
        "recomputed_vs_stored": float(np.abs(arrays["score"].astype(np.float64) - stored).max() / scale),
    }
    for part in ("loss_token", "position"):
        out[f"top_{part}"] = induction_share(arrays[part][top], arrays["tokens"][top])
    cats = None if categories is None else [c for c, t in zip(categories, top) if t]
    out["top_loss_token_by_category"] = share_by_category(arrays["loss_token"][top], arrays["tokens"][top], cats)
    return out


def run_per_token(cfg: Config, out: str, progress: bool = True) -> Optional[Dict[str, Any]]:
    """Both decompositions for the top/bottom ``analyze.per_token_k`` rows of every target; ``None`` when k = 0.
    Returns ``summary.json``'s content (also written)."""
    from .inputs import open_data

    k = cfg.analyze.per_token_k
    if k == 0:
        return None
    d = os.path.join(out, "score")
    scores = np.load(os.path.join(d, "scores.npy"), mmap_mode="r")
    gi_all = np.load(os.path.join(d, "global_index.npy"), mmap_mode="r")
    names = read_json(os.path.join(d, "targets.json"))["target_names"]
    fp = fingerprint([read_json(os.path.join(d, "progress.json")).get("fingerprint"), k, list(names)])
    data = open_data(cfg)
    paths = {n: target_file(out, n) for n in names}
    todo = [n for n in names if not _done(paths[n], fp)]
    scorer = open_scorer(cfg, out) if todo else None
    if scorer is not None and scorer.target_names != list(names):
        raise StateError(f"per-token: the scorer's targets {scorer.target_names} differ from the scores' {names}")
    summary: Dict[str, Any] = {"k": int(k), "fingerprint": fp, "targets": {}, "files": {}}
    n_rows = 2 * min(k, scores.shape[0])
    with tqdm(total=n_rows * len(todo), desc="per-token", unit="seq", disable=not progress or not todo) as bar:
        for j, name in enumerate(names):
            idx, side, rank = chosen_rows(np.asarray(scores[:, j]), k)
            gi = np.asarray(gi_all[idx])
            if name in todo:
                arrays = _compute(scorer, data, name, gi, cfg.score.batch_size, bar)
                arrays.update(global_index=gi, side=side, rank=rank, stored_score=np.asarray(scores[idx, j]))
                _save(paths[name], {**arrays, "fingerprint": np.array(fp)})
            arrays = load_target(paths[name])
            summary["targets"][name] = summarize(arrays, _row_categories(cfg, arrays["global_index"]))
            summary["files"][name] = paths[name]
    write_json(os.path.join(out, PER_TOKEN_DIR, "summary.json"), summary)
    logger.info(
        f"[per-token] {len(todo)} of {len(names)} targets computed ({len(names) - len(todo)} resumed), "
        f"{n_rows} rows each, into {os.path.join(out, PER_TOKEN_DIR)}"
    )
    return summary

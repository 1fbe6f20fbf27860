"""The study's measurements beyond ``analyze``: category enrichment of the top and bottom sets with the spread of
random sets, the induction structure of the top and bottom rows, and the real-text ICL and induction-probe curve
over the base run's checkpoints."""

from __future__ import annotations

import os

import numpy as np

from ..config import Config
from ..io import read_json, write_json
from .stats import ranking, spearman, top_count


def enrichment_with_spread(out: str, cfg: Config) -> dict:
    """Category enrichment (share / base rate) of the top and bottom ``analyze.top_frac`` of the primary target's
    scores, each with the 2.5–97.5% range of the same ratio over ``study.random_sets`` uniformly random sets of
    the same size (what chance gives)."""
    from ..data.categories import load_category_sidecar
    from .stats import category_enrichment

    s, gi, order, k = _ranked_scores(out, cfg)
    fr, names = load_category_sidecar(cfg.data.path)
    rows = np.asarray(fr, np.float64)[gi]
    n = s.size
    rng = np.random.default_rng(cfg.study.shuffle_seed + 1)
    rand = np.stack([rows[rng.choice(n, k, replace=False)].mean(axis=0) for _ in range(cfg.study.random_sets)])
    base = rows.mean(axis=0)
    out_d = {"k": k, "n": n, "random_sets": cfg.study.random_sets, "categories": {}}
    top = category_enrichment(order[:k], rows, names)
    bot = category_enrichment(order[-k:], rows, names)
    for j, c in enumerate(names):
        if base[j] <= 0:
            continue
        lo, hi = np.quantile(rand[:, j] / base[j], [0.025, 0.975])
        out_d["categories"][c] = {
            "base_share": float(base[j]),
            "top_share": top[c]["top_share"],
            "top_ratio": top[c]["ratio"],
            "bottom_share": bot[c]["top_share"],
            "bottom_ratio": bot[c]["ratio"],
            "random_ratio_95": [float(lo), float(hi)],
        }
    return out_d


def induction_structure(out: str, cfg: Config) -> dict:
    """What separates the top rows from the bottom ones mechanistically: in each scored row, the share of its
    positions whose next token is the one that followed the last earlier occurrence of the current token
    (:func:`mda_fast.core.text_probes.induction_hits`: what an induction head predicts), averaged over the top and
    bottom ``analyze.top_frac`` of the primary target's scores and over all scored rows, with the 2.5–97.5% range
    over ``study.random_sets`` random sets of the same size and the rank correlation of the score with it."""
    from ..core.text_probes import induction_hits
    from ..data.pythia import PythiaBatches

    s, gi, order, k = _ranked_scores(out, cfg)
    rows = PythiaBatches(cfg.data.path, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len).rows(gi)
    counts = np.array([induction_hits(r) for r in rows], dtype=np.float64).reshape(-1, 2)
    rate = counts[:, 0] / np.maximum(counts[:, 1], 1.0)
    n = s.size
    rng = np.random.default_rng(cfg.study.shuffle_seed + 2)
    rand = np.array([rate[rng.choice(n, k, replace=False)].mean() for _ in range(cfg.study.random_sets)])
    lo, hi = np.quantile(rand, [0.025, 0.975])
    return {
        "k": k,
        "n": n,
        "top": float(rate[order[:k]].mean()),
        "bottom": float(rate[order[-k:]].mean()),
        "all": float(rate.mean()),
        "random_95": [float(lo), float(hi)],
        "spearman": spearman(s, rate),
    }


def _ranked_scores(out: str, cfg: Config):
    """The primary target's scores, their rows' global indices, the descending order (ties by row order) and
    the size of the top and bottom sets."""
    d = os.path.join(out, "score")
    s = np.asarray(np.load(os.path.join(d, "scores.npy"), mmap_mode="r")[:, 0], dtype=np.float64)
    gi = np.asarray(np.load(os.path.join(d, "global_index.npy"), mmap_mode="r"), dtype=np.int64)
    return s, gi, ranking(s), top_count(s.size, cfg.analyze.top_frac)


def icl_curve(cfg: Config, out: str, run_dir: str) -> dict:
    """Per base checkpoint: the real-text ICL score (:func:`mda_fast.core.text_probes.icl_score_text`) and the
    real-text induction probe's value on the last ``study.icl_rows`` held-out rows, and the best prefix-matching
    score (from the run's ``eval.jsonl``)."""
    import torch

    from ..core.model import load_model, run_dir_steps
    from ..core.text_probes import TextInductionProbe, icl_score_text
    from ..data.pythia import PythiaBatches
    from ..train import read_jsonl

    path = os.path.join(out, "study", "icl.json")
    b = PythiaBatches(cfg.data.path, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len)
    n = min(cfg.study.icl_rows, cfg.corpus.heldout_sequences)
    ix = np.arange(b.n_rows - n, b.n_rows)
    rows = torch.from_numpy(np.asarray(b.rows(ix)).astype(np.int64))
    steps = run_dir_steps(run_dir)
    done = read_json(path) if os.path.exists(path) else {"steps": [], "icl": [], "probe_f": []}
    if done["steps"] == steps:
        return done
    pm = {r["step"]: r.get("max_prefix_matching") for r in read_jsonl(os.path.join(run_dir, "eval.jsonl"))}
    probe = TextInductionProbe(rows=rows, exclude=(0,))
    res = {
        "steps": steps,
        "icl": [],
        "probe_f": [],
        "max_prefix_matching": [pm.get(s) for s in steps],
        "heldout_rows": [int(ix[0]), int(ix[-1])],
    }
    torch.manual_seed(0)
    for s in steps:
        model = load_model(os.path.join(run_dir, f"step{s}"))
        res["icl"].append(icl_score_text(model, rows, batch_size=16))
        with torch.no_grad():
            ids = probe.inputs(model)
            logits = model(input_ids=ids, use_cache=False).logits
            res["probe_f"].append(float(probe.objective(model, None, ids, logits, None).double().sum()))
    write_json(path, res)
    return res

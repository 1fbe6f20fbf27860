"""Attribution on one size (``fit`` + ``score`` of its induction head) and the motifs mined from the scores."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any, Dict

import numpy as np

from ..errors import ConfigError
from .cache import fingerprint
from .motifs import mine_motifs

__all__ = ["attribute", "mda_config", "influence_of_sets", "motifs_from_scores", "category_mix", "row_decoder"]


def mda_config(cfg, base: dict, data_path: str):
    """A copy of ``cfg`` set up for MDA on ``base``'s window (its model at the window end, the auto-chosen
    induction head as the only target)."""
    c = copy.deepcopy(cfg)
    c.model.run_dir, c.model.name, c.model.revision, c.model.device = _model_ref(cfg, base)
    c.data.path = data_path
    c.window.start_step, c.window.end_step = base["window"]
    c.targets.heads, c.targets.n_induction, c.targets.n_control = "auto", 1, 0
    return c


def attribute(cfg, base: dict, data_path: str, out: str, progress: bool) -> Dict[str, np.ndarray]:
    """``fit`` + ``score`` of the induction head on ``base``'s window into ``out``; (global index, score)."""
    from ..stages.fit import run_fit
    from ..stages.score import run_score

    c = mda_config(cfg, base, data_path)
    done = os.path.join(out, "score", "scores.npy")
    meta = os.path.join(out, "attribution.json")
    key = fingerprint(
        {
            "window": base["window"],
            "run": base["run_dir"] or f"{base['name']}@step{base['window'][1]}",
            "fit": dataclasses.asdict(c.fit),
            "targets": dataclasses.asdict(c.targets),
            "score": dataclasses.asdict(c.score),
        }
    )
    if not (os.path.exists(done) and os.path.exists(meta) and json.load(open(meta)).get("key") == key):
        shutil.rmtree(os.path.join(out, "score"), ignore_errors=True)
        t0 = time.perf_counter()
        run_fit(c, out, progress)
        r = run_score(c, out, resume=False, progress=progress)
        with open(meta, "w") as f:
            json.dump({"key": key, "seconds": round(time.perf_counter() - t0, 1), "seq_per_s": r["seq_per_s"]}, f)
    sc = np.load(os.path.join(out, "score", "scores.npy"))[:, 0].astype(np.float64)
    g = np.load(os.path.join(out, "score", "global_index.npy"))
    targets = json.load(open(os.path.join(out, "targets.json")))
    return {"global_index": g, "scores": sc, "head": targets["heads"][0], "seconds": json.load(open(meta))["seconds"]}


def influence_of_sets(cfg, base: dict, data_path: str, out: str, sets: Dict[str, np.ndarray], batch: int = 32) -> dict:
    """The MDA score of every row of each set (``[n, T + 1]`` token rows: window rows or rows an arm would insert)
    under each of ``attribute``'s targets (the head under each probe; its factors and targets in ``out``), and where
    the rows' loss-token influence sits (``study.per_token.induction_share``): what MDA predicts each arm's rows do
    to the head, before any arm is trained. Returns ``{"targets": [name, ...], "sets": {set: {target: {"score":
    {"mean", "std"}, "positive_share_on_induction", "induction_position_share", "ratio"}}}}``."""
    import torch

    from ..stages.per_token import open_scorer
    from ..study.per_token import induction_share

    scorer = open_scorer(mda_config(cfg, base, data_path), out)
    names = list(scorer.target_names)
    dev = next(scorer.model.parameters()).device
    res: Dict[str, Any] = {"targets": names, "sets": {}}
    for k, rows in sets.items():
        rows = np.asarray(rows, np.int64)
        parts: Dict[str, Dict[str, list]] = {t: {"score": [], "loss_token": []} for t in names}
        for i in range(0, rows.shape[0], batch):
            r = scorer.per_token(torch.from_numpy(rows[i : i + batch]).to(dev))
            for t in names:
                for f in ("score", "loss_token"):
                    parts[t][f].append(r[t][f].double().cpu().numpy())
        res["sets"][k] = {}
        for t in names:
            sc, lt = np.concatenate(parts[t]["score"]), np.concatenate(parts[t]["loss_token"])
            share = induction_share(lt, rows)
            res["sets"][k][t] = {
                "score": {"mean": float(sc.mean()), "std": float(sc.std())},
                **{f: share[f] for f in ("positive_share_on_induction", "induction_position_share", "ratio")},
            }
    return res


def _model_ref(cfg, base: dict) -> tuple:
    """``(model.run_dir, model.name, model.revision, model.device)`` for MDA on ``base``: a preset's run on the CPU,
    or a hub size's window-end revision (its local HF cache directory) on ``model.device``."""
    from .pretrained import size_checkpoint

    if not base.get("pretrained"):
        return base["run_dir"], "", cfg.model.revision, "cpu"
    return "", size_checkpoint(cfg, base["name"], base["window"][1], " (the window end)"), "", cfg.model.device


def row_decoder(cfg):
    """``decode(tokens) -> bytes`` of the corpus's rows for the motif measures: ``None`` (the byte tokenizer's
    ``byte_decode``) for the synthetic corpus (preset sizes) and ``data.tokenizer = "bytes"``, else the
    tokenizer's text as UTF-8 (the structure measures work on the token ids either way; the character measures
    need the text)."""
    from ..data import get_decoder
    from .pretrained import is_hub_size

    if cfg.data.tokenizer == "bytes" or not any(is_hub_size(p) for p in cfg.augment.sizes):
        return None
    try:
        dec = get_decoder(cfg.data.tokenizer)
    except Exception as e:  # noqa: BLE001 - a tokenizer that cannot be loaded reads the same to the user
        raise ConfigError(
            f"data.tokenizer {cfg.data.tokenizer!r} cannot be loaded ({type(e).__name__}); the motif measures "
            f"decode the top rows with it: put it in the local HF cache or name a tokenizer.json"
        ) from None
    return lambda r: dec([int(t) for t in r]).encode("utf-8")


def motifs_from_scores(cfg, data, attr: Dict[str, Any]) -> Dict[str, Any]:
    """Top / bottom / random sets of the window by score and the motifs mined from them."""
    a = cfg.augment
    g, s = attr["global_index"], attr["scores"]
    order = np.lexsort((g, -s))  # score descending, ties: lower index
    k = max(2, int(math.ceil(a.top_frac * g.size)))
    top, bottom = g[order[:k]], g[order[::-1][:k]]
    rest = np.setdiff1d(g, top)
    rnd = np.random.default_rng([a.motif_seed, 0x5EED]).choice(rest, size=min(k, rest.size), replace=False)
    rows = lambda idx: np.asarray(data.rows(np.asarray(idx, np.int64))).astype(np.int64)  # noqa: E731
    res = mine_motifs(
        rows(top),
        top.tolist(),
        rows(bottom),
        rows(rnd),
        n_motifs=a.n_motifs,
        seed=a.motif_seed,
        decode=row_decoder(cfg),
    )
    res["top"], res["top_scores"] = top.tolist(), s[order[:k]].tolist()
    res["bottom"], res["random"] = bottom.tolist(), np.sort(rnd).tolist()
    return res


def category_mix(prefix: str, ids) -> Dict[str, int]:
    """Dominant category -> count of the samples ``ids`` (empty without a category sidecar)."""
    from ..data.synthetic import load_category_sidecar

    side = load_category_sidecar(prefix)
    if side is None or not len(ids):
        return {}
    fr, names = side
    dom = np.argmax(fr[np.asarray(ids, np.int64)], 1)
    return {names[c]: int(n) for c, n in zip(*np.unique(dom, return_counts=True))}

"""``mda-fast fit``: choose the target heads (``out/targets.json``) and fit their EK-FAC factors on a sample of
the window (``out/factors/``)."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from ..config import Config
from ..core.ekfac import Factors, fit_ekfac
from ..core.heads import HeadSpec, check_spec
from ..core.localize import localize_all
from ..io import atomic_dir, write_json
from .inputs import checkpoint_ref, load_model, open_data

logger = logging.getLogger(__name__)


def head_entry(L: int, h: int, role: str, pm, pt) -> dict:
    """One entry of ``targets.json``'s heads: the head, its role and its localize scores."""
    return {"layer": L, "head": h, "role": role, "prefix_matching": float(pm[L, h]), "prev_token": float(pt[L, h])}


def resolve_targets(cfg: Config, model) -> dict:
    """Target heads (induction + control) and specs; 'auto' reads the localization at the window end."""
    t, loc = cfg.targets, cfg.localize
    if t.heads == "auto":
        with torch.no_grad():
            res = localize_all(model, seq_len=loc.seq_len, n=loc.n, seed=loc.seed, low=loc.low, high=loc.high or None)
        pm, pt = res["prefix_matching"], res["prev_token"]
        H = pm.shape[1]
        ind = [(int(i) // H, int(i) % H) for i in torch.argsort(pm.flatten(), descending=True)[: t.n_induction]]
        ctrl = [
            (int(i) // H, int(i) % H)
            for i in torch.argsort(pt.flatten(), descending=True)
            if (int(i) // H, int(i) % H) not in ind
        ][: t.n_control]
        heads = [head_entry(L, h, role, pm, pt) for role, hs in (("induction", ind), ("control", ctrl)) for L, h in hs]
    else:
        heads = [{"layer": int(L), "head": int(h), "role": "given"} for L, h in t.heads]
    specs = [HeadSpec(x["layer"], x["head"], t.mode, t.bias) for x in heads]
    for s in specs:
        check_spec(model, s)
    return {"heads": heads, "specs": [[s.layer, s.head, s.mode, s.bias] for s in specs]}


def run_fit(cfg: Config, out: str, progress: bool = True, dist=None) -> Factors:
    """Fit and write the factors. ``dist`` (a ``mda_fast.dist.Dist`` of several ranks): rank 0 chooses the
    targets and shares them, each rank reads a contiguous run of the fitting batches (``fit_part``) and
    ``fit_ekfac`` reduces over the ranks; only rank 0 writes."""
    data = open_data(cfg)
    model = load_model(cfg)
    if dist is not None and dist.world > 1:
        targets = dist.share(resolve_targets(cfg, model) if dist.is_main else None, "fit: targets")
    else:
        targets = resolve_targets(cfg, model)
    specs = [HeadSpec(L, h, m, b) for L, h, m, b in targets["specs"]]
    f, w = cfg.fit, cfg.window
    n_window = (w.end_step - w.start_step) * data.batch_size
    sample = fit_sample(f.n_sequences, n_window)
    if sample["used"] < sample["requested"] and (dist is None or dist.is_main):
        logger.warning(f"mda-fast fit: warning: {sample_note(sample)}")
    rng = np.random.default_rng(f.seed)
    pick = np.sort(rng.choice(n_window, size=sample["used"], replace=False)) + w.start_step * data.batch_size
    dev = next(model.parameters()).device
    starts = list(range(0, len(pick), f.batch_size))
    mine = range(len(starts)) if dist is None else range(*fit_part(len(starts), dist.rank, dist.world))
    batches = [
        torch.from_numpy(data.rows(pick[starts[j] : starts[j] + f.batch_size]).astype(np.int64)).to(dev) for j in mine
    ]
    name, rev = checkpoint_ref(cfg)
    factors = fit_ekfac(
        model,
        specs,
        batches,
        fisher=f.fisher,
        method=f.method,
        damping=f.damping,
        seed=f.seed,
        progress=progress,
        model_name=name,
        revision=rev,
        batch_index=list(mine),
        comm=dist if dist is not None and dist.world > 1 else None,
    )
    if dist is not None and not dist.is_main:
        return factors
    factors.meta["fit_indices"] = (
        f"{len(pick)} sequences sampled from window {w.start_step}..{w.end_step} (seed {f.seed})"
    )
    factors.meta["n_sequences_requested"] = sample["requested"]
    factors.meta["n_sequences_used"] = sample["used"]
    factors.meta["targets"] = targets["heads"]
    targets["fit_sample"] = sample
    with atomic_dir(os.path.join(out, "factors")) as d:
        factors.save(d)
    write_json(os.path.join(out, "targets.json"), targets)
    return factors


def fit_sample(requested: int, n_window: int) -> dict:
    """``{"requested", "used", "window"}``: the fit uses ``min(fit.n_sequences, window sequences)`` of the window."""
    return {"requested": int(requested), "used": int(min(requested, n_window)), "window": int(n_window)}


def sample_note(sample: dict) -> str:
    """One line on a fit that used fewer sequences than ``fit.n_sequences`` asked for."""
    return (
        f"fit.n_sequences = {sample['requested']} but the window holds {sample['window']} sequences; the factors "
        f"were fitted on all {sample['used']} (factors.json records both)"
    )


def fit_part(n_batches: int, rank: int, world: int) -> tuple[int, int]:
    """Batches ``[lo, hi)`` of rank ``rank`` of ``world``: contiguous, counts differing by at most one (a rank
    may get none when there are fewer batches than ranks)."""
    return rank * n_batches // world, (rank + 1) * n_batches // world

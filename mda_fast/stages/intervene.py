"""``mda-fast intervene``: retrain the window with the top samples deleted or duplicated, against random and
category-matched random sets (``mda_fast.study.interventions``), into ``out/interventions/``."""

from __future__ import annotations

import os

import numpy as np

from ..config import Config
from .checks import require_complete_scores
from .inputs import device_of, load_targets, open_data, pretrained_start


def run_intervene(cfg: Config, out: str, progress: bool = True, dist=None) -> dict | None:
    """Deletion / augmentation arms for the target heads (``mda_fast.study.interventions``) from ``out``'s scores.
    ``dist`` (``mda_fast.dist.Dist``): the arm × seed trainings are shared among its ranks; ``None`` on ranks > 0."""
    from ..study.interventions import InterventionConfig, run_interventions

    m, w, iv, loc, t = cfg.model, cfg.window, cfg.intervene, cfg.localize, cfg.targets
    checkpoint_dir, pretrained = (None, None) if m.run_dir else pretrained_start(cfg)
    targets, _ = load_targets(out)
    heads = [(h["layer"], h["head"]) for h in targets["heads"] if h["role"] != "control"]
    require_complete_scores(out)
    d = os.path.join(out, "score")
    data = open_data(cfg)
    train_until = min(w.end_step + iv.train_after, data.n_steps - -(-cfg.corpus.heldout_sequences // data.batch_size))
    icfg = InterventionConfig(
        run_dir=m.run_dir,
        data=data,
        start_step=w.start_step,
        end_step=w.end_step,
        train_until=train_until,
        heads=heads,
        out_dir=os.path.join(out, "interventions"),
        eval_every=iv.eval_every,
        top_frac=iv.top_frac,
        arms=list(iv.arms),
        seeds=list(iv.seeds),
        score_column=0,
        threshold=loc.threshold,
        localize_seq_len=loc.seq_len,
        localize_n=loc.n,
        localize_seed=loc.seed,
        probe_L=t.probe_L,
        probe_n=t.probe_n,
        probe_seed=t.probe_seed,
        low=t.probe_low,
        high=t.probe_high or None,
        n_heldout=max(1, min(256, cfg.corpus.heldout_sequences)),
        device=str(device_of(cfg)),
        checkpoint_dir=checkpoint_dir,
        pretrained=pretrained,
    )
    scores = np.load(os.path.join(d, "scores.npy"), mmap_mode="r")
    gi = np.load(os.path.join(d, "global_index.npy"), mmap_mode="r")
    shared = {"dist": dist} if dist is not None else {}
    return run_interventions(icfg, np.asarray(scores), np.asarray(gi), progress=progress, **shared)

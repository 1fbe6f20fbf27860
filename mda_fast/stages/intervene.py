"""``mda-fast intervene``: retrain the window with the top samples deleted or duplicated, against random and
category-matched random sets (``mda_fast.study.interventions``), into ``out/interventions/``."""

from __future__ import annotations

import os

import numpy as np

from ..config import Config
from ..errors import StateError
from .checks import require_complete_scores
from .inputs import device_of, load_targets, open_data, pretrained_start


def _content_categories(cfg: Config, out: str, data):
    """For the matched arms when data.path has no category sidecar: ``(fractions, names)`` of the top set and the
    random sample from ``out/categories/`` (``mda-fast categorize``; run here when absent and ``categorize.auto``),
    NaN on every other row (the bottom set is left out: it is no random draw); ``None`` when not needed."""
    from ..data.categories import load_category_sidecar
    from .categorize import load_categorized, plan_rows, run_categorize

    if not any(a.endswith("-matched") for a in cfg.intervene.arms) or load_category_sidecar(cfg.data.path):
        return None
    if cfg.categorize.auto:
        run_categorize(cfg, out, progress=False)
    cat = load_categorized(out)
    if cat is None:
        raise StateError(f"{out}/categories not found: the matched arms need categories; run `mda-fast categorize`")
    plan = plan_rows(cfg, out)
    keep = np.isin(cat["rows"], np.union1d(plan["top"], cat["sample"]))
    fr = np.full((cfg.window.end_step * data.batch_size, len(cat["names"])), np.nan, dtype=np.float32)
    fr[cat["rows"][keep]] = cat["fractions"][keep]
    return fr, list(cat["names"])


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
        **{f"localize_{k}": getattr(loc, k) for k in ("seq_len", "n", "seed")},
        **{f"probe_{k}": getattr(t, f"probe_{k}") for k in ("L", "n", "seed")},
        low=t.probe_low,
        high=t.probe_high or None,
        n_heldout=max(1, min(256, cfg.corpus.heldout_sequences)),
        device=str(device_of(cfg)),
        checkpoint_dir=checkpoint_dir,
        pretrained=pretrained,
        categories=_content_categories(cfg, out, data),
    )
    scores = np.load(os.path.join(d, "scores.npy"), mmap_mode="r")
    gi = np.load(os.path.join(d, "global_index.npy"), mmap_mode="r")
    shared = {"dist": dist} if dist is not None else {}
    return run_interventions(icfg, np.asarray(scores), np.asarray(gi), progress=progress, **shared)

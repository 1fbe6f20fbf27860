"""``mda-fast localize``: every head's prefix-matching and previous-token score at every checkpoint, the
emergence steps, ``out/localize/`` (``localize.json``, ``localize.csv``, ``emergence.png``)."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config
from ..core.localize import localize_all
from ..core.model import load_model, pythia_revisions
from ..errors import ConfigError, NonFiniteError, StateError
from ..io import atomic_dir, write_json
from ..revisions import order_revisions, revision_step, run_dir_steps
from .inputs import checkpoint_ref, device_of

logger = logging.getLogger(__name__)


def localize_checkpoints(cfg: Config) -> list:
    """[(label step, name_or_path, revision)] of the checkpoints to localize.

    ``model.run_dir``: its ``step<k>/`` checkpoints (or ``localize.steps``). A hub name: ``localize.revisions``
    (any names carrying ``step<k>``, e.g. OLMo-2's ``stage1-step1000-tokens3B``, ordered by step) or a Pythia-like
    default list. A local model directory is one checkpoint (revisions do not apply): it is localized once,
    labelled with ``model.revision``'s step if it carries one, else the window end.
    """
    m, loc = cfg.model, cfg.localize
    if m.run_dir:
        steps = loc.steps or run_dir_steps(m.run_dir)
        return [(s, *checkpoint_ref(cfg, s)) for s in steps]
    if os.path.isdir(m.name):
        try:
            step = revision_step(m.revision)
        except ValueError:
            step = cfg.window.end_step
        return [(step, m.name, None)]
    revs = loc.revisions or pythia_revisions(cfg.window.end_step)
    try:
        return [(k, m.name, r) for k, r in order_revisions(revs)]
    except ValueError as e:
        raise ConfigError(f"localize.revisions: {e}") from None


def emergence_steps(steps, scores: np.ndarray, threshold: float) -> list:
    """[n_layers][n_heads] first step whose score reaches ``threshold`` (None if never)."""
    out = []
    for L in range(scores.shape[1]):
        row = []
        for h in range(scores.shape[2]):
            hit = np.nonzero(scores[:, L, h] >= threshold)[0]
            row.append(int(steps[hit[0]]) if hit.size else None)
        out.append(row)
    return out


def run_localize(cfg: Config, out: str, progress: bool = True) -> dict:
    loc = cfg.localize
    ckpts = localize_checkpoints(cfg)
    if not ckpts:
        raise StateError(f"localize: no checkpoints found in model.run_dir {cfg.model.run_dir!r} (expected step<k>/)")
    steps, scores = _score_checkpoints(cfg, ckpts, progress)
    em = emergence_steps(steps, scores[loc.metric], loc.threshold)
    result = {
        "steps": steps,
        "scores": scores,
        "threshold": loc.threshold,
        "metric": loc.metric,
        "emergence_step": em,
        "checkpoints": [f"{n}@{r}" if r else n for _, n, r in ckpts],
        "single_checkpoint": len(ckpts) == 1,
    }
    final = scores[loc.metric][-1]
    order = np.dstack(np.unravel_index(np.argsort(-final, axis=None), final.shape))[0]
    result["ranking"] = [[int(L), int(h), float(final[L, h])] for L, h in order]
    if len(ckpts) == 1:
        logger.info(
            f"[localize] one checkpoint ({result['checkpoints'][0]}): head scores without a history; emergence "
            f"steps need several checkpoints (model.run_dir with step<k>/, or hub revisions)"
        )
    _write_localize(cfg, out, result)
    return result


def _score_checkpoints(cfg: Config, ckpts, progress: bool):
    """``(steps, {metric: scores [n_checkpoints, n_layers, n_heads]})`` of ``localize_all`` on every checkpoint."""
    loc = cfg.localize
    steps, per = [], {"prefix_matching": [], "prev_token": []}
    for step, name, rev in tqdm(ckpts, desc="localize checkpoints", unit="ckpt", disable=not progress):
        model = load_model(name, revision=rev, dtype=torch.float32, device=device_of(cfg))
        res = localize_all(model, **loc.kwargs())
        for k in per:
            v = res[k].numpy()
            if not np.isfinite(v).all():
                raise NonFiniteError(
                    f"localize: non-finite {k} scores at checkpoint {name}"
                    + (f"@{rev}" if rev else "")
                    + "; expected finite weights"
                )
            per[k].append(v)
        steps.append(step)
    return steps, {k: np.stack(v) for k, v in per.items()}


def _write_localize(cfg: Config, out: str, result: dict) -> None:
    """``out/localize/``: ``localize.json``, ``localize.csv`` (every step and head) and ``emergence.png``."""
    from ..study.plots import emergence_png, save_png

    steps, scores = result["steps"], result["scores"]
    final = scores[result["metric"]][-1]
    with atomic_dir(os.path.join(out, "localize")) as d:
        write_json(os.path.join(d, "localize.json"), result)
        with open(os.path.join(d, "localize.csv"), "w") as fh:
            fh.write("step,layer,head,prefix_matching,prev_token\n")
            for i, s in enumerate(steps):
                for L in range(final.shape[0]):
                    for h in range(final.shape[1]):
                        fh.write(
                            f"{s},{L},{h},{scores['prefix_matching'][i, L, h]:.6f},"
                            f"{scores['prev_token'][i, L, h]:.6f}\n"
                        )
        save_png(
            emergence_png({**result, "heads": [r[:2] for r in result["ranking"][: cfg.targets.n_induction]]}),
            os.path.join(d, "emergence.png"),
        )

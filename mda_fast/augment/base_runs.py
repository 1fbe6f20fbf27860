"""Base runs: each size trained from scratch until a head forms (+ ``augment.train_after``), and its window.

A base run checkpoints and evaluates every ``base_grid`` steps (``augment.base_eval_every``, by default
``eval_every``). With a coarser base grid (long base runs on real text) its record carries ``eval_steps``, the
arms' finer grid over ``[window start, until]``, and the ``none`` arm is trained as a branch like the others."""

from __future__ import annotations

import os
import time
from typing import List, Optional

__all__ = ["train_base", "saved_steps", "base_window", "base_record", "base_grid"]


def base_grid(a) -> int:
    """Steps between a base run's checkpoints and evaluations: ``augment.base_eval_every`` or ``eval_every``."""
    return int(a.base_eval_every or a.eval_every)


def saved_steps(run_dir: str) -> List[int]:
    """The steps of ``run_dir``'s ``step<k>/`` checkpoints that hold a training state, ascending."""
    from ..revisions import run_dir_steps
    from ..train.checkpoint import has_state

    return [s for s in run_dir_steps(run_dir) if has_state(os.path.join(run_dir, f"step{s}"))]


def _emergence(eval_path: str, threshold: float) -> Optional[int]:
    """The first evaluated step whose best head reaches ``threshold`` (None while none has)."""
    from ..train import read_jsonl

    hits = [r["step"] for r in read_jsonl(eval_path) if r.get("max_prefix_matching", 0) >= threshold]
    return min(hits) if hits else None


def base_window(recs: dict, emergence: Optional[int], a) -> tuple:
    """``(start, end, until)`` of a base run with evaluations ``recs`` (step -> record) and settings ``a``.

    ``end`` is the emergence step or, without a head, the latest evaluation that still leaves ``a.train_after``
    steps; ``start = end - a.window_steps`` rounded down to a base checkpoint (``base_grid``);
    ``until = end + a.train_after``.
    """
    last = max(recs)
    if emergence is not None:
        end = emergence
    else:  # no head: the latest window that still leaves train_after steps
        cands = [s for s in recs if s <= last - a.train_after]
        end = max(cands) if cands else last
    grid = base_grid(a)
    end = max(end, grid)
    start = max(0, end - a.window_steps)
    start -= start % grid  # a base checkpoint: the arms branch from it
    until = min(last, end + a.train_after)
    return start, end, until


def _trainer(cfg, preset: str, data, run_dir: str, eval_fn, progress: bool):
    """A ``Trainer`` of ``preset`` into ``run_dir``, resumed from its latest saved checkpoint if any."""
    from ..train import TrainConfig, Trainer

    a, tr = cfg.augment, cfg.train
    tc = TrainConfig(
        preset=preset,
        family=tr.family,
        total_steps=max(tr.schedule_steps, tr.total_steps),
        lr=tr.lr,
        seed=tr.seed,
        checkpoint_every=base_grid(a),
        device="cpu",
        out_dir=run_dir,
        progress=progress,
    )
    trainer = Trainer(tc, data, eval_fn=eval_fn)
    steps = saved_steps(run_dir)
    if steps:
        trainer.load_checkpoint(os.path.join(run_dir, f"step{steps[-1]}"))
    return trainer


def train_base(cfg, preset: str, data, out: str, eval_fn, progress: bool) -> dict:
    """Train ``preset`` from scratch until a head forms (+ ``train_after``); its window and evaluations."""
    from ..train import read_jsonl

    a, tr = cfg.augment, cfg.train
    run_dir = os.path.join(out, "run")
    eval_path = os.path.join(run_dir, "eval.jsonl")
    trainer = _trainer(cfg, preset, data, run_dir, eval_fn, progress)

    def done(step):
        e = _emergence(eval_path, cfg.localize.threshold)
        return e is not None and step >= e + a.train_after

    t0 = time.perf_counter()
    if trainer.step < tr.total_steps and not done(trainer.step):
        trainer.train(end_step=tr.total_steps, stop=done)
    em = _emergence(eval_path, cfg.localize.threshold)
    recs = {r["step"]: r for r in read_jsonl(eval_path) if "max_prefix_matching" in r}
    start, end, until = base_window(recs, em, a)
    rec = base_record(preset, run_dir, em, (start, end, until), t0, recs)
    rec["train_s"] = _add_seconds(run_dir, rec["train_s"])
    if base_grid(a) != a.eval_every:  # the arms (none too) evaluate on the finer grid: none is a trained branch
        rec["eval_steps"] = list(range(start, until + 1, a.eval_every))
        if rec["eval_steps"][-1] != until:
            rec["eval_steps"].append(until)
    return rec


def _add_seconds(run_dir: str, seconds: float) -> float:
    """The base run's wall time over every call that trained it (``run_dir/base_seconds.json``; a cached rerun
    adds ~0), so a resumed study still reports what the run cost."""
    from ..io import read_json, write_json

    path = os.path.join(run_dir, "base_seconds.json")
    total = round((read_json(path)["seconds"] if os.path.exists(path) else 0.0) + seconds, 1)
    write_json(path, {"seconds": total})
    return total


def base_record(preset: str, run_dir, emergence, bounds: tuple, t0: float, evals: dict) -> dict:
    """A size's base run: its preset and run dir, emergence step, window ``[start, end)``, ``train_until``, the
    seconds since ``t0`` and its evaluations (step -> record) within ``[start, until]``."""
    start, end, until = bounds
    return {
        "preset": preset,
        "run_dir": run_dir,
        "emergence_step": emergence,
        "window": [int(start), int(end)],
        "train_until": int(until),
        "train_s": round(time.perf_counter() - t0, 1),
        "evals": {int(s): evals[s] for s in sorted(evals) if start <= s <= until},
    }

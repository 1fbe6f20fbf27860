"""The study's arms: the rows each arm inserts, and one branched training run per size, arm and seed."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

import numpy as np

from ..train import Interventions
from .cache import fingerprint
from .generators import MixtureGenerator, copy_baseline_rows
from .insertion import insertion_log, plan_duplicates, plan_insertions
from .motifs import Motif, byte_decode
from .pretrained import arm_trainer, size_dir

logger = logging.getLogger(__name__)

__all__ = [
    "SEEDED_ARMS",
    "STUDY_ARMS",
    "ArmContext",
    "synthetic_rows",
    "copy_range",
    "plan_arm",
    "arm_steps",
    "trains_none",
    "run_arm",
    "arm_cached",
    "arm_jobs",
    "arm_entry",
    "curve",
]

SEEDED_ARMS = ("random", "copy", "mechanistic", "mechanistic-large")
STUDY_ARMS = ("none", "random", "copy", "top", "mechanistic")


@dataclass
class ArmContext:
    """What every arm of one study shares: the config, the corpus, the mined motifs and the evaluation."""

    cfg: Any
    data: Any
    motifs: Dict[str, List[Motif]]
    top: List[int]  # the highest-scored window rows of the smallest size (the ``top`` arm)
    out: str
    eval_fn: Callable
    progress: bool
    llm_log: list = field(default_factory=list)
    prefix: str = ""  # the corpus's Megatron prefix (the parallel workers open it)


def curve(evals: dict) -> dict:
    """A run's evaluations (step -> record) as curves: ``steps``, ``score``, ``icl``, ``heldout_loss``."""
    steps = sorted(int(s) for s in evals)
    e = {int(k): v for k, v in evals.items()}
    return {
        "steps": steps,
        "score": [e[s]["max_prefix_matching"] for s in steps],
        "icl": [e[s]["icl"] for s in steps],
        "heldout_loss": [e[s]["heldout_loss"] for s in steps],
    }


def synthetic_rows(
    cfg, arm: str, seed: int, n: int, seq_len: int, motifs: Dict[str, List[Motif]], top: List[int], data, llm_log: list
) -> tuple:
    """(rows or None, dataset indices or None) of one arm and seed (``None`` arms insert nothing)."""
    a = cfg.augment
    if arm == "copy":
        low, high = copy_range(cfg)
        return copy_baseline_rows(n, seq_len, seed, low=low, high=high, span=(a.copy_span_min, a.copy_span_max)), None
    if arm == "top":
        return None, [top[j % len(top)] for j in range(n)]
    if arm in ("mechanistic", "mechanistic-large"):
        ms = motifs["small" if arm == "mechanistic" else "large"]
        if a.llm_url:
            return _llm_rows(cfg, ms, seed, n, seq_len, data, llm_log), None
        chain = a.fresh_text == "chain"
        return MixtureGenerator(ms, seq_len, chain=chain, calibrate=chain).rows(n, seed), None
    raise ValueError(f"arm {arm!r} has no synthetic rows")


def copy_range(cfg) -> tuple:
    """``(low, high)`` token ids of the copy baseline: ``augment.copy_low/copy_high``, by default ``localize.low``
    and ``localize.high or 131`` (printable bytes) for presets, GPT-NeoX's real ids 4..50277 for hub sizes."""
    from .pretrained import is_hub_size

    a, loc = cfg.augment, cfg.localize
    if any(is_hub_size(p) for p in a.sizes):
        return a.copy_low or 4, a.copy_high or 50277
    return a.copy_low or loc.low, a.copy_high or loc.high or 131


def _llm_rows(cfg, ms: List[Motif], seed: int, n: int, seq_len: int, data, llm_log: list) -> np.ndarray:
    from .llm import ChatClient, llm_generator_rows

    a = cfg.augment
    client = ChatClient(a.llm_url, model=a.llm_model, api_key_env=a.llm_key_env)
    w = np.array([m.share for m in ms])
    counts = np.floor(w / w.sum() * n).astype(int)
    counts[0] += n - counts.sum()
    parts = []
    for m, c in zip(ms, counts):
        if c <= 0:
            continue
        ex = [
            byte_decode(np.asarray(data.rows(np.array([e["id"]], np.int64)))[0]).decode("latin-1") for e in m.examples
        ]
        r = llm_generator_rows(m, ex, client, int(c), seed, seq_len)
        llm_log.append({"motif": m.id, "seed": seed, "source": r["source"], "message": r["message"]})
        logger.info(r["message"])
        parts.append(r["rows"])
    return np.concatenate(parts)[np.random.default_rng([seed, 0xA1]).permutation(n)]


def plan_arm(ctx: ArmContext, base: dict, arm: str, seed: int, n: int):
    """The ``Interventions`` of ``arm`` and ``seed``: ``n`` rows spread over ``base``'s window steps."""
    B, S = ctx.data.batch_size, ctx.data.seq_len
    start, end = base["window"]
    win_steps = list(range(start, end))
    if arm == "none":  # trained only where trains_none (a hub size's AdamW restart, or the arms' finer grid)
        return Interventions()
    if arm == "random":
        pool = np.arange(start * B, end * B)
        idx = np.random.default_rng([seed, 0x5EED]).choice(pool, size=min(n, pool.size), replace=False)
        return plan_duplicates(idx.tolist(), win_steps, name="random", seed=seed)
    rows, idx = synthetic_rows(ctx.cfg, arm, seed, n, S, ctx.motifs, ctx.top, ctx.data, ctx.llm_log)
    if rows is not None:
        return plan_insertions(rows, win_steps, name=arm, seed=seed)
    return plan_duplicates(idx, win_steps, name=arm, seed=seed)


def arm_steps(base: dict) -> list:
    """The evaluation steps of ``base``'s arms: its ``eval_steps`` (a hub size, or a base run on a coarser grid than
    the arms') or else its own evaluations."""
    return list(base["eval_steps"]) if "eval_steps" in base else sorted(base["evals"])


def trains_none(base: dict) -> bool:
    """Whether the ``none`` arm is a trained branch (a hub size, or a base run evaluated on a coarser grid) rather
    than the base run's own evaluations."""
    return "eval_steps" in base


def _arm_key(base: dict, arm: str, seed: int, iv, recipe) -> str:
    """The cache key of one arm run (a preset's keys as before; a hub size's with its name and recipe)."""
    d = {
        "base": base["run_dir"] if not base.get("pretrained") else base["name"],
        "window": base["window"],
        "until": base["train_until"],
        "arm": arm,
        "seed": seed,
        "iv": iv.to_dict(),
        "rows": fingerprint([it.tokens.tolist() if it.tokens is not None else int(it.index) for it in iv.insert]),
    }
    if recipe is not None:
        d["recipe"] = {k: v for k, v in recipe.to_dict().items() if k not in ("out_dir", "progress")}
        d["steps"] = arm_steps(base)
    return fingerprint(d)


def _branch(cfg, base: dict, data, out: str, iv, eval_fn, progress: bool):
    """The arm's ``Trainer``: from a preset's window-start checkpoint, or a hub size's window-start revision."""
    from ..train import branch_from_checkpoint

    if base.get("pretrained"):
        return arm_trainer(cfg, base, data, out, iv, eval_fn, progress)
    return branch_from_checkpoint(
        os.path.join(base["run_dir"], f"step{base['window'][0]}"),
        data,
        out,
        interventions=iv,
        eval_fn=eval_fn,
        checkpoint_every=10**9,
        checkpoint_extra=tuple(arm_steps(base)),
        save_optimizer=False,
        progress=progress,
    )


def _cached(cfg, base: dict, arm: str, seed: int, iv, out: str, progress: bool) -> tuple:
    """(the run's cache key, its cached result or None)."""
    from .pretrained import arm_recipe

    key = _arm_key(base, arm, seed, iv, arm_recipe(cfg, base, out, progress) if base.get("pretrained") else None)
    res_path = os.path.join(out, "result.json")
    if os.path.exists(res_path):
        with open(res_path) as f:
            res = json.load(f)
        if res.get("key") == key:
            return key, res
    return key, None


def arm_cached(cfg, base: dict, arm: str, seed: int, iv, out: str) -> bool:
    """Whether ``run_arm`` of these inputs would read its result from ``out`` rather than train."""
    return _cached(cfg, base, arm, seed, iv, out, False)[1] is not None


def run_arm(cfg, base: dict, data, arm: str, seed: int, iv, out: str, eval_fn, progress: bool) -> dict:
    """Branch ``base`` at its window start, train to ``train_until`` with ``iv``; the evaluations (cached)."""
    from ..train import read_jsonl

    start = base["window"][0]
    steps = arm_steps(base)
    key, res = _cached(cfg, base, arm, seed, iv, out, progress)
    if res is not None:
        return res
    res_path = os.path.join(out, "result.json")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    tr = _branch(cfg, base, data, out, iv, eval_fn, progress)
    tr.train(end_step=base["train_until"])
    recs = {r["step"]: r for r in read_jsonl(tr.eval_path) if "max_prefix_matching" in r}
    recs[start] = base["evals"][start]
    res = {"key": key, "evals": {str(s): recs[s] for s in steps}, "seconds": round(time.perf_counter() - t0, 1)}
    for s in steps:
        shutil.rmtree(tr.checkpoint_dir(s), ignore_errors=True)
    tmp = res_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, res_path)
    return res


def _arm_dir(ctx: ArmContext, base: dict, arm: str, seed: int) -> str:
    return os.path.join(ctx.out, "sizes", size_dir(base.get("name", base["preset"])), "arms", arm, f"seed{seed}")


def _trained_seeds(ctx: ArmContext, base: dict, arm: str) -> list:
    """The seeds of ``arm`` that are trained runs (seed-free arms: the first seed; ``none``: only where
    ``trains_none``)."""
    seeds = list(ctx.cfg.augment.seeds)
    if arm == "none" and not trains_none(base):
        return []
    return seeds[:1] if arm in ("none", "top") else seeds


def arm_jobs(ctx: ArmContext, bases: Dict[str, dict], arms: Dict[str, list], n: Dict[str, int]) -> list:
    """The arm runs of every size (``arms[size]``, ``n[size]`` rows each) not yet cached, as
    ``(name, base, arm, seed, interventions, out)`` (``augment.parallel.train_arms``'s jobs)."""
    jobs = []
    for p, base in bases.items():
        for arm in arms[p]:
            for seed in _trained_seeds(ctx, base, arm):
                iv = plan_arm(ctx, base, arm, seed, n[p])
                out = _arm_dir(ctx, base, arm, seed)
                if not arm_cached(ctx.cfg, base, arm, seed, iv, out):
                    jobs.append((f"{p} {arm} seed {seed}", base, arm, seed, iv, out))
    return jobs


def _seed_run(ctx: ArmContext, base: dict, arm: str, seed: int, n: int) -> dict:
    """One arm and seed of one size trained (or read from its cache): its curves, time and insertion log."""
    p = base.get("name", base["preset"])
    start, end = base["window"]
    iv = plan_arm(ctx, base, arm, seed, n)
    logger.info(f"{p} {arm} seed {seed}: {len(iv.insert)} rows inserted over steps {start}..{end - 1}")
    out = _arm_dir(ctx, base, arm, seed)
    r = run_arm(ctx.cfg, base, ctx.data, arm, seed, iv, out, ctx.eval_fn, ctx.progress)
    d = curve(r["evals"])
    d["train_s"] = r["seconds"]
    d["insertion"] = insertion_log(iv, ctx.data.seq_len)
    return d


def arm_entry(ctx: ArmContext, base: dict, arm: str, n: int) -> dict:
    """``{"deterministic", "seeds": {seed: curves}}`` of one arm of one size (seed-free arms trained once)."""
    seeds = ctx.cfg.augment.seeds
    det = arm in ("none", "top")
    entry = {"deterministic": det, "seeds": {}}
    none = curve({str(s): r for s, r in base["evals"].items()})
    for seed in seeds:
        if arm == "none" and not trains_none(base):  # a preset's base run trained exactly these steps
            entry["seeds"][str(seed)] = dict(none)
        elif det and seed != seeds[0]:
            entry["seeds"][str(seed)] = entry["seeds"][str(seeds[0])]
        else:
            entry["seeds"][str(seed)] = _seed_run(ctx, base, arm, seed, n)
    return entry

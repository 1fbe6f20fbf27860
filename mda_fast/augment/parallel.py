"""The study's training runs in parallel processes (``augment.workers``): the sizes' base runs, then every arm run.

Each run is independent of the others once its inputs exist (a base run needs the corpus; an arm run its base run's
window-start checkpoint and its planned rows), and each is cached in its own directory, so a pool of processes can
train them in any order and the study reads their results back exactly as if it had trained them one by one
(``run_arm``'s cache, ``train_base``'s resume). A worker is a fresh (spawned) interpreter with
``torch.set_num_threads(threads)``; it opens the corpus and builds the evaluation itself. Longest runs go first
(the largest size's), so the pool's last process is not left with the longest job.

Only preset sizes run in parallel: hub sizes (GPU, published checkpoints) and an LLM-written generator (its rows
come from a server, asked once per arm) keep the study's sequential path.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["n_workers", "parallel_ok", "train_bases", "train_arms"]

logger = logging.getLogger(__name__)

_STATE: dict = {}


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def n_workers(cfg, n_jobs: int) -> int:
    """Processes for ``n_jobs`` runs: ``augment.workers`` (0: every core), at most ``n_jobs``, at least 1."""
    w = int(cfg.augment.workers) or cores()
    return max(1, min(w, n_jobs))


def parallel_ok(cfg) -> bool:
    """Whether the study's runs may go to a pool (preset sizes on the CPU, built-in generators)."""
    from .pretrained import is_hub_size

    return not any(is_hub_size(p) for p in cfg.augment.sizes) and not cfg.augment.llm_url


def _init(cfg, prefix: str, threads: int) -> None:
    """A worker's corpus, evaluation and thread count."""
    import torch

    from ..data import PythiaBatches
    from .evaluation import heldout_rows, make_eval

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    data = PythiaBatches(prefix, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len)
    _STATE.update(cfg=cfg, data=data, eval_fn=make_eval(cfg, *heldout_rows(cfg, data, prefix)))


def _base_job(job: Tuple[str, str]) -> Tuple[str, dict]:
    from .base_runs import train_base

    preset, out = job
    s = _STATE
    return preset, train_base(s["cfg"], preset, s["data"], out, s["eval_fn"], False)


def _arm_job(job: tuple) -> Tuple[str, dict]:
    from .arms import run_arm

    name, base, arm, seed, iv, out = job
    s = _STATE
    return name, run_arm(s["cfg"], base, s["data"], arm, seed, iv, out, s["eval_fn"], False)


def _latest_step(run_dir: str) -> Optional[int]:
    """The latest ``step<k>`` checkpoint directory of a run being trained (None before the first)."""
    from ..revisions import run_dir_steps

    try:
        steps = run_dir_steps(run_dir)
    except OSError:
        return None
    return max(steps) if steps else None


def _run(
    cfg, prefix: str, jobs: List[tuple], fn: Callable, desc: str, progress: bool, watch: Optional[Dict[str, str]] = None
) -> Dict[str, dict]:
    """``fn`` over ``jobs`` (first element: the job's name) in ``n_workers`` spawned processes; name -> result.
    ``watch`` (name -> run directory): the bar shows each running job's latest checkpoint step."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    nw = n_workers(cfg, len(jobs))
    threads = max(1, cores() // nw)
    logger.info(f"[augment] {len(jobs)} {desc} on {nw} processes of {threads} thread(s)")
    out: Dict[str, dict] = {}
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with (
        tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress) as bar,
        ProcessPoolExecutor(nw, mp_context=ctx, initializer=_init, initargs=(cfg, prefix, threads)) as pool,
    ):
        pending = {pool.submit(fn, j): j[0] for j in jobs}
        try:
            _collect(pending, out, bar, t0, watch)
        except BaseException:  # a failed run or an interrupt: stop the other runs now (each resumes from its cache)
            pool.shutdown(wait=False, cancel_futures=True)
            for child in mp.active_children():
                child.terminate()
            raise
    return out


def _collect(pending: dict, out: Dict[str, dict], bar, t0: float, watch: Optional[Dict[str, str]]) -> None:
    """Wait for every future of ``pending`` (future -> job name), putting results in ``out``."""
    from concurrent.futures import FIRST_COMPLETED, wait

    while pending:
        done, _ = wait(pending, timeout=10, return_when=FIRST_COMPLETED)
        for f in done:
            name, r = f.result()
            del pending[f]
            out[name] = r
            bar.update(1)
            logger.info(f"[augment] {name} done ({time.perf_counter() - t0:.0f} s)")
        if watch:
            steps = {n: _latest_step(watch[n]) for n in pending.values() if n in watch}
            bar.set_postfix_str(", ".join(f"{n} step {s}" for n, s in steps.items() if s is not None))


def _size_cost(preset: str) -> int:
    """A preset's parameter count (its runs' relative cost: longest first)."""
    from ..train.presets import get_preset

    p = get_preset(preset)
    return p.n_layers * p.d_model * p.d_model


def train_bases(cfg, prefix: str, dirs: Dict[str, str], progress: bool) -> Dict[str, dict]:
    """Every size's base run (``train_base`` into ``dirs[size]``), in parallel; size -> record."""
    order = sorted(dirs, key=_size_cost, reverse=True)
    watch = {p: os.path.join(dirs[p], "run") for p in order}
    return _run(cfg, prefix, [(p, dirs[p]) for p in order], _base_job, "base runs", progress, watch)


def train_arms(cfg, prefix: str, jobs: List[tuple], progress: bool) -> Optional[Dict[str, dict]]:
    """Every planned arm run ``(name, base, arm, seed, iv, out)`` not yet cached, in parallel (largest size first)."""
    if not jobs:
        return {}
    jobs = sorted(jobs, key=lambda j: _size_cost(j[1]["preset"]), reverse=True)
    return _run(cfg, prefix, jobs, _arm_job, "arm runs", progress)

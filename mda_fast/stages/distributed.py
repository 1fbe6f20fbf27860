"""``fit``, ``score`` and ``intervene`` on several processes under ``torchrun`` (``mda_fast.dist``).

Who writes what (``K`` = ``WORLD_SIZE``):

* ``score``: rank ``r`` scores shard ``r/K`` (``stages.score.shard_range``: a contiguous run of whole steps) into
  ``score/shards/r-of-K/`` with the chunked, resumable writes of a single run, holding only that directory's lock.
  After every rank has finished (a status exchange: a failed rank stops all), each rank computes its shard's
  top ``k`` per target from its memmap (``stages.topk``), rank 0 gathers the ``K`` candidate lists (``K·k`` rows
  per target, never the scores), merges the shards into the single-run ``score/`` layout (``stages.shards.merge``,
  byte-identical to a one-process run) and writes ``score/topk.json``. Rank 0 holds the ``--out`` lock throughout.
* ``fit``: every rank reads its contiguous part of the fitting batches; ``fit_ekfac`` sums A, S and Λ over the
  ranks and uses rank 0's eigenbases; the true-Fisher labels are seeded by the global batch index. Rank 0 writes
  ``factors/`` and ``targets.json``.
* ``intervene``: the distinct arm × seed trainings are dealt out round-robin (rank ``r`` trains runs ``r, r+K,
  ...``, each on its own device); each writes its ``result.json``; rank 0 then reads them all (as a resumed
  one-process run does) and writes ``interventions.json`` and the report.

A worker that torchrun restarts (``--max-restarts``) resumes from the chunks on disk, so a killed rank loses at most
its chunk in flight. ``launch`` is ``score --devices``: the same ranks, started by ``torch.distributed``'s own
launcher on this machine.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid

from ..dist import DEVICES_ENV, LAUNCHER_LOCK_ENV, LOG_ENV, Dist, restarted
from ..errors import ConfigError
from ..io import OutputLock, read_json, score_dir, write_json


def run_stage(cmd: str, cfg, out: str, dist: Dist, resume: bool = False, progress: bool = True):
    """Run ``cmd`` as this rank of ``dist`` (``fit``, ``score``, ``intervene``; other commands run on rank 0)."""
    from . import checks

    with contextlib.ExitStack() as stack:
        with dist.together(f"{cmd}: checks"):
            if cmd == "score":
                from .inputs import open_data
                from .score import score_window, shard_range

                data = open_data(cfg)
                shard_range(score_window(cfg, data.batch_size)[1] // data.batch_size, data.batch_size, (0, dist.world))
            checks.validate(cmd, cfg, out)
        with dist.together(f"{cmd}: lock {out}"):
            if dist.is_main and not os.environ.get(LAUNCHER_LOCK_ENV):
                stack.enter_context(OutputLock(out))
            if cmd == "score":
                stack.enter_context(OutputLock(out, lock_dir=score_dir(out, (dist.rank, dist.world))))
        if cmd == "score":
            return _score(cfg, out, dist, resume or restarted(), progress)
        if cmd == "fit":
            return _fit(cfg, out, dist, progress)
        if cmd == "intervene":
            return _intervene(cfg, out, dist, progress)
        raise ConfigError(f"{cmd} does not run on several processes")


def _score(cfg, out: str, dist: Dist, resume: bool, progress: bool) -> dict | None:
    from ..study.stats import top_count
    from .score import run_score, score_window
    from .shards import merge
    from .topk import combine, shard_candidates, write_topk

    shard = (dist.rank, dist.world)
    with dist.together("score"):
        r = run_score(cfg, out, resume=resume, progress=progress and dist.is_main, shard=shard)
        elapsed = r["n_scored"] / max(r["seq_per_s"], 1e-9)  # this rank's scoring loop (model loading excluded)
    with dist.together("score: top-k of each shard"):
        from .inputs import open_data

        n_window = score_window(cfg, open_data(cfg).batch_size)[1]
        k = top_count(n_window, cfg.analyze.top_frac)
        cands = shard_candidates(out, shard, k)
    parts = dist.gather({"candidates": cands, "seconds": elapsed, "n": r["n_scored"]}, "score: top-k")
    with dist.together("score: merge"):
        if dist.is_main:
            res = merge(cfg, out, dist.world)
            res["topk_path"] = write_topk(
                out, combine([p["candidates"] for p in parts], k), k, cfg.analyze.top_frac, n_window
            )
            res["seq_per_s"] = sum(p["n"] for p in parts) / max(max(p["seconds"] for p in parts), 1e-9)
            res["ranks"] = dist.world
    return res if dist.is_main else {"n_scored": r["n_scored"], "scores_path": r["scores_path"]}


def _fit(cfg, out: str, dist: Dist, progress: bool):
    from .fit import run_fit

    with dist.together("fit"):
        return run_fit(cfg, out, progress=progress and dist.is_main, dist=dist)


def _intervene(cfg, out: str, dist: Dist, progress: bool):
    from .intervene import run_intervene

    with dist.together("intervene"):
        return run_intervene(cfg, out, progress=progress and dist.is_main, dist=dist)


# ---------------------------------------------------------------------------------------------------------- launch
def launch(
    cfg,
    out: str,
    devices: list[str],
    resume: bool = False,
    progress: bool = True,
    max_restarts: int = 0,
    poll_s: float = 0.5,
) -> dict:
    """``score --devices``: one rank per entry of ``devices`` on this machine, started by
    ``torch.distributed.launcher`` (torchrun's machinery), each logging to ``score/shards/r-of-K/log.txt``.

    A rank that fails for good ends the launch with ``ShardFailed`` naming the rank, its device, exit code, last
    log line and log file; the finished chunks stay and ``--resume`` continues them.
    """
    from .inputs import open_data
    from .score import score_window, shard_range

    k = len(devices)
    data = open_data(cfg)
    _, n = score_window(cfg, data.batch_size)
    shard_range(n // data.batch_size, data.batch_size, (0, k))
    root = os.path.join(score_dir(out), "shards")
    os.makedirs(root, exist_ok=True)
    cfg_path = os.path.join(root, f"config-{k}.json")
    write_json(cfg_path, cfg.to_dict())
    logs = _fresh_logs(out, k, resume)
    args = ["-m", "mda_fast", "score", "--config", cfg_path, "--out", out, "--no-progress"] + (
        ["--resume"] if resume else []
    )
    done0, elapsed = _run_ranks(out, devices, root, logs, args, n, resume, progress, max_restarts, poll_s)
    d = score_dir(out)  # rank 0 of the ranks has merged the shards into it
    res = {
        "n_scored": n,
        "scores_path": os.path.join(d, "scores.npy"),
        "target_names": read_json(os.path.join(d, "targets.json"))["target_names"],
        "seq_per_s": (n - done0) / elapsed,
    }
    res["devices"] = devices
    return res


def _fresh_logs(out: str, k: int, resume: bool) -> list[str]:
    """Every shard's directory made and its ``log.txt`` emptied (``progress.json`` removed unless ``resume``)."""
    logs = []
    for i in range(k):
        sd = score_dir(out, (i, k))
        os.makedirs(sd, exist_ok=True)
        if not resume and os.path.exists(os.path.join(sd, "progress.json")):
            os.remove(os.path.join(sd, "progress.json"))  # a fresh start: the bar must not read an old run's count
        logs.append(os.path.join(sd, "log.txt"))
        open(logs[-1], "w").close()
    return logs


def _launch_env(devices: list[str], root: str) -> dict:
    """The environment of the ranks: their devices, their log files, the launcher's lock, CPU threads per rank."""
    import torch

    k = len(devices)
    n_cpu = sum(torch.device(d).type == "cpu" for d in devices)
    env = {
        DEVICES_ENV: ",".join(devices),
        LOG_ENV: os.path.join(root, "{rank}-of-" + str(k), "log.txt"),
        LAUNCHER_LOCK_ENV: str(os.getpid()),
    }  # this process holds the --out lock for the ranks
    if n_cpu:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n_cpu))
    return env


def _run_ranks(out, devices, root, logs, args, n, resume, progress, max_restarts, poll_s) -> tuple[int, float]:
    """Start the ranks with ``elastic_launch`` and follow their progress: ``(sequences done before, seconds)``."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    from tqdm.auto import tqdm

    from .shards import ShardFailed, shard_progress

    k = len(devices)
    env = _launch_env(devices, root)
    lc = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=k,
        run_id=f"mda-fast-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=max_restarts,
        monitor_interval=0.2,
        start_method="spawn",
    )
    done0 = sum(shard_progress(out, (i, k)) for i in range(k)) if resume else 0
    stop = threading.Event()

    def watch(bar):
        seen = bar.n
        while not stop.wait(poll_s):
            now = sum(shard_progress(out, (i, k)) for i in range(k))
            if now > seen:
                bar.update(now - seen)
                seen = now

    t0 = time.perf_counter()
    with (
        tqdm(
            total=n, initial=done0, desc=f"score on {k} devices", unit="seq", disable=not progress, dynamic_ncols=True
        ) as bar,
        _environ(env),
        _quiet_elastic(),
    ):
        th = threading.Thread(target=watch, args=(bar,), daemon=True)
        th.start()
        try:
            elastic_launch(lc, sys.executable)(*args)
        except ChildFailedError as e:
            rank, code, last = _root_cause(e.failures, logs)
            raise ShardFailed(
                f"rank {rank} (shard {rank}/{k} on {devices[rank]}) failed (exit {code}): {last} "
                f"(log: {logs[rank]}); finished chunks are kept: rerun with --resume"
            ) from None
        finally:
            stop.set()
            th.join()
    return done0, max(time.perf_counter() - t0, 1e-9)


def _root_cause(failures: dict, logs: list[str]) -> tuple[int, int, str]:
    """(rank, exit code, last log line) of the rank that failed first: a rank killed by a signal (other than the
    launcher's SIGTERM), else one whose error is its own (not another rank's failure relayed by the status exchange or a dropped connection)."""

    def last_line(r):
        try:
            lines = [x.strip() for x in open(logs[r]).read().splitlines() if x.strip()]
        except OSError:
            lines = []
        return lines[-1] if lines else "no output"

    def relayed(r):
        text = last_line(r)
        return (
            " failed: " in text and "rank " in text or "Connection closed by peer" in text or "Connection reset" in text
        )

    # a SIGTERM is how the launcher stops the other ranks once one has failed: rank those after any other signal
    ranks = sorted(
        failures,
        key=lambda r: (failures[r].exitcode >= 0, failures[r].exitcode == -15, relayed(r), failures[r].timestamp, r),
    )
    r = ranks[0]
    code = failures[r].exitcode
    return r, code, last_line(r) if code >= 0 else f"killed by signal {-code}"


@contextlib.contextmanager
def _quiet_elastic():
    """torch.distributed.elastic's own log lines off while ``launch`` runs (it reports a failure in one line)."""
    import logging

    log = logging.getLogger("torch.distributed.elastic")
    old = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(old)


@contextlib.contextmanager
def _environ(env: dict):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

"""Scoring on several devices: one ``mda-fast score --shard i/k`` process per device, then one merge.

The window is split into ``k`` contiguous runs of whole training steps (``stages.score.shard_range``). Each part is
scored by its own process into ``score/shards/i-of-k/`` with the same chunked, resumable writes as a single run.
``launch`` starts the processes, shows one progress bar for all of them (read from their ``progress.json``), and
when all are complete ``merge`` writes the usual ``score/`` arrays, so ``analyze``, ``report`` and
``score --resume`` see a finished single run. Shards can also run on different machines with a shared
filesystem (``mda-fast score --shard i/k`` on each, then ``mda-fast score --merge k``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, MdaFastError, StateError
from .inputs import open_data
from .io import SCORE_ARRAYS, read_json, score_dir, write_json
from .score import score_fingerprint, score_window, shard_range


class ShardFailed(MdaFastError, RuntimeError):
    """A shard process exited with an error (the message names its log)."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/k"`` → ``(i, k)`` with ``0 <= i < k``."""
    try:
        i, k = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/K, e.g. 0/4 (shard I of K, counted from 0)") from None
    if not 0 <= i < k:
        raise ConfigError(f"--shard {text!r}: need 0 <= I < K")
    return i, k


def parse_devices(text: str) -> list[str]:
    """``"cuda:0,cuda:1"``, ``"cpu,cpu"`` or ``"cuda"`` (every visible GPU) → device names, one per shard."""
    if text.strip() == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise ConfigError("--devices cuda: no CUDA device is visible")
        return [f"cuda:{i}" for i in range(n)]
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if len(devices) < 1:
        raise ConfigError(f"--devices {text!r}: expected a comma-separated list such as cuda:0,cuda:1")
    for d in devices:
        try:
            dev = torch.device(d)
        except RuntimeError:
            raise ConfigError(f"--devices: {d!r} is not a device name (expected e.g. cuda:0 or cpu)") from None
        if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
            raise ConfigError(f"--devices: {d} is not available ({torch.cuda.device_count()} CUDA devices visible)")
    return devices


def _progress(out: str, shard) -> int:
    path = os.path.join(score_dir(out, shard), "progress.json")
    try:
        return int(read_json(path)["n_done"])
    except (OSError, ValueError, KeyError):
        return 0


def merge(cfg, out: str, k: int) -> dict:
    """Join the ``k`` complete shards under ``out/score/shards/`` into the single-run layout of ``out/score/``.

    Refuses shards that are incomplete or were scored with another config. ``progress.json`` is written last,
    so an interrupted merge leaves a run that ``analyze`` refuses and a second merge repairs.
    """
    data = open_data(cfg)
    B = data.batch_size
    _, n = score_window(cfg, B)
    names, shards = None, []
    for i in range(k):
        d = score_dir(out, (i, k))
        if not os.path.exists(os.path.join(d, "progress.json")):
            raise StateError(f"shard {i}/{k} has not started ({d} holds no progress.json)")
        prog = read_json(os.path.join(d, "progress.json"))
        lo, hi = shard_range(n // B, B, (i, k))
        if prog["n_done"] != prog["n_total"] or prog["n_total"] != hi - lo:
            raise StateError(f"shard {i}/{k} is incomplete ({prog['n_done']}/{hi - lo} sequences): "
                             f"finish it with `mda-fast score --shard {i}/{k} --resume`")
        t = read_json(os.path.join(d, "targets.json"))
        if prog["fingerprint"] != score_fingerprint(cfg, out, t["target_names"], (i, k)):
            raise StateError(f"shard {i}/{k} in {d} was scored with a different config")
        if names is not None and t["target_names"] != names["target_names"]:
            raise StateError(f"shard {i}/{k} scored targets {t['target_names']}, shard 0 {names['target_names']}")
        names = names or t
        shards.append((d, lo, hi))
    d = score_dir(out)
    n_targets = len(names["target_names"])
    for key, dt in SCORE_ARRAYS.items():
        shape = (n, n_targets) if key == "scores" else (n,)
        full = np.lib.format.open_memmap(os.path.join(d, f"{key}.npy"), mode="w+", dtype=dt, shape=shape)
        for sd, lo, hi in shards:
            full[lo:hi] = np.load(os.path.join(sd, f"{key}.npy"), mmap_mode="r")
        full.flush()
        del full
    write_json(os.path.join(d, "targets.json"), names)
    write_json(os.path.join(d, "progress.json"),
                  {"n_done": n, "n_total": n, "fingerprint": score_fingerprint(cfg, out, names["target_names"]), "shards": k})
    return {"n_scored": n, "scores_path": os.path.join(d, "scores.npy"), "target_names": names["target_names"]}


def launch(cfg, out: str, devices: list[str], resume: bool = False, progress: bool = True,
           poll_s: float = 0.5) -> dict:
    """Score the window with one shard process per entry of ``devices``, then ``merge`` the shards.

    Each child runs ``python -m mda_fast score --shard i/k`` on the resolved config with
    ``model.device`` set to its device; its output goes to ``score/shards/i-of-k/log.txt``. If one fails, the
    others are stopped and the error names its log; completed chunks stay, and ``resume=True`` continues them.
    CPU children share the cores (``OMP_NUM_THREADS`` = cores / CPU children).
    """
    k = len(devices)
    data = open_data(cfg)
    B = data.batch_size
    _, n = score_window(cfg, B)
    shard_range(n // B, B, (0, k))  # k <= steps, checked before anything starts
    procs, logs = _start_children(cfg, out, devices, resume)
    done0 = sum(_progress(out, (i, k)) for i in range(k)) if resume else 0
    t0 = time.perf_counter()
    try:
        with tqdm(total=n, initial=done0, desc=f"score on {k} devices", unit="seq", disable=not progress,
                  dynamic_ncols=True) as bar:
            _watch(out, devices, procs, bar, data.seq_len - 1, poll_s)
    finally:
        _stop(procs, logs)
    elapsed = max(time.perf_counter() - t0, 1e-9)
    res = merge(cfg, out, k)
    res["seq_per_s"] = (n - done0) / elapsed
    res["devices"] = devices
    return res


def _start_children(cfg, out: str, devices: list[str], resume: bool) -> tuple[list, list]:
    """One ``score --shard i/k`` process per device, each logging to its shard directory."""
    k = len(devices)
    root = os.path.join(score_dir(out), "shards")
    os.makedirs(root, exist_ok=True)
    cfg_path = os.path.join(root, f"config-{k}.json")
    write_json(cfg_path, cfg.to_dict())
    n_cpu = sum(torch.device(d).type == "cpu" for d in devices)
    procs, logs = [], []
    for i, dev in enumerate(devices):
        sd = score_dir(out, (i, k))
        os.makedirs(sd, exist_ok=True)
        if not resume and os.path.exists(os.path.join(sd, "progress.json")):
            os.remove(os.path.join(sd, "progress.json"))  # a fresh start: the bar must not read an old run's count
        cmd = [sys.executable, "-m", "mda_fast", "score", "--config", cfg_path, "--out", out,
               "--shard", f"{i}/{k}", "--set", f'model.device="{dev}"', "--no-progress"] + (["--resume"] if resume else [])
        env = dict(os.environ)
        if torch.device(dev).type == "cpu":
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, n_cpu)))
        log = open(os.path.join(sd, "log.txt"), "w")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs, logs


def _watch(out: str, devices: list[str], procs: list, bar, tokens_per_row: int, poll_s: float) -> None:
    """Advance the bar from the shards' progress until all exit 0; a failed child raises ``ShardFailed``."""
    k = len(devices)
    seen = bar.n
    while True:
        codes = [p.poll() for p in procs]
        now = sum(_progress(out, (i, k)) for i in range(k))
        if now > seen:
            bar.update(now - seen)
            seen = now
            bar.set_postfix(tok_s=f"{(bar.format_dict.get('rate') or 0.0) * tokens_per_row:.3g}")
        failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            i = failed[0]
            log_path = os.path.join(score_dir(out, (i, k)), "log.txt")
            lines = [x for x in open(log_path).read().splitlines() if x.strip()]
            raise ShardFailed(f"shard {i}/{k} on {devices[i]} failed (exit {codes[i]}): "
                              f"{lines[-1].strip() if lines else 'no output'} (log: {log_path}); finished chunks "
                              f"are kept: rerun with --resume")
        if all(c == 0 for c in codes):
            return
        time.sleep(poll_s)


def _stop(procs: list, logs: list) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    for log in logs:
        log.close()

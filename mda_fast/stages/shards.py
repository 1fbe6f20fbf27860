"""Scoring in shards: ``--shard i/k`` (one part), ``--merge k`` (join the parts), ``--devices`` (torchrun ranks).

The window is split into ``k`` contiguous runs of whole training steps (``stages.score.shard_range``). Each part is
scored by its own process into ``score/shards/i-of-k/`` with the same chunked, resumable writes as a single run.
``launch`` (``score --devices``) starts one torchrun rank per device (``stages.distributed``), shows one progress
bar for all of them (read from their ``progress.json``), and when all are complete ``merge`` writes the usual
``score/`` arrays, so ``analyze``, ``report`` and
``score --resume`` see a finished single run. Shards can also run on different machines with a shared
filesystem (``mda-fast score --shard i/k`` on each, then ``mda-fast score --merge k``).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import ConfigError, MdaFastError, StateError
from ..io import SCORE_ARRAYS, read_json, score_dir, write_json
from .inputs import open_data
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


def shard_progress(out: str, shard) -> int:
    """How many samples shard ``(i, k)`` of ``out`` has scored (0 before it starts)."""
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
            raise StateError(
                f"shard {i}/{k} is incomplete ({prog['n_done']}/{hi - lo} sequences): "
                f"finish it with `mda-fast score --shard {i}/{k} --resume`"
            )
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
    write_json(
        os.path.join(d, "progress.json"),
        {"n_done": n, "n_total": n, "fingerprint": score_fingerprint(cfg, out, names["target_names"]), "shards": k},
    )
    return {"n_scored": n, "scores_path": os.path.join(d, "scores.npy"), "target_names": names["target_names"]}

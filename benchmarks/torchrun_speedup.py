"""Speed-up of ``score`` on 2 torchrun processes over 1, side by side in one run (issue 14; CPU, or one GPU).

    python benchmarks/torchrun_speedup.py [--steps 16] [--batch-size 16] [--seq-len 129] [--rounds 2]
    python benchmarks/torchrun_speedup.py --device cuda --json out.json   # two ranks sharing cuda:0

Builds a small world in a temporary directory (a synthetic corpus, a ``tiny-2l`` mda-fast training run, one
``fit``), then scores the same window, alternating in each round: one process with 2 intra-op threads (all the
cores; only with ``--also-2-threads``), one process with 1 thread, and ``torchrun --nproc-per-node=2`` with 1
thread each (gloo). Each row gives the
command's wall time (process start, imports and model loading included) and the scoring rate the command reports
(the scoring loop only; for 2 ranks: all rows / the slower rank's loop time). It also checks that the 2-process
scores are byte-identical to the 1-thread single process. Run from the repo root.

With ``--device cuda`` the model and the scoring run on cuda:0: one process against ``torchrun
--nproc-per-node=2`` with both ranks on cuda:0 (``MDA_FAST_DEVICES=cuda:0,cuda:0``); the scores are compared
(byte-identical, else the largest difference relative to the largest score). ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_world(root: str, steps: int, B: int, S: int, device: str = "cpu") -> str:
    sys.path.insert(0, REPO)
    import torch

    from mda_fast.data import PythiaBatches, SyntheticConfig, generate_corpus
    from mda_fast.train import TrainConfig, Trainer

    torch.set_num_threads(2)
    start, end = 2, 2 + steps
    generate_corpus(
        os.path.join(root, "corpus"), SyntheticConfig(n_sequences=(end + 4) * B, seq_len=S, seed=3), progress=False
    )
    data = PythiaBatches(os.path.join(root, "corpus"), batch_size=B, seq_len=S)
    Trainer(
        TrainConfig(
            preset="tiny-2l",
            total_steps=end + 2,
            lr=3e-3,
            seed=1,
            checkpoint_every=start,
            device="cpu",
            out_dir=os.path.join(root, "run"),
            progress=False,
        ),
        data,
    ).train(end_step=end)
    cfg = {
        "model": {"run_dir": os.path.join(root, "run"), "device": device},
        "data": {"path": os.path.join(root, "corpus"), "batch_size": B, "seq_len": S, "tokenizer": "bytes"},
        "corpus": {"heldout_sequences": 2 * B},
        "window": {"start_step": start, "end_step": end},
        "localize": {"seq_len": 16, "n": 8},
        "targets": {"heads": [[1, 0]], "mode": "qkvo", "probe_L": 16, "probe_n": 16},
        "fit": {"n_sequences": 4 * B, "batch_size": B},
        "score": {"batch_size": B, "chunk": 2 * B},
    }
    path = os.path.join(root, "cfg.json")
    json.dump(cfg, open(path, "w"))
    return path


def run(cmd: list[str], threads: int, extra_env=None) -> tuple[float, float, str]:
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS=str(threads), **(extra_env or {}))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}")
    m = re.search(r"scored \d+ sequences.*\(([\d.]+) seq/s\)", p.stdout)
    return wall, float(m.group(1)) if m else float("nan"), p.stdout


def compare_scores(a: str, b: str) -> dict:
    """Scores of two ``--out`` folders: byte-identical, and max |a − b| / max |a|."""
    import numpy as np

    pa, pb = (os.path.join(x, "score", "scores.npy") for x in (a, b))
    same = open(pa, "rb").read() == open(pb, "rb").read()
    x, y = np.load(pa).astype(np.float64), np.load(pb).astype(np.float64)
    rel = float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-300)) if x.shape == y.shape and x.size else float("inf")
    return {"byte_identical": same, "max_rel_diff": rel}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=129)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: both ranks share cuda:0")
    ap.add_argument("--json", help="write the rows (wall and scoring rate per round, speed-ups, agreement) here")
    ap.add_argument("--keep", help="build the world here and keep it")
    ap.add_argument(
        "--also-2-threads",
        action="store_true",
        help="also one process with 2 intra-op threads (slow when other jobs load the cores: OpenMP spins)",
    )
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    root = a.keep or tempfile.mkdtemp(prefix="mda-torchrun-")
    os.makedirs(root, exist_ok=True)
    t0 = time.perf_counter()
    cfg = build_world(root, a.steps, a.batch_size, a.seq_len, a.device)
    py = sys.executable
    fit_out = os.path.join(root, "fitted")
    from mda_fast.cli import main as cli_main  # the one-process fit, in this process (one interpreter start less)

    if cli_main(["fit", "--config", cfg, "--out", fit_out, "--no-progress"]) != 0:
        raise SystemExit("fit failed")
    t_world = time.perf_counter() - t0
    n = a.steps * a.batch_size
    one = "1 process, 1 thread" if a.device == "cpu" else "1 process on cuda:0"
    two = "torchrun 2 processes, 1 thread each" if a.device == "cpu" else "torchrun 2 processes sharing cuda:0"
    trun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "mda_fast"]
    gpu_env = {"MDA_FAST_DEVICES": "cuda:0,cuda:0"} if a.device == "cuda" else {}
    modes = {
        **({"1 process, 2 threads": ([py, "-m", "mda_fast"], 2, {})} if a.also_2_threads else {}),
        one: ([py, "-m", "mda_fast"], 1, {}),
        two: (trun, 1, gpu_env),
    }
    rows = {m: [] for m in modes}
    outs = {}
    for r in range(a.rounds):
        for m, (prefix, threads, env) in modes.items():
            out = os.path.join(root, f"out-{r}-{len(rows[m])}-{threads}-{'t' if 'torchrun' in m else 'p'}")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            shutil.copy(os.path.join(fit_out, "targets.json"), out)
            shutil.copytree(os.path.join(fit_out, "factors"), os.path.join(out, "factors"))
            wall, rate, _ = run(prefix + ["score", "--config", cfg, "--out", out, "--no-progress"], threads, env)
            rows[m].append((wall, rate))
            outs[m] = out
            print(f"round {r}: {m}: wall {wall:.1f} s, scoring {rate:.1f} seq/s", flush=True)
    check = compare_scores(outs[one], outs[two])
    print(
        f"\n{n} sequences (T = {a.seq_len - 1}, tiny-2l, head L1H0 qkvo, score.batch_size {a.batch_size}), "
        f"{a.rounds} rounds, {os.cpu_count()} CPUs, device {a.device}; 2-process scores against '{one}': "
        f"byte-identical {check['byte_identical']}, max relative difference {check['max_rel_diff']:.2e}\n"
    )
    print("| mode | wall s (each round) | scoring seq/s (each round) | wall speed-up | scoring speed-up |")
    print("| --- | --- | --- | ---: | ---: |")
    ref = rows[one]
    table = {}
    for m, v in rows.items():
        table[m] = {
            "wall_s": [w for w, _ in v],
            "seq_per_s": [x for _, x in v],
            "wall_speedup": sum(w for w, _ in ref) / sum(w for w, _ in v),
            "scoring_speedup": sum(x for _, x in v) / sum(x for _, x in ref),
        }
        print(
            f"| {m} | {', '.join(f'{w:.1f}' for w, _ in v)} | {', '.join(f'{x:.1f}' for _, x in v)} | "
            f"{table[m]['wall_speedup']:.2f}x | {table[m]['scoring_speedup']:.2f}x |"
        )
    print(f"\n(speed-ups against {one}, from the sums over the rounds)")
    if a.json:
        settings = {k: getattr(a, k) for k in ("steps", "batch_size", "seq_len", "rounds", "device")}
        with open(a.json, "w") as fh:
            json.dump(
                {"settings": settings, "sequences": n, "world_s": t_world, "reference": one, "modes": table, **check},
                fh,
                indent=1,
            )
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

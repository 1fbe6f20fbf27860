"""One benchmark harness for the kernel ops: every backend (and baselines) timed side by side in one run, JSON out.

Each ``bench_op_<op>.py`` supplies ``methods(case, inputs, backends) -> {name: fn}`` and calls ``main``:

    python benchmarks/bench_op_score.py --device cpu --json out.json      # demo-model head blocks
    python benchmarks/bench_op_score.py --device cuda --json out.json     # Pythia head blocks, T=2048, N=64
    python benchmarks/render_results.py out.json [more.json] > table.md   # the RESULTS.md tables

Times are round-robin (one call of each method per round, so background load hits all alike), aggregated by the
median (cuda) or the minimum (cpu, a shared machine) over rounds; CUDA times use events. GFLOP/s count
2·N·T·d_out·D for G (+2·N·K·d_out·D for score; + the cheaper route's rotation for eigen_sq; 2·N·T·D² for
covariance, of which the kernels compute the upper triangle).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mda_fast import kernels  # noqa: E402
from mda_fast.kernels import reference  # noqa: E402

# (name, d_model, n_heads): d_head = d_model / n_heads
PYTHIA = [("14m", 128, 4), ("70m", 512, 8), ("160m", 768, 12), ("410m", 1024, 16), ("1b", 2048, 8)]
DEMO = [("demo-64", 64, 4), ("demo-128", 128, 4)]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def head_blocks(d_model: int, n_heads: int):
    """(block, d_out, d_in, bias) of one head in mode qkvo, bias on (HF slice layout)."""
    dh = d_model // n_heads
    return [("QK", 2 * dh, d_model, True), ("V", dh, d_model, True), ("O", d_model, dh, False)]


@dataclass
class Case:
    op: str
    model: str
    block: str
    N: int
    T: int
    d_out: int
    d_in: int
    bias: bool
    K: int
    dtype: str

    @property
    def D(self) -> int:
        return self.d_in + int(self.bias)

    def flops(self) -> float:
        g = 2.0 * self.N * self.T * self.d_out * self.D
        if self.op == "score":
            return g + 2.0 * self.N * self.K * self.d_out * self.D
        if self.op == "eigen_sq":
            return float(min(reference.eigen_sq_flops(self.N, self.T, self.d_out, self.D).values()))
        return 2.0 * self.N * self.T * self.D * self.D


def make_inputs(c: Case, device: str):
    """X, Y, mask (90% of tokens), P, Q_S, Q_A on ``device`` (seeded; drawn on the GPU for a CUDA device, where
    the Pythia-1b blocks' 268M-element X would take seconds on the CPU)."""
    gen_dev = "cuda" if torch.device(device).type == "cuda" else "cpu"
    g = torch.Generator(device=gen_dev).manual_seed(0)
    dt = DTYPES[c.dtype]

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=gen_dev)

    X = randn(c.N, c.T, c.d_in).to(device=device, dtype=dt)
    Y = randn(c.N, c.T, c.d_out).to(device=device, dtype=dt)
    mask = (torch.rand(c.N, c.T, generator=g, device=gen_dev) < 0.9).to(device)
    P = randn(c.K, c.d_out, c.D).to(device)
    Q_S = torch.linalg.qr(randn(c.d_out, c.d_out))[0].contiguous().to(device)
    Q_A = torch.linalg.qr(randn(c.D, c.D))[0].contiguous().to(device)
    return X, Y, mask, P, Q_S, Q_A


def bmm16_grads(X, Y, bias):
    """G by one bf16 `bmm` (bf16 output): the fastest plain torch path to the per-sample gradients (GPU baseline)."""
    Xt = torch.cat([X, X.new_ones(X.shape[:-1] + (1,))], -1) if bias else X
    return torch.bmm(Y.transpose(1, 2), Xt)


def build_cases(op: str, dtypes, shapes: str, N=None, T=None, models=None, blocks=None):
    table = DEMO if shapes == "demo" else PYTHIA
    Ts = (T,) if T else ((128, 256) if shapes == "demo" else (2048,))
    cases = []
    for model, dm, nh in table:
        extra = [("qkv", 3 * dm, dm, True)] if shapes == "demo" else []
        for block, d_out, d_in, bias in head_blocks(dm, nh) + extra:
            for t in Ts:
                for dt in dtypes:
                    for K in (1, 8) if op == "score" else (1,):
                        cases.append(
                            Case(op, model, block, N or (32 if shapes == "demo" else 64), t, d_out, d_in, bias, K, dt)
                        )
    return [c for c in cases if (not models or c.model in models) and (not blocks or c.block in blocks)]


def _once(fn, device: str) -> float:
    if device == "cuda":
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        return e0.elapsed_time(e1) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_side_by_side(fns: dict, device: str, min_time: float, stat: str, max_rounds: int = 30) -> dict:
    """{name: seconds}: methods timed round-robin until each has had min_time (a failing one is reported, dropped)."""
    times = {}
    for name, fn in fns.items():
        try:
            fn()  # warm-up (and autotuning)
            times[name] = []
        except Exception as e:  # noqa: BLE001 - e.g. OOM of a baseline
            print(f"  {name}: {type(e).__name__}: {e}", file=sys.stderr)
    t_start, rounds = time.perf_counter(), 0
    while times and rounds < max_rounds and (rounds < 3 or time.perf_counter() - t_start < min_time * len(times)):
        for name in times:
            times[name].append(_once(fns[name], device))
        rounds += 1
    agg = statistics.median if stat == "median" else min
    return {k: agg(v) for k, v in times.items()}


def meta(device: str, stat: str, argv) -> dict:
    m = {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "stat": stat,
        "device": device,
        "command": "python " + " ".join([sys.argv[0]] + list(argv)),
    }
    if device == "cuda":
        m["gpu"] = torch.cuda.get_device_name()
    try:
        m["_C"] = kernels.build_info()
    except ImportError:
        m["_C"] = None
    return m


def parse_args(op: str, argv):
    ap = argparse.ArgumentParser(description=f"benchmark of {op} (see benchmarks/harness.py)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtypes", default=None, help="comma list of bf16,fp32,fp16 (cpu default bf16,fp32; gpu bf16)")
    ap.add_argument("--backends", default=None, help="backends to time (default: all available on the device)")
    ap.add_argument("--shapes", default=None, choices=["demo", "pythia"], help="default demo on cpu, pythia on cuda")
    ap.add_argument("--N", type=int, default=None)
    ap.add_argument("--T", type=int, default=None)
    ap.add_argument("--models", default=None, help="restrict to these model names (e.g. 160m,410m)")
    ap.add_argument("--blocks", default=None, help="restrict to these blocks (QK,V,O,qkv)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of repetitions per method")
    ap.add_argument("--stat", default=None, choices=["median", "min"])
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch and the OpenMP kernels")
    ap.add_argument("--json", default=None, help="write the results here (default: print only)")
    return ap.parse_args(argv)


def main(op: str, methods, argv=None) -> dict:
    """Runs every case of ``op`` with ``methods(case, inputs, backends)``; returns (and writes) the JSON dict."""
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parse_args(op, argv)
    dev, stat = a.device, a.stat or ("min" if a.device == "cpu" else "median")
    if a.threads:
        torch.set_num_threads(a.threads)
        if dev == "cpu" and "cpu" in kernels.available_backends("cpu"):
            from mda_fast.kernels.compiled import ext

            ext().set_num_threads(a.threads)
    backends = a.backends.split(",") if a.backends else kernels.available_backends(dev)
    dtypes = (a.dtypes or ("bf16,fp32" if dev == "cpu" else "bf16")).split(",")
    cases = build_cases(
        op,
        dtypes,
        a.shapes or ("demo" if dev == "cpu" else "pythia"),
        a.N,
        a.T,
        a.models and a.models.split(","),
        a.blocks and a.blocks.split(","),
    )
    min_time = a.min_time if a.min_time is not None else (0.3 if dev == "cpu" else 0.2)
    rows = []
    for c in cases:
        t = time_side_by_side(methods(c, make_inputs(c, dev), backends), dev, min_time, stat)
        rows.append({"case": asdict(c), "D": c.D, "flops": c.flops(), "seconds": t})
        print(op, c.model, c.block, c.dtype, {k: f"{v * 1e3:.3f} ms" for k, v in t.items()}, flush=True)
        if dev == "cuda":
            torch.cuda.empty_cache()
    out = {"op": op, "meta": meta(dev, stat, argv), "rows": rows}
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out

"""Kernel microbenchmarks: mda_fast backends vs the torch reference and a kronfluence-style einsum path.

CPU (default when no GPU):  python benchmarks/bench_kernels.py --device cpu
GPU:                        python benchmarks/bench_kernels.py --device cuda --markdown out.md

CPU shapes: head blocks of the tiny demo models (d_model 64/128, 4 heads, bias), T 128/256, N 32.
GPU shapes (issue 3): head blocks (QK, V, O) of Pythia-14m/70m/160m/410m/1b, T 2048, N 64, K 1/8, bf16.
Every ratio is measured side by side in one run. GPU rows also report the fraction of cuBLAS bf16 GEMM rate
measured in the same run (a large square GEMM, and a bf16 bmm with the same shape as the G computation).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mda_fast import kernels  # noqa: E402
from mda_fast.kernels import reference  # noqa: E402
from mda_fast.kernels.validate import BlockInput  # noqa: E402

# (name, d_model, n_heads) — Pythia configs; d_head = d_model / n_heads
PYTHIA = [("14m", 128, 4), ("70m", 512, 8), ("160m", 768, 12), ("410m", 1024, 16), ("1b", 2048, 8)]
DEMO = [("demo-64", 64, 4), ("demo-128", 128, 4)]


def head_blocks(d_model: int, n_heads: int):
    """(block, d_out, d_in, bias) of one head in mode qkvo, bias on (HF slice layout)."""
    dh = d_model // n_heads
    return [("QK", 2 * dh, d_model, True), ("V", dh, d_model, True), ("O", d_model, dh, False)]


# ---- the kronfluence-style paths (same tensors) ---------------------------------------------------------------

_paths = {}


def kron_score(X, Y, P, mask, bias):
    """kronfluence LinearModule.compute_pairwise_score: opt_einsum path over 'qio,b...i,b...o->qb' in fp32
    (its default score dtype), on tokens with the ones column appended and the mask applied to the gradient."""
    from opt_einsum import DynamicProgramming, contract_path

    Xt = reference.with_bias(X, bias, torch.float32)
    Yf = Y.float() if mask is None else Y.float() * mask.float().unsqueeze(-1)
    expr = "qio,b...i,b...o->qb"
    key = (expr, tuple(P.shape), tuple(Yf.shape), tuple(Xt.shape))
    if key not in _paths:
        path = contract_path(expr, P, Yf, Xt, optimize=DynamicProgramming(search_outer=True, minimize="flops"))[0]
        _paths[key] = [i for pair in path for i in pair]
    return torch._VF.einsum(expr, (P, Yf, Xt), path=_paths[key]).t()  # noqa: SLF001


def kron_eigen_sq(acc, X, Y, Q_S, Q_A, mask, bias):
    """kronfluence Lambda tracker: per-sample gradient by einsum, then Q_Sᵀ (G Q_A), squared, summed."""
    Xt = reference.with_bias(X, bias, torch.float32)
    Yf = Y.float() if mask is None else Y.float() * mask.float().unsqueeze(-1)
    G = torch.einsum("b...i,b...o->bio", Yf, Xt)
    acc.add_(torch.matmul(Q_S.t(), torch.matmul(G, Q_A)).square_().sum(dim=0))
    return acc


def kron_covariance(acc, X, mask, bias):
    """kronfluence covariance tracker: flattened activations, one GEMM."""
    Xt = reference.with_bias(X, bias, torch.float32).reshape(-1, acc.shape[0])
    Xw = Xt if mask is None else Xt * mask.float().reshape(-1, 1)
    acc.add_(Xw.t() @ Xt)
    return acc


# ---- timing -------------------------------------------------------------------------------------------------

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


def timeit(fn, device: str, min_time: float, max_reps: int = 50) -> float:
    """Median seconds per call (after one warm-up call), repeating until min_time has elapsed."""
    fn()
    times = []
    t_start = time.perf_counter()
    while len(times) < max_reps and (len(times) < 3 or time.perf_counter() - t_start < min_time):
        times.append(_once(fn, device))
    return statistics.median(times)


def time_side_by_side(fns: dict, device: str, min_time: float, stat: str, max_rounds: int = 30) -> dict:
    """Times the methods round-robin (one call of each per round, so background load hits all of them alike)
    until each has had min_time; returns {name: seconds} as the median or the minimum over rounds."""
    times = {k: [] for k in fns}
    for name, fn in list(fns.items()):
        try:
            fn()  # warm-up
        except Exception as e:  # noqa: BLE001 - report and keep going (e.g. OOM of a baseline)
            print(f"  {name}: {type(e).__name__}: {e}", file=sys.stderr)
            del times[name]
    t_start = time.perf_counter()
    rounds = 0
    while times and rounds < max_rounds and (rounds < 3 or time.perf_counter() - t_start < min_time * len(times)):
        for name in times:
            times[name].append(_once(fns[name], device))
        rounds += 1
    agg = statistics.median if stat == "median" else min
    return {k: agg(v) for k, v in times.items()}


def cublas_rates(device: str, T: int, N: int) -> dict:
    """bf16 GEMM rates (TFLOP/s) of cuBLAS measured now: a large square GEMM."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    t = timeit(lambda: a @ b, device, 1.0)
    return {"square8192": 2 * n ** 3 / t / 1e12}


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
    dtype: torch.dtype

    @property
    def D(self):
        return self.d_in + int(self.bias)

    def flops(self) -> float:
        g = 2.0 * self.N * self.T * self.d_out * self.D
        if self.op == "score":
            return g + 2.0 * self.N * self.K * self.d_out * self.D
        if self.op == "eigen_sq":
            f = reference.eigen_sq_flops(self.N, self.T, self.d_out, self.D)
            return float(min(f.values()))
        return 2.0 * self.N * self.T * self.D * self.D


def make_case_inputs(c: Case, device: str):
    g = torch.Generator(device="cpu").manual_seed(0)
    X = torch.randn(c.N, c.T, c.d_in, generator=g).to(device=device, dtype=c.dtype)
    Y = torch.randn(c.N, c.T, c.d_out, generator=g).to(device=device, dtype=c.dtype)
    mask = (torch.rand(c.N, c.T, generator=g) < 0.9).to(device)
    P = torch.randn(c.K, c.d_out, c.D, generator=g).to(device)
    Q_S = torch.linalg.qr(torch.randn(c.d_out, c.d_out, generator=g))[0].contiguous().to(device)
    Q_A = torch.linalg.qr(torch.randn(c.D, c.D, generator=g))[0].contiguous().to(device)
    return X, Y, mask, P, Q_S, Q_A


def methods_for(c: Case, device: str, backends):
    X, Y, mask, P, Q_S, Q_A = make_case_inputs(c, device)
    out = {}
    if c.op == "score":
        for b in backends:
            out[b] = lambda b=b: kernels.score(X, Y, P, mask, bias=c.bias, backend=b)
        out["kronfluence"] = lambda: kron_score(X, Y, P, mask, c.bias)
    elif c.op == "eigen_sq":
        acc = torch.zeros(c.d_out, c.D, device=device)
        for b in backends:
            out[b] = lambda b=b: kernels.eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, mask, c.bias, backend=b)
        out["kronfluence"] = lambda: kron_eigen_sq(acc, X, Y, Q_S, Q_A, mask, c.bias)
    else:
        acc = torch.zeros(c.D, c.D, device=device)
        for b in backends:
            out[b] = lambda b=b: kernels.covariance_accumulate(acc, X, mask, c.bias, backend=b)
        out["kronfluence"] = lambda: kron_covariance(acc, X, mask, c.bias)
    return out


def build_cases(device: str, ops, dtypes, shapes: str, N=None, T=None):
    cases = []
    if shapes == "demo":
        for model, dm, nh in DEMO:
            for block, d_out, d_in, bias in head_blocks(dm, nh) + [("qkv", 3 * dm, dm, True)]:
                for T in ((T,) if T else (128, 256)):
                    for dt in dtypes:
                        for op in ops:
                            for K in ((1, 8) if op == "score" else (1,)):
                                cases.append(Case(op, model, block, N or 32, T, d_out, d_in, bias, K, dt))
    else:
        for model, dm, nh in PYTHIA:
            for block, d_out, d_in, bias in head_blocks(dm, nh):
                for dt in dtypes:
                    for op in ops:
                        for K in ((1, 8) if op == "score" else (1,)):
                            cases.append(Case(op, model, block, N or 64, T or 2048, d_out, d_in, bias, K, dt))
    return cases


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--ops", default="score,eigen_sq,covariance")
    ap.add_argument("--dtypes", default=None, help="comma list of bf16,fp32,fp16 (cpu default bf16,fp32; gpu bf16)")
    ap.add_argument("--backends", default=None, help="mda_fast backends to time (default: all available)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of repetitions per measurement")
    ap.add_argument("--shapes", default=None, choices=["demo", "pythia"],
                    help="demo-model head blocks (cpu default) or Pythia head blocks (cuda default)")
    ap.add_argument("--N", type=int, default=None, help="sequences (default 32 demo, 64 pythia)")
    ap.add_argument("--T", type=int, default=None, help="tokens (default 128 and 256 demo, 2048 pythia)")
    ap.add_argument("--models", default=None, help="restrict to these model names (e.g. 160m,410m)")
    ap.add_argument("--blocks", default=None, help="restrict to these blocks (QK,V,O,qkv)")
    ap.add_argument("--stat", default=None, choices=["median", "min"],
                    help="aggregate over round-robin rounds (default: min on cpu, a shared machine; median on cuda)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch and the OpenMP kernels")
    ap.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    args = ap.parse_args(argv)

    dev = args.device
    args.stat = args.stat or ("min" if dev == "cpu" else "median")
    if args.threads:
        torch.set_num_threads(args.threads)
        if dev == "cpu":
            from mda_fast.kernels.cpu_backend import ext

            ext().set_num_threads(args.threads)
    dmap = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
    dtypes = [dmap[d] for d in (args.dtypes or ("bf16,fp32" if dev == "cpu" else "bf16")).split(",")]
    ops = args.ops.split(",")
    avail = kernels.available_backends(dev)
    backends = args.backends.split(",") if args.backends else [b for b in avail if b != "torch"] + ["torch"]
    min_time = args.min_time if args.min_time is not None else (0.3 if dev == "cpu" else 0.2)
    cases = build_cases(dev, ops, dtypes, args.shapes or ("demo" if dev == "cpu" else "pythia"), args.N, args.T)
    if args.models:
        keep = set(args.models.split(","))
        cases = [c for c in cases if c.model in keep]
    if args.blocks:
        keep = set(args.blocks.split(","))
        cases = [c for c in cases if c.block in keep]

    header = [f"date {time.strftime('%Y-%m-%d')}", f"host {platform.node()}",
              f"torch {torch.__version__}", f"threads {torch.get_num_threads()}", f"stat {args.stat} over round-robin rounds"]
    if dev == "cuda":
        header.append(f"device {torch.cuda.get_device_name()}")
    try:
        header.append(f"_C {kernels.build_info()}")
    except ImportError:
        header.append("_C not built")
    rates = cublas_rates(dev, 2048, 64) if dev == "cuda" else {}
    if rates:
        header.append(f"cuBLAS bf16 square GEMM {rates['square8192']:.1f} TFLOP/s")
    print("\n".join(header))

    rows = []
    for c in tqdm(cases, desc="bench", unit="case"):
        meths = methods_for(c, dev, backends)
        times = time_side_by_side(meths, dev, min_time, args.stat)
        extra = {}
        if dev == "cuda" and c.op in ("score", "eigen_sq"):
            Yb = torch.randn(c.N, c.d_out, c.T, device=dev, dtype=torch.bfloat16)
            Xb = torch.randn(c.N, c.T, c.D, device=dev, dtype=torch.bfloat16)
            tb = timeit(lambda: torch.bmm(Yb, Xb), dev, min_time)
            extra["bmm_tflops"] = 2.0 * c.N * c.T * c.d_out * c.D / tb / 1e12
            del Yb, Xb
        rows.append((c, times, extra))
        if dev == "cuda":
            torch.cuda.empty_cache()

    fast = [b for b in backends if b != "torch"]
    cols = ["op", "model", "block", "N", "T", "d_out", "D", "K", "dtype"]
    for b in fast:
        cols += [f"{b} ms", f"{b} GFLOP/s"]
    cols += ["torch ms", "kronfluence ms"]
    for b in fast:
        cols += [f"{b}/torch ×", f"{b}/kron ×"]
    if dev == "cuda":
        for b in fast:
            cols += [f"{b} % cuBLAS", f"{b} % bmm"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for c, t, extra in rows:
        f = c.flops()
        cells = [c.op, c.model, c.block, str(c.N), str(c.T), str(c.d_out), str(c.D), str(c.K),
                 str(c.dtype).replace("torch.", "")]
        ms = lambda name: f"{t[name] * 1e3:.3f}" if name in t else "—"  # noqa: E731
        for b in fast:
            cells += [ms(b), f"{f / t[b] / 1e9:.1f}" if b in t else "—"]
        cells += [ms("torch"), ms("kronfluence")]
        for b in fast:
            cells += [f"{t['torch'] / t[b]:.2f}" if b in t and "torch" in t else "—",
                      f"{t['kronfluence'] / t[b]:.2f}" if b in t and "kronfluence" in t else "—"]
        if dev == "cuda":
            for b in fast:
                if b in t:
                    tf = f / t[b] / 1e12
                    cells += [f"{100 * tf / rates['square8192']:.0f}",
                              f"{100 * tf / extra['bmm_tflops']:.0f}" if "bmm_tflops" in extra else "—"]
                else:
                    cells += ["—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write("\n\n".join(["\n".join(f"- {h}" for h in header),
                                  "command: `python " + " ".join(sys.argv) + "`", table]) + "\n")
    return rows


if __name__ == "__main__":
    main()

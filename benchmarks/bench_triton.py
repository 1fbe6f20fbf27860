"""Triton kernels on a GPU: time, TFLOP/s and speedup over torch paths measured side by side in one run.

Shapes (issue 3): the head blocks (QK, V, O; bias on QK and V) of Pythia-14m/70m/160m/410m/1b, T=2048, N=64,
K in {1, 8}, bf16. Times are `triton.testing.do_bench` medians. Baselines on the same tensors:

* `ref`  : `mda_fast.kernels.reference` (the project's torch reference: fp32 upcast, G by bmm, GEMM against P);
* `bmm16`: the fastest plain torch path: G by a bf16 `bmm` (bf16 output), then an fp32 GEMM against P
  (score); bf16 GEMM over all tokens (covariance); bf16 G, fp32 rotations (eigen_sq).

FLOPs: score 2·N·d_out·D_in·(T + K); covariance 2·N·T·D² (dense count; the kernel computes half by symmetry);
eigen_sq the FLOPs of the route the kernel picks (`reference.eigen_sq_flops`). `gemm%` is TFLOP/s over the cuBLAS
bf16 GEMM rate (8192³) measured at the start of the run. Every Triton result is also compared with `ref`
(`err` = max |Δ| / max |ref|).

    python benchmarks/bench_triton.py [--ops score,eigen_sq,covariance] [--models 160m,1b] [--markdown out.md]
    python benchmarks/bench_triton.py --check   # compiled kernels vs float64 on odd shapes; exit 1 on failure

Without a CUDA GPU (or with TRITON_INTERPRET=1) it prints why and exits 0.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# (name, d_model, n_heads): d_head = d_model / n_heads
PYTHIA = [("14m", 128, 4), ("70m", 512, 8), ("160m", 768, 12), ("410m", 1024, 16), ("1b", 2048, 8)]


def head_blocks(d_model: int, n_heads: int):
    """(block, d_out, d_in, bias) of one head: [W_Q | W_K] rows, W_V rows (with bias), W_O columns."""
    dh = d_model // n_heads
    return [("QK", 2 * dh, d_model, True), ("V", dh, d_model, True), ("O", d_model, dh, False)]


def _skip_reason() -> str | None:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "TRITON_INTERPRET is set; this benchmark needs compiled kernels"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


def _bench(fn) -> float:
    """Median milliseconds."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def _xt(X, bias):
    return torch.cat([X, X.new_ones(X.shape[:-1] + (1,))], -1) if bias else X


def gemm_tflops() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    return 2 * 8192**3 / _bench(lambda: a @ b) * 1e-9


def run_case(op, X, Y, P, Q_S, Q_A, bias, K):
    """{path: ms}, flops, err, note for one op on one block."""
    from mda_fast.kernels import reference
    from mda_fast.kernels import triton_backend as tb
    from mda_fast.kernels import triton_eigen_sq as te
    from mda_fast.kernels.validate import BlockInput

    N, T, d_in = X.shape
    d_out, D_in = Y.shape[2], d_in + bias
    note = ""
    if op == "score":
        blocks = [BlockInput(X, Y, P, bias)]
        Pf = P.reshape(K, -1)
        paths = {
            "triton": lambda: tb.score_blocks(blocks),
            "ref": lambda: reference.score_blocks(blocks),
            "bmm16": lambda: torch.bmm(Y.transpose(1, 2), _xt(X, bias)).reshape(N, -1).float() @ Pf.t(),
        }
        flops = 2 * N * d_out * D_in * (T + K)
        out, ref = paths["triton"](), paths["ref"]()
    elif op == "covariance":
        acc = torch.zeros(D_in, D_in, device=X.device)
        paths = {
            "triton": lambda: tb.covariance_accumulate(acc, X, None, bias),
            "ref": lambda: reference.covariance_accumulate(acc, X, None, bias),
            "bmm16": lambda: acc.add_(_xt(X, bias).reshape(-1, D_in).t() @ _xt(X, bias).reshape(-1, D_in)),
        }
        flops = 2 * N * T * D_in * D_in
        out = tb.covariance_accumulate(torch.zeros_like(acc), X, None, bias)
        ref = reference.covariance_accumulate(torch.zeros_like(acc), X, None, bias)
    else:
        acc = torch.zeros(d_out, D_in, device=X.device)

        def bmm16():
            G = torch.bmm(Y.transpose(1, 2), _xt(X, bias)).float()
            return acc.add_(torch.matmul(torch.matmul(Q_S.t(), G), Q_A).square_().sum(0))

        paths = {
            "triton": lambda: tb.eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, None, bias),
            "ref": lambda: reference.eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, None, bias),
            "bmm16": bmm16,
        }
        route = te.choose_route(N, T, d_in, d_out, bias)
        flops = reference.eigen_sq_flops(N, T, d_out, D_in)["A" if route == "tokens" else "B"]
        note = f"route={route}"
        out = tb.eigen_sq_accumulate(torch.zeros_like(acc), X, Y, Q_S, Q_A, None, bias)
        ref = reference.eigen_sq_accumulate(torch.zeros_like(acc), X, Y, Q_S, Q_A, None, bias)
    err = _rel_err(out, ref)
    ms = {name: _bench(fn) for name, fn in paths.items()}
    return ms, flops, err, note


def bench(ops, models, N, T, markdown):
    gemm = gemm_tflops()
    header = (f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton "
              f"{__import__('triton').__version__}; cuBLAS bf16 GEMM 8192^3: {gemm:.1f} TFLOP/s; N={N}, T={T}, bf16")
    print(header)
    cols = ["op", "model", "block", "d_out", "D_in", "K", "triton ms", "TFLOP/s", "gemm%", "ref ms", "x ref",
            "bmm16 ms", "x bmm16", "err", "note"]
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    for model, dm, nh in PYTHIA:
        if models and model not in models:
            continue
        for block, d_out, d_in, bias in head_blocks(dm, nh):
            X = torch.randn(N, T, d_in, device="cuda", generator=g).to(torch.bfloat16)
            Y = torch.randn(N, T, d_out, device="cuda", generator=g).to(torch.bfloat16)
            D_in = d_in + bias
            Q_S = torch.linalg.qr(torch.randn(d_out, d_out, device="cuda", generator=g))[0]
            Q_A = torch.linalg.qr(torch.randn(D_in, D_in, device="cuda", generator=g))[0]
            for op in ops:
                for K in ((1, 8) if op == "score" else (1,)):
                    P = torch.randn(K, d_out, D_in, device="cuda", generator=g)
                    ms, flops, err, note = run_case(op, X, Y, P, Q_S, Q_A, bias, K)
                    tf = flops / ms * 1e-9
                    row = [op, model, block, d_out, D_in, K if op == "score" else "-", f"{ms['triton']:.3f}",
                           f"{tf:.1f}", f"{100 * tf / gemm:.0f}%", f"{ms['ref']:.3f}",
                           f"{ms['ref'] / ms['triton']:.2f}", f"{ms['bmm16']:.3f}",
                           f"{ms['bmm16'] / ms['triton']:.2f}", f"{err:.1e}", note]
                    rows.append(row)
                    print(" | ".join(str(c) for c in row), flush=True)
    if markdown:
        lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        Path(markdown).write_text("\n".join(lines) + "\n")
        print(f"wrote {markdown}")


CHECK_CASES = [(1, 1, 129, 96, 7, True), (3, 37, 129, 192, 1, True), (5, 300, 64, 384, 7, False),
               (2, 2048, 768, 128, 8, True), (64, 77, 40, 96, 1, False)]  # (N, T, d_in, d_out, K, bias)


def check(cases=CHECK_CASES, device: str = "cuda") -> int:
    """Kernels against float64 einsum on odd shapes (N=1, T=1, T/d off-tile, bias, masks); 0 if all pass."""
    from types import SimpleNamespace

    from mda_fast.kernels import triton_backend as tb

    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
    g = torch.Generator(device=device).manual_seed(1)
    failures = 0
    for dtype in (torch.float32, torch.bfloat16):
        for N, T, d_in, d_out, K, bias in cases:
            for mask_kind in ("none", "partial", "zero"):
                X = torch.randn(N, T, d_in, device=device, generator=g).to(dtype)
                Y = torch.randn(N, T, d_out, device=device, generator=g).to(dtype)
                M = None if mask_kind == "none" else (
                    torch.zeros(N, T, device=device) if mask_kind == "zero"
                    else (torch.rand(N, T, device=device, generator=g) < 0.6).float())
                D_in = d_in + bias
                P = torch.randn(K, d_out, D_in, device=device, generator=g)
                Q_S = torch.linalg.qr(torch.randn(d_out, d_out, device=device, generator=g, dtype=torch.float64))[0]
                Q_A = torch.linalg.qr(torch.randn(D_in, D_in, device=device, generator=g, dtype=torch.float64))[0]
                Xt = _xt(X.double(), bias)
                m = torch.ones(N, T, device=device, dtype=torch.float64) if M is None else M.double()
                G = torch.einsum("nt,nto,nti->noi", m, Y.double(), Xt)
                refs = {
                    "score": torch.einsum("koi,noi->nk", P.double(), G),
                    "covariance": torch.einsum("nt,nti,ntj->ij", m, Xt, Xt),
                    "eigen_sq[tokens]": (Q_S.T @ G @ Q_A).square().sum(0),
                }
                refs["eigen_sq[grads]"] = refs["eigen_sq[tokens]"]
                outs = {
                    "score": tb.score_blocks([SimpleNamespace(X=X, Y=Y, P=P, bias=bias)], M),
                    "covariance": tb.covariance_accumulate(torch.zeros(D_in, D_in, device=device), X, M, bias),
                }
                for route in ("tokens", "grads"):
                    outs[f"eigen_sq[{route}]"] = tb.eigen_sq_accumulate(
                        torch.zeros(d_out, D_in, device=device), X, Y, Q_S.float(), Q_A.float(), M, bias, route)
                for name, out in outs.items():
                    ref = refs[name]
                    scale = ref.abs().max().item()
                    err = (out.double() - ref).abs().max().item() / (scale if scale else 1.0)
                    ok = not torch.isnan(out).any().item() and (err < tol[dtype] if scale else err == 0.0)
                    failures += not ok
                    print(f"{'ok  ' if ok else 'FAIL'} {name:17s} {str(dtype):14s} N={N} T={T} d_in={d_in} "
                          f"d_out={d_out} K={K} bias={bias} mask={mask_kind}: rel err {err:.1e}", flush=True)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default="score,eigen_sq,covariance")
    ap.add_argument("--models", default=None, help="comma list of 14m,70m,160m,410m,1b (default: all)")
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--T", type=int, default=2048)
    ap.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    ap.add_argument("--check", action="store_true", help="only check compiled kernels against float64")
    args = ap.parse_args(argv)
    ops = [o for o in args.ops.split(",") if o]
    bad = [o for o in ops if o not in ("score", "eigen_sq", "covariance")]
    if bad:
        raise SystemExit(f"--ops: unknown {bad}; expected score, eigen_sq, covariance")
    reason = _skip_reason()
    if reason:
        print(f"bench_triton: skipped ({reason})")
        return 0
    if args.check:
        return check()
    bench(ops, set(args.models.split(",")) if args.models else None, args.N, args.T, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One dispatch layer for the kernel ops (contract in ARCHITECTURE.md).

Backend selection, per call:
  1. the ``backend=`` argument, if given (strict: an unavailable or unsuitable backend raises);
  2. else the environment variable ``MDA_FAST_BACKEND`` (strict too, except that float64 inputs, which only the
     torch backend computes, always fall back to torch);
  3. else automatic: CUDA tensors -> CUDA extension, then Triton, then torch; CPU tensors -> the C++ CPU kernel
     or torch, whichever ``cpu_prefers_cxx`` (measured, see benchmarks/RESULTS.md) says is faster for the shape.
     float64 inputs always use torch.

The public functions validate, pick the backend and call the registered op (``ops.py``,
``torch.ops.mda_fast.*``); the accumulating ones return the ``acc`` they were given, mutated in place.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from torch import Tensor

from . import ops
from .backends import BACKENDS, available_backends, is_available
from .validate import BlockInput, validate_blocks, validate_covariance, validate_eigen_sq

ENV_VAR = "MDA_FAST_BACKEND"
__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "available_backends",
    "covariance_accumulate",
    "cpu_prefers_cxx",
    "eigen_sq_accumulate",
    "score",
    "score_blocks",
    "select_backend",
]


# ---- CPU rule -------------------------------------------------------------------------------------------------
# Measured side by side on the 2-core dev machine (AMD EPYC, AVX-512), one thread each, best of round-robin
# rounds (benchmarks/bench_op_<op>.py --device cpu --threads 1; 2026-11-22, table in benchmarks/RESULTS.md):
# the C++ kernel is 1.0-5x faster than the torch reference for score and eigen_sq on every demo head block
# (d_model 64/128, T 128/256, N 32; bf16 and fp32) and on Pythia-size blocks (d_out 128-2048, D 64-2049,
# T 2048: 73-102 GFLOP/s vs torch's bmm), and for covariance from D = 32 up (1.3-8x, it only computes the upper
# triangle). Torch's single GEMM wins covariance of very narrow blocks (D = 16: C++ at 0.54-0.73x), where the
# kernel's per-chunk packing dominates.
CPU_COV_MIN_D = 32  # covariance: C++ from this width D = d_in + bias, torch GEMM below


def cpu_prefers_cxx(op: str, dtype: torch.dtype, N: int, T: int, d_out: int, D: int, K: int = 1) -> bool:
    """True when the C++ CPU kernel is the faster CPU backend for this op and shape (measured rule above)."""
    if op == "covariance":
        return D >= CPU_COV_MIN_D
    return True


def _has_float64(*tensors) -> bool:
    return any(t is not None and t.dtype == torch.float64 for t in tensors)


def select_backend(
    op: str, device: torch.device, tensors: Sequence[Optional[torch.Tensor]], shape: dict, backend: Optional[str] = None
) -> str:
    """Name of the backend that runs ``op`` (see module docstring for the rule)."""
    f64 = _has_float64(*tensors)
    forced, source = backend, "backend argument"
    if forced is None:
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env and env != "auto":
            forced, source = env, f"environment variable {ENV_VAR}"
            if f64:
                return "torch"
    if forced is not None:
        if not isinstance(forced, str) or forced.lower() not in BACKENDS:
            raise ValueError(f"{source}: unknown backend {forced!r}; expected one of {BACKENDS} (or None)")
        forced = forced.lower()
        if f64 and forced != "torch":
            raise TypeError(f"{source}={forced!r}: float64 inputs are only supported by backend 'torch'")
        if forced == "cuda" and device.type != "cuda":
            raise ValueError(f"{source}='cuda' needs CUDA tensors, got tensors on {device}")
        if forced == "cpu" and device.type != "cpu":
            raise ValueError(f"{source}='cpu' needs CPU tensors, got tensors on {device}")
        if not is_available(forced):
            raise RuntimeError(
                f"{source}={forced!r} is not available here (available: {available_backends()})"
                + ("; build mda_fast._C (scripts/dev_build.sh or pip install .)" if forced in ("cpu", "cuda") else "")
            )
        return forced
    if f64:
        return "torch"
    if device.type == "cuda":
        for name in ("cuda", "triton"):
            if is_available(name):
                return name
        return "torch"
    if device.type == "cpu" and is_available("cpu"):
        dtype = next(t.dtype for t in tensors if t is not None)
        if cpu_prefers_cxx(op, dtype, **shape):
            return "cpu"
    return "torch"


# ---- public ops -----------------------------------------------------------------------------------------------


def covariance_accumulate(
    acc: Tensor, X: Tensor, mask: Optional[Tensor] = None, bias: bool = False, backend: Optional[str] = None
) -> Tensor:
    """acc [D, D] += Σ_n Σ_t m_{n,t} x̃_{n,t} x̃_{n,t}ᵀ with x̃ = [x, 1] when ``bias``; returns acc."""
    validate_covariance(acc, X, mask, bias)
    N, T, d = X.shape
    D = d + int(bias)
    name = select_backend("covariance", X.device, (X, acc), dict(N=N, T=T, d_out=D, D=D), backend)
    ops.covariance_accumulate(acc, X, mask, bias, name)
    return acc


def score_blocks(blocks: Sequence[BlockInput], mask: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """S [N, K] = Σ_b ⟨P_b[k], G_b,n⟩ with G_b,n = Σ_t m_t y_t x̃_tᵀ; fp32 (float64 on float64 inputs)."""
    blocks = validate_blocks(blocks, mask)
    X0 = blocks[0].X
    N, T = X0.shape[:2]
    K = blocks[0].P.shape[0]
    d_out = max(b.Y.shape[2] for b in blocks)
    D = max(b.X.shape[2] + int(b.bias) for b in blocks)
    tensors = [t for b in blocks for t in (b.X, b.P)]
    name = select_backend("score", X0.device, tensors, dict(N=N, T=T, d_out=d_out, D=D, K=K), backend)
    return ops.score_blocks(
        [b.X for b in blocks], [b.Y for b in blocks], [b.P for b in blocks], [b.bias for b in blocks], mask, name
    )


def score(
    X: Tensor, Y: Tensor, P: Tensor, mask: Optional[Tensor] = None, bias: bool = False, backend: Optional[str] = None
) -> Tensor:
    """S [N, K], S[n, k] = ⟨P_k, G_n⟩ for one block (P [K, d_out, d_in + bias] fp32)."""
    return score_blocks([BlockInput(X, Y, P, bias)], mask, backend)


def eigen_sq_accumulate(acc: Tensor, X: Tensor, Y: Tensor, Q_S: Tensor, Q_A: Tensor, mask: Optional[Tensor] = None,
                        bias: bool = False, backend: Optional[str] = None) -> Tensor:  # fmt: skip
    """acc [d_out, D] += Σ_n (Q_Sᵀ G_n Q_A)² (element-wise square); returns acc."""
    validate_eigen_sq(acc, X, Y, Q_S, Q_A, mask, bias)
    N, T, d_in = X.shape
    d_out = Y.shape[2]
    D = d_in + int(bias)
    name = select_backend("eigen_sq", X.device, (X, acc, Q_S, Q_A), dict(N=N, T=T, d_out=d_out, D=D), backend)
    ops.eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, mask, bias, name)
    return acc

"""CUDA backend (tensor cores, G kept on chip): thin wrappers over ``mda_fast._C.cuda_run``.

Inputs are already validated (``validate.py``): tensors on one CUDA device, float32/bfloat16/float16 tokens
with a contiguous last dimension, fp32 contiguous acc/P/Q. Kernels run on torch's current stream.
"""
from __future__ import annotations

import torch

from . import reference
from .cpu_backend import dtype_code, ext, operand, ptr
from .validate import mask_as_float


def is_available() -> bool:
    """True when ``_C`` was compiled with CUDA and torch sees a CUDA device."""
    try:
        C = ext()
    except ImportError:
        return False
    return bool(C.WITH_CUDA) and torch.cuda.is_available() and C.cuda_device_count() > 0


def _run(mode, dtype, tab, mask, N, T, K, S, device):
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        ext().cuda_run(mode, dtype, tab, ptr(mask), N, T, K, S, stream)


def covariance_accumulate(acc, X, mask=None, bias=False):
    N, T, _ = X.shape
    if N * T == 0:
        return acc
    m = mask_as_float(mask)
    op = operand(X, bias)
    _run(ext().MODE_SUM, dtype_code(X.dtype), [op + op + (0, acc.data_ptr())], m, N, T, 0, 0, X.device)
    return acc


def score_blocks(blocks, mask=None):
    X0 = blocks[0].X
    N, T = X0.shape[:2]
    K = blocks[0].P.shape[0]
    S = torch.zeros(N, K, dtype=torch.float32, device=X0.device)  # the kernel adds per tile and block
    if N * T * K == 0:
        return S
    m = mask_as_float(mask)
    tab = [operand(b.Y) + operand(b.X, b.bias) + (b.P.data_ptr(), 0) for b in blocks]
    _run(ext().MODE_SCORE, dtype_code(X0.dtype), tab, m, N, T, K, S.data_ptr(), X0.device)
    return S


def per_sample_grads(X, Y, mask=None, bias=False):
    """G fp32 [N, d_out, d_in + bias] written tile by tile by the kernel (route B workspace)."""
    N, T, d_in = X.shape
    G = torch.empty(N, Y.shape[2], d_in + int(bias), dtype=torch.float32, device=X.device)
    if N == 0:
        return G
    if T == 0:
        return G.zero_()
    m = mask_as_float(mask)
    _run(ext().MODE_STORE, dtype_code(X.dtype), [operand(Y) + operand(X, bias) + (0, G.data_ptr())], m, N, T, 0,
         0, X.device)
    return G


def square_sum(acc, Xr, Yr, mask=None):
    """acc += Σ_n (Yr_nᵀ M Xr_n)² for fp32 rotated tokens; G tiles squared on chip (route A epilogue)."""
    N, T, _ = Xr.shape
    if N * T == 0:
        return acc
    m = mask_as_float(mask)
    _run(ext().MODE_SQUARE, dtype_code(Xr.dtype), [operand(Yr) + operand(Xr) + (0, acc.data_ptr())], m, N, T, 0,
         0, Xr.device)
    return acc


def eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, mask=None, bias=False, route=None):
    """acc += Σ_n (Q_Sᵀ G_n Q_A)², route chosen by ``reference.eigen_sq_route`` (FLOP count)."""
    if X.shape[0] * X.shape[1] == 0:
        return acc
    return reference.eigen_sq_routed(acc, X, Y, Q_S, Q_A, mask, bias, store_g=per_sample_grads,
                                     square_sum=square_sum, route=route)

"""C++ CPU backend (OpenMP, blocked): thin wrappers over ``mda_fast._C.cpu_run``.

Inputs are already validated (``validate.py``): CPU tensors, float32/bfloat16/float16 tokens with a contiguous
last dimension, fp32 contiguous acc/P/Q.
"""
from __future__ import annotations

import torch

from . import reference
from .validate import mask_as_float

_DTYPE_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_module = None


def ext():
    """The compiled module ``mda_fast._C`` (imported lazily; ImportError when it was not built)."""
    global _module
    if _module is None:
        from mda_fast import _C  # noqa: PLC0415

        _module = _C
    return _module


def is_available() -> bool:
    try:
        ext()
    except ImportError:
        return False
    return True


def dtype_code(dtype: torch.dtype) -> int:
    try:
        return _DTYPE_CODE[dtype]
    except KeyError:
        raise TypeError(f"the compiled kernels take float32, bfloat16 or float16 tokens, got {dtype}") from None


def operand(t: torch.Tensor, bias: bool = False) -> tuple:
    """(ptr, stride_n, stride_t, width, bias) of a token tensor [N, T, width] with unit last stride."""
    return (t.data_ptr(), t.stride(0), t.stride(1), t.shape[2], bool(bias))


def ptr(t) -> int:
    return 0 if t is None else t.data_ptr()


def covariance_accumulate(acc, X, mask=None, bias=False):
    N, T, _ = X.shape
    if N * T == 0:
        return acc
    m = mask_as_float(mask)
    op = operand(X, bias)
    C = ext()
    C.cpu_run(C.MODE_SUM, dtype_code(X.dtype), [op + op + (0, acc.data_ptr())], ptr(m), N, T, 0, 0)
    return acc


def score_blocks(blocks, mask=None):
    N, T = blocks[0].X.shape[:2]
    K = blocks[0].P.shape[0]
    if N * T * K == 0:
        return torch.zeros(N, K, dtype=torch.float32)
    S = torch.empty(N, K, dtype=torch.float32)  # every entry is written by the kernel
    m = mask_as_float(mask)
    tab = [operand(b.Y) + operand(b.X, b.bias) + (b.P.data_ptr(), 0) for b in blocks]
    C = ext()
    C.cpu_run(C.MODE_SCORE, dtype_code(blocks[0].X.dtype), tab, ptr(m), N, T, K, S.data_ptr())
    return S


def per_sample_grads(X, Y, mask=None, bias=False):
    """G fp32 [N, d_out, d_in + bias] written by the kernel (route B workspace of eigen_sq_accumulate)."""
    N, T, d_in = X.shape
    G = torch.empty(N, Y.shape[2], d_in + int(bias), dtype=torch.float32)
    if N == 0:
        return G
    if T == 0:
        return G.zero_()
    m = mask_as_float(mask)
    C = ext()
    C.cpu_run(C.MODE_STORE, dtype_code(X.dtype), [operand(Y) + operand(X, bias) + (0, G.data_ptr())], ptr(m),
              N, T, 0, 0)
    return G


def square_sum(acc, Xr, Yr, mask=None):
    """acc += Σ_n (Yr_nᵀ M Xr_n)² for fp32 (already rotated) tokens, fused: G never leaves the thread buffer."""
    N, T, _ = Xr.shape
    if N * T == 0:
        return acc
    m = mask_as_float(mask)
    C = ext()
    C.cpu_run(C.MODE_SQUARE, dtype_code(Xr.dtype), [operand(Yr) + operand(Xr) + (0, acc.data_ptr())], ptr(m),
              N, T, 0, 0)
    return acc


def eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, mask=None, bias=False, route=None):
    """acc += Σ_n (Q_Sᵀ G_n Q_A)², route chosen by ``reference.eigen_sq_route`` (FLOP count)."""
    if X.shape[0] * X.shape[1] == 0:
        return acc
    return reference.eigen_sq_routed(acc, X, Y, Q_S, Q_A, mask, bias, store_g=per_sample_grads,
                                     square_sum=square_sum, route=route)

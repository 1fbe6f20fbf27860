"""Torch reference path: materialises G with ``bmm``, then a GEMM / dot against P.

Works on any device and dtype; computes in fp32, or in float64 when any input is float64. It is the baseline
of the benchmarks and the float64 oracle of the tests. Also holds the FLOP-count route rule of
``eigen_sq_accumulate`` shared by the compiled backends.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .validate import BlockInput


def is_available() -> bool:
    return True


def compute_dtype(*tensors: Optional[torch.Tensor]) -> torch.dtype:
    """float64 if any given tensor is float64, else float32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def with_bias(X: torch.Tensor, bias: bool, dtype: torch.dtype) -> torch.Tensor:
    """X in ``dtype`` with the ones column appended when ``bias``: [N, T, d_in + bias]."""
    X = X.to(dtype)
    if bias:
        X = torch.cat([X, X.new_ones(X.shape[:-1] + (1,))], dim=-1)
    return X


def per_sample_grads(X, Y, mask=None, bias=False, dtype=torch.float32) -> torch.Tensor:
    """G [N, d_out, d_in + bias] with G_n = Σ_t m_t y_t x̃_tᵀ, via bmm."""
    Xt = with_bias(X, bias, dtype)
    Yd = Y.to(dtype)
    if mask is not None:
        Yd = Yd * mask.to(dtype).unsqueeze(-1)
    return torch.bmm(Yd.transpose(1, 2), Xt)


def covariance_accumulate(acc, X, mask=None, bias=False):
    """acc [D, D] += Σ_n Σ_t m_t x̃_t x̃_tᵀ; returns acc."""
    dt = compute_dtype(acc, X)
    Xt = with_bias(X, bias, dt).reshape(-1, acc.shape[0])
    Xw = Xt if mask is None else Xt * mask.to(dt).reshape(-1, 1)
    acc += (Xw.t() @ Xt).to(acc.dtype)
    return acc


def score_blocks(blocks: Sequence[BlockInput], mask=None) -> torch.Tensor:
    """S [N, K] = Σ_b G_b · P_bᵀ (flattened), G_b materialised with bmm."""
    dt = compute_dtype(*[t for b in blocks for t in (b.X, b.P)])
    S = None
    for b in blocks:
        G = per_sample_grads(b.X, b.Y, mask, b.bias, dt)
        width = G.shape[1] * G.shape[2]
        s = G.reshape(G.shape[0], width) @ b.P.to(dt).reshape(b.P.shape[0], width).t()
        S = s if S is None else S + s
    return S


def eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, mask=None, bias=False, route=None):
    """acc [d_out, D] += Σ_n (Q_Sᵀ G_n Q_A)²; returns acc. ``route`` is checked, not used (one torch route)."""
    normalize_route(route)
    dt = compute_dtype(acc, X, Q_S, Q_A)
    G = per_sample_grads(X, Y, mask, bias, dt)
    R = Q_S.to(dt).t() @ G @ Q_A.to(dt)
    acc += (R * R).sum(0).to(acc.dtype)
    return acc


# ---- route rule of eigen_sq_accumulate (shared by the C++ CPU and CUDA backends) ----------------------------


def eigen_sq_flops(N: int, T: int, d_out: int, D: int) -> dict:
    """Multiply-add FLOPs (×2) of the two routes.

    route A (rotate tokens, then fused squared epilogue): 2NT(D² + d_out²) for X̃Q_A and YQ_S, plus 2NT·d_out·D.
    route B (G per chunk of samples, rotated by batched GEMMs): 2NT·d_out·D, plus 2N(d_out²·D + d_out·D²).
    """
    g = 2 * N * T * d_out * D
    return {"A": 2 * N * T * (D * D + d_out * d_out) + g, "B": g + 2 * N * (d_out * d_out * D + d_out * D * D)}


_ROUTES = {None: None, "A": "A", "B": "B", "tokens": "A", "grads": "B"}


def normalize_route(route: Optional[str]) -> Optional[str]:
    """None, "A" or "B" for a route given as None, "A"/"tokens" (rotate the tokens) or "B"/"grads" (rotate G)."""
    try:
        return _ROUTES[route]
    except (KeyError, TypeError):
        raise ValueError(f"route: got {route!r}, expected None, 'A'/'tokens' or 'B'/'grads'") from None


def eigen_sq_route(N: int, T: int, d_out: int, D: int) -> str:
    """ "A" when rotating the tokens costs fewer FLOPs than rotating each G_n, i.e. T(D² + d_out²) <
    d_out·D(d_out + D) (short sequences); "B" otherwise (ties go to B, which streams less data)."""
    f = eigen_sq_flops(N, T, d_out, D)
    return "A" if f["A"] < f["B"] else "B"


def eigen_sq_routed(
    acc,
    X,
    Y,
    Q_S,
    Q_A,
    mask,
    bias,
    *,
    store_g: Callable,
    square_sum: Callable,
    workspace_bytes: int = 256 << 20,
    route: Optional[str] = None,
):
    """Runs eigen_sq_accumulate with a backend's two kernels.

    store_g(Xc, Yc, maskc, bias) -> G fp32 [n, d_out, D] for a chunk of samples (route B);
    square_sum(acc, Xr, Yr, mask) adds Σ_n (Yrᵀ M Xr)² for already rotated fp32 tokens (route A, no bias column).
    Route B bounds its G workspace to ``workspace_bytes``.
    """
    N, T, d_in = X.shape
    d_out = Y.shape[2]
    D = d_in + int(bias)
    route = normalize_route(route) or eigen_sq_route(N, T, d_out, D)
    if route == "A":
        Xr = (with_bias(X, bias, torch.float32) @ Q_A).contiguous()
        Yr = (Y.to(torch.float32) @ Q_S).contiguous()
        square_sum(acc, Xr, Yr, mask)
        return acc
    per_sample = max(1, d_out * D * 4)
    chunk = max(1, min(N, workspace_bytes // per_sample))
    QsT = Q_S.t()
    for n0 in range(0, N, chunk):
        n1 = min(N, n0 + chunk)
        G = store_g(X[n0:n1], Y[n0:n1], None if mask is None else mask[n0:n1], bias)
        R = torch.matmul(torch.matmul(QsT, G), Q_A)
        acc += (R * R).sum(0)
    return acc

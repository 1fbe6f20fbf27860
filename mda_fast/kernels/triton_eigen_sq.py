"""Triton `eigen_sq_accumulate`: acc [d_out, D_in] fp32 += Σ_n (Q_Sᵀ G_n Q_A)², G_n = Σ_t m_t y_t x̃_tᵀ.

Two routes, picked by FLOP count (`choose_route`, which applies the shared rule `reference.eigen_sq_route`:
"tokens" is its route A, "grads" its route B), both accumulating in fp32:

* "tokens": rotate the tokens first with GEMMs, X̃' = X̃ Q_A (the bias row of Q_A is added, so the ones column is
  never materialised) and Y' = Y Q_S, then a fused kernel computes each rotated per-sample gradient tile
  G'_n = Σ_t m_t y'_t x̃'_tᵀ on chip over T and accumulates its square; G' never reaches global memory. When the
  tile grid is small the samples are split over programs whose sums are added into acc atomically (the fp32
  addition order may then vary between runs).
  FLOPs 2·N·T·(d_in·D_in + d_out² + d_out·D_in).
* "grads": a kernel writes G_n (fp32) for a chunk of samples, batched GEMMs rotate it (Q_Sᵀ G_n Q_A) and the
  squares are summed. FLOPs 2·N·(T·d_out·D_in + d_out²·D_in + d_out·D_in²).

"tokens" wins when T is small against d (T < d for square blocks); "grads" wins for long sequences, e.g. Pythia
head blocks at T=2048 (d_out = d_head ≤ 256). The rotated tokens are rounded to the input dtype (bf16/fp16 keep
tensor-core speed; fp32 stays fp32 with exact "ieee" dots); in interpreter mode everything is fp32.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import reference
from .triton_tile import (
    TABLE,
    compile_configs,
    interpret_mode,
    precision,
    sample_g_tile,
    signature,
    tile_configs,
    tile_offsets,
)

# Bytes of fp32 intermediates (rotated tokens or per-sample gradients) held at once.
_CHUNK_BYTES = 512 * 2**20


def _eigen_sq_kernel(Xr, Yr, M, Acc, N, T, d_out, D_in, samples_per_split, HAS_MASK: tl.constexpr,
                     UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr,
                     BLOCK_T: tl.constexpr):  # fmt: skip
    _, _, offs_o, offs_i = tile_offsets(tl.program_id(0), D_in, BLOCK_O, BLOCK_I)
    n_begin = tl.program_id(1).to(tl.int64) * samples_per_split
    n_end = tl.minimum(n_begin + samples_per_split, N)
    sq = tl.zeros([BLOCK_O, BLOCK_I], dtype=tl.float32)
    for n in range(n_begin, n_end):
        g = sample_g_tile(Yr, Xr, M, n, T, d_out, D_in, offs_o, offs_i, HAS_MASK, False, UPCAST, PRECISION,
                          BLOCK_O, BLOCK_I, BLOCK_T)  # fmt: skip
        sq += g * g
    tl.atomic_add(
        Acc + offs_o[:, None] * D_in + offs_i[None, :], sq, mask=(offs_o < d_out)[:, None] & (offs_i < D_in)[None, :]
    )


def _grad_kernel(X, Y, M, G, T, d_in, d_out, D_in, HAS_MASK: tl.constexpr, BIAS: tl.constexpr, UPCAST: tl.constexpr,
                 PRECISION: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr,
                 BLOCK_T: tl.constexpr):  # fmt: skip
    n = tl.program_id(0).to(tl.int64)
    _, _, offs_o, offs_i = tile_offsets(tl.program_id(1), D_in, BLOCK_O, BLOCK_I)
    g = sample_g_tile(Y, X, M, n, T, d_out, d_in, offs_o, offs_i, HAS_MASK, BIAS, UPCAST, PRECISION, BLOCK_O, BLOCK_I,
                      BLOCK_T)  # fmt: skip
    tl.store(
        G + (n * d_out + offs_o[:, None]) * D_in + offs_i[None, :],
        g,
        mask=(offs_o < d_out)[:, None] & (offs_i < D_in)[None, :],
    )


# the eigen-squared and gradient kernels tune over the shared table less its 32x128 and 64x256 tiles
_TABLE = [row for row in TABLE if row[:3] not in ((32, 128, 64), (64, 256, 32))]


def _configs(interpret: bool):
    return tile_configs(interpret, _TABLE)


@functools.cache
def _build(interpret: bool):
    sq = triton.autotune(
        _configs(interpret), key=["T", "d_out", "D_in", "samples_per_split", "HAS_MASK"], restore_value=["Acc"]
    )(triton.jit(_eigen_sq_kernel))
    grad = triton.autotune(_configs(interpret), key=["T", "d_in", "d_out", "BIAS", "HAS_MASK"])(
        triton.jit(_grad_kernel)
    )
    return sq, grad


def choose_route(N: int, T: int, d_in: int, d_out: int, bias: bool) -> str:
    """The route with fewer FLOPs by the rule every backend shares (``reference.eigen_sq_route``)."""
    return {"A": "tokens", "B": "grads"}[reference.eigen_sq_route(N, T, d_out, d_in + int(bool(bias)))]


def _sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _tokens_route(acc, X, Y, Q_S, Q_A, mask, bias, interpret):
    N, T, d_in = X.shape
    d_out, D_in = Y.shape[2], Q_A.shape[0]
    sq_kernel, _ = _build(interpret)
    chunk = max(1, min(N, _CHUNK_BYTES // max(1, 4 * T * (d_out + D_in))))
    tiles = triton.cdiv(d_out, 128) * triton.cdiv(D_in, 128)
    for c0 in range(0, N, chunk):
        c1 = min(N, c0 + chunk)
        Xr = torch.matmul(X[c0:c1].float(), Q_A[:d_in])
        if bias:
            Xr += Q_A[d_in]
        Yr = torch.matmul(Y[c0:c1].float(), Q_S)
        if not interpret:
            Xr, Yr = Xr.to(X.dtype), Yr.to(Y.dtype)
        n = c1 - c0
        per_split = triton.cdiv(n, max(1, min(n, triton.cdiv(4 * _sms(X.device), tiles))))
        m = mask[c0:c1] if mask is not None else acc  # dummy pointer when HAS_MASK is False
        grid = lambda META: (
            triton.cdiv(d_out, META["BLOCK_O"]) * triton.cdiv(D_in, META["BLOCK_I"]),
            triton.cdiv(n, per_split),
        )
        sq_kernel[grid](Xr, Yr, m, acc, n, T, d_out, D_in, per_split, HAS_MASK=mask is not None, UPCAST=interpret,
                        PRECISION=precision(Xr.dtype))  # fmt: skip
    return acc


def per_sample_grads(X, Y, mask=None, bias=False):
    """G fp32 [N, d_out, d_in + bias], every element written by the kernel (the "grads" route's workspace)."""
    interpret = interpret_mode()
    N, T, d_in = X.shape
    d_out, D_in = Y.shape[2], d_in + int(bool(bias))
    G = torch.empty((N, d_out, D_in), dtype=torch.float32, device=X.device)
    if N == 0 or T == 0:
        return G.zero_()
    _, grad_kernel = _build(interpret)
    m = mask if mask is not None else G  # dummy pointer when HAS_MASK is False
    grid = lambda META: (N, triton.cdiv(d_out, META["BLOCK_O"]) * triton.cdiv(D_in, META["BLOCK_I"]))
    grad_kernel[grid](X, Y, m, G, T, d_in, d_out, D_in, HAS_MASK=mask is not None, BIAS=bool(bias), UPCAST=interpret,
                      PRECISION=precision(X.dtype))  # fmt: skip
    return G


def _grads_route(acc, X, Y, Q_S, Q_A, mask, bias, interpret):
    N = X.shape[0]
    d_out, D_in = Y.shape[2], Q_A.shape[0]
    chunk = max(1, min(N, _CHUNK_BYTES // (3 * 4 * d_out * D_in)))
    Q_St = Q_S.t().contiguous()
    for c0 in range(0, N, chunk):
        c1 = min(N, c0 + chunk)
        G = per_sample_grads(X[c0:c1], Y[c0:c1], None if mask is None else mask[c0:c1], bias)
        acc += torch.matmul(torch.matmul(Q_St, G), Q_A).square_().sum(0)
    return acc


def eigen_sq_accumulate(acc: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, Q_S: torch.Tensor, Q_A: torch.Tensor,
                        mask: torch.Tensor | None, bias: bool, route: str | None = None) -> torch.Tensor:  # fmt: skip
    """acc [d_out, D_in] fp32 += Σ_n (Q_Sᵀ G_n Q_A)²; route None | "tokens"/"A" | "grads"/"B"; returns acc."""
    interpret = interpret_mode()
    N, T, d_in = X.shape
    route = {None: None, "A": "tokens", "B": "grads"}[reference.normalize_route(route)]
    if route is None:
        route = choose_route(N, T, d_in, Y.shape[2], bias)
    if N == 0 or T == 0:
        return acc
    run = _tokens_route if route == "tokens" else _grads_route
    return run(acc, X, Y, Q_S, Q_A, mask, bias, interpret)


def compile_specs(all_configs: bool, dtypes=("bf16", "fp16", "fp32")):
    """(name, kernel fn, signature, constexprs, config) tuples for `triton_backend.compile_check`."""
    for dt in dtypes:
        prec = "ieee" if dt == "fp32" else "tf32"
        for cfg in compile_configs(_configs(False), all_configs):
            sig = signature(_eigen_sq_kernel, dt, tokens="Xr Yr", fp32="M Acc")
            const = dict(HAS_MASK=True, UPCAST=False, PRECISION=prec, **cfg.kwargs)
            yield f"eigen_sq[{dt}]", _eigen_sq_kernel, sig, const, cfg
            sig = signature(_grad_kernel, dt, tokens="X Y", fp32="M G")
            const = dict(HAS_MASK=True, BIAS=True, UPCAST=False, PRECISION=prec, **cfg.kwargs)
            yield f"grad[{dt}]", _grad_kernel, sig, const, cfg

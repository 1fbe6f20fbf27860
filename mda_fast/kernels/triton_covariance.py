"""Triton `covariance_accumulate`: acc [D, D] fp32 += Σ_n Σ_t m x̃ x̃ᵀ, D = d_in + bias, x̃ = [x, 1].

X is read as R = N·T rows of width d_in. One program owns one [BLOCK_D, BLOCK_D] tile (i, j) with j ≥ i of the
symmetric result and one slice of rows (split-K over rows so small D still fills the GPU); it accumulates
(m · x̃[rows, i])ᵀ x̃[rows, j] with `g_tile` (A = B = X, both with the bias column) and atomically adds the tile to
acc[i, j] and its transpose to acc[j, i] (once for diagonal tiles), so only half the products are computed. With
one row slice every element gets one add (deterministic); with several, fp32 addition order varies between runs
(differences ~1e-7 relative).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .triton_tile import autotune_configs, compile_configs, g_tile, interpret_mode, precision, signature

# Rows per program are a multiple of this (every config's BLOCK_R divides it).
ROW_QUANTUM = 256


def _covariance_kernel(X, M, Acc, R, d_in, D, rows_per_split, HAS_MASK: tl.constexpr, BIAS: tl.constexpr,
                       UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_D: tl.constexpr,
                       BLOCK_R: tl.constexpr):  # fmt: skip
    n_tiles = (D + BLOCK_D - 1) // BLOCK_D
    tile = tl.program_id(0)
    pid_i = tile // n_tiles
    pid_j = tile % n_tiles
    if pid_j >= pid_i:
        offs_i = pid_i * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_j = pid_j * BLOCK_D + tl.arange(0, BLOCK_D)
        r_begin = tl.program_id(1).to(tl.int64) * rows_per_split
        r_end = tl.minimum(r_begin + rows_per_split, R)
        acc = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
        acc = g_tile(acc, X, X, M, r_begin, r_end, d_in, d_in, offs_i, offs_j, HAS_MASK, BIAS, BIAS, UPCAST,
                     PRECISION, BLOCK_R)  # fmt: skip
        ij_ok = (offs_i < D)[:, None] & (offs_j < D)[None, :]
        tl.atomic_add(Acc + offs_i[:, None] * D + offs_j[None, :], acc, mask=ij_ok)
        if pid_j != pid_i:
            tl.atomic_add(Acc + offs_j[None, :] * D + offs_i[:, None], acc, mask=ij_ok)


def _configs(interpret: bool):
    if interpret:
        return [triton.Config({"BLOCK_D": 64, "BLOCK_R": 32}, num_warps=4)]
    return autotune_configs(
        [
            triton.Config({"BLOCK_D": bd, "BLOCK_R": br}, num_warps=w, num_stages=s)
            for bd, br, w, s in [
                (64, 64, 4, 4),
                (64, 128, 4, 3),
                (128, 32, 8, 4),
                (128, 64, 8, 3),
                (128, 64, 4, 3),
                (128, 128, 8, 3),
            ]
        ]
    )


@functools.cache
def _build(interpret: bool):
    return triton.autotune(
        _configs(interpret), key=["d_in", "rows_per_split", "BIAS", "HAS_MASK"], restore_value=["Acc"]
    )(triton.jit(_covariance_kernel))


def kernel():
    """The jitted, autotuned kernel for the current `TRITON_INTERPRET` setting."""
    return _build(interpret_mode())


def rows_per_split(R: int, D: int, device: torch.device) -> int:
    """Row slice per program: enough slices that ~4 waves of programs run when the tile grid alone is small."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
    else:
        sms = 1
    tiles = triton.cdiv(D, 128) * (triton.cdiv(D, 128) + 1) // 2
    splits = max(1, min(triton.cdiv(4 * sms, tiles), triton.cdiv(R, 4 * ROW_QUANTUM)))
    return triton.cdiv(triton.cdiv(R, splits), ROW_QUANTUM) * ROW_QUANTUM


def covariance_accumulate(acc: torch.Tensor, X: torch.Tensor, mask: torch.Tensor | None, bias: bool) -> torch.Tensor:
    """acc [D, D] fp32 += Σ_n Σ_t m x̃ x̃ᵀ (X [N, T, d_in], mask None or [N, T]); returns acc."""
    interpret = interpret_mode()
    fn = kernel()
    d_in = X.shape[-1]
    D = d_in + int(bool(bias))
    R = X.numel() // d_in if d_in else 0
    if R == 0 or D == 0:
        return acc
    rows = rows_per_split(R, D, X.device)
    m = mask if mask is not None else acc  # dummy pointer when HAS_MASK is False
    grid = lambda META: (triton.cdiv(D, META["BLOCK_D"]) ** 2, triton.cdiv(R, rows))
    fn[grid](X, m, acc, R, d_in, D, rows, HAS_MASK=mask is not None, BIAS=bool(bias), UPCAST=interpret,
             PRECISION=precision(X.dtype))  # fmt: skip
    return acc


def compile_specs(all_configs: bool, dtypes=("bf16", "fp16", "fp32")):
    """(name, kernel fn, signature, constexprs, config) tuples for `triton_backend.compile_check`."""
    for dt in dtypes:
        for cfg in compile_configs(_configs(False), all_configs):
            sig = signature(_covariance_kernel, dt, tokens="X", fp32="M Acc", i64="R")
            const = dict(
                HAS_MASK=True, BIAS=True, UPCAST=False, PRECISION="ieee" if dt == "fp32" else "tf32", **cfg.kwargs
            )
            yield f"covariance[{dt}]", _covariance_kernel, sig, const, cfg

"""Triton `covariance_accumulate`: acc [D, D] fp32 += Σ_n Σ_t m x̃ x̃ᵀ, D = d_in + bias, x̃ = [x, 1].

X is read as R = N·T rows of width d_in. One program owns one [BLOCK_D, BLOCK_D] tile (i, j) with j ≥ i of the
symmetric result and one slice of rows (split-K over rows so small D still fills the GPU); it accumulates
x̃[rows, i]ᵀ (m · x̃[rows, j]) with `tl.dot` in fp32 and atomically adds the tile to acc[i, j] and its transpose to
acc[j, i] (once for diagonal tiles), so only half the products are computed. With one row slice every element
gets one add (deterministic); with several, fp32 addition order varies between runs (differences ~1e-7 relative).
The bias column is an implicit 1 on valid rows, injected into the loaded tiles.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .triton_backend import interpret_mode

# Rows per program are a multiple of this (every config's BLOCK_R divides it).
_ROW_QUANTUM = 256


def _covariance_kernel(X, M, Acc, R, d_in, D, rows_per_split,
                       HAS_MASK: tl.constexpr, BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr):
    n_tiles = (D + BLOCK_D - 1) // BLOCK_D
    tile = tl.program_id(0)
    pid_i = tile // n_tiles
    pid_j = tile % n_tiles
    if pid_j >= pid_i:
        split = tl.program_id(1).to(tl.int64)
        offs_i = pid_i * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_j = pid_j * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_r = tl.arange(0, BLOCK_R)
        i_ok = offs_i < d_in
        j_ok = offs_j < d_in
        r_begin = split * rows_per_split
        r_end = tl.minimum(r_begin + rows_per_split, R)
        acc = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
        for r0 in range(r_begin, r_end, BLOCK_R):
            r = r0 + offs_r
            r_ok = r < r_end
            # x̃[rows, i]ᵀ as [BLOCK_D, BLOCK_R] and x̃[rows, j] as [BLOCK_R, BLOCK_D]
            a = tl.load(X + r[None, :] * d_in + offs_i[:, None], mask=i_ok[:, None] & r_ok[None, :], other=0.0)
            b = tl.load(X + r[:, None] * d_in + offs_j[None, :], mask=r_ok[:, None] & j_ok[None, :], other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            if BIAS:
                a = tl.where((offs_i[:, None] == d_in) & r_ok[None, :], 1.0, a).to(a.dtype)
                b = tl.where(r_ok[:, None] & (offs_j[None, :] == d_in), 1.0, b).to(b.dtype)
            if HAS_MASK:
                m = tl.load(M + r, mask=r_ok, other=0.0).to(tl.float32)
                b = (b.to(tl.float32) * m[:, None]).to(a.dtype)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        ij_ok = (offs_i < D)[:, None] & (offs_j < D)[None, :]
        tl.atomic_add(Acc + offs_i[:, None] * D + offs_j[None, :], acc, mask=ij_ok)
        if pid_j != pid_i:
            tl.atomic_add(Acc + offs_j[None, :] * D + offs_i[:, None], acc, mask=ij_ok)


def _configs(interpret: bool):
    if interpret:
        return [triton.Config({"BLOCK_D": 64, "BLOCK_R": 32}, num_warps=4)]
    return [
        triton.Config({"BLOCK_D": bd, "BLOCK_R": br}, num_warps=w, num_stages=s)
        for bd, br, w, s in [
            (64, 64, 4, 4), (64, 128, 4, 3), (128, 32, 8, 4), (128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3),
        ]
    ]


@functools.lru_cache(maxsize=None)
def _build(interpret: bool):
    return triton.autotune(_configs(interpret), key=["d_in", "rows_per_split", "BIAS", "HAS_MASK"],
                           restore_value=["Acc"])(triton.jit(_covariance_kernel))


def kernel():
    """The jitted, autotuned kernel for the current `TRITON_INTERPRET` setting."""
    return _build(interpret_mode())


def _rows_per_split(R: int, D: int, device: torch.device) -> int:
    """Row slice per program: enough slices that ~4 waves of programs run when the tile grid alone is small."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
    else:
        sms = 1
    tiles = triton.cdiv(D, 128) * (triton.cdiv(D, 128) + 1) // 2
    splits = max(1, min(triton.cdiv(4 * sms, tiles), triton.cdiv(R, 4 * _ROW_QUANTUM)))
    return triton.cdiv(triton.cdiv(R, splits), _ROW_QUANTUM) * _ROW_QUANTUM


def covariance_accumulate(acc: torch.Tensor, X: torch.Tensor, mask: torch.Tensor | None,
                          bias: bool) -> torch.Tensor:
    """acc [D, D] fp32 += Σ_n Σ_t m x̃ x̃ᵀ (X [N, T, d_in], mask None or [N, T]); returns acc."""
    interpret = interpret_mode()
    fn = kernel()
    d_in = X.shape[-1]
    D = d_in + int(bool(bias))
    R = X.numel() // d_in if d_in else 0
    if R == 0 or D == 0:
        return acc
    rows = _rows_per_split(R, D, X.device)
    m = mask if mask is not None else acc  # dummy pointer when HAS_MASK is False
    grid = lambda META: (triton.cdiv(D, META["BLOCK_D"]) ** 2, triton.cdiv(R, rows))
    fn[grid](X, m, acc, R, d_in, D, rows,
             HAS_MASK=mask is not None, BIAS=bool(bias), UPCAST=interpret,
             PRECISION="ieee" if X.dtype == torch.float32 else "tf32")
    return acc


def compile_specs(all_configs: bool, dtypes=("bf16", "fp16", "fp32")):
    """(name, kernel fn, signature, constexprs, config) tuples for `triton_backend.compile_check`."""
    configs = _configs(False) if all_configs else _configs(False)[-1:]
    for dt in dtypes:
        for cfg in configs:
            sig = {"X": "*" + dt, "M": "*fp32", "Acc": "*fp32", "R": "i64", "d_in": "i32", "D": "i32",
                   "rows_per_split": "i32"}
            const = dict(HAS_MASK=True, BIAS=True, UPCAST=False, PRECISION="ieee" if dt == "fp32" else "tf32",
                         **cfg.kwargs)
            yield f"covariance[{dt}]", _covariance_kernel, sig, const, cfg

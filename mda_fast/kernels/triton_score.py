"""Triton `score_blocks`: S[n, k] = Σ_b <P_b[k], G_{b,n}>, G_{b,n} = Σ_t m_t y_t x̃_tᵀ, G never leaves the chip.

One program owns one sample n and one [BLOCK_O, BLOCK_I] tile of G: it accumulates the tile over T (`g_tile`,
fp32), then contracts it with the K query tiles P[k, tile] and stores K partial sums into a [N, cells, K] fp32
buffer (each cell written once: no atomics, deterministic). One launch per block; one final sum over the tile
axis gives S. The bias column of X̃ is an implicit 1 injected into the loaded X tile.

Kernels are jitted lazily (`_build`) so `TRITON_INTERPRET=1` is honoured whenever it is set before the first call.
Interpreter mode uses one config and upcasts bf16/fp16 to fp32 before `tl.dot` (the interpreter's bf16 dot is
wrong). On the GPU fp32 inputs use exact ("ieee") dots; bf16/fp16 use tensor cores.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import triton_tile
from .triton_tile import compile_configs, precision, sample_g_tile, signature, tile_configs, tile_offsets

# Partial-sum cell edges: every config's BLOCK_O / BLOCK_I is a multiple of them.
_FINE_O = 32
_FINE_I = 32


def _score_kernel(X, Y, P, M, Part, T, d_in, d_out, D_in, K, cell_offset, part_cells, HAS_MASK: tl.constexpr,
                  BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_O: tl.constexpr,
                  BLOCK_I: tl.constexpr, BLOCK_T: tl.constexpr, FINE_O: tl.constexpr, FINE_I: tl.constexpr):  # fmt: skip
    n = tl.program_id(0).to(tl.int64)
    pid_o, pid_i, offs_o, offs_i = tile_offsets(tl.program_id(1), D_in, BLOCK_O, BLOCK_I)
    acc = sample_g_tile(Y, X, M, n, T, d_out, d_in, offs_o, offs_i, HAS_MASK, BIAS, UPCAST, PRECISION, BLOCK_O,
                        BLOCK_I, BLOCK_T)  # fmt: skip
    # Partial sums live on a fixed grid of FINE_O x FINE_I cells (independent of the config): the program stores its
    # sum in the first cell of its tile and zeros in the other cells it covers, so every cell is written once.
    SUB_O: tl.constexpr = BLOCK_O // FINE_O
    SUB_I: tl.constexpr = BLOCK_I // FINE_I
    n_cells_i = tl.cdiv(D_in, FINE_I)
    sub_o = tl.arange(0, SUB_O)
    sub_i = tl.arange(0, SUB_I)
    cell_o = pid_o * SUB_O + sub_o
    cell_i = pid_i * SUB_I + sub_i
    cell_ok = (cell_o < tl.cdiv(d_out, FINE_O))[:, None] & (cell_i < n_cells_i)[None, :]
    first = (sub_o == 0)[:, None] & (sub_i == 0)[None, :]
    cell = Part + (n * part_cells + cell_offset + cell_o[:, None] * n_cells_i + cell_i[None, :]) * K
    p_ok = (offs_o < d_out)[:, None] & (offs_i < D_in)[None, :]
    p_ptrs = P + offs_o[:, None] * D_in + offs_i[None, :]
    for k in range(K):
        p = tl.load(p_ptrs + k * d_out * D_in, mask=p_ok, other=0.0)
        s = tl.sum(tl.sum(p * acc, axis=1), axis=0)
        tl.store(cell + k, tl.where(first, s, 0.0), mask=cell_ok)


def _configs(interpret: bool):
    return tile_configs(interpret)


@functools.cache
def _build(interpret: bool):
    return triton.autotune(_configs(interpret), key=["T", "d_in", "d_out", "K", "BIAS", "HAS_MASK"])(
        triton.jit(_score_kernel)
    )


def kernel():
    """The jitted, autotuned kernel for the current `TRITON_INTERPRET` setting."""
    return _build(triton_tile.interpret_mode())


def _cells(d_out: int, D_in: int) -> int:
    return triton.cdiv(d_out, _FINE_O) * triton.cdiv(D_in, _FINE_I)


def score_blocks(blocks, mask: torch.Tensor | None) -> torch.Tensor:
    """S [N, K] fp32 = Σ_b score(b); blocks have `.X [N,T,d_in] .Y [N,T,d_out] .P [K,d_out,D_in] fp32 .bias`."""
    interpret = triton_tile.interpret_mode()
    fn = kernel()
    X0 = blocks[0].X
    N, T = X0.shape[0], X0.shape[1]
    K = blocks[0].P.shape[0]
    offsets, total = [], 0
    for b in blocks:
        offsets.append(total)
        total += _cells(b.Y.shape[2], b.P.shape[2])
    if N == 0 or T == 0:
        return torch.zeros((N, K), dtype=torch.float32, device=X0.device)
    part = torch.empty((N, total, K), dtype=torch.float32, device=X0.device)  # every cell is written
    m = mask if mask is not None else part  # dummy pointer when HAS_MASK is False
    for b, off in zip(blocks, offsets):
        d_in, d_out, D_in = b.X.shape[2], b.Y.shape[2], b.P.shape[2]
        grid = lambda META, d_out=d_out, D_in=D_in: (
            N,
            triton.cdiv(d_out, META["BLOCK_O"]) * triton.cdiv(D_in, META["BLOCK_I"]),
        )
        fn[grid](b.X, b.Y, b.P, m, part, T, d_in, d_out, D_in, K, off, total, HAS_MASK=mask is not None,
                 BIAS=bool(b.bias), UPCAST=interpret, PRECISION=precision(b.X.dtype), FINE_O=_FINE_O,
                 FINE_I=_FINE_I)  # fmt: skip
    return part.sum(1)


def compile_specs(all_configs: bool, dtypes=("bf16", "fp16", "fp32")):
    """(name, kernel fn, signature, constexprs, config) tuples for `triton_backend.compile_check`."""
    for dt in dtypes:
        for cfg in compile_configs(_configs(False), all_configs):
            sig = signature(_score_kernel, dt, tokens="X Y", fp32="P M Part")
            const = dict(
                HAS_MASK=True,
                BIAS=True,
                UPCAST=False,
                PRECISION="ieee" if dt == "fp32" else "tf32",
                FINE_O=_FINE_O,
                FINE_I=_FINE_I,
                **cfg.kwargs,
            )
            yield f"score[{dt}]", _score_kernel, sig, const, cfg

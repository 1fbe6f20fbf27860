"""The one G-tile loop of the Triton kernels (score, per-sample gradients, eigen-squared, covariance).

``g_tile`` accumulates acc[BLOCK_A, BLOCK_B] += Σ_r m_r · ã_r[offs_a] b̃_r[offs_b]ᵀ over the rows r in
[r_begin, r_end) of two row-major token matrices A [R, a_width] and B [R, b_width] (a per-sample G_n is the
rows n·T .. n·T + T of Y and X). ã / b̃ carry an implicit ones column at index ``width`` when A_BIAS / B_BIAS
(on valid rows only), the mask M [R] scales ã in fp32 (rounded back to the input dtype, exact for 0/1 masks),
and `tl.dot` accumulates in fp32 (UPCAST: fp32 operands, for the interpreter whose bf16 dot is wrong).

The helpers are `@triton.jit` at import, in the mode triton's standard library was imported in (the kernels
check it, ``interpret_mode``).
"""

from __future__ import annotations

import inspect
import os

import triton
import triton.language as tl


def interpret_mode() -> bool:
    """`TRITON_INTERPRET` as triton reads it now; raises if it disagrees with how triton.language was imported.

    Triton builds its standard library (tl.sum, tl.cdiv, ...) for the mode in force at its first import, so the
    two must agree: set `TRITON_INTERPRET=1` before anything imports triton.
    """
    from triton import knobs

    interpret = bool(knobs.runtime.interpret)
    stdlib_interpreted = not isinstance(tl.standard.sum, triton.runtime.jit.JITFunction)
    if interpret != stdlib_interpreted:
        raise RuntimeError(
            f"TRITON_INTERPRET is {'set' if interpret else 'unset'} now but was "
            f"{'set' if stdlib_interpreted else 'unset'} when triton was first imported; set TRITON_INTERPRET=1 "
            "before anything imports triton to run the Triton backend in interpreter mode"
        )
    return interpret


@triton.jit
def tile_offsets(tile, n_cols, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr):
    """Row-major program ``tile`` of a [rows, n_cols] grid of [BLOCK_O, BLOCK_I] tiles: (pid_o, pid_i, offs)."""
    n_tiles_i = tl.cdiv(n_cols, BLOCK_I)
    pid_o = tile // n_tiles_i
    pid_i = tile % n_tiles_i
    return pid_o, pid_i, pid_o * BLOCK_O + tl.arange(0, BLOCK_O), pid_i * BLOCK_I + tl.arange(0, BLOCK_I)


@triton.jit
def g_tile(
    acc,
    A,
    B,
    M,
    r_begin,
    r_end,
    a_width,
    b_width,
    offs_a,
    offs_b,
    HAS_MASK: tl.constexpr,
    A_BIAS: tl.constexpr,
    B_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    offs_t = tl.arange(0, BLOCK_T)
    a_ok = offs_a < a_width
    b_ok = offs_b < b_width
    for r0 in range(r_begin, r_end, BLOCK_T):
        r = r0 + offs_t
        r_ok = r < r_end
        # ãᵀ as [BLOCK_A, BLOCK_T] and b̃ as [BLOCK_T, BLOCK_B]; padded rows load zeros
        a = tl.load(A + r[None, :] * a_width + offs_a[:, None], mask=a_ok[:, None] & r_ok[None, :], other=0.0)
        b = tl.load(B + r[:, None] * b_width + offs_b[None, :], mask=r_ok[:, None] & b_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if A_BIAS:
            a = tl.where((offs_a[:, None] == a_width) & r_ok[None, :], 1.0, a).to(a.dtype)
        if B_BIAS:
            b = tl.where(r_ok[:, None] & (offs_b[None, :] == b_width), 1.0, b).to(b.dtype)
        if HAS_MASK:
            m = tl.load(M + r, mask=r_ok, other=0.0).to(tl.float32)
            a = (a.to(tl.float32) * m[None, :]).to(b.dtype)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.jit
def sample_g_tile(Y, X, M, n, T, d_out, d_in, offs_o, offs_i, HAS_MASK: tl.constexpr, BIAS: tl.constexpr,
                  UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr,
                  BLOCK_T: tl.constexpr):  # fmt: skip
    """The [BLOCK_O, BLOCK_I] tile (offs_o, offs_i) of sample n's G_n = Σ_t m_t y_t x̃_tᵀ (rows n·T .. n·T + T)."""
    acc = tl.zeros([BLOCK_O, BLOCK_I], dtype=tl.float32)
    return g_tile(acc, Y, X, M, n * T, n * T + T, d_out, d_in, offs_o, offs_i, HAS_MASK, False, BIAS, UPCAST,
                  PRECISION, BLOCK_T)  # fmt: skip


def signature(kernel, dt: str, tokens: str, fp32: str, i64: str = "") -> dict:
    """``kernel``'s `ASTSource` signature in argument order: the names in ``tokens`` point to the token dtype ``dt``
    ("bf16", "fp16", "fp32"), those in ``fp32`` to fp32, those in ``i64`` are int64, every other runtime argument
    int32 (the ``tl.constexpr`` ones are not part of it)."""
    kinds = {**{k: "*" + dt for k in tokens.split()}, **{k: "*fp32" for k in fp32.split()}}
    kinds.update({k: "i64" for k in i64.split()})
    params = inspect.signature(kernel).parameters.values()
    return {p.name: kinds.get(p.name, "i32") for p in params if "constexpr" not in str(p.annotation)}


def precision(dtype) -> str:
    """`tl.dot` input precision: exact ("ieee") for fp32 tokens, tensor cores ("tf32" = native) for bf16/fp16."""
    import torch

    return "ieee" if dtype == torch.float32 else "tf32"


#: Autotune rows (BLOCK_O, BLOCK_I, BLOCK_T, warps, stages) of the G-tile kernels.
TABLE = [
    (32, 64, 64, 4, 4),
    (32, 128, 64, 4, 4),
    (64, 64, 64, 4, 4),
    (64, 128, 32, 4, 4),
    (64, 128, 64, 8, 3),
    (128, 64, 64, 8, 3),
    (128, 128, 32, 8, 3),
    (128, 128, 64, 8, 3),
    (64, 256, 32, 8, 3),
]


def tile_configs(interpret: bool, table=TABLE):
    """Autotune configs of a G-tile kernel from (BLOCK_O, BLOCK_I, BLOCK_T, warps, stages) rows; one small
    config in interpreter mode."""
    if interpret:
        return [triton.Config({"BLOCK_O": 64, "BLOCK_I": 64, "BLOCK_T": 32}, num_warps=4)]
    return autotune_configs(
        [
            triton.Config({"BLOCK_O": bo, "BLOCK_I": bi, "BLOCK_T": bt}, num_warps=w, num_stages=s)
            for bo, bi, bt, w, s in table
        ]
    )


#: ``MDA_FAST_TRITON_AUTOTUNE=0``: each compiled kernel runs its largest config (the one ``compile_check``
#: compiles) instead of autotuning over its table, so a new shape costs one compile instead of one per config
#: (benchmarks/gpu_check.sh sets it for the op tests and the microbenchmarks, where cold autotuning would not fit)
AUTOTUNE_ENV = "MDA_FAST_TRITON_AUTOTUNE"


def autotune_configs(configs: list) -> list:
    """``configs``, or only the last (largest) one when ``MDA_FAST_TRITON_AUTOTUNE`` is 0/off/false/no."""
    if os.environ.get(AUTOTUNE_ENV, "1").strip().lower() in ("0", "off", "false", "no"):
        return configs[-1:]
    return configs


def compile_configs(configs, all_configs: bool):
    """The autotune configs ``compile_check`` compiles: all of them, or the largest (last) one."""
    return configs if all_configs else configs[-1:]

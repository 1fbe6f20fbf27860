"""Triton backend of `mda_fast.kernels`: the three ops, one file each (triton_score, triton_covariance,
triton_eigen_sq), over one G-tile loop (triton_tile.g_tile).

Inputs arrive validated by `kernels/validate.py` (contiguous, X/Y share a dtype in {bf16, fp16, fp32}, mask None or
[N, T]); every op accumulates in fp32. Interpreter mode (`TRITON_INTERPRET=1`, set before anything imports
triton: triton fixes its standard library's mode at import) runs on CPU tensors.
"""

from __future__ import annotations

import importlib.util
import os
from types import SimpleNamespace

import torch


def is_available() -> bool:
    """True when triton imports and either a CUDA device is present or `TRITON_INTERPRET=1`."""
    # find_spec, not import: importing triton fixes its interpreter mode for the process (see triton_score).
    if importlib.util.find_spec("triton") is None:
        return False
    interpret = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
    return interpret or torch.cuda.is_available()


def _tokens(t: torch.Tensor) -> torch.Tensor:
    """The Triton kernels index tokens as contiguous [N, T, width] rows (the compiled ones take any N/T strides)."""
    return t.contiguous()


def _mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else mask.to(torch.float32).contiguous()


def covariance_accumulate(
    acc: torch.Tensor, X: torch.Tensor, mask: torch.Tensor | None = None, bias: bool = False
) -> torch.Tensor:
    """acc [D, D] fp32 += Σ_n Σ_t m x̃ x̃ᵀ with D = d_in + bias; returns acc."""
    from . import triton_covariance

    return triton_covariance.covariance_accumulate(acc, _tokens(X), _mask(mask), bias)


def score_blocks(blocks, mask: torch.Tensor | None = None) -> torch.Tensor:
    """S [N, K] fp32, S[n, k] = Σ_b <P_b[k], G_{b,n}>; blocks carry `.X .Y .P .bias` and share N, T, K."""
    from . import triton_score

    blocks = [SimpleNamespace(X=_tokens(b.X), Y=_tokens(b.Y), P=b.P.contiguous(), bias=b.bias) for b in blocks]
    return triton_score.score_blocks(blocks, _mask(mask))


def score(
    X: torch.Tensor, Y: torch.Tensor, P: torch.Tensor, mask: torch.Tensor | None = None, bias: bool = False
) -> torch.Tensor:
    """S [N, K] fp32, S[n, k] = <P[k], G_n> for one block."""
    return score_blocks([SimpleNamespace(X=X, Y=Y, P=P, bias=bias)], mask)


def eigen_sq_accumulate(acc: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, Q_S: torch.Tensor, Q_A: torch.Tensor,
                        mask: torch.Tensor | None = None, bias: bool = False,
                        route: str | None = None) -> torch.Tensor:  # fmt: skip
    """acc [d_out, D_in] fp32 += Σ_n (Q_Sᵀ G_n Q_A)²; route None picks "tokens" (A) or "grads" (B) by FLOP count."""
    from . import triton_eigen_sq

    return triton_eigen_sq.eigen_sq_accumulate(acc, _tokens(X), _tokens(Y), Q_S, Q_A, _mask(mask), bias, route=route)


def per_sample_grads(
    X: torch.Tensor, Y: torch.Tensor, mask: torch.Tensor | None = None, bias: bool = False
) -> torch.Tensor:
    """G fp32 [N, d_out, d_in + bias] (the "grads" route's kernel)."""
    from . import triton_eigen_sq

    return triton_eigen_sq.per_sample_grads(_tokens(X), _tokens(Y), _mask(mask), bias)


def compile_check(archs=(80, 90), all_configs: bool = False, dtypes=("bf16", "fp16", "fp32")) -> list[str]:
    """Compile the kernels for each CUDA arch ahead of time (triton's bundled ptxas; no GPU needed).

    Catches kernels that only fail in compiled mode (the interpreter accepts more). Needs TRITON_INTERPRET unset.
    `all_configs` compiles every autotune config, otherwise the largest one. Returns one line per compile.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import triton_covariance, triton_eigen_sq, triton_score
    from .triton_tile import interpret_mode

    if interpret_mode():
        raise RuntimeError("compile_check needs TRITON_INTERPRET unset (compiled mode)")
    lines = []
    for mod in (triton_score, triton_covariance, triton_eigen_sq):
        for name, fn, sig, const, cfg in mod.compile_specs(all_configs, dtypes):
            sig = {**sig, **{k: "constexpr" for k in const}}
            for arch in archs:
                compiled = triton.compile(
                    ASTSource(triton.jit(fn), sig, const),
                    target=GPUTarget("cuda", arch, 32),
                    options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages},
                )
                lines.append(
                    f"sm_{arch} {name} {cfg.kwargs} warps={cfg.num_warps} stages={cfg.num_stages} "
                    f"shared={compiled.metadata.shared}B"
                )
    return lines

"""Input validation for the kernel ops (in Python, before any backend runs: by the public functions, which need
the checked shapes to pick a backend, and by the registered ops, which may be called directly).

Every check raises ``TypeError`` (wrong type/dtype) or ``ValueError`` (wrong shape/device/layout) naming the
argument, what it got and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

#: token dtypes the compiled/triton kernels accept; float64 is accepted by the torch backend only.
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ALL_DTYPES = KERNEL_DTYPES + (torch.float64,)


@dataclass
class BlockInput:
    """One block of ``score_blocks``: tokens ``X [N, T, d_in]``, output gradients ``Y [N, T, d_out]``,
    queries ``P [K, d_out, d_in + bias]`` and the implicit-ones-column flag ``bias``."""

    X: torch.Tensor
    Y: torch.Tensor
    P: torch.Tensor
    bias: bool = False


def _check_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def _check_bias(bias) -> bool:
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
    return bias


def check_tokens(name: str, t: torch.Tensor, allow_float64: bool = True) -> None:
    """Token tensor ``[N, T, width]`` of a float dtype with a contiguous last dimension."""
    _check_tensor(name, t)
    allowed = ALL_DTYPES if allow_float64 else KERNEL_DTYPES
    if t.dtype not in allowed:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in allowed]}, got {t.dtype}")
    if t.dim() != 3:
        raise ValueError(f"{name} must be 3-D [N, T, features], got shape {tuple(t.shape)}")
    if t.shape[2] > 0 and t.stride(2) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension (stride 1), got strides {t.stride()}")
    if any(s < 0 for s in t.stride()):
        raise ValueError(f"{name} must not have negative strides, got {t.stride()}")


def check_pair(X: torch.Tensor, Y: torch.Tensor, xname: str = "X", yname: str = "Y") -> None:
    """X [N, T, d_in] and Y [N, T, d_out]: same device, dtype, N and T."""
    check_tokens(xname, X)
    check_tokens(yname, Y)
    if X.device != Y.device:
        raise ValueError(f"{xname} and {yname} must be on the same device, got {X.device} and {Y.device}")
    if X.dtype != Y.dtype:
        raise TypeError(f"{xname} and {yname} must share a dtype, got {X.dtype} and {Y.dtype}")
    if X.shape[:2] != Y.shape[:2]:
        raise ValueError(
            f"{xname} {tuple(X.shape)} and {yname} {tuple(Y.shape)} must share N and T (the first two dims)"
        )


def check_mask(mask: Optional[torch.Tensor], N: int, T: int, device: torch.device) -> None:
    """Optional token mask ``[N, T]`` (bool or float) on the tokens' device."""
    if mask is None:
        return
    _check_tensor("mask", mask)
    if not (mask.dtype == torch.bool or mask.dtype.is_floating_point):
        raise TypeError(f"mask must be bool or floating point, got {mask.dtype}")
    if tuple(mask.shape) != (N, T):
        raise ValueError(f"mask must have shape [N, T] = {[N, T]}, got {list(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"mask must be on {device} (the tokens' device), got {mask.device}")


def check_fp32_matrix(
    name: str, t: torch.Tensor, shape: Sequence[int], device: torch.device, float64_ok: bool, contiguous: bool = True
) -> None:
    """An fp32 (or float64 when ``float64_ok``) tensor of exactly ``shape`` on ``device``, contiguous if asked."""
    _check_tensor(name, t)
    allowed = (torch.float32, torch.float64) if float64_ok else (torch.float32,)
    if t.dtype not in allowed:
        raise TypeError(f"{name} must have dtype {' or '.join(str(d) for d in allowed)}, got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} must be on {device} (the tokens' device), got {t.device}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def validate_covariance(acc, X, mask, bias) -> None:
    check_tokens("X", X)
    bias = _check_bias(bias)
    N, T, d = X.shape
    D = d + int(bias)
    check_mask(mask, N, T, X.device)
    check_fp32_matrix("acc", acc, (D, D), X.device, float64_ok=True)


def validate_blocks(blocks, mask) -> List[BlockInput]:
    """A non-empty list of BlockInput sharing device, dtype, N, T and K."""
    if isinstance(blocks, BlockInput):
        blocks = [blocks]
    if not isinstance(blocks, (list, tuple)) or len(blocks) == 0:
        raise ValueError("blocks must be a non-empty list of BlockInput")
    first = None
    for i, b in enumerate(blocks):
        if not isinstance(b, BlockInput):
            raise TypeError(f"blocks[{i}] must be a BlockInput, got {type(b).__name__}")
        _check_bias(b.bias)
        check_pair(b.X, b.Y, f"blocks[{i}].X", f"blocks[{i}].Y")
        N, T, d_in = b.X.shape
        d_out = b.Y.shape[2]
        _check_tensor(f"blocks[{i}].P", b.P)
        if b.P.dim() != 3:
            raise ValueError(f"blocks[{i}].P must be 3-D [K, d_out, d_in + bias], got shape {tuple(b.P.shape)}")
        check_fp32_matrix(f"blocks[{i}].P", b.P, (b.P.shape[0], d_out, d_in + int(b.bias)), b.X.device, float64_ok=True)
        if first is None:
            first = b
            continue
        if b.X.device != first.X.device:
            raise ValueError(
                f"all blocks must be on one device: blocks[{i}] is on {b.X.device}, blocks[0] on {first.X.device}"
            )
        if b.X.dtype != first.X.dtype:
            raise TypeError(f"all blocks must share a dtype: blocks[{i}] is {b.X.dtype}, blocks[0] {first.X.dtype}")
        if b.X.shape[:2] != first.X.shape[:2]:
            raise ValueError(
                f"all blocks must share N and T: blocks[{i}] has {tuple(b.X.shape[:2])}, "
                f"blocks[0] {tuple(first.X.shape[:2])}"
            )
        if b.P.shape[0] != first.P.shape[0]:
            raise ValueError(
                f"all blocks must share K: blocks[{i}].P has K={b.P.shape[0]}, blocks[0].P K={first.P.shape[0]}"
            )
    N, T = first.X.shape[:2]
    check_mask(mask, N, T, first.X.device)
    return list(blocks)


def validate_grads(X, Y, mask, bias) -> None:
    check_pair(X, Y)
    _check_bias(bias)
    check_mask(mask, X.shape[0], X.shape[1], X.device)


def validate_eigen_sq(acc, X, Y, Q_S, Q_A, mask, bias) -> None:
    validate_grads(X, Y, mask, bias)
    N, T, d_in = X.shape
    d_out = Y.shape[2]
    D = d_in + int(bias)
    check_fp32_matrix("acc", acc, (d_out, D), X.device, float64_ok=True)
    # Q_S / Q_A only enter GEMMs: any layout (eigh returns column-major eigenvectors)
    check_fp32_matrix("Q_S", Q_S, (d_out, d_out), X.device, float64_ok=True, contiguous=False)
    check_fp32_matrix("Q_A", Q_A, (D, D), X.device, float64_ok=True, contiguous=False)


def mask_as_float(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The mask as a contiguous fp32 tensor (what the compiled kernels read), or None."""
    if mask is None:
        return None
    return mask.to(torch.float32).contiguous()

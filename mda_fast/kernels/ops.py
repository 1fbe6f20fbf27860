"""The kernel ops registered with ``torch.library``: ``torch.ops.mda_fast.{covariance_accumulate, score_blocks,
eigen_sq_accumulate, per_sample_grads}``.

Each takes the backend by name (``backends.BACKENDS``; the dispatch layer picks it) and validates its inputs, so
the ops may be called directly. The accumulating ops mutate ``acc`` in place (``mutates_args``) and return nothing;
the fake (meta) functions give shapes and dtypes without computing, so the ops trace under ``torch.compile`` and
pass ``torch.library.opcheck``. Blocks of ``score_blocks`` travel as parallel lists (X, Y, P, bias).
"""

from __future__ import annotations

from typing import List, Optional

import torch

from .backends import backend_module
from .reference import compute_dtype, normalize_route
from .validate import BlockInput, validate_blocks, validate_covariance, validate_eigen_sq, validate_grads


@torch.library.custom_op("mda_fast::covariance_accumulate", mutates_args=("acc",))
def covariance_accumulate(
    acc: torch.Tensor, X: torch.Tensor, mask: Optional[torch.Tensor], bias: bool, backend: str
) -> None:
    """acc [D, D] += Σ_n Σ_t m x̃ x̃ᵀ in place."""
    validate_covariance(acc, X, mask, bias)
    backend_module(backend).covariance_accumulate(acc, X, mask, bias)


@covariance_accumulate.register_fake
def _(acc, X, mask, bias, backend):
    return None


def _blocks(X, Y, P, bias) -> List[BlockInput]:
    if not (len(X) == len(Y) == len(P) == len(bias)):
        raise ValueError(
            f"score_blocks: X, Y, P and bias must have one entry per block, got lengths "
            f"{len(X)}, {len(Y)}, {len(P)}, {len(bias)}"
        )
    return [BlockInput(x, y, p, b) for x, y, p, b in zip(X, Y, P, bias)]


@torch.library.custom_op("mda_fast::score_blocks", mutates_args=())
def score_blocks(
    X: List[torch.Tensor],
    Y: List[torch.Tensor],
    P: List[torch.Tensor],
    bias: List[bool],
    mask: Optional[torch.Tensor],
    backend: str,
) -> torch.Tensor:
    """S [N, K] = Σ_b <P_b[k], G_b,n>; fp32 (float64 for float64 inputs, backend torch)."""
    blocks = validate_blocks(_blocks(X, Y, P, bias), mask)
    return backend_module(backend).score_blocks(blocks, mask)


@score_blocks.register_fake
def _(X, Y, P, bias, mask, backend):
    return torch.empty(X[0].shape[0], P[0].shape[0], dtype=compute_dtype(*X, *P), device=X[0].device)


@torch.library.custom_op("mda_fast::eigen_sq_accumulate", mutates_args=("acc",))
def eigen_sq_accumulate(
    acc: torch.Tensor,
    X: torch.Tensor,
    Y: torch.Tensor,
    Q_S: torch.Tensor,
    Q_A: torch.Tensor,
    mask: Optional[torch.Tensor],
    bias: bool,
    backend: str,
    route: Optional[str] = None,
) -> None:
    """acc [d_out, D] += Σ_n (Q_Sᵀ G_n Q_A)² in place; route None (FLOP rule), "A"/"tokens" or "B"/"grads"."""
    validate_eigen_sq(acc, X, Y, Q_S, Q_A, mask, bias)
    backend_module(backend).eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, mask, bias, route=normalize_route(route))


@eigen_sq_accumulate.register_fake
def _(acc, X, Y, Q_S, Q_A, mask, bias, backend, route=None):
    return None


@torch.library.custom_op("mda_fast::per_sample_grads", mutates_args=())
def per_sample_grads(
    X: torch.Tensor, Y: torch.Tensor, mask: Optional[torch.Tensor], bias: bool, backend: str
) -> torch.Tensor:
    """G [N, d_out, d_in + bias] with G_n = Σ_t m_t y_t x̃_tᵀ (route B's workspace; fp32, float64 for float64)."""
    validate_grads(X, Y, mask, bias)
    mod = backend_module(backend)
    if backend == "torch":
        return mod.per_sample_grads(X, Y, mask, bias, compute_dtype(X))
    return mod.per_sample_grads(X, Y, mask, bias)


@per_sample_grads.register_fake
def _(X, Y, mask, bias, backend):
    N, T, d_in = X.shape
    return torch.empty(N, Y.shape[2], d_in + int(bias), dtype=compute_dtype(X), device=X.device)

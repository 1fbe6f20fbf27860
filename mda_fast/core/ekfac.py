"""EK-FAC (and K-FAC / identity) curvature for head-subspace blocks.

For each block with per-sample gradient ``G_n = Σ_t g_t x̃_tᵀ`` ([d_out, D_in], HF weight layout):

* ``A = E_tokens[x̃ x̃ᵀ]`` and ``S = E_tokens[g gᵀ]`` (token averages over unmasked tokens);
* ``A = Q_A diag(λ_A) Q_Aᵀ``, ``S = Q_S diag(λ_S) Q_Sᵀ`` (symmetrised, ``eigh`` in float64);
* EK-FAC eigenvalues ``Λ = mean_n (Q_Sᵀ G_n Q_A)²`` (George et al. 2018); K-FAC uses
  ``Λ = (tokens per sequence) · λ_S λ_Aᵀ`` instead, so both approximate ``E_n[vec G_n vec G_nᵀ]``;
* damping ``λ = α · mean(Λ)`` (α = 0.1), floored at ``damping_floor``, or an absolute ``damping_value``.

With row-major ``vec`` (index ``o·D_in + i``), ``H = (Q_S ⊗ Q_A) diag(vec(Λ) + λ) (Q_S ⊗ Q_A)ᵀ`` and
``H⁻¹ v = Q_S [(Q_Sᵀ v Q_A) / (Λ + λ)] Q_Aᵀ``. ``"identity"`` is ``H = I``: plain gradient dot products.

The token ``mask`` masks the loss and selects the tokens that A and S average over. It does not mask the sum
in ``G_n``: a masked position still carries the gradient of later unmasked tokens' losses.

Labels for S and Λ are sampled from the model (``fisher="true"``, seeded per batch so both passes see the same
labels) or taken from the data (``"empirical"``).

The fitted factors (``BlockFactors``, ``Factors``: ``H⁻¹ v``, save / load): :mod:`mda_fast.core.factors`.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .. import kernels
from ..errors import NonFiniteError, one_line
from .capture import capture, check_mask, fisher_objective, loss_objective, resolve_blocks, split_rows
from .factors import FACTOR_KEYS, FISHERS, METHODS, BlockFactors, Factors, spec_from_dict
from .finite import check_finite, check_model_finite
from .heads import Block
from .model import model_shape

__all__ = ["METHODS", "FISHERS", "FACTOR_KEYS", "BlockFactors", "Factors", "spec_from_dict", "fit_ekfac"]

_OVERFLOW = (
    "the model's activations or gradients overflow on the fitting batches (a float16/bfloat16 model? use float32)"
)


def _as_batch(b):
    """A batch is rows [B, T+1], or a dict with input_ids (+ optional labels, mask)."""
    if isinstance(b, dict):
        return b["input_ids"], b.get("labels"), b.get("mask")
    return b, None, None


def _eigh(M: torch.Tensor, what: str):
    """Eigen-decomposition of the symmetrised ``M`` in float64; ``what`` (e.g. "A of L1H2.qk") names it on failure."""
    M = M.double()
    M = 0.5 * (M + M.T)
    try:
        lam, Q = torch.linalg.eigh(M)
    except torch.linalg.LinAlgError as e:
        raise NonFiniteError(
            f"the eigendecomposition of {what} ({list(M.shape)}, float64) failed: {one_line(e)}; "
            "expected a symmetric matrix LAPACK can diagonalise; it is numerically degenerate "
            "(fit on more tokens, or use a float32 model)"
        ) from None
    return lam, Q.contiguous()


def _objective(fisher, labels, mask, seed, batch_idx, device):
    if fisher == "empirical":
        return loss_objective(labels, mask)
    g = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + batch_idx)
    return fisher_objective(mask, g)


def _check_fit_args(fisher: str, method: str, damping: float, damping_value) -> None:
    if fisher not in FISHERS:
        raise ValueError(f"unknown fisher {fisher!r}; expected one of {FISHERS}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if damping_value is None and not damping > 0:
        raise ValueError(f"damping factor alpha must be > 0, got {damping}")


def _captures(model, batches, blocks, fisher: str, seed: int, progress: bool, desc: str, batch_index=None):
    """One capture per batch: yields ``(CaptureResult, mask, inputs.shape)``. Batch ``i``'s true-Fisher labels are
    seeded by its global index ``batch_index[i]`` (default ``i``), so they do not depend on how a set is split."""
    device = next(model.parameters()).device
    for i, batch in enumerate(tqdm(batches, desc=desc, unit="batch", disable=not progress)):
        ids, labels, mask = _as_batch(batch)
        inputs, labels = split_rows(ids, labels)
        mask = check_mask(mask, labels.shape)
        idx = i if batch_index is None else int(batch_index[i])
        res = capture(model, inputs, blocks, _objective(fisher, labels, mask, seed, idx, device))
        yield res, mask, inputs.shape


def _add_part(total: torch.Tensor, acc_dtype, fn, *args, **kw) -> None:
    """``total`` (float64) += one batch's part, accumulated by ``fn`` in ``acc_dtype``: sums over batches are then
    nearly exact, so a fit split over ranks sums the same parts to the same A, S and Λ as one process."""
    part = torch.zeros(total.shape, dtype=acc_dtype, device=total.device)
    fn(part, *args, **kw)
    total += part


def _covariance_factors(model, blocks, passes, acc_dtype, backend, comm=None):
    """The K-FAC factors of every block from the first pass: ``({name: BlockFactors}, n_tokens, n_seqs)``.
    With ``comm`` the counts and A, S are summed over the ranks and rank 0's eigenbases are broadcast."""
    device = next(model.parameters()).device
    A = {b.name: torch.zeros(b.d_in_total, b.d_in_total, dtype=torch.float64, device=device) for b in blocks}
    S = {b.name: torch.zeros(b.d_out, b.d_out, dtype=torch.float64, device=device) for b in blocks}
    n_tokens, n_seqs = 0.0, 0
    for res, mask, shape in passes:
        for b in blocks:
            _add_part(
                A[b.name], acc_dtype, kernels.covariance_accumulate, res.x(b), mask=mask, bias=b.bias, backend=backend
            )
            _add_part(
                S[b.name], acc_dtype, kernels.covariance_accumulate, res.y(b), mask=mask, bias=False, backend=backend
            )
        n_tokens += float(mask.sum()) if mask is not None else shape[0] * shape[1]
        n_seqs += shape[0]
    if comm is not None:  # distributed: sum the counts and the covariances over the ranks
        counts = torch.tensor([n_tokens, float(n_seqs)], dtype=torch.float64, device=device)
        comm.sum_({"counts": counts, **{f"A/{k}": v for k, v in A.items()}, **{f"S/{k}": v for k, v in S.items()}})
        n_tokens, n_seqs = float(counts[0]), int(counts[1])
    if n_tokens <= 0:
        raise ValueError("the fitting batches hold no unmasked tokens")
    check_finite(
        {f"{k} of {b.name}": M[b.name] for b in blocks for k, M in (("A", A), ("S", S))},
        "the EK-FAC covariances",
        expected="finite covariances",
        cause=_OVERFLOW,
    )
    out: dict[str, BlockFactors] = {}
    for b in blocks:
        lam_A, Q_A = _eigh(A[b.name] / n_tokens, f"A of {b.name}")
        lam_S, Q_S = _eigh(S[b.name] / n_tokens, f"S of {b.name}")
        out[b.name] = BlockFactors(
            Q_A=Q_A,
            Q_S=Q_S,
            lam_A=lam_A,
            lam_S=lam_S,
            eig=(n_tokens / n_seqs) * torch.outer(lam_S, lam_A).clamp_min(0),
            damping=0.0,
        )
    if comm is not None:  # one eigenbasis for every rank: rank 0's
        comm.broadcast_({f"{k}/{n}": getattr(f, k) for n, f in out.items() for k in FACTOR_KEYS})
    return out, n_tokens, n_seqs


def _correct_eigenvalues(out, blocks, passes, n_seqs, acc_dtype, backend, comm=None) -> None:
    """EK-FAC: replace each block's K-FAC eigenvalues by ``mean_n (Q_Sᵀ G_n Q_A)²`` from the second pass (summed
    over the ranks with ``comm``)."""
    device = next(iter(out.values())).Q_A.device
    lam = {b.name: torch.zeros(b.d_out, b.d_in_total, dtype=torch.float64, device=device) for b in blocks}
    for res, mask, _ in passes:
        for b in blocks:
            f = out[b.name]
            _add_part(
                lam[b.name],
                acc_dtype,
                kernels.eigen_sq_accumulate,
                res.x(b),
                res.y(b),
                f.Q_S.to(acc_dtype),
                f.Q_A.to(acc_dtype),
                mask=None,
                bias=b.bias,
                backend=backend,
            )
    if comm is not None:
        comm.sum_(lam)
    check_finite(
        {f"Λ of {b.name}": lam[b.name] for b in blocks},
        "the EK-FAC eigenvalues",
        expected="finite eigenvalues",
        cause=_OVERFLOW,
    )
    for b in blocks:
        out[b.name].eig = lam[b.name].double() / n_seqs


def _set_damping(out, method: str, damping: float, damping_floor: float, damping_value) -> None:
    for f in out.values():
        if method == "identity":
            f.damping = 0.0
        elif damping_value is not None:
            f.damping = float(damping_value)
        else:
            f.damping = max(float(damping) * float(f.eig.mean()), float(damping_floor))


def _unique_blocks(blocks_per_spec) -> dict[str, Block]:
    """``{name: Block}`` of every block of the specs, first occurrence first."""
    uniq: dict[str, Block] = {}
    for bs in blocks_per_spec:
        for b in bs:
            uniq.setdefault(b.name, b)
    return uniq


def _fit_meta(model, model_name, revision, n_tokens, n_seqs, damping_alpha, seed) -> dict:
    """The ``Factors.meta`` of a fit: the model, its shape and the fit's counts and settings."""
    s = model_shape(model)
    return {
        "model": model_name or getattr(model.config, "_name_or_path", None) or None,
        "revision": revision,
        "n_tokens": n_tokens,
        "n_sequences": n_seqs,
        "damping_alpha": damping_alpha,
        "shape": {"n_layers": s.n_layers, "n_heads": s.n_heads, "d_model": s.d_model},
        "seed": seed,
    }


def fit_ekfac(
    model,
    specs,
    batches,
    fisher: str = "true",
    method: str = "ekfac",
    damping: float = 0.1,
    damping_floor: float = 1e-10,
    damping_value: float | None = None,
    seed: int = 0,
    backend: str | None = None,
    progress: bool = True,
    model_name: str | None = None,
    revision: str | None = None,
    batch_index=None,
    comm=None,
) -> Factors:
    """Fit curvature factors for every block of ``specs`` on ``batches``.

    ``batches`` is a re-iterable (e.g. a list) of token rows ``[B, T+1]`` or dicts with ``input_ids``,
    ``labels`` and ``mask``; it is read twice (covariances, then eigenvalue corrections).

    Distributed fits (``mda_fast.dist``; both default to a one-process fit): ``batch_index[i]`` is the global
    index of ``batches[i]`` in the whole fitting set, which seeds its true-Fisher labels, so the labels do not
    depend on how the set is split. ``comm`` has ``sum_(dict)`` and ``broadcast_(dict)`` (in place, every rank):
    the token/sequence counts and A, S are summed after the first pass, the eigenbases of rank 0 replace every
    rank's, and Λ is summed after the second pass.
    """
    _check_fit_args(fisher, method, damping, damping_value)
    if iter(batches) is batches:
        batches = list(batches)
    specs, blocks_per_spec = resolve_blocks(model, specs)
    check_model_finite(model)
    uniq = _unique_blocks(blocks_per_spec)
    blocks = list(uniq.values())
    acc_dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    out, n_tokens, n_seqs = _covariance_factors(
        model,
        blocks,
        _captures(model, batches, blocks, fisher, seed, progress, "EK-FAC covariances", batch_index),
        acc_dtype,
        backend,
        comm,
    )
    if method == "ekfac":
        passes = _captures(model, batches, blocks, fisher, seed, progress, "EK-FAC eigenvalue correction", batch_index)
        _correct_eigenvalues(out, blocks, passes, n_seqs, acc_dtype, backend, comm)
    elif method == "identity":
        for f in out.values():
            f.eig = torch.ones_like(f.eig)
    _set_damping(out, method, damping, damping_floor, damping_value)
    meta = _fit_meta(model, model_name, revision, n_tokens, n_seqs, damping if damping_value is None else None, seed)
    return Factors(method=method, fisher=fisher, specs=specs, block_info=uniq, blocks=out, meta=meta)

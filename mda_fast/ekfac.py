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
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import kernels
from .capture import capture, check_mask, fisher_objective, loss_objective, resolve_blocks, split_rows
from .heads import Block, HeadSpec, ModuleSpec
from .model import neox_shape

METHODS = ("ekfac", "kfac", "identity")
FISHERS = ("true", "empirical")


@dataclass
class BlockFactors:
    Q_A: torch.Tensor      # [D_in, D_in] eigenvectors of A (columns)
    Q_S: torch.Tensor      # [d_out, d_out] eigenvectors of S
    lam_A: torch.Tensor    # [D_in]
    lam_S: torch.Tensor    # [d_out]
    eig: torch.Tensor      # [d_out, D_in] eigenvalues of H in the Kronecker eigenbasis (Λ)
    damping: float

    def precondition(self, v: torch.Tensor, method: str) -> torch.Tensor:
        """``H⁻¹ v`` for v ``[..., d_out, D_in]`` (computed in float64)."""
        if method == "identity":
            return v.clone()
        dt = v.dtype
        v = v.double()
        Q_S, Q_A = self.Q_S.double().to(v.device), self.Q_A.double().to(v.device)
        rot = Q_S.T @ v @ Q_A
        rot = rot / (self.eig.double().to(v.device) + self.damping)
        return (Q_S @ rot @ Q_A.T).to(dt)


def _spec_to_dict(spec) -> dict:
    if isinstance(spec, HeadSpec):
        return {"type": "head", **asdict(spec)}
    return {"type": "module", **asdict(spec)}


def spec_from_dict(d: dict):
    d = dict(d)
    kind = d.pop("type")
    return HeadSpec(**d) if kind == "head" else ModuleSpec(**d)


@dataclass
class Factors:
    """Fitted curvature for a set of specs. ``blocks[name]`` holds one block's factors."""
    method: str
    fisher: str
    specs: list
    block_info: dict                     # name -> Block
    blocks: dict                         # name -> BlockFactors
    meta: dict = field(default_factory=dict)

    def precondition(self, name: str, v: torch.Tensor) -> torch.Tensor:
        return self.blocks[name].precondition(v, self.method)

    def check(self, model, specs) -> None:
        """Raise ValueError unless these factors were fitted for this model shape and cover ``specs``."""
        s = neox_shape(model)
        shape = self.meta.get("shape")
        mine = {"n_layers": s.n_layers, "n_heads": s.n_heads, "d_model": s.d_model}
        if shape is not None and shape != mine:
            raise ValueError(f"factors were fitted on a model with {shape}, but this model has {mine}")
        _, blocks = resolve_blocks(model, specs)
        for spec, bs in zip(specs if isinstance(specs, (list, tuple)) else [specs], blocks):
            for b in bs:
                have = self.block_info.get(b.name)
                if have is None:
                    raise ValueError(f"factors do not cover {spec} (block {b.name!r}); they hold {sorted(self.block_info)}")
                if have != b:
                    raise ValueError(f"factors block {b.name!r} was fitted as {have}, but {spec} needs {b}")

    def save(self, path: str) -> None:
        """Write ``path/factors.safetensors`` and ``path/factors.json`` (atomic renames)."""
        os.makedirs(path, exist_ok=True)
        tensors = {}
        for name, f in self.blocks.items():
            for key in ("Q_A", "Q_S", "lam_A", "lam_S", "eig"):
                tensors[f"{name}/{key}"] = getattr(f, key).detach().cpu().contiguous()
        meta = {
            **self.meta,
            "method": self.method,
            "fisher": self.fisher,
            "specs": [_spec_to_dict(s) for s in self.specs],
            "blocks": {n: asdict(b) for n, b in self.block_info.items()},
            "damping": {n: f.damping for n, f in self.blocks.items()},
        }
        tmp = os.path.join(path, "factors.safetensors.tmp")
        save_file(tensors, tmp)
        os.replace(tmp, os.path.join(path, "factors.safetensors"))
        tmp = os.path.join(path, "factors.json.tmp")
        with open(tmp, "w") as fh:
            json.dump(meta, fh, indent=2)
        os.replace(tmp, os.path.join(path, "factors.json"))

    @classmethod
    def load(cls, path: str, device="cpu") -> "Factors":
        jpath, tpath = os.path.join(path, "factors.json"), os.path.join(path, "factors.safetensors")
        for p in (jpath, tpath):
            if not os.path.exists(p):
                raise ValueError(f"no saved factors at {path!r}: missing {os.path.basename(p)}")
        with open(jpath) as fh:
            meta = json.load(fh)
        tensors = load_file(tpath, device=str(device))
        info = {n: Block(**b) for n, b in meta.pop("blocks").items()}
        damping = meta.pop("damping")
        blocks = {
            n: BlockFactors(**{k: tensors[f"{n}/{k}"] for k in ("Q_A", "Q_S", "lam_A", "lam_S", "eig")}, damping=damping[n])
            for n in info
        }
        return cls(method=meta.pop("method"), fisher=meta.pop("fisher"),
                   specs=[spec_from_dict(d) for d in meta.pop("specs")], block_info=info, blocks=blocks, meta=meta)


def _as_batch(b):
    """A batch is rows [B, T+1], or a dict with input_ids (+ optional labels, mask)."""
    if isinstance(b, dict):
        return b["input_ids"], b.get("labels"), b.get("mask")
    return b, None, None


def _eigh(M: torch.Tensor):
    M = M.double()
    M = 0.5 * (M + M.T)
    lam, Q = torch.linalg.eigh(M)
    return lam, Q.contiguous()


def _objective(fisher, labels, mask, seed, batch_idx, device):
    if fisher == "empirical":
        return loss_objective(labels, mask)
    g = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + batch_idx)
    return fisher_objective(mask, g)


def fit_ekfac(model, specs, batches, fisher: str = "true", method: str = "ekfac", damping: float = 0.1,
              damping_floor: float = 1e-10, damping_value: float | None = None, seed: int = 0,
              backend: str | None = None, progress: bool = True, model_name: str | None = None,
              revision: str | None = None) -> Factors:
    """Fit curvature factors for every block of ``specs`` on ``batches``.

    ``batches`` is a re-iterable (e.g. a list) of token rows ``[B, T+1]`` or dicts with ``input_ids``,
    ``labels`` and ``mask``; it is read twice (covariances, then eigenvalue corrections).
    """
    if fisher not in FISHERS:
        raise ValueError(f"unknown fisher {fisher!r}; expected one of {FISHERS}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if damping_value is None and not damping > 0:
        raise ValueError(f"damping factor alpha must be > 0, got {damping}")
    if iter(batches) is batches:
        batches = list(batches)
    specs, blocks_per_spec = resolve_blocks(model, specs)
    uniq: dict[str, Block] = {}
    for bs in blocks_per_spec:
        for b in bs:
            uniq.setdefault(b.name, b)
    blocks = list(uniq.values())
    s = neox_shape(model)
    param = next(model.parameters())
    acc_dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
    A = {b.name: torch.zeros(b.d_in_total, b.d_in_total, dtype=acc_dtype, device=param.device) for b in blocks}
    S = {b.name: torch.zeros(b.d_out, b.d_out, dtype=acc_dtype, device=param.device) for b in blocks}
    n_tokens, n_seqs = 0.0, 0

    def passes(desc):
        it = tqdm(batches, desc=desc, unit="batch", disable=not progress)
        for i, batch in enumerate(it):
            ids, labels, mask = _as_batch(batch)
            inputs, labels = split_rows(ids, labels)
            mask = check_mask(mask, labels.shape)
            res = capture(model, inputs, blocks, _objective(fisher, labels, mask, seed, i, param.device))
            yield res, mask, inputs.shape

    for res, mask, shape in passes("EK-FAC covariances"):
        for b in blocks:
            kernels.covariance_accumulate(A[b.name], res.x(b), mask=mask, bias=b.bias, backend=backend)
            kernels.covariance_accumulate(S[b.name], res.y(b), mask=mask, bias=False, backend=backend)
        n_tokens += float(mask.sum()) if mask is not None else shape[0] * shape[1]
        n_seqs += shape[0]
    if n_tokens <= 0:
        raise ValueError("the fitting batches hold no unmasked tokens")

    out: dict[str, BlockFactors] = {}
    for b in blocks:
        lam_A, Q_A = _eigh(A[b.name] / n_tokens)
        lam_S, Q_S = _eigh(S[b.name] / n_tokens)
        out[b.name] = BlockFactors(Q_A=Q_A, Q_S=Q_S, lam_A=lam_A, lam_S=lam_S,
                                   eig=(n_tokens / n_seqs) * torch.outer(lam_S, lam_A).clamp_min(0), damping=0.0)

    if method == "ekfac":
        lam = {b.name: torch.zeros(b.d_out, b.d_in_total, dtype=acc_dtype, device=param.device) for b in blocks}
        for res, mask, _ in passes("EK-FAC eigenvalue correction"):
            for b in blocks:
                f = out[b.name]
                kernels.eigen_sq_accumulate(lam[b.name], res.x(b), res.y(b), f.Q_S.to(acc_dtype), f.Q_A.to(acc_dtype),
                                            mask=None, bias=b.bias, backend=backend)
        for b in blocks:
            out[b.name].eig = lam[b.name].double() / n_seqs
    elif method == "identity":
        for b in blocks:
            out[b.name].eig = torch.ones_like(out[b.name].eig)

    for b in blocks:
        f = out[b.name]
        if method == "identity":
            f.damping = 0.0
        elif damping_value is not None:
            f.damping = float(damping_value)
        else:
            f.damping = max(float(damping) * float(f.eig.mean()), float(damping_floor))

    meta = {"model": model_name or getattr(model.config, "_name_or_path", None) or None, "revision": revision,
            "n_tokens": n_tokens, "n_sequences": n_seqs, "damping_alpha": damping if damping_value is None else None,
            "shape": {"n_layers": s.n_layers, "n_heads": s.n_heads, "d_model": s.d_model}, "seed": seed}
    return Factors(method=method, fisher=fisher, specs=specs, block_info=uniq, blocks=out, meta=meta)

"""Fitted curvature factors: ``BlockFactors`` (one block's eigenbases, eigenvalues and damping, and ``H⁻¹ v``)
and ``Factors`` (every block of a fit, with ``save`` / ``load`` / ``check``). Fitting: :mod:`mda_fast.core.ekfac`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..errors import StateError, one_line
from ..io import atomic_file, load_json_as
from .capture import resolve_blocks
from .finite import check_finite
from .heads import Block, HeadSpec, ModuleSpec
from .model import model_shape

__all__ = ["METHODS", "FISHERS", "FACTOR_KEYS", "BlockFactors", "Factors", "spec_from_dict"]

METHODS = ("ekfac", "kfac", "identity")
FISHERS = ("true", "empirical")
FACTOR_KEYS = ("Q_A", "Q_S", "lam_A", "lam_S", "eig")
_REFIT = "re-run `mda-fast fit` (or fit_ekfac + Factors.save) to rewrite them"


@dataclass
class BlockFactors:
    Q_A: torch.Tensor  # [D_in, D_in] eigenvectors of A (columns)
    Q_S: torch.Tensor  # [d_out, d_out] eigenvectors of S
    lam_A: torch.Tensor  # [D_in]
    lam_S: torch.Tensor  # [d_out]
    eig: torch.Tensor  # [d_out, D_in] eigenvalues of H in the Kronecker eigenbasis (Λ)
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
    block_info: dict  # name -> Block
    blocks: dict  # name -> BlockFactors
    meta: dict = field(default_factory=dict)

    def precondition(self, name: str, v: torch.Tensor) -> torch.Tensor:
        return self.blocks[name].precondition(v, self.method)

    def check(self, model, specs) -> None:
        """Raise ValueError unless these factors were fitted for this model shape and cover ``specs``."""
        s = model_shape(model)
        shape = self.meta.get("shape")
        mine = {"n_layers": s.n_layers, "n_heads": s.n_heads, "d_model": s.d_model}
        if shape is not None and shape != mine:
            raise ValueError(f"factors were fitted on a model with {shape}, but this model has {mine}")
        _, blocks = resolve_blocks(model, specs)
        for spec, bs in zip(specs if isinstance(specs, (list, tuple)) else [specs], blocks):
            for b in bs:
                have = self.block_info.get(b.name)
                if have is None:
                    raise ValueError(
                        f"factors do not cover {spec} (block {b.name!r}); they hold {sorted(self.block_info)}"
                    )
                if have != b:
                    raise ValueError(f"factors block {b.name!r} was fitted as {have}, but {spec} needs {b}")

    def save(self, path: str) -> None:
        """Write ``path/factors.safetensors`` and ``path/factors.json`` (atomic renames)."""
        os.makedirs(path, exist_ok=True)
        tensors = {}
        for name, f in self.blocks.items():
            for key in FACTOR_KEYS:
                tensors[f"{name}/{key}"] = getattr(f, key).detach().cpu().contiguous()
        meta = {
            **self.meta,
            "method": self.method,
            "fisher": self.fisher,
            "specs": [_spec_to_dict(s) for s in self.specs],
            "blocks": {n: b.to_dict() for n, b in self.block_info.items()},
            "damping": {n: f.damping for n, f in self.blocks.items()},
        }
        with atomic_file(os.path.join(path, "factors.safetensors"), "wb") as fh:
            fh.write(save(tensors))
        with atomic_file(os.path.join(path, "factors.json")) as fh:
            json.dump(meta, fh, indent=2)

    @classmethod
    def load(cls, path: str, device="cpu") -> Factors:
        """Read factors written by ``save``. A missing, unreadable, truncated or inconsistent file raises
        ``StateError`` naming it; non-finite factors raise ``NonFiniteError``."""
        jpath, tpath = os.path.join(path, "factors.json"), os.path.join(path, "factors.safetensors")
        for p in (jpath, tpath):
            if not os.path.isfile(p):
                raise StateError(
                    f"no saved factors at {path!r}: missing {os.path.basename(p)}; "
                    f"expected factors.json and factors.safetensors: {_REFIT}"
                )
        meta = load_json_as(jpath, StateError, "the factors' metadata", _REFIT)
        try:
            tensors = load_file(tpath, device=str(device))
        except (SafetensorError, OSError) as e:
            raise StateError(
                f"{tpath} is damaged or truncated ({one_line(e)}); expected a safetensors file: {_REFIT}"
            ) from None
        info, damping, method, fisher, specs = _read_meta(meta, jpath)
        blocks = {n: _block_factors(tensors, n, b, damping[n], tpath, jpath) for n, b in info.items()}
        check_finite(
            tensors, f"the factors in {tpath}", expected="finite factors", cause=f"the file is damaged: {_REFIT}"
        )
        check_finite(
            torch.tensor([damping[n] for n in info], dtype=torch.float64),
            f"the damping in {jpath}",
            expected="finite damping",
            cause=_REFIT,
        )
        return cls(method=method, fisher=fisher, specs=specs, block_info=info, blocks=blocks, meta=meta)


def _read_meta(meta: dict, jpath: str):
    """``(block_info, damping, method, fisher, specs)`` popped from ``factors.json``'s dict (the rest is ``meta``)."""
    try:
        info = {n: Block.from_dict(b) for n, b in meta.pop("blocks").items()}
        raw_damping = meta.pop("damping")
        damping = {n: float(raw_damping[n]) for n in info}
        method, fisher = meta.pop("method"), meta.pop("fisher")
        specs = [spec_from_dict(d) for d in meta.pop("specs")]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise StateError(
            f"{jpath} is missing or has a malformed key ({type(e).__name__}: {one_line(e)}); "
            f"expected the metadata Factors.save writes: {_REFIT}"
        ) from None
    if method not in METHODS or fisher not in FISHERS:
        raise StateError(
            f"{jpath}: method {method!r} / fisher {fisher!r}; expected one of {METHODS} / {FISHERS}: {_REFIT}"
        )
    return info, damping, method, fisher, specs


def _block_factors(tensors: dict, n: str, b: Block, damping: float, tpath: str, jpath: str) -> BlockFactors:
    """Block ``n``'s factors from the loaded tensors, after checking each is a float tensor of ``b``'s shape."""
    want = {
        "Q_A": (b.d_in_total, b.d_in_total),
        "Q_S": (b.d_out, b.d_out),
        "lam_A": (b.d_in_total,),
        "lam_S": (b.d_out,),
        "eig": (b.d_out, b.d_in_total),
    }
    for k, shape in want.items():
        t = tensors.get(f"{n}/{k}")
        if t is None:
            raise StateError(f"{tpath} has no tensor {n}/{k} (listed in {os.path.basename(jpath)}); {_REFIT}")
        if tuple(t.shape) != shape or not t.is_floating_point():
            raise StateError(
                f"{tpath}: {n}/{k} is {t.dtype} {list(t.shape)}, but {os.path.basename(jpath)} "
                f"needs a float tensor {list(shape)}; {_REFIT}"
            )
    return BlockFactors(**{k: tensors[f"{n}/{k}"] for k in FACTOR_KEYS}, damping=damping)

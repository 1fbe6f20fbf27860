"""The backend registry: names, the module implementing each, availability.

Every backend module exposes the same functions on validated inputs (see ``validate.py``):
``is_available()``, ``covariance_accumulate(acc, X, mask, bias)``, ``score_blocks(blocks, mask)``,
``eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, mask, bias, route=None)`` and ``per_sample_grads(X, Y, mask, bias)``.
"""

from __future__ import annotations

import importlib
import os
from typing import List, Optional

import torch

BACKENDS = ("cuda", "triton", "cpu", "torch")

_MODULES = {
    "torch": ("mda_fast.kernels.reference", None),
    "cpu": ("mda_fast.kernels.compiled", "cpu"),
    "cuda": ("mda_fast.kernels.compiled", "cuda"),
    "triton": ("mda_fast.kernels.triton_backend", None),
}


def backend_module(name: str):
    """The module (or compiled-backend object) implementing backend ``name``; ImportError if it cannot load."""
    try:
        module, attr = _MODULES[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}") from None
    mod = importlib.import_module(module)
    return getattr(mod, attr) if attr else mod


def is_available(name: str) -> bool:
    if name == "torch":
        return True
    try:
        mod = backend_module(name)
    except ImportError:
        return False
    return bool(mod.is_available())


def available_backends(device: Optional[torch.device | str] = None) -> List[str]:
    """Backends usable in this process, in automatic-selection order; restricted to ``device``'s type if given."""
    names = [n for n in BACKENDS if is_available(n)]
    if device is None:
        return names
    dev = torch.device(device)
    if dev.type == "cuda":
        return [n for n in names if n in ("cuda", "triton", "torch")]
    if dev.type == "cpu":
        return [n for n in names if n in ("cpu", "torch")] + (
            ["triton"] if "triton" in names and os.environ.get("TRITON_INTERPRET") == "1" else []
        )
    return ["torch"]

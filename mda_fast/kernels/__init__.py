"""Kernel ops: per-sample head-subspace gradients fused with covariance, scoring and eigen-squared epilogues.

Backends (``backend=`` argument or env ``MDA_FAST_BACKEND``): "cuda" (mda_fast._C, tensor cores), "triton",
"cpu" (mda_fast._C, C++/OpenMP) and "torch" (reference; any device, float64 too). See ``dispatch.py``; the ops are
registered with ``torch.library`` as ``torch.ops.mda_fast.*`` (``ops.py``).
"""

from . import ops
from .dispatch import (
    BACKENDS,
    available_backends,
    covariance_accumulate,
    eigen_sq_accumulate,
    score,
    score_blocks,
    select_backend,
)
from .validate import BlockInput


def build_info():
    """``mda_fast._C.build_info()`` (raises ImportError when the extension was not built)."""
    from .compiled import ext

    return ext().build_info()


__all__ = [
    "BACKENDS",
    "BlockInput",
    "available_backends",
    "build_info",
    "covariance_accumulate",
    "ops",
    "eigen_sq_accumulate",
    "score",
    "score_blocks",
    "select_backend",
]

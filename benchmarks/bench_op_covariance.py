"""covariance_accumulate: every backend vs kronfluence's covariance tracker (one GEMM), side by side.

python benchmarks/bench_op_covariance.py [--device cpu|cuda] [--json out.json]   (options: harness.py)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from harness import main  # noqa: E402

from mda_fast import kernels  # noqa: E402
from mda_fast.kernels import reference  # noqa: E402


def kron_covariance(acc, X, mask, bias):
    """kronfluence covariance tracker: flattened activations, one GEMM."""
    Xt = reference.with_bias(X, bias, torch.float32).reshape(-1, acc.shape[0])
    Xw = Xt if mask is None else Xt * mask.float().reshape(-1, 1)
    return acc.add_(Xw.t() @ Xt)


def methods(c, inputs, backends):
    X, _, mask, _, _, _ = inputs
    acc = torch.zeros(c.D, c.D, device=X.device)
    out = {b: (lambda b=b: kernels.covariance_accumulate(acc, X, mask, c.bias, backend=b)) for b in backends}
    out["kronfluence"] = lambda: kron_covariance(acc, X, mask, c.bias)
    return out


if __name__ == "__main__":
    main("covariance", methods)

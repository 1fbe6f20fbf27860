"""eigen_sq_accumulate: every backend vs kronfluence's Lambda tracker (G by einsum, Q_Sᵀ (G Q_A)), side by side.

python benchmarks/bench_op_eigen_sq.py [--device cpu|cuda] [--json out.json]   (options: harness.py)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from harness import bmm16_grads, main  # noqa: E402

from mda_fast import kernels  # noqa: E402
from mda_fast.kernels import reference  # noqa: E402


def kron_eigen_sq(acc, X, Y, Q_S, Q_A, mask, bias):
    """kronfluence Lambda tracker: per-sample gradient by einsum, then Q_Sᵀ (G Q_A), squared, summed."""
    Xt = reference.with_bias(X, bias, torch.float32)
    Yf = Y.float() if mask is None else Y.float() * mask.float().unsqueeze(-1)
    G = torch.einsum("b...i,b...o->bio", Yf, Xt)
    return acc.add_(torch.matmul(Q_S.t(), torch.matmul(G, Q_A)).square_().sum(dim=0))


def methods(c, inputs, backends):
    X, Y, mask, _, Q_S, Q_A = inputs
    acc = torch.zeros(c.d_out, c.D, device=X.device)
    out = {b: (lambda b=b: kernels.eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, mask, c.bias, backend=b)) for b in backends}
    out["kronfluence"] = lambda: kron_eigen_sq(acc, X, Y, Q_S, Q_A, mask, c.bias)
    if X.is_cuda:  # bf16 G by bmm, fp32 rotations (unmasked)
        out["bmm16"] = lambda: acc.add_((Q_S.t() @ bmm16_grads(X, Y, c.bias).float() @ Q_A).square_().sum(0))
    return out


if __name__ == "__main__":
    main("eigen_sq", methods)

"""score: every backend vs kronfluence's pairwise-score einsum (opt_einsum path, fp32), side by side.

python benchmarks/bench_op_score.py [--device cpu|cuda] [--json out.json]   (options: benchmarks/harness.py)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from harness import bmm16_grads, main  # noqa: E402

from mda_fast import kernels  # noqa: E402
from mda_fast.kernels import reference  # noqa: E402

_paths = {}


def kron_score(X, Y, P, mask, bias):
    """kronfluence LinearModule.compute_pairwise_score: 'qio,b...i,b...o->qb' on X̃ and the masked Y, fp32."""
    from opt_einsum import DynamicProgramming, contract_path

    Xt = reference.with_bias(X, bias, torch.float32)
    Yf = Y.float() if mask is None else Y.float() * mask.float().unsqueeze(-1)
    expr = "qio,b...i,b...o->qb"
    key = (tuple(P.shape), tuple(Yf.shape), tuple(Xt.shape))
    if key not in _paths:
        path = contract_path(expr, P, Yf, Xt, optimize=DynamicProgramming(search_outer=True, minimize="flops"))[0]
        _paths[key] = [i for pair in path for i in pair]
    return torch._VF.einsum(expr, (P, Yf, Xt), path=_paths[key]).t()  # noqa: SLF001


def methods(c, inputs, backends):
    X, Y, mask, P, _, _ = inputs
    out = {b: (lambda b=b: kernels.score(X, Y, P, mask, bias=c.bias, backend=b)) for b in backends}
    out["kronfluence"] = lambda: kron_score(X, Y, P, mask, c.bias)
    if X.is_cuda:  # G by a bf16 bmm, then an fp32 GEMM against P (unmasked)
        out["bmm16"] = lambda: bmm16_grads(X, Y, c.bias).reshape(c.N, -1).float() @ P.reshape(c.K, -1).t()
    return out


if __name__ == "__main__":
    main("score", methods)

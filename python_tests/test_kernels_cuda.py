"""CUDA backend (mda_fast._C, tensor cores) vs the float64 oracle; skipped without a GPU.

Run on a GPU machine by benchmarks/gpu_check.sh. fp32 tokens use 3xTF32 (fp32-level accuracy); bf16/fp16
round m·y to the token dtype before the tensor-core product (float masks), within the bf16/fp16 tolerances.
"""
import pytest
import torch

from test_kernels_reference import (CONFIGS, TOL, Cfg, check_backend_config, make_inputs, oracle_cov,
                                    oracle_score, rel_err)
from mda_fast import kernels
from mda_fast.kernels import cuda_backend
from mda_fast.kernels.validate import BlockInput

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda_backend.is_available(), reason="needs a CUDA GPU and _C built with CUDA"),
]


@pytest.fixture(autouse=True)
def poison_empty(monkeypatch):
    real = torch.empty

    def empty(*args, **kwargs):
        t = real(*args, **kwargs)
        if t.dtype.is_floating_point:
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", empty)


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_cuda_matches_float64(cfg):
    tol = 5e-5 if cfg.dtype == "fp32" else TOL[cfg.dtype]
    check_backend_config(cuda_backend, cfg, "cuda", tol=tol)
    torch.cuda.synchronize()


@pytest.mark.parametrize("shape", [(3, 2048, 128, 64), (2, 300, 512, 128), (130, 40, 64, 64)])
def test_cuda_larger_shapes(shape):
    """Many T chunks, many tiles, N beyond one CTA group (kSquare/kSum spread samples over CTAs)."""
    N, T, d_in, d_out = shape
    cfg = Cfg(N, T, d_in, d_out, 8, True, "partial", "bf16", 31)
    check_backend_config(cuda_backend, cfg, "cuda")


def test_cuda_score_blocks_many_blocks():
    """More blocks than one launch's block table (16) and mixed widths, summed."""
    cfgs = [Cfg(5, 70, 32 + 8 * i, 64 + 32 * (i % 3), 3, i % 2 == 0, "partial", "bf16", 40 + i) for i in range(18)]
    ins = [make_inputs(c, "cuda") for c in cfgs]
    mask = ins[0][2]
    blocks = [BlockInput(X, Y, P, c.bias) for c, (X, Y, _, P, _, _) in zip(cfgs, ins)]
    S = cuda_backend.score_blocks(blocks, mask)
    ref = sum(oracle_score(X, Y, P, mask, c.bias) for c, (X, Y, _, P, _, _) in zip(cfgs, ins))
    assert rel_err(S, ref) < TOL["bf16"]


def test_cuda_runs_on_current_stream():
    cfg = Cfg(4, 500, 129, 192, 7, True, "partial", "bf16", 50)
    X, Y, mask, P, _, _ = make_inputs(cfg, "cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        S = kernels.score(X, Y, P, mask, bias=True, backend="cuda")
        acc = kernels.covariance_accumulate(torch.zeros(130, 130, device="cuda"), X, mask, True, backend="cuda")
    s.synchronize()
    assert rel_err(S, oracle_score(X, Y, P, mask, True)) < TOL["bf16"]
    assert rel_err(acc, oracle_cov(X, mask, True)) < TOL["bf16"]


def test_cuda_is_default_for_cuda_tensors():
    X = torch.randn(2, 3, 4, device="cuda")
    assert kernels.select_backend("score", X.device, [X], dict(N=2, T=3, d_out=4, D=4, K=1)) == "cuda"


@pytest.mark.parametrize("col_offset", [3, 8])
def test_cuda_strided_and_misaligned_tokens(col_offset):
    """Token slices of wider tensors: offset 3 breaks 16-byte row alignment (element-load path), offset 8 keeps
    it (16-byte loads with token stride 2)."""
    cfg = Cfg(3, 70, 64, 96, 3, True, "partial", "bf16", 70)
    X, Y, mask, P, _, _ = make_inputs(cfg, "cuda")
    Xw = torch.zeros(3, 140, 80, device="cuda", dtype=X.dtype)
    Xw[:, ::2, col_offset:col_offset + 64] = X
    Xs = Xw[:, ::2, col_offset:col_offset + 64]
    S = kernels.score(Xs, Y, P, mask, bias=True, backend="cuda")
    assert rel_err(S, oracle_score(X, Y, P, mask, True)) < TOL["bf16"]
    acc = kernels.covariance_accumulate(torch.zeros(65, 65, device="cuda"), Xs, mask, True, backend="cuda")
    assert rel_err(acc, oracle_cov(X, mask, True)) < TOL["bf16"]

"""covariance_accumulate (``torch.ops.mda_fast.covariance_accumulate``, mutates acc) on every backend."""

import pytest
import torch
from test_kernels_reference import (
    BACKEND_CASES,
    CONFIGS,
    CPU_BACKEND_CASES,
    TOL,
    Cfg,
    f64,
    make_inputs,
    need,
    oracle_cov,  # noqa: F401
    poison_empty,  # noqa: F401 (a fixture)
    rel_err,
    tol_for,
)

from mda_fast import kernels

pytestmark = pytest.mark.usefixtures("poison_empty")


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_covariance_matches_float64(backend, device, cfg):
    """acc starts random (so `=` instead of `+=` fails) and stays bit-identical under an all-zero mask."""
    need(backend, device)
    X, _, mask, _, _, _ = make_inputs(cfg, device)
    acc0 = torch.randn(cfg.D, cfg.D, device=device)
    acc = acc0.clone()
    out = kernels.covariance_accumulate(acc, X, mask, cfg.bias, backend=backend)
    assert out is acc
    assert rel_err(f64(acc) - f64(acc0), oracle_cov(X, mask, cfg.bias)) < tol_for(backend, device, cfg.dtype)
    if cfg.mask == "zero":
        assert torch.equal(acc, acc0), "all-zero mask must leave acc unchanged"


@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_covariance_bias_column_is_last(backend, device):
    """Row/column d_in of the result is Σ m x (the ones column), entry [d_in, d_in] is Σ m."""
    need(backend, device)
    g = torch.Generator().manual_seed(11)
    X = torch.randn(2, 13, 129, generator=g).to(device)
    M = (torch.rand(2, 13, generator=g) < 0.5).float().to(device)
    acc = kernels.covariance_accumulate(torch.zeros(130, 130, device=device), X, M, True, backend=backend).cpu()
    sx = torch.einsum("nt,nti->i", M.double().cpu(), X.double().cpu())
    assert torch.allclose(acc[129, :129].double(), sx, rtol=1e-5, atol=1e-4)
    assert torch.allclose(acc[:129, 129].double(), sx, rtol=1e-5, atol=1e-4)
    assert acc[129, 129].item() == pytest.approx(M.sum().item(), rel=1e-6)


@pytest.mark.parametrize("col_offset", [3, 8])
@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_covariance_strided_and_misaligned_tokens(backend, device, col_offset):
    need(backend, device)
    for dtype in ("fp32", "bf16"):
        cfg = Cfg(4, 30, 50, 96, 2, True, "partial", dtype, 23)
        X, _, mask, _, _, _ = make_inputs(cfg, device)
        Xw = torch.randn(4, 60, 80, device=device).to(X.dtype)
        Xw[:, ::2, col_offset : col_offset + 50] = X
        Xs = Xw[:, ::2, col_offset : col_offset + 50]
        acc = kernels.covariance_accumulate(torch.zeros(51, 51, device=device), Xs, mask, True, backend=backend)
        assert rel_err(acc, oracle_cov(X, mask, True)) < tol_for(backend, device, dtype)


@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_covariance_empty_sizes(backend, device):
    need(backend, device)
    for shape in ((3, 0, 8), (0, 5, 8)):
        acc = torch.ones(9, 9, device=device)
        kernels.covariance_accumulate(acc, torch.randn(*shape, device=device), None, True, backend=backend)
        assert torch.equal(acc.cpu(), torch.ones(9, 9))


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_triton_covariance_row_splits(dtype, monkeypatch):
    """Several row slices (split-K with atomics), the last one partial, give the same result."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    need("triton", device)
    from mda_fast.kernels import triton_covariance

    monkeypatch.setattr(triton_covariance, "rows_per_split", lambda R, D, device: triton_covariance.ROW_QUANTUM)
    X, _, M, _, _, _ = make_inputs(Cfg(3, 201, 64, 96, 1, True, "float", dtype, 12), device)  # 603 rows: 256+256+91
    acc = kernels.covariance_accumulate(torch.zeros(65, 65, device=device), X, M, True, backend="triton")
    assert rel_err(acc, oracle_cov(X, M, True)) < TOL[dtype]


@pytest.mark.parametrize("backend,device", CPU_BACKEND_CASES)
def test_covariance_opcheck(backend, device):
    need(backend, device)
    X, _, mask, _, _, _ = make_inputs(Cfg(2, 9, 17, 8, 1, True, "float", "fp32", 83))
    torch.library.opcheck(
        torch.ops.mda_fast.covariance_accumulate.default, (torch.randn(18, 18), X, mask, True, backend)
    )


def test_covariance_traces_under_torch_compile():
    X, _, mask, _, _, _ = make_inputs(Cfg(2, 9, 17, 8, 1, True, "float", "fp32", 84))

    def f(acc, X, m):
        torch.ops.mda_fast.covariance_accumulate(acc, X, m, True, "torch")
        return acc

    acc = torch.compile(f, backend="aot_eager", fullgraph=True)(torch.zeros(18, 18), X, mask)
    assert rel_err(acc, oracle_cov(X, mask, True)) < TOL["fp32"]

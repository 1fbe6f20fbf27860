"""eigen_sq_accumulate and per_sample_grads (``torch.ops.mda_fast.eigen_sq_accumulate`` / ``per_sample_grads``)
on every backend, both routes (A: rotate the tokens, B: rotate G), against the float64 oracle."""

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
    oracle_eigen_sq,  # noqa: F401
    oracle_G,
    poison_empty,  # noqa: F401 (a fixture)
    rel_err,
    tol_for,
)

from mda_fast import kernels

pytestmark = pytest.mark.usefixtures("poison_empty")


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_eigen_sq_matches_float64(backend, device, cfg):
    """Both routes through the registered op, the automatic one through the public function; acc starts random
    and stays bit-identical under an all-zero mask."""
    need(backend, device)
    X, Y, mask, _, Q_S, Q_A = make_inputs(cfg, device)
    ref = oracle_eigen_sq(X, Y, Q_S, Q_A, mask, cfg.bias)
    tol = tol_for(backend, device, cfg.dtype)
    for route in ("A", "B", None):
        e0 = torch.rand(cfg.d_out, cfg.D, device=device)
        e = e0.clone()
        if route is None:
            assert kernels.eigen_sq_accumulate(e, X, Y, Q_S, Q_A, mask, cfg.bias, backend=backend) is e
        else:
            torch.ops.mda_fast.eigen_sq_accumulate(e, X, Y, Q_S, Q_A, mask, cfg.bias, backend, route)
        assert rel_err(f64(e) - f64(e0), ref) < tol, (route, cfg)
        if cfg.mask == "zero":
            assert torch.equal(e, e0), "all-zero mask must leave acc unchanged"


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_per_sample_grads_matches_float64(backend, device, cfg):
    """G (route B's workspace, allocated empty and so poisoned with NaN here) is written everywhere."""
    need(backend, device)
    X, Y, mask, _, _, _ = make_inputs(cfg, device)
    G = torch.ops.mda_fast.per_sample_grads(X, Y, mask, cfg.bias, backend)
    assert G.dtype == torch.float32 and tuple(G.shape) == (cfg.N, cfg.d_out, cfg.D)
    assert rel_err(G, oracle_G(X, Y, mask, cfg.bias)) < tol_for(backend, device, cfg.dtype)


@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_eigen_sq_wrong_rotations_are_detected(backend, device):
    """General (non-orthogonal) Q_S, Q_A: a swapped or untransposed rotation is caught, on both routes."""
    need(backend, device)
    g = torch.Generator().manual_seed(21)
    X, Y = torch.randn(2, 19, 40, generator=g).to(device), torch.randn(2, 19, 96, generator=g).to(device)
    Q_S, Q_A = torch.randn(96, 96, generator=g).to(device), torch.randn(41, 41, generator=g).to(device)
    G = oracle_G(X, Y, None, True)
    ref = oracle_eigen_sq(X, Y, Q_S, Q_A, None, True)
    untransposed = (f64(Q_S) @ G @ f64(Q_A).T).square().sum(0)
    for route in ("A", "B"):
        e = torch.zeros(96, 41, device=device)
        torch.ops.mda_fast.eigen_sq_accumulate(e, X, Y, Q_S, Q_A, None, True, backend, route)
        assert rel_err(e, ref) < tol_for(backend, device, "fp32"), route
        assert rel_err(e, untransposed) > 0.1, route
    cfg = Cfg(3, 40, 15, 16, 2, True, "partial", "bf16", 24)  # square: Q_S and Q_A may be swapped
    X, Y, mask, _, Q_S, Q_A = make_inputs(cfg, device)
    e = kernels.eigen_sq_accumulate(torch.zeros(16, 16, device=device), X, Y, Q_S, Q_A, mask, True, backend=backend)
    assert rel_err(e, oracle_eigen_sq(X, Y, Q_S, Q_A, mask, True)) < tol_for(backend, device, "bf16")
    assert rel_err(e, oracle_eigen_sq(X, Y, Q_A, Q_S, mask, True)) > 0.1  # Q_S / Q_A swapped


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(3, 2048, 128, 64), (2, 300, 512, 128), (130, 40, 64, 64)])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_larger_shapes_on_gpu(backend, shape):
    """Many T chunks, many tiles, N beyond one CTA group (kSquare/kSum spread samples over CTAs): all ops."""
    need(backend, "cuda")
    from test_kernels_reference import oracle_cov, oracle_score

    N, T, d_in, d_out = shape
    cfg = Cfg(N, T, d_in, d_out, 8, True, "partial", "bf16", 31)
    X, Y, mask, P, Q_S, Q_A = make_inputs(cfg, "cuda")
    tol = tol_for(backend, "cuda", "bf16")
    assert rel_err(kernels.score(X, Y, P, mask, True, backend=backend), oracle_score(X, Y, P, mask, True)) < tol
    acc = kernels.covariance_accumulate(torch.zeros(cfg.D, cfg.D, device="cuda"), X, mask, True, backend=backend)
    assert rel_err(acc, oracle_cov(X, mask, True)) < tol
    for route in ("A", "B"):
        e = torch.zeros(d_out, cfg.D, device="cuda")
        torch.ops.mda_fast.eigen_sq_accumulate(e, X, Y, Q_S, Q_A, mask, True, backend, route)
        assert rel_err(e, oracle_eigen_sq(X, Y, Q_S, Q_A, mask, True)) < tol, route
    G = torch.ops.mda_fast.per_sample_grads(X, Y, mask, True, backend)
    assert rel_err(G, oracle_G(X, Y, mask, True)) < tol


@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_eigen_sq_route_argument(backend, device):
    need(backend, device)
    with pytest.raises(ValueError, match="route"):
        torch.ops.mda_fast.eigen_sq_accumulate(
            torch.zeros(2, 2, device=device),
            torch.zeros(1, 1, 2, device=device),
            torch.zeros(1, 1, 2, device=device),
            torch.eye(2, device=device),
            torch.eye(2, device=device),
            None,
            False,
            backend,
            "bogus",
        )


@pytest.mark.parametrize("route", ["A", "B"])
@pytest.mark.parametrize("backend,device", CPU_BACKEND_CASES)
def test_eigen_sq_opcheck(backend, device, route):
    need(backend, device)
    X, Y, mask, _, Q_S, Q_A = make_inputs(Cfg(2, 9, 17, 8, 1, True, "float", "fp32", 85))
    torch.library.opcheck(
        torch.ops.mda_fast.eigen_sq_accumulate.default, (torch.rand(8, 18), X, Y, Q_S, Q_A, mask, True, backend, route)
    )


@pytest.mark.parametrize("backend,device", CPU_BACKEND_CASES)
def test_per_sample_grads_opcheck(backend, device):
    need(backend, device)
    X, Y, mask, _, _, _ = make_inputs(Cfg(2, 9, 17, 8, 1, True, "float", "bf16", 86))
    torch.library.opcheck(torch.ops.mda_fast.per_sample_grads.default, (X, Y, mask, True, backend))


def test_eigen_sq_traces_under_torch_compile():
    X, Y, mask, _, Q_S, Q_A = make_inputs(Cfg(2, 9, 17, 8, 1, True, "float", "fp32", 87))

    def f(acc, X, Y, m):
        torch.ops.mda_fast.eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, m, True, "torch", None)
        return acc

    acc = torch.compile(f, backend="aot_eager", fullgraph=True)(torch.zeros(8, 18), X, Y, mask)
    assert rel_err(acc, oracle_eigen_sq(X, Y, Q_S, Q_A, mask, True)) < TOL["fp32"]

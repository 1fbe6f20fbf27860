"""Dispatch layer: backend selection (argument, env var, automatic rule), validation errors, float64 path."""

import pytest
import torch
from test_kernels_reference import TOL, Cfg, make_inputs, oracle_cov, oracle_eigen_sq, oracle_score, rel_err

from mda_fast import kernels
from mda_fast.kernels.validate import BlockInput

HAVE_C = "cpu" in kernels.available_backends()


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("MDA_FAST_BACKEND", raising=False)


def small(dtype=torch.float32, bias=True):
    X = torch.randn(3, 6, 5, dtype=dtype)
    Y = torch.randn(3, 6, 4, dtype=dtype)
    P = torch.randn(2, 4, 5 + bias, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    return X, Y, P


def test_available_backends():
    names = kernels.available_backends()
    assert "torch" in names and names == [n for n in kernels.BACKENDS if n in names]
    assert kernels.available_backends("cpu")[-1] != "cuda"
    assert "cuda" not in kernels.available_backends("cpu")


@pytest.mark.skipif(not HAVE_C, reason="_C not built")
def test_auto_selection_on_cpu():
    X, Y, P = small()
    shape = dict(N=3, T=6, d_out=4, D=6, K=2)
    assert kernels.select_backend("score", X.device, [X, P], shape) == "cpu"
    assert kernels.select_backend("score", X.device, [X.double(), P.double()], shape) == "torch"
    # measured rule: covariance of very narrow blocks goes to torch's GEMM, wider ones to the C++ kernel
    narrow = dict(N=32, T=128, d_out=16, D=16)
    wide = dict(N=32, T=128, d_out=1025, D=1025)
    assert kernels.select_backend("covariance", X.device, [X], narrow) == "torch"
    assert kernels.select_backend("covariance", X.device, [X.bfloat16()], wide) == "cpu"
    assert kernels.select_backend("covariance", X.device, [X], wide) == "cpu"


def test_forced_backend_argument_and_env(monkeypatch):
    X, Y, P = small()
    shape = dict(N=3, T=6, d_out=4, D=6, K=2)
    assert kernels.select_backend("score", X.device, [X, P], shape, backend="torch") == "torch"
    monkeypatch.setenv("MDA_FAST_BACKEND", "torch")
    assert kernels.select_backend("score", X.device, [X, P], shape) == "torch"
    monkeypatch.setenv("MDA_FAST_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="MDA_FAST_BACKEND"):
        kernels.score(X, Y, P, bias=True)
    monkeypatch.setenv("MDA_FAST_BACKEND", "cuda")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        kernels.score(X, Y, P, bias=True)
    # float64 (core-math tests) always reaches torch under the env var
    S = kernels.score(X.double(), Y.double(), P.double(), bias=True)
    assert S.dtype == torch.float64
    monkeypatch.delenv("MDA_FAST_BACKEND")
    with pytest.raises(ValueError, match="unknown backend"):
        kernels.score(X, Y, P, bias=True, backend="tpu")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        kernels.score(X, Y, P, bias=True, backend="cuda")
    with pytest.raises(TypeError, match="float64"):
        kernels.score(X.double(), Y.double(), P.double(), bias=True, backend="cpu")


def test_float64_through_dispatch_matches_oracle():
    cfg = Cfg(4, 9, 17, 8, 3, True, "float", "fp32", 60)
    X, Y, mask, P, Q_S, Q_A = (None if t is None else t.double() for t in make_inputs(cfg))
    S = kernels.score(X, Y, P, mask, bias=True)
    assert S.dtype == torch.float64 and rel_err(S, oracle_score(X, Y, P, mask, True)) < 1e-13
    acc = kernels.covariance_accumulate(torch.zeros(18, 18, dtype=torch.float64), X, mask, True)
    assert rel_err(acc, oracle_cov(X, mask, True)) < 1e-13
    e = kernels.eigen_sq_accumulate(torch.zeros(8, 18, dtype=torch.float64), X, Y, Q_S, Q_A, mask, True)
    assert rel_err(e, oracle_eigen_sq(X, Y, Q_S, Q_A, mask, True)) < 1e-13


@pytest.mark.parametrize("backend", [b for b in ("cpu", "torch", "triton") if b in kernels.available_backends("cpu")])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_every_cpu_backend_through_dispatch(backend, dtype):
    cfg = Cfg(5, 33, 129, 96, 7, True, "partial", dtype, 61)
    X, Y, mask, P, Q_S, Q_A = make_inputs(cfg)
    tol = TOL[dtype] if backend != "triton" else 1e-2
    S = kernels.score(X, Y, P, mask, bias=True, backend=backend)
    assert rel_err(S, oracle_score(X, Y, P, mask, True)) < tol
    S2 = kernels.score_blocks([BlockInput(X, Y, P, True), BlockInput(X, Y, -P, True)], mask, backend=backend)
    assert S2.abs().max() <= 1e-3 * S.abs().max() + 1e-3
    acc = kernels.covariance_accumulate(torch.zeros(130, 130), X, mask, True, backend=backend)
    assert rel_err(acc, oracle_cov(X, mask, True)) < tol
    e = kernels.eigen_sq_accumulate(torch.zeros(96, 130), X, Y, Q_S, Q_A, mask, True, backend=backend)
    assert rel_err(e, oracle_eigen_sq(X, Y, Q_S, Q_A, mask, True)) < tol


@pytest.mark.cuda
def test_cuda_is_default_for_cuda_tensors():
    if "cuda" not in kernels.available_backends("cuda"):
        pytest.skip("_C built without CUDA")
    X = torch.randn(2, 3, 4, device="cuda")
    assert kernels.select_backend("score", X.device, [X], dict(N=2, T=3, d_out=4, D=4, K=1)) == "cuda"


def test_registered_ops():
    names = ("covariance_accumulate", "score_blocks", "eigen_sq_accumulate", "per_sample_grads")
    for name in names:
        assert hasattr(torch.ops.mda_fast, name), name
    X, Y, P = small()
    with pytest.raises(ValueError, match="unknown backend"):
        torch.ops.mda_fast.score_blocks([X], [Y], [P], [True], None, "tpu")
    with pytest.raises(ValueError, match=r"P must have shape"):  # the ops validate when called directly
        torch.ops.mda_fast.score_blocks([X], [Y], [P[:, :, :5]], [True], None, "torch")


def test_validation_errors():
    X, Y, P = small()
    acc = torch.zeros(6, 6)
    with pytest.raises(TypeError, match="X must have dtype"):
        kernels.score(X.int(), Y, P, bias=True)
    with pytest.raises(TypeError, match="share a dtype"):
        kernels.score(X, Y.bfloat16(), P, bias=True)
    with pytest.raises(ValueError, match="must share N and T"):
        kernels.score(X, Y[:, :5], P, bias=True)
    with pytest.raises(ValueError, match="3-D"):
        kernels.score(X[0], Y, P, bias=True)
    with pytest.raises(ValueError, match="contiguous in its last dimension"):
        kernels.score(X.transpose(1, 2).contiguous().transpose(1, 2), Y, P, bias=True)
    with pytest.raises(ValueError, match=r"P must have shape \[2, 4, 6\]"):
        kernels.score(X, Y, P[:, :, :5], bias=True)
    with pytest.raises(TypeError, match="P must have dtype"):
        kernels.score(X, Y, P.bfloat16(), bias=True)
    with pytest.raises(ValueError, match=r"mask must have shape \[N, T\]"):
        kernels.score(X, Y, P, torch.ones(3, 5), bias=True)
    with pytest.raises(TypeError, match="mask must be bool or floating"):
        kernels.score(X, Y, P, torch.ones(3, 6, dtype=torch.int64), bias=True)
    with pytest.raises(ValueError, match="mask must be on"):
        kernels.score(X, Y, P, torch.ones(3, 6, device="meta"), bias=True)
    with pytest.raises(TypeError, match="bias must be a bool"):
        kernels.score(X, Y, P, bias=1)
    with pytest.raises(ValueError, match=r"acc must have shape \[5, 5\]"):
        kernels.covariance_accumulate(acc, X, bias=False)
    with pytest.raises(ValueError, match="acc must be contiguous"):
        kernels.covariance_accumulate(torch.zeros(6, 6).t(), X, bias=True)
    with pytest.raises(ValueError, match=r"Q_S must have shape \[4, 4\]"):
        kernels.eigen_sq_accumulate(torch.zeros(4, 6), X, Y, torch.eye(5), torch.eye(6), bias=True)
    with pytest.raises(ValueError, match=r"Q_A must have shape \[6, 6\]"):
        kernels.eigen_sq_accumulate(torch.zeros(4, 6), X, Y, torch.eye(4), torch.eye(5), bias=True)
    with pytest.raises(TypeError, match="X must be a torch.Tensor"):
        kernels.covariance_accumulate(acc, X.numpy(), bias=True)
    with pytest.raises(ValueError, match="non-empty list"):
        kernels.score_blocks([])
    with pytest.raises(TypeError, match=r"blocks\[1\] must be a BlockInput"):
        kernels.score_blocks([BlockInput(X, Y, P, True), (X, Y, P)])
    with pytest.raises(ValueError, match="share K"):
        kernels.score_blocks([BlockInput(X, Y, P, True), BlockInput(X, Y, P[:1], True)])
    with pytest.raises(ValueError, match="share N and T"):
        kernels.score_blocks([BlockInput(X, Y, P, True), BlockInput(X[:2], Y[:2], P, True)])


@pytest.mark.skipif(not HAVE_C, reason="_C not built")
def test_ekfac_and_scorer_identical_across_backends():
    """The EK-FAC fitter and the influence scorer route through dispatch: the C++ CPU backend gives the torch
    reference's factors and scores within fp32 tolerance (fp32 model)."""
    from conftest import make_tiny

    from mda_fast import HeadSpec, InfluenceScorer, fit_ekfac

    model = make_tiny(n_layers=2, d_model=32, n_heads=2, dtype=torch.float32)
    rows = torch.randint(0, 64, (12, 17), generator=torch.Generator().manual_seed(5))
    spec = HeadSpec(1, 0, "qkvo", bias=True)
    fac = {
        b: fit_ekfac(model, [spec], [rows[:6], rows[6:]], fisher="empirical", backend=b, progress=False)
        for b in ("torch", "cpu")
    }
    for name, f in fac["torch"].blocks.items():
        g = fac["cpu"].blocks[name]
        assert rel_err(g.lam_A, f.lam_A) < 1e-5 and rel_err(g.lam_S, f.lam_S) < 1e-5, name
        assert rel_err(g.eig, f.eig) < 1e-3, name
    train = torch.randint(0, 64, (5, 17), generator=torch.Generator().manual_seed(6))
    scores = {
        b: InfluenceScorer(
            model, [spec], fac["torch"], probe="induction", probe_kwargs=dict(L=6, n=4, seed=0), backend=b
        ).score(train)
        for b in ("torch", "cpu")
    }
    assert rel_err(scores["cpu"], scores["torch"]) < 1e-4

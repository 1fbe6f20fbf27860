"""Triton backend against float64 einsum references, in interpreter mode on the CPU.

Triton decides interpreter mode for its own standard library (tl.sum, tl.cdiv, ...) when it is first imported, so
`TRITON_INTERPRET=1` is set here before anything imports triton; the backend reads the variable when a kernel is
first launched. The compiled kernels are checked on a GPU by `benchmarks/bench_triton.py --check` (run in a
subprocess by the `cuda` test below, with the variable removed).
"""
from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from mda_fast.kernels import triton_backend as tb  # noqa: E402
from mda_fast.kernels import triton_score  # noqa: E402

N_CONFIGS = 24
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
D_OUTS = (96, 192, 384)


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # another test may have changed it since import


def _config(i: int, kind: str) -> dict:
    """Configuration i: the required cases are cycled through, the rest is drawn at random."""
    rng = random.Random(1000 * i + sum(map(ord, kind)))
    cfg = dict(
        dtype=(torch.float32, torch.bfloat16)[i % 2],
        d_out=D_OUTS[i % 3],
        K=(1, 7)[(i // 2) % 2],
        mask=("none", "partial", "zero", "fractional")[(i // 3) % 4] if i % 6 != 5 else "partial",
        N=(1, 5, 3, 2)[i % 4] if i < 8 else rng.randint(1, 5),
        T=(1, 37, 16, 23)[(i // 4) % 4] if i < 16 else rng.randint(1, 40),
        d_in=(129, 64, 95, 40)[i % 4] if i < 12 else rng.choice([17, 33, 64, 95, 128, 129]),
        bias=(True, False, True)[i % 3] if i < 12 else rng.random() < 0.5,
    )
    if i == 7:  # square G (d_out == D_in) so a transposed G cannot hide behind a shape error
        cfg.update(d_out=96, d_in=95, bias=True)
    return cfg


def _inputs(cfg: dict, seed: int):
    g = torch.Generator().manual_seed(seed)
    N, T = cfg["N"], cfg["T"]
    X = torch.randn(N, T, cfg["d_in"], generator=g).to(cfg["dtype"])
    Y = torch.randn(N, T, cfg["d_out"], generator=g).to(cfg["dtype"])
    kind = cfg["mask"]
    if kind == "none":
        M = None
    elif kind == "zero":
        M = torch.zeros(N, T)
    elif kind == "partial":
        M = (torch.rand(N, T, generator=g) < 0.6).float()
        M[0, 0] = 0.0
    else:
        M = torch.rand(N, T, generator=g)
    return X, Y, M


def _xt64(X: torch.Tensor, bias: bool) -> torch.Tensor:
    X = X.double()
    return torch.cat([X, X.new_ones(*X.shape[:-1], 1)], -1) if bias else X


def _m64(M, X):
    return torch.ones(X.shape[:2], dtype=torch.float64) if M is None else M.double()


def _grads64(X, Y, M, bias):
    """G [N, d_out, D_in] in float64 from the (already dtype-rounded) inputs."""
    return torch.einsum("nt,nto,nti->noi", _m64(M, X), Y.double(), _xt64(X, bias))


def _check(out: torch.Tensor, ref: torch.Tensor, dtype, what: str):
    assert not torch.isnan(out).any(), f"{what}: NaN in output"
    scale = ref.abs().max().item()
    if scale == 0.0:
        assert out.abs().max().item() == 0.0, f"{what}: expected exact zeros"
        return
    err = (out.double() - ref).abs().max().item() / scale
    assert err < TOL[dtype], f"{what}: relative error {err:.2e} > {TOL[dtype]:.0e}"


@pytest.fixture
def poison_partial(monkeypatch):
    """Score's partial-sum buffer starts as NaN: a cell the kernel forgets to write shows up."""
    monkeypatch.setattr(triton_score, "_alloc_partial",
                        lambda shape, device: torch.full(shape, float("nan"), device=device))


# --------------------------------------------------------------------------------------------- score


@pytest.mark.parametrize("i", range(N_CONFIGS))
def test_score_matches_float64_reference(i, poison_partial):
    cfg = _config(i, "score")
    X, Y, M = _inputs(cfg, seed=i)
    D_in = cfg["d_in"] + cfg["bias"]
    P = torch.randn(cfg["K"], cfg["d_out"], D_in, generator=torch.Generator().manual_seed(100 + i))
    S = tb.score(X, Y, P, M, cfg["bias"])
    assert S.shape == (cfg["N"], cfg["K"]) and S.dtype == torch.float32
    ref = torch.einsum("koi,noi->nk", P.double(), _grads64(X, Y, M, cfg["bias"]))
    _check(S, ref, cfg["dtype"], f"score {cfg}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_score_blocks_sums_heterogeneous_blocks(dtype, poison_partial):
    g = torch.Generator().manual_seed(7)
    N, T, K = 3, 29, 7
    shapes = [(129, 96, True), (64, 192, False), (40, 33, True)]  # (d_in, d_out, bias)
    M = (torch.rand(N, T, generator=g) < 0.7).float()
    blocks, ref = [], torch.zeros(N, K, dtype=torch.float64)
    for d_in, d_out, bias in shapes:
        X = torch.randn(N, T, d_in, generator=g).to(dtype)
        Y = torch.randn(N, T, d_out, generator=g).to(dtype)
        P = torch.randn(K, d_out, d_in + bias, generator=g)
        blocks.append(SimpleNamespace(X=X, Y=Y, P=P, bias=bias))
        ref += torch.einsum("koi,noi->nk", P.double(), _grads64(X, Y, M, bias))
    _check(tb.score_blocks(blocks, M), ref, dtype, "score_blocks")


def test_score_reference_is_discriminating():
    """The comparison above fails for a transposed G, a misplaced bias column, a wrong mask or a flipped sign."""
    g = torch.Generator().manual_seed(3)
    N, T, d = 2, 11, 96
    X = torch.randn(N, T, d - 1, generator=g)
    Y = torch.randn(N, T, d, generator=g)
    M = (torch.rand(N, T, generator=g) < 0.5).float()
    P = torch.randn(2, d, d, generator=g)
    S = tb.score(X, Y, P, M, True).double()
    G = _grads64(X, Y, M, True)
    good = torch.einsum("koi,noi->nk", P.double(), G)
    Xfront = torch.cat([torch.ones(N, T, 1), X], -1)  # bias column first instead of last
    wrong = {
        "transposed": torch.einsum("koi,nio->nk", P.double(), G),
        "bias first": torch.einsum("koi,noi->nk", P.double(), _grads64(Xfront, Y, M, False)),
        "no mask": torch.einsum("koi,noi->nk", P.double(), _grads64(X, Y, None, True)),
        "inverted mask": torch.einsum("koi,noi->nk", P.double(), _grads64(X, Y, 1 - M, True)),
        "sign": -good,
    }
    scale = good.abs().max().item()
    assert (S - good).abs().max().item() / scale < TOL[torch.float32]
    for name, bad in wrong.items():
        assert (S - bad).abs().max().item() / scale > 10 * TOL[torch.bfloat16], name


def test_score_empty_batch():
    X, Y, P = torch.zeros(0, 4, 8), torch.zeros(0, 4, 16), torch.zeros(2, 16, 8)
    assert tb.score(X, Y, P).shape == (0, 2)


def test_is_available_under_interpreter():
    assert tb.is_available()


# ---------------------------------------------------------------------------------------- covariance


@pytest.mark.parametrize("i", range(N_CONFIGS))
def test_covariance_matches_float64_reference(i):
    cfg = _config(i, "covariance")
    X, _, M = _inputs(cfg, seed=200 + i)
    D = cfg["d_in"] + cfg["bias"]
    acc0 = torch.randn(D, D, generator=torch.Generator().manual_seed(300 + i))
    acc = acc0.clone()
    out = tb.covariance_accumulate(acc, X, M, cfg["bias"])
    assert out is acc
    Xt = _xt64(X, cfg["bias"])
    cov = torch.einsum("nt,nti,ntj->ij", _m64(M, X), Xt, Xt)
    _check(acc - acc0, cov, cfg["dtype"], f"covariance {cfg}")  # exact for the all-zero mask
    _check(acc, acc0.double() + cov, cfg["dtype"], f"covariance acc {cfg}")


def test_covariance_bias_column_is_last():
    """Row/column d_in of the result is Σ m x (the ones column), entry [d_in, d_in] is Σ m."""
    g = torch.Generator().manual_seed(11)
    X = torch.randn(2, 13, 129, generator=g)
    M = (torch.rand(2, 13, generator=g) < 0.5).float()
    acc = tb.covariance_accumulate(torch.zeros(130, 130), X, M, True)
    sx = torch.einsum("nt,nti->i", M.double(), X.double())
    assert torch.allclose(acc[129, :129].double(), sx, rtol=1e-5, atol=1e-4)
    assert torch.allclose(acc[:129, 129].double(), sx, rtol=1e-5, atol=1e-4)
    assert acc[129, 129].item() == pytest.approx(M.sum().item(), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_covariance_row_splits(dtype, monkeypatch):
    """Several row slices (split-K with atomics), the last one partial, give the same result."""
    from mda_fast.kernels import triton_covariance

    monkeypatch.setattr(triton_covariance, "_rows_per_split", lambda R, D, device: triton_covariance._ROW_QUANTUM)
    g = torch.Generator().manual_seed(12)
    X = torch.randn(3, 201, 64, generator=g).to(dtype)  # 603 rows: slices of 256, 256, 91
    M = torch.rand(3, 201, generator=g)
    acc = tb.covariance_accumulate(torch.zeros(65, 65), X, M, True)
    Xt = _xt64(X, True)
    _check(acc, torch.einsum("nt,nti,ntj->ij", M.double(), Xt, Xt), dtype, "covariance splits")


# ------------------------------------------------------------------------------------------ eigen_sq


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0].float()


@pytest.fixture
def poison_grads(monkeypatch):
    """The "grads" route's per-sample gradient buffer starts as NaN."""
    from mda_fast.kernels import triton_eigen_sq

    monkeypatch.setattr(triton_eigen_sq, "_alloc_grads",
                        lambda shape, device: torch.full(shape, float("nan"), device=device))


# both routes on every configuration, the automatic choice (None) on every third one
EIGEN_CASES = [(i, r) for i in range(N_CONFIGS) for r in ("tokens", "grads")] + [(i, None) for i in range(0, N_CONFIGS, 3)]


@pytest.mark.parametrize("i,route", EIGEN_CASES)
def test_eigen_sq_matches_float64_reference(i, route, poison_grads):
    cfg = _config(i, "eigen_sq")
    X, Y, M = _inputs(cfg, seed=400 + i)
    D_in = cfg["d_in"] + cfg["bias"]
    Q_S, Q_A = _orthogonal(cfg["d_out"], 500 + i), _orthogonal(D_in, 600 + i)
    acc0 = torch.rand(cfg["d_out"], D_in, generator=torch.Generator().manual_seed(700 + i))
    acc = acc0.clone()
    out = tb.eigen_sq_accumulate(acc, X, Y, Q_S, Q_A, M, cfg["bias"], route=route)
    assert out is acc
    G = _grads64(X, Y, M, cfg["bias"])
    ref = (Q_S.double().T @ G @ Q_A.double()).square().sum(0)
    _check(acc - acc0, ref, cfg["dtype"], f"eigen_sq[{route}] {cfg}")


def test_eigen_sq_non_orthogonal_rotations():
    """General (non-orthogonal) Q_S, Q_A: a swapped or untransposed rotation is caught."""
    g = torch.Generator().manual_seed(21)
    X, Y = torch.randn(2, 19, 40, generator=g), torch.randn(2, 19, 96, generator=g)
    Q_S, Q_A = torch.randn(96, 96, generator=g), torch.randn(41, 41, generator=g)
    G = _grads64(X, Y, None, True)
    ref = (Q_S.double().T @ G @ Q_A.double()).square().sum(0)
    wrong = (Q_S.double() @ G @ Q_A.double().T).square().sum(0)
    for route in ("tokens", "grads"):
        acc = tb.eigen_sq_accumulate(torch.zeros(96, 41), X, Y, Q_S, Q_A, None, True, route=route)
        _check(acc, ref, torch.float32, f"eigen_sq[{route}] general Q")
        assert (acc.double() - wrong).abs().max() > 0.1 * wrong.abs().max()


def test_eigen_sq_route_choice():
    from mda_fast.kernels import reference
    from mda_fast.kernels.triton_eigen_sq import choose_route

    assert choose_route(64, 2048, 2048, 256, True) == "grads"  # Pythia-1b head block at T=2048
    assert choose_route(64, 16, 512, 512, False) == "tokens"
    # the same rule as the C++/CUDA backends, with the bias column counted in D_in
    for T in (1, 4, 31, 32, 33, 200, 2048):
        for d_in, d_out, bias in ((64, 16, False), (64, 16, True), (128, 32, True), (8, 64, False)):
            want = reference.eigen_sq_route(5, T, d_out, d_in + bias)
            assert choose_route(5, T, d_in, d_out, bias) == {"A": "tokens", "B": "grads"}[want]
    with pytest.raises(ValueError, match="route"):
        tb.eigen_sq_accumulate(torch.zeros(2, 2), torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.eye(2),
                               torch.eye(2), None, False, route="bogus")


# -------------------------------------------------------------------------- benchmark / GPU checks

ROOT = Path(__file__).resolve().parents[1]


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_triton", ROOT / "benchmarks" / "bench_triton.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_check_and_case_run_on_cpu(monkeypatch, capsys):
    """The benchmark's correctness check and timing case, on CPU tensors in interpreter mode (tiny shapes)."""
    bench = _bench_module()
    assert bench.check(cases=[(2, 19, 40, 96, 2, True)], device="cpu") == 0
    assert "0 failure(s)" in capsys.readouterr().out
    monkeypatch.setattr(bench, "_bench", lambda fn: (fn(), 1.0)[1])
    g = torch.Generator().manual_seed(5)
    X = torch.randn(2, 17, 40, generator=g).to(torch.bfloat16)
    Y = torch.randn(2, 17, 96, generator=g).to(torch.bfloat16)
    P = torch.randn(3, 96, 41, generator=g)
    Q_S, Q_A = _orthogonal(96, 1), _orthogonal(41, 2)
    for op in ("score", "covariance", "eigen_sq"):
        ms, flops, err, _ = bench.run_case(op, X, Y, P, Q_S, Q_A, True, 3)
        assert set(ms) == {"triton", "ref", "bmm16"} and flops > 0
        assert err < 1e-2, op


def test_bench_skips_without_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert _bench_module().main([]) == 0
    assert "skipped" in capsys.readouterr().out


def _compiled_env():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_kernels_compile_for_sm80_and_sm90():
    """Compiled mode (no GPU needed: triton's ptxas) in a fresh process, since this one runs the interpreter."""
    code = ("from mda_fast.kernels import triton_backend as tb\n"
            "for line in tb.compile_check(archs=(80, 90), dtypes=('bf16', 'fp32')): print(line)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_compiled_env(), capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.count("sm_90") == res.stdout.count("sm_80") == 8  # 4 kernels x 2 dtypes


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernels_on_gpu():
    """The compiled, autotuned kernels against float64 on the GPU (benchmarks/bench_triton.py --check)."""
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_triton.py"), "--check"], cwd=ROOT,
                         env=_compiled_env(), capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]

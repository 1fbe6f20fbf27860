"""Torch reference kernels vs an independent float64 einsum oracle, plus the shared test configurations.

The helpers here (``CONFIGS``, ``make_inputs``, ``oracle_*``, ``rel_err``, ``BACKEND_CASES``, ``need``, the
``poison_empty`` fixture) are imported by the per-op tests (``test_op_*.py``) and the dispatch tests.

Without a GPU the Triton backend runs in interpreter mode on CPU tensors: ``TRITON_INTERPRET=1`` is set here,
before anything imports triton (triton fixes its standard library's mode at import). With a GPU it runs compiled
on CUDA tensors.
"""

import math
import os
import random
from dataclasses import dataclass

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from mda_fast.kernels import reference
from mda_fast.kernels.validate import BlockInput

# ---- configurations ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cfg:
    N: int
    T: int
    d_in: int
    d_out: int
    K: int
    bias: bool
    mask: str  # "none" | "zero" | "partial" | "float"
    dtype: str  # "fp32" | "bf16" | "fp16"
    seed: int

    @property
    def D(self):
        return self.d_in + int(self.bias)

    def __str__(self):
        return (
            f"N{self.N}-T{self.T}-din{self.d_in}{'+b' if self.bias else ''}-dout{self.d_out}-K{self.K}-"
            f"{self.mask}-{self.dtype}-s{self.seed}"
        )


def _draw_configs(n_random: int = 14, seed: int = 20261122):
    """Anchor configs covering every required case, plus randomly drawn ones (seeded, so test ids are stable)."""
    anchors = [
        Cfg(1, 1, 129, 96, 1, True, "none", "fp32", 1),  # N=1, T=1
        Cfg(1, 200, 129, 384, 7, True, "partial", "bf16", 2),  # d_in=129 + bias, d_out=384, K=7
        Cfg(5, 37, 129, 192, 7, True, "float", "fp32", 3),  # N, T not tile multiples, float mask
        Cfg(3, 65, 64, 96, 1, False, "zero", "bf16", 4),  # all-zero mask
        Cfg(9, 129, 33, 192, 7, False, "partial", "fp32", 5),
        Cfg(4, 16, 129, 384, 1, True, "zero", "fp32", 6),  # all-zero mask, fp32
        Cfg(2, 33, 96, 96, 7, False, "none", "fp16", 7),  # square G: catches a transposed G
        Cfg(7, 1, 129, 96, 7, True, "partial", "bf16", 8),  # T=1
        Cfg(3, 23, 95, 96, 7, True, "float", "fp32", 9),  # square G with the bias column (D_in = d_out)
    ]
    rng = random.Random(seed)
    out = list(anchors)
    for i in range(n_random):
        out.append(
            Cfg(
                N=rng.choice([1, 2, 3, 5, 8, 13]),
                T=rng.choice([1, 7, 31, 64, 100, 129, 160]),
                d_in=rng.choice([32, 64, 96, 129, 130]),
                d_out=rng.choice([96, 192, 384]),
                K=rng.choice([1, 2, 7]),
                bias=rng.random() < 0.5,
                mask=rng.choice(["none", "zero", "partial", "partial", "float"]),
                dtype=rng.choice(["fp32", "bf16", "bf16", "fp16"]),
                seed=100 + i,
            )
        )
    return out


CONFIGS = _draw_configs()
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: relative (Frobenius) tolerance of a backend vs the float64 oracle, per token dtype. The oracle sees the same
#: low-precision inputs (upcast exactly), so the error is fp32 accumulation plus, on CUDA, rounding m·y to bf16.
TOL = {"fp32": 2e-5, "bf16": 1e-2, "fp16": 2e-3}


def make_inputs(cfg: Cfg, device="cpu"):
    """Fresh random X, Y, mask, P, Q_S, Q_A for a config (tokens in the config dtype, the rest fp32)."""
    g = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
    dt = DTYPES[cfg.dtype]
    X = torch.randn(cfg.N, cfg.T, cfg.d_in, generator=g).to(dt)
    Y = torch.randn(cfg.N, cfg.T, cfg.d_out, generator=g).to(dt)
    if cfg.mask == "none":
        mask = None
    elif cfg.mask == "zero":
        mask = torch.zeros(cfg.N, cfg.T, dtype=torch.bool)
    elif cfg.mask == "partial":
        mask = torch.rand(cfg.N, cfg.T, generator=g) < 0.6
        mask[0, 0] = False
        if cfg.T > 1:
            mask[0, -1] = True
    else:
        mask = torch.rand(cfg.N, cfg.T, generator=g)
    P = torch.randn(cfg.K, cfg.d_out, cfg.D, generator=g)
    Q_S = torch.linalg.qr(torch.randn(cfg.d_out, cfg.d_out, generator=g, dtype=torch.float64))[0].float()
    Q_A = torch.linalg.qr(torch.randn(cfg.D, cfg.D, generator=g, dtype=torch.float64))[0].float()
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return to(X), to(Y), to(mask), to(P), to(Q_S), to(Q_A)


# ---- independent float64 oracle (einsum over explicit tokens, no bmm) ----------------------------------------


def _f64(t):
    return None if t is None else t.detach().to("cpu", torch.float64)


f64 = _f64  # public name for the per-op tests


def _xt(X, bias):
    X = _f64(X)
    return torch.cat([X, torch.ones(X.shape[:-1] + (1,), dtype=torch.float64)], -1) if bias else X


def _m(mask, N, T):
    return torch.ones(N, T, dtype=torch.float64) if mask is None else _f64(mask)


def oracle_G(X, Y, mask, bias):
    """G[n, o, i] = Σ_t m[n,t] Y[n,t,o] X̃[n,t,i] in float64."""
    return torch.einsum("nt,nto,nti->noi", _m(mask, *X.shape[:2]), _f64(Y), _xt(X, bias))


def oracle_score(X, Y, P, mask, bias):
    return torch.einsum("noi,koi->nk", oracle_G(X, Y, mask, bias), _f64(P))


def oracle_cov(X, mask, bias):
    Xt = _xt(X, bias)
    return torch.einsum("nt,nti,ntj->ij", _m(mask, *X.shape[:2]), Xt, Xt)


def oracle_eigen_sq(X, Y, Q_S, Q_A, mask, bias):
    R = torch.einsum("oa,noi,ib->nab", _f64(Q_S), oracle_G(X, Y, mask, bias), _f64(Q_A))
    return (R * R).sum(0)


def rel_err(out, ref) -> float:
    """‖out − ref‖ / ‖ref‖ in float64 (‖out‖ itself when ref is exactly zero); inf if out is not finite."""
    out, ref = _f64(out), _f64(ref)
    if out.shape != ref.shape:
        raise AssertionError(f"shape {tuple(out.shape)} != expected {tuple(ref.shape)}")
    if not torch.isfinite(out).all():
        return math.inf
    den = ref.norm().item()
    return (out - ref).norm().item() / (den if den > 0 else 1.0)


# ---- tests of the reference path -----------------------------------------------------------------------------


def test_at_least_twenty_configs_cover_the_required_cases():
    assert len(CONFIGS) >= 20
    assert any(c.N == 1 for c in CONFIGS) and any(c.N % 4 for c in CONFIGS)
    assert any(c.T == 1 for c in CONFIGS) and any(c.T % 16 for c in CONFIGS)
    assert any(c.d_in == 129 and c.bias for c in CONFIGS)
    assert {96, 192, 384} <= {c.d_out for c in CONFIGS}
    assert {1, 7} <= {c.K for c in CONFIGS}
    assert {"zero", "partial", "float"} <= {c.mask for c in CONFIGS}
    assert {"bf16", "fp32", "fp16"} <= {c.dtype for c in CONFIGS}
    assert any(c.d_out == c.D and c.bias for c in CONFIGS)  # a transposed G cannot hide behind a shape error


@pytest.mark.parametrize("cfg", CONFIGS[:10], ids=str)
def test_reference_matches_oracle(cfg):
    X, Y, mask, P, Q_S, Q_A = make_inputs(cfg)
    tol = 1e-5  # the reference computes in fp32 on the exactly upcast inputs
    S = reference.score_blocks([BlockInput(X, Y, P, cfg.bias)], mask)
    assert S.dtype == torch.float32 and S.shape == (cfg.N, cfg.K)
    assert rel_err(S, oracle_score(X, Y, P, mask, cfg.bias)) < tol
    acc0 = torch.randn(cfg.D, cfg.D)
    acc = reference.covariance_accumulate(acc0.clone(), X, mask, cfg.bias)
    assert rel_err(_f64(acc) - _f64(acc0), oracle_cov(X, mask, cfg.bias)) < tol
    e0 = torch.randn(cfg.d_out, cfg.D)
    e = reference.eigen_sq_accumulate(e0.clone(), X, Y, Q_S, Q_A, mask, cfg.bias)
    assert rel_err(_f64(e) - _f64(e0), oracle_eigen_sq(X, Y, Q_S, Q_A, mask, cfg.bias)) < tol


def test_reference_float64_is_float64():
    cfg = Cfg(3, 11, 20, 12, 2, True, "float", "fp32", 9)
    X, Y, mask, P, Q_S, Q_A = (None if t is None else t.double() for t in make_inputs(cfg))
    S = reference.score_blocks([BlockInput(X, Y, P, True)], mask)
    assert S.dtype == torch.float64
    assert rel_err(S, oracle_score(X, Y, P, mask, True)) < 1e-13
    e = reference.eigen_sq_accumulate(torch.zeros(12, 21, dtype=torch.float64), X, Y, Q_S, Q_A, mask, True)
    assert rel_err(e, oracle_eigen_sq(X, Y, Q_S, Q_A, mask, True)) < 1e-13


def test_oracle_discriminates_common_bugs():
    """The comparisons used by every backend test can fail: transposed G, dropped bias column, ignored mask
    and a flipped sign all give errors far above every tolerance."""
    cfg = Cfg(4, 23, 15, 16, 3, True, "partial", "fp32", 11)  # square G (d_out = d_in + 1)
    X, Y, mask, P, _, _ = make_inputs(cfg)
    good = oracle_score(X, Y, P, mask, True)
    G = oracle_G(X, Y, mask, True)
    transposed = torch.einsum("nio,koi->nk", G, _f64(P))
    no_bias = good - torch.einsum("no,ko->nk", G[:, :, -1], _f64(P)[:, :, -1])
    no_mask = oracle_score(X, Y, P, None, True)
    for wrong in (transposed, no_bias, no_mask, -good):
        assert rel_err(wrong, good) > 10 * max(TOL.values())


def test_eigen_sq_route_rule():
    f = reference.eigen_sq_flops(N=64, T=2048, d_out=128, D=768)
    assert f["A"] == 2 * 64 * 2048 * (768**2 + 128**2) + 2 * 64 * 2048 * 128 * 768
    assert f["B"] == 2 * 64 * 2048 * 128 * 768 + 2 * 64 * (128**2 * 768 + 128 * 768**2)
    assert reference.eigen_sq_route(64, 2048, 128, 768) == "B"  # long sequences: rotate G
    assert reference.eigen_sq_route(64, 4, 128, 768) == "A"  # very short sequences: rotate the tokens
    # boundary: A cheaper exactly when T (D² + d_out²) < d_out D (d_out + D)
    d_out, D = 96, 129
    t_star = d_out * D * (d_out + D) / (D * D + d_out * d_out)
    assert reference.eigen_sq_route(3, math.floor(t_star), d_out, D) == "A"
    assert reference.eigen_sq_route(3, math.floor(t_star) + 1, d_out, D) == "B"


@pytest.mark.parametrize("route", ["A", "B"])
def test_eigen_sq_routed_with_torch_kernels(route):
    """Both routes of the shared route driver agree with the oracle (torch stand-ins for the two kernels),
    including a G workspace smaller than N samples."""
    cfg = Cfg(5, 19, 40, 24, 1, True, "partial", "fp32", 12)
    X, Y, mask, _, Q_S, Q_A = make_inputs(cfg)

    def store_g(Xc, Yc, mc, bias):
        return reference.per_sample_grads(Xc, Yc, mc, bias)

    def square_sum(acc, Xr, Yr, m):
        G = reference.per_sample_grads(Xr, Yr, m, False)
        acc += (G * G).sum(0)

    acc = reference.eigen_sq_routed(
        torch.zeros(24, 41),
        X,
        Y,
        Q_S,
        Q_A,
        mask,
        True,
        store_g=store_g,
        square_sum=square_sum,
        workspace_bytes=2 * 24 * 41 * 4,
        route=route,
    )
    assert rel_err(acc, oracle_eigen_sq(X, Y, Q_S, Q_A, mask, True)) < 1e-5


# ---- backends under test -------------------------------------------------------------------------------------

#: (backend, device) pairs; the CUDA ones carry the ``cuda`` marker (skipped without a GPU by conftest.py)
_PAIRS = [("torch", "cpu"), ("cpu", "cpu"), ("triton", "cpu"), ("cuda", "cuda"), ("triton", "cuda"), ("torch", "cuda")]
BACKEND_CASES = [pytest.param(b, d, id=f"{b}-{d}", marks=[pytest.mark.cuda] if d == "cuda" else []) for b, d in _PAIRS]
#: backends that run on CPU tensors (where torch.library.opcheck runs)
CPU_BACKEND_CASES = [c for c in BACKEND_CASES if c.values[1] == "cpu"]


def need(backend: str, device: str) -> None:
    """Skips the test unless ``backend`` is available for tensors on ``device`` in this process."""
    from mda_fast import kernels

    if backend not in kernels.available_backends(device):
        pytest.skip(
            f"backend {backend!r} not available on {device} here (available: {kernels.available_backends(device)})"
        )


def tol_for(backend: str, device: str, dtype: str) -> float:
    """TOL, widened for the GPU: CUDA fp32 is 3xTF32 (5e-5); compiled Triton rounds rotated tokens to bf16/fp16."""
    if device == "cuda" and dtype == "fp32":
        return 5e-5
    if backend == "triton" and device == "cuda" and dtype != "fp32":
        return 2e-2
    return TOL[dtype]


@pytest.fixture
def poison_empty(monkeypatch):
    """Every torch.empty (the kernels' outputs: S, partial sums, the G workspace) starts as NaN."""
    real = torch.empty

    def empty(*args, **kwargs):
        t = real(*args, **kwargs)
        if t.dtype.is_floating_point:
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", empty)


def cfg_ids(cfg) -> str:
    return str(cfg)

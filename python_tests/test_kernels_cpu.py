"""C++ CPU backend (mda_fast._C, OpenMP) vs the float64 oracle on the shared random configurations."""
import pytest
import torch

from test_kernels_reference import (CONFIGS, TOL, Cfg, check_backend_config, make_inputs, oracle_cov,
                                    oracle_eigen_sq, oracle_G, oracle_score, rel_err)
from mda_fast.kernels import cpu_backend
from mda_fast.kernels.validate import BlockInput

pytestmark = pytest.mark.skipif(not cpu_backend.is_available(),
                                reason="mda_fast._C not built (scripts/dev_build.sh or pip install .)")


@pytest.fixture(autouse=True)
def poison_empty(monkeypatch):
    """Every torch.empty (the kernels' outputs: S, the G workspace) starts as NaN."""
    real = torch.empty

    def empty(*args, **kwargs):
        t = real(*args, **kwargs)
        if t.dtype.is_floating_point:
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", empty)


def test_at_least_twenty_configs_cover_the_required_cases():
    assert len(CONFIGS) >= 20
    assert any(c.N == 1 for c in CONFIGS) and any(c.N % 4 for c in CONFIGS)
    assert any(c.T == 1 for c in CONFIGS) and any(c.T % 16 for c in CONFIGS)
    assert any(c.d_in == 129 and c.bias for c in CONFIGS)
    assert {96, 192, 384} <= {c.d_out for c in CONFIGS}
    assert {1, 7} <= {c.K for c in CONFIGS}
    assert {"zero", "partial"} <= {c.mask for c in CONFIGS}
    assert {"bf16", "fp32"} <= {c.dtype for c in CONFIGS}


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_cpu_matches_float64(cfg):
    check_backend_config(cpu_backend, cfg, "cpu")


def test_cpu_score_blocks_sums_blocks_of_different_shapes():
    cfgs = [Cfg(6, 45, 129, 96, 7, True, "partial", "bf16", 21), Cfg(6, 45, 32, 64, 7, False, "partial", "bf16", 22)]
    ins = [make_inputs(c) for c in cfgs]
    mask = ins[0][2]
    blocks = [BlockInput(X, Y, P, c.bias) for c, (X, Y, _, P, _, _) in zip(cfgs, ins)]
    S = cpu_backend.score_blocks(blocks, mask)
    ref = sum(oracle_score(X, Y, P, mask, c.bias) for c, (X, Y, _, P, _, _) in zip(cfgs, ins))
    assert rel_err(S, ref) < TOL["bf16"]
    # each block alone is far from the sum: the test would catch a dropped block
    assert rel_err(cpu_backend.score_blocks(blocks[:1], mask), ref) > 0.1


def test_cpu_strided_tokens():
    """Tokens that are slices of a wider tensor (unit last stride, other strides arbitrary)."""
    cfg = Cfg(4, 30, 50, 96, 2, True, "partial", "fp32", 23)
    X, Y, mask, P, Q_S, Q_A = make_inputs(cfg)
    Xw = torch.randn(4, 60, 80)
    Xw[:, ::2, 10:60] = X
    Xs = Xw[:, ::2, 10:60]
    assert not Xs.is_contiguous() and Xs.stride(-1) == 1
    S = cpu_backend.score_blocks([BlockInput(Xs, Y, P, True)], mask)
    assert rel_err(S, oracle_score(X, Y, P, mask, True)) < TOL["fp32"]
    acc = cpu_backend.covariance_accumulate(torch.zeros(51, 51), Xs, mask, True)
    assert rel_err(acc, oracle_cov(X, mask, True)) < TOL["fp32"]


def test_cpu_wrong_answers_are_detected():
    """Kernel output is close to the oracle and far from the classic mistakes (transposed G, no bias column,
    ignored mask, flipped sign), so the comparisons above can fail."""
    cfg = Cfg(3, 40, 15, 16, 2, True, "partial", "bf16", 24)
    X, Y, mask, P, Q_S, Q_A = make_inputs(cfg)
    S = cpu_backend.score_blocks([BlockInput(X, Y, P, True)], mask)
    G = oracle_G(X, Y, mask, True)
    P64 = P.double()
    assert rel_err(S, oracle_score(X, Y, P, mask, True)) < TOL["bf16"]
    for wrong in (torch.einsum("nio,koi->nk", G, P64), oracle_score(X, Y, P, None, True),
                  oracle_score(X, Y, P, mask, True) - torch.einsum("no,ko->nk", G[:, :, -1], P64[:, :, -1]),
                  -oracle_score(X, Y, P, mask, True)):
        assert rel_err(S, wrong) > 0.1
    e = cpu_backend.eigen_sq_accumulate(torch.zeros(16, 16), X, Y, Q_S, Q_A, mask, True)
    assert rel_err(e, oracle_eigen_sq(X, Y, Q_S, Q_A, mask, True)) < TOL["bf16"]
    assert rel_err(e, oracle_eigen_sq(X, Y, Q_A, Q_S, mask, True)) > 0.1  # Q_S / Q_A swapped


def test_cpu_empty_sizes():
    X = torch.randn(0, 5, 8)
    Y = torch.randn(0, 5, 4)
    assert cpu_backend.score_blocks([BlockInput(X, Y, torch.randn(2, 4, 8))]).shape == (0, 2)
    X = torch.randn(3, 0, 8)
    Y = torch.randn(3, 0, 4)
    assert torch.equal(cpu_backend.score_blocks([BlockInput(X, Y, torch.randn(2, 4, 9), True)]), torch.zeros(3, 2))
    acc = torch.ones(9, 9)
    cpu_backend.covariance_accumulate(acc, X, None, True)
    assert torch.equal(acc, torch.ones(9, 9))

"""score / score_blocks (``torch.ops.mda_fast.score_blocks``) on every backend against the float64 oracle."""

import pytest
import torch
from test_kernels_reference import (
    BACKEND_CASES,
    CONFIGS,
    CPU_BACKEND_CASES,
    TOL,
    Cfg,
    make_inputs,
    need,
    oracle_G,  # noqa: F401
    oracle_score,
    poison_empty,  # noqa: F401 (a fixture)
    rel_err,
    tol_for,
)

from mda_fast import kernels
from mda_fast.kernels import BlockInput

pytestmark = pytest.mark.usefixtures("poison_empty")


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_score_matches_float64(backend, device, cfg):
    need(backend, device)
    X, Y, mask, P, _, _ = make_inputs(cfg, device)
    S = kernels.score(X, Y, P, mask, bias=cfg.bias, backend=backend)
    assert S.dtype == torch.float32 and tuple(S.shape) == (cfg.N, cfg.K) and S.device.type == device
    assert rel_err(S, oracle_score(X, Y, P, mask, cfg.bias)) < tol_for(backend, device, cfg.dtype), cfg
    if cfg.mask == "zero":
        assert torch.equal(S.cpu(), torch.zeros(cfg.N, cfg.K)), "all-zero mask must give zero scores"


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_score_blocks_sums_blocks_of_different_shapes(backend, device, dtype):
    need(backend, device)
    cfgs = [
        Cfg(3, 29, 129, 96, 7, True, "partial", dtype, 21),
        Cfg(3, 29, 32, 64, 7, False, "partial", dtype, 22),
        Cfg(3, 29, 40, 33, 7, True, "partial", dtype, 25),
    ]
    ins = [make_inputs(c, device) for c in cfgs]
    mask = ins[0][2]
    blocks = [BlockInput(X, Y, P, c.bias) for c, (X, Y, _, P, _, _) in zip(cfgs, ins)]
    S = kernels.score_blocks(blocks, mask, backend=backend)
    ref = sum(oracle_score(X, Y, P, mask, c.bias) for c, (X, Y, _, P, _, _) in zip(cfgs, ins))
    assert rel_err(S, ref) < tol_for(backend, device, dtype)
    # each block alone is far from the sum: the test would catch a dropped block
    assert rel_err(kernels.score_blocks(blocks[:1], mask, backend=backend), ref) > 0.1
    # blocks with opposite queries cancel
    X, Y, _, P, _, _ = ins[0]
    S2 = kernels.score_blocks([BlockInput(X, Y, P, True), BlockInput(X, Y, -P, True)], mask, backend=backend)
    S1 = kernels.score_blocks(blocks[:1], mask, backend=backend)
    assert S2.abs().max() <= 1e-3 * S1.abs().max() + 1e-3


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_score_blocks_many_blocks(backend):
    """More blocks than one CUDA launch's block table (16) and mixed widths, summed."""
    need(backend, "cuda")
    cfgs = [Cfg(5, 70, 32 + 8 * i, 64 + 32 * (i % 3), 3, i % 2 == 0, "partial", "bf16", 40 + i) for i in range(18)]
    ins = [make_inputs(c, "cuda") for c in cfgs]
    mask = ins[0][2]
    blocks = [BlockInput(X, Y, P, c.bias) for c, (X, Y, _, P, _, _) in zip(cfgs, ins)]
    S = kernels.score_blocks(blocks, mask, backend=backend)
    ref = sum(oracle_score(X, Y, P, mask, c.bias) for c, (X, Y, _, P, _, _) in zip(cfgs, ins))
    assert rel_err(S, ref) < tol_for(backend, "cuda", "bf16")


@pytest.mark.parametrize("col_offset", [3, 8])
@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_score_strided_and_misaligned_tokens(backend, device, col_offset):
    """Token slices of wider tensors (unit last stride): offset 3 breaks 16-byte row alignment (CUDA element-load
    path), offset 8 keeps it (16-byte loads with token stride 2)."""
    need(backend, device)
    for dtype in ("fp32", "bf16"):
        cfg = Cfg(3, 35, 50, 96, 2, True, "partial", dtype, 23)
        X, Y, mask, P, _, _ = make_inputs(cfg, device)
        Xw = torch.randn(3, 70, 80, device=device).to(X.dtype)
        Xw[:, ::2, col_offset : col_offset + 50] = X
        Xs = Xw[:, ::2, col_offset : col_offset + 50]
        assert not Xs.is_contiguous() and Xs.stride(-1) == 1
        S = kernels.score(Xs, Y, P, mask, bias=True, backend=backend)
        assert rel_err(S, oracle_score(X, Y, P, mask, True)) < tol_for(backend, device, dtype)


@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_score_wrong_answers_are_detected(backend, device):
    """Output close to the oracle and far from the classic mistakes (transposed G, no bias column, bias column
    first, ignored or inverted mask, flipped sign), so the comparisons above can fail."""
    need(backend, device)
    cfg = Cfg(3, 40, 15, 16, 2, True, "partial", "fp32", 24)  # square G (d_out = d_in + 1)
    X, Y, mask, P, _, _ = make_inputs(cfg, device)
    S = kernels.score(X, Y, P, mask, bias=True, backend=backend)
    good = oracle_score(X, Y, P, mask, True)
    G = oracle_G(X, Y, mask, True)
    P64 = P.double().cpu()
    Xfront = torch.cat([torch.ones(3, 40, 1, device=device), X], -1)  # bias column first instead of last
    wrong = {
        "transposed": torch.einsum("nio,koi->nk", G, P64),
        "no bias": good - torch.einsum("no,ko->nk", G[:, :, -1], P64[:, :, -1]),
        "bias first": oracle_score(Xfront, Y, P, mask, False),
        "no mask": oracle_score(X, Y, P, None, True),
        "inverted mask": oracle_score(X, Y, P, ~mask, True),
        "sign": -good,
    }
    assert rel_err(S, good) < tol_for(backend, device, "fp32")
    for name, bad in wrong.items():
        assert rel_err(S, bad) > 0.1, name


@pytest.mark.parametrize("backend,device", BACKEND_CASES)
def test_score_empty_sizes(backend, device):
    need(backend, device)
    X, Y = torch.randn(0, 5, 8, device=device), torch.randn(0, 5, 4, device=device)
    assert kernels.score_blocks([BlockInput(X, Y, torch.randn(2, 4, 8, device=device))], backend=backend).shape == (
        0,
        2,
    )
    X, Y = torch.randn(3, 0, 8, device=device), torch.randn(3, 0, 4, device=device)
    S = kernels.score_blocks([BlockInput(X, Y, torch.randn(2, 4, 9, device=device), True)], backend=backend)
    assert torch.equal(S.cpu(), torch.zeros(3, 2))


@pytest.mark.cuda
def test_score_and_covariance_run_on_current_stream():
    need("cuda", "cuda")
    cfg = Cfg(4, 500, 129, 192, 7, True, "partial", "bf16", 50)
    X, Y, mask, P, _, _ = make_inputs(cfg, "cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        S = kernels.score(X, Y, P, mask, bias=True, backend="cuda")
        acc = kernels.covariance_accumulate(torch.zeros(130, 130, device="cuda"), X, mask, True, backend="cuda")
    s.synchronize()
    from test_kernels_reference import oracle_cov

    assert rel_err(S, oracle_score(X, Y, P, mask, True)) < TOL["bf16"]
    assert rel_err(acc, oracle_cov(X, mask, True)) < TOL["bf16"]


@pytest.mark.parametrize("backend,device", CPU_BACKEND_CASES)
def test_score_opcheck(backend, device):
    need(backend, device)
    cfg = Cfg(2, 9, 17, 8, 3, True, "float", "fp32", 80)
    X, Y, mask, P, _, _ = make_inputs(cfg)
    X2, Y2, _, P2, _, _ = make_inputs(Cfg(2, 9, 6, 5, 3, False, "none", "fp32", 81))
    torch.library.opcheck(
        torch.ops.mda_fast.score_blocks.default, ([X, X2], [Y, Y2], [P, P2], [True, False], mask, backend)
    )


def test_score_traces_under_torch_compile():
    cfg = Cfg(2, 9, 17, 8, 3, True, "float", "fp32", 82)
    X, Y, mask, P, _, _ = make_inputs(cfg)
    fn = torch.compile(
        lambda X, Y, P, m: torch.ops.mda_fast.score_blocks([X], [Y], [P], [True], m, "torch") * 2,
        backend="aot_eager",
        fullgraph=True,
    )
    assert rel_err(fn(X, Y, P, mask), 2 * oracle_score(X, Y, P, mask, True)) < TOL["fp32"]

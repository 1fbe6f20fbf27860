"""torch.compile on the lean capture forward (opt-in): the same scores as the eager lean forward, to fp32 rounding."""

import pytest
import torch

import mda_fast
from mda_fast.core import lean_forward
from mda_fast.core.capture import capture, loss_objective, resolve_blocks, split_rows
from mda_fast.train import make_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not lean_forward.claims_transformers(), reason="the lean forward does not claim this transformers release"
    ),
]


def test_compiled_scores_equal_eager_fp32():
    model = make_model("tiny-2l", seed=0).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(4, 260, (24, 33), generator=g)
    specs = [mda_fast.HeadSpec(1, 0), mda_fast.HeadSpec(0, 2, "qk")]
    factors = mda_fast.fit_ekfac(model, specs, [rows[:8]], fisher="empirical", progress=False)
    kw = dict(probe="induction", probe_kwargs=dict(L=8, n=4))
    eager = mda_fast.InfluenceScorer(model, specs, factors, **kw)
    compiled = mda_fast.InfluenceScorer(model, specs, factors, compile=True, **kw)
    for batch in (rows[8:16], rows[16:]):
        want, got = eager.score(batch), compiled.score(batch)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    # X and Y of a capture, through both, in float32 (the lowest tracked layer has untracked heads)
    inputs, labels = split_rows(rows[8:16])
    blocks = [b for bs in resolve_blocks(model, specs)[1] for b in bs]
    e = capture(model, inputs, blocks, loss_objective(labels))
    c = capture(model, inputs, blocks, loss_objective(labels), compile=True)
    torch.testing.assert_close(c.value, e.value, rtol=1e-5, atol=0)
    for b in blocks:
        torch.testing.assert_close(c.x(b), e.x(b), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c.y(b), e.y(b), rtol=1e-4, atol=1e-5 * float(e.y(b).abs().max()))

"""lean_forward: the capture forward that differentiates only tracked heads equals HF's forward with hooks."""

import pytest
import torch
from conftest import make_tiny
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

from mda_fast import HeadSpec, ModuleSpec
from mda_fast.core import lean_forward
from mda_fast.core.capture import LossObjective, capture, resolve_blocks

needs_lean = pytest.mark.skipif(
    not lean_forward.claims_transformers(),
    reason="the lean forward does not claim this transformers release (see lean_forward.CLAIMED_TRANSFORMERS)",
)

SPEC_SETS = {
    "one head, middle layer": [HeadSpec(1, 2, "qkvo")],
    "first and last head, two layers": [HeadSpec(1, 0, "qk"), HeadSpec(2, 3, "qkvo")],
    "two heads, one layer, apart": [HeadSpec(2, 0, "qkvo"), HeadSpec(2, 2, "qkvo", bias=True)],
    "lowest layer below a head": [HeadSpec(0, 1, "qk"), HeadSpec(2, 1, "qkvo")],
    "dense module only": [ModuleSpec(1, "dense")],
    "whole qkv module": [ModuleSpec(2, "query_key_value")],
}


def both_paths(model, blocks, ids, labels, mask, monkeypatch):
    calls = []
    real = lean_forward.capture_loss
    monkeypatch.setattr(lean_forward, "capture_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    lean = capture(model, ids, blocks, LossObjective(labels, mask))
    assert calls == [1], "the lean forward was not used"
    with monkeypatch.context() as m:
        m.setattr(lean_forward, "supports", lambda *a: False)
        hf = capture(model, ids, blocks, LossObjective(labels, mask))
    assert calls == [1]
    return lean, hf


@needs_lean
@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("rotary_pct", [0.25, 1.0])
@pytest.mark.parametrize("case", list(SPEC_SETS))
def test_lean_capture_equals_hf_float64(case, rotary_pct, parallel, monkeypatch):
    model = make_tiny(n_layers=3, attn="sdpa", rotary_pct=rotary_pct, parallel=parallel, bias=True)
    _, per_spec = resolve_blocks(model, SPEC_SETS[case])
    blocks = [b for bs in per_spec for b in bs]
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 64, (3, 21), generator=g)
    labels = torch.randint(0, 64, (3, 21), generator=g)
    mask = (torch.rand(3, 21, generator=g) > 0.25).double()
    for m in (None, mask):
        lean, hf = both_paths(model, blocks, ids, labels, m, monkeypatch)
        torch.testing.assert_close(lean.value, hf.value, rtol=1e-12, atol=0)
        for b in blocks:
            torch.testing.assert_close(lean.x(b), hf.x(b), rtol=1e-12, atol=1e-12)
            ref = hf.y(b)
            assert ref.abs().max() > 0
            torch.testing.assert_close(lean.y(b), ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))


@needs_lean
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_lean_capture_low_precision_against_float64(dtype, tol, monkeypatch):
    """fp32 / bf16 lean captures against the float64 HF capture of the same weights."""
    ref_model = make_tiny(n_layers=2, attn="sdpa", bias=False)
    model = make_tiny(n_layers=2, attn="sdpa", bias=False, dtype=dtype)
    blocks = resolve_blocks(model, [HeadSpec(1, 1, "qkvo")])[1][0]
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 64, (4, 32), generator=g)
    labels = torch.randint(0, 64, (4, 32), generator=g)
    lean, _ = both_paths(model, blocks, ids, labels, None, monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(lean_forward, "supports", lambda *a: False)
        ref = capture(ref_model, ids, blocks, LossObjective(labels))
    for b in blocks:
        for got, want in ((lean.x(b), ref.x(b)), (lean.y(b), ref.y(b))):
            err = float((got.double() - want).abs().max() / want.abs().max())
            assert err < tol, (b.name, err)


@needs_lean
def test_untracked_heads_get_no_backward(monkeypatch):
    """In the lowest tracked layer only the tracked head's q/k/v columns carry gradient (HF's path fills all)."""
    model = make_tiny(n_layers=2, attn="sdpa")
    blocks = resolve_blocks(model, [HeadSpec(1, 2, "qk")])[1][0]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (2, 16), generator=g)
    lean, hf = both_paths(model, blocks, ids, torch.randint(0, 64, (2, 16), generator=g), None, monkeypatch)
    w = 3 * 8  # 3 · d_head
    key = (1, "query_key_value")
    own = slice(2 * w, 3 * w)
    torch.testing.assert_close(lean.grads[key][..., own], hf.grads[key][..., own], rtol=1e-10, atol=1e-14)
    outside = torch.cat([lean.grads[key][..., : 2 * w], lean.grads[key][..., 3 * w :]], dim=-1)
    assert torch.count_nonzero(outside) == 0
    assert torch.count_nonzero(hf.grads[key][..., : 2 * w]) > 0


@pytest.mark.parametrize("d_head,r", [(8, 2), (16, 4), (8, 8), (8, 0)])
def test_rotary_matches_hf(d_head, r):
    """The cat-free rotary equals HF's apply_rotary_pos_emb on q and k (sign and half-swap errors fail here)."""
    g = torch.Generator().manual_seed(d_head + r)
    N, H, T = 2, 3, 11
    q, k = torch.randn(2, N, H, T, d_head, generator=g, dtype=torch.float64)
    cos, sin = torch.randn(2, 1, T, r, generator=g, dtype=torch.float64)
    want_q, want_k = apply_rotary_pos_emb(q, k, cos, sin) if r else (q, k)
    rope = lean_forward._Rotary(cos, sin, d_head)
    got = rope(torch.cat([q, k], dim=-1))
    torch.testing.assert_close(got[..., :d_head], want_q, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(got[..., d_head:], want_k, rtol=1e-14, atol=1e-14)


def test_runs_of_heads():
    assert lean_forward._runs(4, {2}) == [(0, 2, False), (2, 3, True), (3, 4, False)]
    assert lean_forward._runs(4, {0, 1, 3}) == [(0, 2, True), (2, 3, False), (3, 4, True)]
    assert lean_forward._runs(3, set()) == [(0, 3, False)]


@needs_lean
def test_falls_back_to_hf_where_it_does_not_apply(monkeypatch):
    """eager attention, training mode and padding masks take HF's forward (and still give the right answer)."""
    calls = []
    real = lean_forward.capture_loss
    monkeypatch.setattr(lean_forward, "capture_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    ids = torch.randint(0, 64, (2, 12))
    labels = torch.randint(0, 64, (2, 12))
    pad = torch.ones(2, 12, dtype=torch.long)
    pad[1, 8:] = 0
    sdpa = make_tiny(attn="sdpa")
    assert lean_forward.supports(sdpa) and lean_forward.supports(sdpa, torch.ones(2, 12, dtype=torch.long))
    assert not lean_forward.supports(sdpa, pad)
    assert not lean_forward.supports(make_tiny(attn="eager"))
    assert not lean_forward.supports(make_tiny(attn="sdpa").train())
    blocks = resolve_blocks(sdpa, [HeadSpec(1, 0)])[1][0]
    capture(make_tiny(attn="eager"), ids, blocks, LossObjective(labels))
    capture(sdpa, ids, blocks, LossObjective(labels), attention_mask=pad)
    assert calls == []
    capture(sdpa, ids, blocks, LossObjective(labels))
    assert calls == [1]


@needs_lean
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 3e-4), (torch.bfloat16, 3e-2)])
def test_lean_capture_on_cuda_against_cpu_float64(dtype, tol, monkeypatch):
    """The lean capture (and the fused true-Fisher sampler) on the GPU against HF's float64 capture on the CPU."""
    from mda_fast.core.capture import FisherObjective

    ref_model = make_tiny(n_layers=3, attn="sdpa", bias=False)
    model = make_tiny(n_layers=3, attn="sdpa", bias=False, dtype=dtype).cuda()
    blocks = [b for bl in resolve_blocks(model, [HeadSpec(1, 1, "qkvo"), HeadSpec(2, 3, "qk")])[1] for b in bl]
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 64, (4, 48), generator=g)
    labels = torch.randint(0, 64, (4, 48), generator=g)
    got = capture(model, ids.cuda(), blocks, LossObjective(labels.cuda()))
    with monkeypatch.context() as m:
        m.setattr(lean_forward, "supports", lambda *a: False)
        ref = capture(ref_model, ids, blocks, LossObjective(labels))
    for b in blocks:
        for x, want in ((got.x(b), ref.x(b)), (got.y(b), ref.y(b))):
            err = float((x.double().cpu() - want).abs().max() / want.abs().max())
            assert err < tol, (b.name, err)
    # true Fisher: the uniforms come from the CPU generator, so the GPU draws the CPU's labels (up to rounding)
    fg = capture(model, ids.cuda(), blocks, FisherObjective(None, torch.Generator().manual_seed(1)))
    fc = capture(ref_model, ids, blocks, FisherObjective(None, torch.Generator().manual_seed(1)))
    rel = float((fg.value.double().cpu() - fc.value).abs().max() / fc.value.abs().max())
    assert rel < 50 * tol, rel


@needs_lean
def test_unknown_attention_layout_falls_back():
    """A layout without the attributes the lean forward reads (older transformers) is not claimed."""
    model = make_tiny(attn="sdpa")
    assert lean_forward.supports(model)
    del model.gpt_neox.layers[1].attention.scaling
    assert not lean_forward.supports(model)


def test_declines_unclaimed_transformers_and_too_wide_rotary(monkeypatch):
    """Only the claimed transformers releases, and only where HF's rotary width (2·⌈r/2⌉) fits in a head."""
    import transformers

    assert [
        lean_forward.claims_transformers(v) for v in ("4.40.2", "4.48.3", "4.49.0", "5.0.0", "5.24.0", "6.0.0")
    ] == [False, False, True, True, True, False]
    model = make_tiny(attn="sdpa")
    assert lean_forward.supports(model) == lean_forward.claims_transformers()
    with monkeypatch.context() as m:
        m.setattr(transformers, "__version__", "4.46.3")
        assert not lean_forward.supports(model)
    # d_head 3, rotary_pct 1: r = 3, HF's tables rotate 4 channels of a 3-channel head
    wide = make_tiny(n_layers=1, d_model=12, n_heads=4, rotary_pct=1.0, attn="sdpa")
    assert wide.gpt_neox.rotary_emb.inv_freq.numel() == 2 and not lean_forward.supports(wide)
    with pytest.raises(ValueError, match="rotary width 4"):
        lean_forward._Rotary(torch.ones(1, 5, 4), torch.zeros(1, 5, 4), 3)


@needs_lean
def test_hf_forward_switch(monkeypatch):
    """``capture.hf_forward()`` forces HF's forward inside the block (nested too) and restores the choice after."""
    from mda_fast.core.capture import hf_forward, uses_lean_forward

    model = make_tiny(n_layers=2, attn="sdpa")
    blocks = resolve_blocks(model, [HeadSpec(1, 0)])[1][0]
    obj = LossObjective(torch.zeros(1, 4, dtype=torch.long))
    calls = []
    real = lean_forward.capture_loss
    monkeypatch.setattr(lean_forward, "capture_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    ids = torch.randint(0, 64, (1, 4))
    assert uses_lean_forward(model, obj, blocks)
    with hf_forward():
        with hf_forward():
            assert not uses_lean_forward(model, obj, blocks)
        assert not uses_lean_forward(model, obj, blocks)
        hf = capture(model, ids, blocks, obj)
    assert calls == [] and uses_lean_forward(model, obj, blocks)
    lean = capture(model, ids, blocks, obj)
    assert calls == [1]
    torch.testing.assert_close(lean.y(blocks[0]), hf.y(blocks[0]), rtol=1e-10, atol=1e-14)

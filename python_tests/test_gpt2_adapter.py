"""GPT-2 end to end through the core: every probe's gradient equals autograd through HF's own forward, fit_ekfac's
input factor is the covariance of the layer's normed hidden state, InfluenceScorer's scores are the preconditioned
dot products of per-sample gradients, factors round-trip through files, and what is refused is one line."""

import pytest
import torch
from gpt2_layout import VOCAB, build, convention_slice, parts_of

from mda_fast import (
    Factors,
    HeadSpec,
    InfluenceScorer,
    ModelError,
    ModuleSpec,
    fit_ekfac,
    get_probe,
    head_blocks,
    localize,
    per_sample_head_grads,
)
from mda_fast.adapters import GPT2Adapter, adapter_for
from mda_fast.core.handle import handle

CFG = dict(
    d_head=6,
    n_heads=3,
    n_layers=2,
    scale_weights=True,
    inverse_layer=True,
    upcast=False,
    tied=True,
    attn="eager",
    seed=0,
)
PK = dict(L=6, n=3, seed=1, low=4)


def text_rows():
    g = torch.Generator().manual_seed(2)
    return torch.randint(4, 12, (3, 24), generator=g)  # a small alphabet: many repeats, like real text


def probe_for(name):
    return get_probe("induction_text", rows=text_rows()) if name == "induction_text" else get_probe(name, **PK)


def reference_probe_value(model, probe, spec, ids):
    """The probe on HF's own outputs: the induction objectives on HF's logits, the pattern probes on HF eager's
    ``output_attentions`` (not on the patterns mda-fast computes from the captured q, k)."""
    out = model(input_ids=ids, output_attentions=True)
    if probe.name in ("prefix_matching", "prev_token"):
        pat = out.attentions[spec.layer][:, spec.head]
        q, k = probe.pairs(pat.shape[-1])
        return (pat[:, q, k].mean(dim=1) / ids.shape[0]).sum()
    return probe.objective(model, spec, ids, out.logits, None).sum()


@pytest.mark.parametrize("probe_name", ["induction", "prefix_matching", "prev_token", "induction_text"])
@pytest.mark.parametrize("spec", [HeadSpec(1, 2, "qkvo", bias=True), HeadSpec(0, 1, "qk")], ids=["L1H2", "L0H1qk"])
def test_probe_gradients_equal_autograd_through_hf(probe_name, spec):
    torch.set_num_threads(1)
    model = build(**CFG)
    probe = probe_for(probe_name)
    fit_rows = torch.randint(0, VOCAB, (4, 9), generator=torch.Generator().manual_seed(1))
    fac = fit_ekfac(model, [spec], [fit_rows], method="identity", progress=False)
    scorer = InfluenceScorer(model, [spec], fac, probe=probe)  # identity: queries are −∇f
    ids = probe.inputs(model)
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        reference_probe_value(model, probe, spec, ids).backward()
        ref = {f"{spec.name}.{part}": convention_slice(model, spec, part, grad=True) for part in parts_of(spec)}
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
    assert set(ref) == {b.name for b in head_blocks(model, spec)}
    for name, r in ref.items():
        ours = -scorer.queries[name][0]
        assert ours.shape == r.shape and ours.dtype == torch.float64
        if probe.per_head and name.endswith((".v", ".o")):  # pattern probes read q and k only
            assert float(r.abs().max()) == 0 and float(ours.abs().max()) == 0, name
            continue
        assert float(r.abs().max()) > 1e-8, name
        assert float((ours - r).norm()) <= 1e-10 * float(r.norm()), (name, float((ours - r).norm() / r.norm()))


def test_fit_score_and_factors_on_gpt2(tmp_path):
    """K-FAC's A of a qk block is the token covariance of [ln_1(hidden), 1]; the scorer's scores are
    −Σ_b ⟨H_b⁻¹∇_b f, G_n⟩ with G_n from per_sample_head_grads; saved factors score the same."""
    torch.set_num_threads(1)
    model = build(**{**CFG, "tied": False})
    specs = [HeadSpec(1, 0, bias=True), ModuleSpec(0, "c_attn"), ModuleSpec(1, "c_proj")]
    g = torch.Generator().manual_seed(3)
    batches = [torch.randint(0, VOCAB, (4, 13), generator=g) for _ in range(2)]
    fac = fit_ekfac(model, specs, batches, fisher="empirical", method="ekfac", progress=False)
    # A of L1H0.b.qk from HF's hidden states, independently of the hooks
    with torch.no_grad():
        xs = []
        for rows in batches:
            hs = model(input_ids=rows[:, :-1], output_hidden_states=True).hidden_states[1]
            x = model.transformer.h[1].ln_1(hs).reshape(-1, model.config.n_embd)
            xs.append(torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1))
        x = torch.cat(xs)
        want_A = x.T @ x / len(x)
    bf = fac.blocks["L1H0.b.qk"]
    got_A = bf.Q_A @ torch.diag(bf.lam_A) @ bf.Q_A.T
    torch.testing.assert_close(got_A.double(), want_A, rtol=1e-10, atol=1e-12)
    assert fac.blocks["L0.c_attn"].Q_S.shape == (3 * 18, 3 * 18) and fac.blocks["L1.c_proj"].Q_A.shape == (19, 19)

    train = torch.randint(0, VOCAB, (5, 11), generator=g)
    grads = per_sample_head_grads(model, train, specs)
    heads = ["induction", "prefix_matching", "prev_token"]
    for chosen, probes in (([0], heads), ([0, 1, 2], ["induction"])):  # pattern probes are per head
        scorer = InfluenceScorer(model, [specs[i] for i in chosen], fac, probe=probes, probe_kwargs=PK)
        scores = scorer.score(train)
        K = len(chosen) * len(probes)
        assert scores.shape == (5, K) and torch.isfinite(scores).all() and scores.abs().max() > 0
        want = torch.zeros(5, K, dtype=torch.float64)
        for si, i in enumerate(chosen):
            for b in head_blocks(model, specs[i]):
                for pj in range(len(probes)):
                    k = si * len(probes) + pj
                    want[:, k] += torch.einsum("noi,oi->n", grads[i][b.name], scorer.queries[b.name][k])
        torch.testing.assert_close(scores, want, rtol=1e-9, atol=1e-12 * float(want.abs().max()))

    fac.save(tmp_path / "f")
    again = InfluenceScorer(model, specs, Factors.load(tmp_path / "f"), probe="induction", probe_kwargs=PK)
    torch.testing.assert_close(again.score(train), scores, rtol=0, atol=0)


def test_localize_finds_the_scaled_heads_of_a_tiny_gpt2():
    """localize runs on a GPT-2 and its scores move with the model's scaling options (the per-layer scale is read
    from the config, not assumed)."""
    torch.set_num_threads(1)
    a = localize(build(**CFG), "prev_token", seq_len=8, n=4)
    b = localize(build(**{**CFG, "inverse_layer": False}), "prev_token", seq_len=8, n=4)
    assert a.shape == (2, 3) and torch.isfinite(a).all()
    torch.testing.assert_close(a[0], b[0])  # layer 0: 1/(0+1) = 1
    assert float((a[1] - b[1]).abs().max()) > 1e-4  # layer 1: scores halved


def test_gpt2_shape_and_adapter():
    model = build(**CFG)
    h = handle(model)
    assert type(h.adapter) is GPT2Adapter and adapter_for(model) is h.adapter
    s = h.shape
    assert (s.n_layers, s.n_heads, s.d_model, s.d_head, s.rotary_ndims) == (2, 3, 18, 6, 0)
    assert s.vocab_size == VOCAB and s.max_positions == 65 and s.model_type == "gpt2"
    assert s.attn_scales == pytest.approx((6**-0.5, 6**-0.5 / 2))
    [qk, v, o] = head_blocks(model, HeadSpec(1, 2))
    assert [(x.module, x.out_start, x.out_stop) for x in qk.segments] == [("c_attn", 12, 18), ("c_attn", 30, 36)]
    assert [(x.module, x.out_start, x.out_stop) for x in v.segments] == [("c_attn", 48, 54)]
    assert (o.segments[0].module, o.segments[0].out_stop, o.in_start, o.in_stop) == ("c_proj", 18, 12, 18)
    [m] = head_blocks(model, ModuleSpec(0, "c_attn"))
    assert (m.d_out, m.d_in, m.bias) == (54, 18, True)


def test_refusals_are_one_line():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_embd=8, n_head=2, n_layer=1, vocab_size=16, add_cross_attention=True, bos_token_id=0)
    cfg.eos_token_id = 0
    with pytest.raises(ModelError, match="cross-attention") as e:
        handle(GPT2LMHeadModel(cfg))
    assert "\n" not in str(e.value)
    model = build(**CFG)
    with pytest.raises(ValueError, match=r"unknown module 'query_key_value' for a GPT-2 model; expected one of"):
        head_blocks(model, ModuleSpec(0, "query_key_value"))
    with pytest.raises(ValueError, match="out of range"):
        per_sample_head_grads(model, torch.zeros(1, 4, dtype=torch.long), HeadSpec(0, 3))

    from conftest import make_tiny

    neox = make_tiny()
    neox.config.model_type = "gpt2"  # a GPT-NeoX relabelled: the GPT-2 adapter refuses it by its structure
    with pytest.raises(TypeError, match="no GPT-2 backbone"):
        handle(neox)


def test_transformers4_sdpa_with_non_default_scaling_is_refused(monkeypatch):
    """transformers 4.x's sdpa path ignores the scaling options: such a model is refused, eager is accepted."""
    import mda_fast.adapters.gpt2 as G

    monkeypatch.setattr(G, "transformers_5", lambda: False)
    with pytest.raises(ModelError, match="ignores GPT-2's scale_attn_weights"):
        handle(build(**{**CFG, "attn": "sdpa"}))
    handle(build(**CFG))  # eager
    handle(build(**{**CFG, "attn": "sdpa", "inverse_layer": False}))  # default scaling

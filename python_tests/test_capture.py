"""Per-sample head gradients, truncated backward, attention patterns, probe alignment, bad input."""

import pytest
import torch
from conftest import make_tiny

from mda_fast import HeadSpec, ModuleSpec, head_blocks, per_sample_head_grads
from mda_fast.core.attention import attention_pattern
from mda_fast.core.capture import capture, loss_objective, sequence_loss, split_rows
from mda_fast.core.heads import block_weight
from mda_fast.core.model import neox_shape
from mda_fast.core.probes import InductionProbe, get_probe, induction_targets, prefix_matching_pairs


def autograd_block_grads(model, rows, specs, mask=None):
    """Reference: full autograd of each sequence's loss alone w.r.t. the HF weights, sliced per block."""
    inputs, labels = split_rows(rows)
    out = []
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        for n in range(rows.shape[0]):
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=inputs[n : n + 1]).logits
            m = None if mask is None else mask[n : n + 1]
            sequence_loss(logits, labels[n : n + 1], m).sum().backward()
            out.append(
                [{b.name: block_weight(model, b, grad=True).clone() for b in head_blocks(model, s)} for s in specs]
            )
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
    return out


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_per_sample_grads_match_autograd(attn):
    model = make_tiny(n_layers=3, attn=attn)
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(0, 64, (3, 17), generator=g)
    mask = torch.ones(3, 16, dtype=torch.float64)
    mask[1, 10:] = 0
    mask[2, :3] = 0
    specs = [
        HeadSpec(1, 2, "qkvo"),
        HeadSpec(2, 0, "qk"),
        HeadSpec(0, 3, "qkvo", bias=True),
        HeadSpec(2, 1, "qk", bias=True),
        ModuleSpec(1, "dense"),
        ModuleSpec(0, "query_key_value"),
    ]
    for m in (None, mask):
        ours = per_sample_head_grads(model, rows, specs, mask=m)
        ref = autograd_block_grads(model, rows, specs, mask=m)
        for n in range(rows.shape[0]):
            for i, spec in enumerate(specs):
                for name, r in ref[n][i].items():
                    got = ours[i][name][n]
                    assert got.shape == r.shape, name
                    assert rel(got, r) < 1e-10, (spec, name, n, rel(got, r))
    # shapes follow the HF weight slices, bias column last
    blocks = head_blocks(model, HeadSpec(0, 3, "qkvo", bias=True))
    assert [(b.name, b.d_out, b.d_in_total) for b in blocks] == [
        ("L0H3.b.qk", 16, 33),
        ("L0H3.b.v", 8, 33),
        ("L0H3.b.o", 32, 8),
    ]


def test_block_slices_pick_the_right_rows():
    """A transposed / mis-strided head slice would pick other heads' rows: check against the HF view."""
    model = make_tiny()
    s = neox_shape(model)
    W = model.gpt_neox.layers[1].attention.query_key_value.weight
    per_head = W.view(s.n_heads, 3, s.d_head, s.d_model)
    qk, v, o = head_blocks(model, HeadSpec(1, 2))
    assert torch.equal(block_weight(model, qk), torch.cat([per_head[2, 0], per_head[2, 1]]))
    assert torch.equal(block_weight(model, v), per_head[2, 2])
    D = model.gpt_neox.layers[1].attention.dense.weight
    assert torch.equal(block_weight(model, o), D[:, 2 * s.d_head : 3 * s.d_head])


def test_labels_argument_equals_row_split():
    model = make_tiny()
    rows = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    a = per_sample_head_grads(model, rows, HeadSpec(1, 1))
    b = per_sample_head_grads(model, rows[:, :-1], HeadSpec(1, 1), labels=rows[:, 1:])
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k])
    # and a shifted label alignment gives a different gradient (the test would catch an off-by-one)
    c = per_sample_head_grads(model, rows[:, :-1], HeadSpec(1, 1), labels=rows[:, :-1])
    assert rel(c[0]["L1H1.qk"], a[0]["L1H1.qk"]) > 1e-3


def test_truncated_parameter_free_backward_equals_full_backward():
    model = make_tiny(n_layers=3)
    rows = torch.randint(0, 64, (2, 13), generator=torch.Generator().manual_seed(4))
    inputs, labels = split_rows(rows)
    blocks = head_blocks(model, HeadSpec(1, 0)) + head_blocks(model, HeadSpec(2, 3))
    res = capture(model, inputs, blocks, loss_objective(labels))
    assert all(p.grad is None for p in model.parameters())
    # full backward through every layer with parameters requiring grad, grads of the module outputs retained
    outs = {}
    hooks = []
    for L in (1, 2):
        att = model.gpt_neox.layers[L].attention
        for name in ("query_key_value", "dense"):

            def hook(mod, args, out, key=(L, name)):
                out.retain_grad()
                outs[key] = out

            hooks.append(getattr(att, name).register_forward_hook(hook))
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        logits = model(input_ids=inputs).logits
        sequence_loss(logits, labels).sum().backward()
    finally:
        for h in hooks:
            h.remove()
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
    for key, g in res.grads.items():
        assert rel(g, outs[key].grad) < 1e-12, key
    # the embedding layer never entered the truncated graph
    assert res.inputs[(1, "query_key_value")].requires_grad is False


def test_attention_patterns_equal_hf_eager():
    model = make_tiny(n_layers=2, attn="eager", dtype=torch.float32, d_model=64, n_heads=4)
    s = neox_shape(model)
    assert s.rotary_ndims == 4
    ids = torch.randint(0, 64, (3, 20), generator=torch.Generator().manual_seed(5))
    qkv = {}
    hs = [
        l.attention.query_key_value.register_forward_hook(lambda m, a, o, L=L: qkv.__setitem__(L, o))
        for L, l in enumerate(model.gpt_neox.layers)
    ]
    with torch.no_grad():
        ref = model(input_ids=ids, output_attentions=True).attentions
    for h in hs:
        h.remove()
    for L in range(2):
        ours = attention_pattern(qkv[L], s)
        assert (ours - ref[L]).abs().max() < 1e-5
        assert (ours - ref[L]).abs().max() < 1e-5 and ours[0, 0, 5, 3] != ours[0, 0, 3, 5]
    # a single head
    assert torch.allclose(attention_pattern(qkv[1], s, heads=[2])[:, 0], ref[1][:, 2], atol=1e-5)


def test_induction_targets_are_aligned():
    L = 4
    row = torch.tensor([[10, 11, 12, 13, 10, 11, 12, 13]])
    pos, src = induction_targets(L)
    assert pos.tolist() == [4, 5, 6]  # positions in the second copy that can predict a next token
    assert row[0, src].tolist() == [11, 12, 13]  # at t=4 (token 10) the model must predict 11, ...
    assert row[0, pos + 1].tolist() == row[0, src].tolist()  # equals the actual next token x_{t+1}
    q, k = prefix_matching_pairs(L)
    assert q.tolist() == [4, 5, 6, 7] and k.tolist() == [1, 2, 3, 4]


def test_induction_probe_value_on_perfect_predictions():
    """Logits that put all mass on x_{t+1} give f = 0; the same logits shifted by one position are far below."""
    probe = InductionProbe(L=5, n=3, seed=0)
    model = make_tiny()
    ids = probe.inputs(model)
    V = 64
    perfect = torch.full((3, 10, V), -50.0, dtype=torch.float64)
    for t in range(9):
        perfect[torch.arange(3), t, ids[:, t + 1]] = 50.0
    assert abs(float(probe.objective(model, None, ids, perfect, None).sum())) < 1e-10
    shifted = torch.roll(perfect, shifts=1, dims=1)
    assert float(probe.objective(model, None, ids, shifted, None).sum()) < -100


def test_bad_input_errors():
    model = make_tiny()
    with pytest.raises(ValueError, match="layer=5 out of range"):
        head_blocks(model, HeadSpec(5, 0))
    with pytest.raises(ValueError, match="head=4 out of range"):
        head_blocks(model, HeadSpec(0, 4))
    with pytest.raises(ValueError, match="unknown HeadSpec mode"):
        HeadSpec(0, 0, mode="qkv")
    with pytest.raises(ValueError, match="unknown probe"):
        get_probe("induktion")
    with pytest.raises(TypeError, match="GPT-NeoX"):
        per_sample_head_grads(torch.nn.Linear(3, 3), torch.zeros(1, 4, dtype=torch.long), HeadSpec(0, 0))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        per_sample_head_grads(model, torch.zeros(2, 1, dtype=torch.long), HeadSpec(0, 0))
    with pytest.raises(ValueError, match="L must be an int >= 2"):
        InductionProbe(L=0).inputs(model)
    with pytest.raises(ValueError, match="context is 64"):
        InductionProbe(L=40).inputs(model)
    with pytest.raises(ValueError, match="mask must have shape"):
        per_sample_head_grads(model, torch.zeros(2, 5, dtype=torch.long), HeadSpec(0, 0), mask=torch.ones(2, 5))


def test_module_spec_on_a_model_without_attention_bias():
    """A ModuleSpec tracks the module as it is: no bias column when the model has no attention bias."""
    from conftest import make_tiny

    from mda_fast import ModuleSpec, head_blocks

    model = make_tiny(bias=False)
    blocks = head_blocks(model, ModuleSpec(0, "query_key_value"))
    assert len(blocks) == 1 and blocks[0].bias is False
    assert head_blocks(make_tiny(bias=True), ModuleSpec(0, "dense"))[0].bias is True

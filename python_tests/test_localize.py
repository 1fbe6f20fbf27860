import pytest
import torch
from conftest import make_tiny

from mda_fast import localize, localize_all
from mda_fast.core.attention import attention_pattern
from mda_fast.core.model import neox_shape
from mda_fast.core.probes import repeated_random_tokens


def test_localize_matches_per_head_loop():
    model = make_tiny(n_layers=2, d_model=32, n_heads=4, dtype=torch.float32)
    s = neox_shape(model)
    out = localize_all(model, seq_len=6, n=5, seed=2, batch_size=2)
    assert out["prefix_matching"].shape == (2, 4) and out["prev_token"].shape == (2, 4)
    ids = repeated_random_tokens(5, 6, 4, 64, 2)
    qkv = {}
    hs = [
        l.attention.query_key_value.register_forward_hook(lambda m, a, o, L=L: qkv.__setitem__(L, o))
        for L, l in enumerate(model.gpt_neox.layers)
    ]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hs:
        h.remove()
    for L in range(2):
        pat = attention_pattern(qkv[L], s)
        for h in range(4):
            pm = torch.stack([pat[:, h, i, i - 6 + 1] for i in range(6, 12)], 1).mean()
            pt = torch.stack([pat[:, h, t, t - 1] for t in range(1, 12)], 1).mean()
            assert abs(float(out["prefix_matching"][L, h]) - float(pm)) < 1e-5
            assert abs(float(out["prev_token"][L, h]) - float(pt)) < 1e-5
    assert torch.equal(localize(model, "prev_token", seq_len=6, n=5, seed=2), out["prev_token"])


def test_localize_reads_the_right_head():
    """Zero q and k of head (1, 2): its attention is uniform, so both metrics have closed forms there."""
    model = make_tiny(n_layers=2, d_model=32, n_heads=4, dtype=torch.float32)
    s = neox_shape(model)
    with torch.no_grad():
        att = model.gpt_neox.layers[1].attention.query_key_value
        att.weight.view(4, 3, s.d_head, s.d_model)[2, :2] = 0
        att.bias.view(4, 3, s.d_head)[2, :2] = 0
    L = 8
    out = localize_all(model, seq_len=L, n=4)
    pt = sum(1.0 / (t + 1) for t in range(1, 2 * L)) / (2 * L - 1)
    pm = sum(1.0 / (i + 1) for i in range(L, 2 * L)) / L
    assert abs(float(out["prev_token"][1, 2]) - pt) < 1e-6
    assert abs(float(out["prefix_matching"][1, 2]) - pm) < 1e-6
    others = [(l, h) for l in range(2) for h in range(4) if (l, h) != (1, 2)]
    assert all(abs(float(out["prev_token"][l, h]) - pt) > 1e-4 for l, h in others)


def test_localize_bad_input():
    model = make_tiny()
    with pytest.raises(ValueError, match="unknown localization metric"):
        localize(model, "induction_head")
    with pytest.raises(ValueError, match="seq_len"):
        localize(model, seq_len=0)
    with pytest.raises(ValueError, match="seq_len"):
        localize(model, seq_len=40)

"""The separate-projection layout on the installed transformers release, 4.x included (scripts/ci_transformers4.sh
runs this file; the property test's config space is transformers 5.x's)."""

import pytest
import torch
from test_llama_layout_property import AVAILABLE, VOCAB

from mda_fast.core.capture import sequence_loss
from mda_fast.core.heads import HeadSpec, head_blocks


def _plain_config(family):
    """A transformers 4.x and 5.x config of ``family`` (no head_dim, no rope_parameters): 4 heads, 2 KV heads."""
    import transformers

    from mda_fast.adapters.llama import FAMILIES

    cfg = getattr(transformers, FAMILIES[family][1])(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=48, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(11)
    model = getattr(transformers, FAMILIES[family][2])(cfg).double().eval()
    with torch.no_grad():  # random norm weights and biases, so a mixed-up slice cannot hide behind ones and zeros
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in n else 0.0))
    return model.requires_grad_(False)


@pytest.mark.parametrize("family", AVAILABLE)
def test_per_sample_grads_equal_autograd_on_this_transformers_release(family):
    """The release-independent check (it also runs on transformers 4.49 in scripts/ci_transformers4.sh, where the
    property test's config space does not exist): per-sample head gradients in float64 equal autograd of each
    sequence's own loss on the HF weights, for a GQA head's qk, v and o blocks."""
    from mda_fast import per_sample_head_grads
    from mda_fast.core.heads import block_weight

    model = _plain_config(family)
    g = torch.Generator().manual_seed(2)
    rows = torch.randint(0, VOCAB, (2, 12), generator=g)
    spec = HeadSpec(1, 3)
    got = per_sample_head_grads(model, rows, spec)[0]
    for n in range(rows.shape[0]):
        model.requires_grad_(True)
        model.zero_grad()
        sequence_loss(model(input_ids=rows[n : n + 1, :-1]).logits, rows[n : n + 1, 1:]).sum().backward()
        model.requires_grad_(False)
        for b in head_blocks(model, spec):
            want = block_weight(model, b, grad=True)
            err = float((got[b.name][n] - want).abs().max() / want.abs().max())
            assert err < 1e-10, (family, b.name, err)


@pytest.mark.parametrize("family", AVAILABLE)
def test_attention_patterns_equal_hf_eager_on_this_transformers_release(family):
    """localize's patterns (q/k norms, rotary tables, KV groups) equal HF eager's ``output_attentions``."""
    from mda_fast.core.localize import attention_patterns

    model = _plain_config(family)
    model.config._attn_implementation = "eager"
    rows = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(4))
    want = model(input_ids=rows, output_attentions=True).attentions
    got = attention_patterns(model, rows)
    for L, (a, b) in enumerate(zip(got, want)):
        assert float((a.double() - b.double()).abs().max()) < 1e-6, (family, L)

"""Shared fixtures: tiny GPT-NeoX models with random weights built from a config (no hub access)."""

import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")


def make_tiny(
    n_layers=2,
    d_model=32,
    n_heads=4,
    vocab=64,
    ctx=64,
    rotary_pct=0.25,
    attn="eager",
    dtype=torch.float64,
    seed=0,
    bias=True,
    parallel=True,
):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    kw = dict(
        vocab_size=vocab,
        hidden_size=d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        intermediate_size=4 * d_model,
        rotary_pct=rotary_pct,
        max_position_embeddings=ctx,
        use_parallel_residual=parallel,
        tie_word_embeddings=False,
        attention_bias=bias,
    )
    cfg = GPTNeoXConfig(**kw)
    cfg._attn_implementation = attn
    model = GPTNeoXForCausalLM(cfg)
    # random init gives near-uniform attention; scale q/k weights up so patterns are peaked and tests bite
    with torch.no_grad():
        for layer in model.gpt_neox.layers:
            layer.attention.query_key_value.weight.mul_(4.0)
            if layer.attention.query_key_value.bias is not None:
                layer.attention.query_key_value.bias.normal_(0, 0.2)
            layer.attention.dense.bias.normal_(0, 0.2) if layer.attention.dense.bias is not None else None
    model = model.to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture
def tiny():
    return make_tiny


def pytest_collection_modifyitems(config, items):
    """The one CUDA-skip hook: tests marked ``cuda`` are skipped when torch sees no CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marker cuda)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    import mda_fast

    return f"mda_fast imported from {os.path.dirname(mda_fast.__file__)}; torch {torch.__version__}"

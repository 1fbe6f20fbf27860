"""Model adapters: dispatch on config.model_type, a registered second adapter is used everywhere, clear errors."""

import pytest
import torch
from conftest import make_tiny

from mda_fast import HeadSpec, ModelError, head_blocks, per_sample_head_grads
from mda_fast.adapters import (
    GPTNeoXAdapter,
    ModelShape,
    UnsupportedModelError,
    adapter_for,
    adapter_for_type,
    register_adapter,
    unregister_adapter,
)
from mda_fast.core.attention import attention_pattern
from mda_fast.core.capture import hf_forward
from mda_fast.core.model import NeoXShape, model_shape, neox_shape


class CountingNeoX(GPTNeoXAdapter):
    """A 'second architecture' in one class: GPT-NeoX under another model_type, counting what the core asks."""

    model_type = "counting_neox"
    family = "counting GPT-NeoX"

    def __init__(self):
        self.calls = {}

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def head_parts(self, shape, head, mode):
        self._count("head_parts")
        return super().head_parts(shape, head, mode)

    def attention_module(self, model, layer, module):
        self._count("attention_module")
        return super().attention_module(model, layer, module)

    def lean_layer(self, *args):
        self._count("lean_layer")
        return super().lean_layer(*args)

    def rotate_qk(self, q, k, shape):
        self._count("rotate_qk")
        return super().rotate_qk(q, k, shape)


@pytest.fixture
def counting_model():
    adapter = register_adapter(CountingNeoX())
    model = make_tiny(n_layers=2, attn="sdpa")
    model.config.model_type = "counting_neox"
    try:
        yield model, adapter
    finally:
        unregister_adapter("counting_neox")


def test_gpt_neox_dispatch_and_shape_alias():
    model = make_tiny()
    assert type(adapter_for(model)) is GPTNeoXAdapter and NeoXShape is ModelShape
    assert neox_shape(model) == model_shape(model) and model_shape(model).model_type == "gpt_neox"


def test_registered_adapter_is_used_by_the_core(counting_model):
    model, adapter = counting_model
    assert adapter_for(model) is adapter and model_shape(model).model_type == "counting_neox"
    neox = make_tiny(n_layers=2, attn="sdpa")
    assert head_blocks(model, HeadSpec(1, 2)) == head_blocks(neox, HeadSpec(1, 2))
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 64, (3, 13), generator=g)
    got = per_sample_head_grads(model, rows, HeadSpec(1, 2))[0]  # the lean forward, through the adapter
    want = per_sample_head_grads(neox, rows, HeadSpec(1, 2))[0]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    with hf_forward():  # HF's forward, hooks placed by the adapter
        hooked = per_sample_head_grads(model, rows, HeadSpec(1, 2))[0]
    assert all(torch.allclose(hooked[k], want[k], rtol=1e-10, atol=1e-12) for k in got)
    qkv = torch.randn(2, 5, 96, dtype=torch.float64, generator=g)
    assert torch.equal(attention_pattern(qkv, model_shape(model)), attention_pattern(qkv, neox_shape(neox)))
    assert set(adapter.calls) == {"head_parts", "attention_module", "lean_layer", "rotate_qk"}


def test_unknown_model_type_is_one_line_model_error():
    model = make_tiny()
    model.config.model_type = "bloom"
    for fn in (adapter_for, lambda m: head_blocks(m, HeadSpec(0, 0))):
        with pytest.raises(ModelError) as e:
            fn(model)
        assert isinstance(e.value, (UnsupportedModelError, TypeError)) and "\n" not in str(e.value)
        assert str(e.value) == (
            "GPTNeoXForCausalLM has model_type 'bloom' (ALiBi position biases, which no adapter reproduces exactly); "
            "expected one of the supported families: 'gpt2' (GPT-2), 'gpt_neox' (Pythia / GPT-NeoX), 'llama' (Llama), "
            "'mistral' (Mistral), 'olmo' (OLMo), 'olmo2' (OLMo-2), 'qwen2' (Qwen2), 'qwen3' (Qwen3)"
        )
    with pytest.raises(ModelError, match="model_type 'rwkv'"):
        adapter_for_type("rwkv")
    with pytest.raises(TypeError, match="GPT-NeoX"):
        adapter_for(torch.nn.Linear(2, 2))


def test_the_adapter_is_resolved_once_per_model(monkeypatch):
    """The core reads the adapter and shape from one handle per model (issue 21), not from the raw model each time:
    localize, fit and score on one model resolve its adapter once."""
    import mda_fast.core.handle as H
    from mda_fast import InfluenceScorer, fit_ekfac, localize
    from mda_fast.core.handle import ModelHandle, handle

    calls = []
    real = H.adapter_for
    monkeypatch.setattr(H, "adapter_for", lambda m: calls.append(id(m)) or real(m))
    model = make_tiny(n_layers=2, attn="sdpa")
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(0, 64, (4, 17), generator=g)
    localize(model, "prefix_matching", seq_len=8, n=4)
    spec = HeadSpec(1, 0)
    factors = fit_ekfac(model, [spec], [rows])
    InfluenceScorer(model, [spec], factors, probe="induction", probe_kwargs={"n": 2, "L": 4}).score(rows)
    per_sample_head_grads(model, rows, spec)
    assert calls == [id(model)]
    h = handle(model)
    assert isinstance(h, ModelHandle) and handle(h) is h and h.model is model and h.shape == model_shape(model)
    assert h.device == torch.device("cpu") and h.dtype == next(model.parameters()).dtype
    other = make_tiny(n_layers=2, attn="sdpa")
    handle(other)
    assert calls == [id(model), id(other)]
    other.config.model_type = "bloom"  # a handle never outlives a change of model_type
    with pytest.raises(ModelError, match="model_type 'bloom'"):
        handle(other)

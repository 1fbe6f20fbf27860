"""Property-based proof of the separate-projection layout (Llama, Mistral, Qwen2, Qwen3, OLMo, OLMo-2), hypothesis,
derandomized, over its config space: H / H_kv ratios 1, 2 and H, ``head_dim`` ≠ d_model / H, biases on and off,
tied embeddings, ``rope_theta`` and every ``rope_scaling`` kind the adapter accepts, the q/k norm kinds (OLMo's
clip, OLMo-2's over the width, Qwen3's per head), Mistral's and Qwen's sliding windows, eager and sdpa, T from 1 to
64, token masks and padding attention masks. In float64:

- ``per_sample_head_grads`` (and ``capture`` with a padding mask) equals plain autograd of each sequence's summed
  token loss w.r.t. the HF weights, sliced by the convention written out here (not by ``head_blocks``): qk = q_proj
  rows of head h then k_proj rows of group h // (H / H_kv), v = v_proj rows of the group, o = o_proj columns of h,
  bias entries as the last column (rel. err < 1e-10: both sides run HF's forward);
- the attention patterns of ``localize`` (``attention_patterns``) equal HF eager's ``output_attentions`` (< 1e-6:
  HF's eager softmax runs in float32 even in a float64 model);
- a pattern probe's gradient (``capture`` with the probe's objective) equals autograd through HF eager's attention
  probabilities (rel. < 1e-5, the same float32 softmax).

Mutations (a K row block taken from the wrong KV group, OLMo-2's q/k norm applied per head instead of over the
width) are caught by the same checks.
"""

import json
import os

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
transformers = pytest.importorskip("transformers")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mda_fast import HeadSpec, ModuleSpec, head_blocks, per_sample_head_grads  # noqa: E402
from mda_fast.adapters import LlamaAdapter, Segment  # noqa: E402
from mda_fast.adapters.llama import FAMILIES, ROPE_TYPES  # noqa: E402
from mda_fast.core.capture import block_grad, capture, loss_objective, sequence_loss, split_rows  # noqa: E402
from mda_fast.core.heads import block_weight  # noqa: E402
from mda_fast.core.localize import attention_patterns  # noqa: E402
from mda_fast.core.probes import PrefixMatchingProbe, PrevTokenProbe  # noqa: E402

VOCAB, CTX = 48, 32  # CTX < 64: dynamic rope rescales on the longer rows
SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TF5 = int(transformers.__version__.split(".")[0]) >= 5
pytestmark = pytest.mark.skipif(
    not TF5,
    reason="the config space drawn here (head_dim on every family, rope_parameters) is transformers 5.x's; the "
    "separate-projection adapter is not yet proven on transformers 4.x",
)
AVAILABLE = tuple(t for t, (_, _, cls) in FAMILIES.items() if hasattr(transformers, cls))
ROPE_EXTRA = {
    "default": {},
    "linear": {"factor": 2.0},
    "dynamic": {"factor": 2.0},
    "llama3": {"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 16},
}


@st.composite
def configs(draw, families=AVAILABLE):
    family = draw(st.sampled_from(families))
    n_heads = draw(st.sampled_from([2, 4]))
    ratio = draw(st.sampled_from(["1", "2", "H"]))
    d_head = draw(st.sampled_from([4, 6, 8]))
    c = dict(
        family=family,
        n_heads=n_heads,
        n_kv=n_heads // {"1": 1, "2": 2, "H": n_heads}[ratio],
        d_head=d_head,
        d_model=draw(st.sampled_from([n_heads * d_head, 12, 20])),
        n_layers=draw(st.integers(1, 2)),
        bias={"qwen2": True, "mistral": False}.get(family, draw(st.booleans())),
        tie=draw(st.booleans()),
        theta=draw(st.sampled_from([10000.0, 500.0, 1e6])),
        rope=draw(st.sampled_from(ROPE_TYPES)),
        clip=draw(st.sampled_from([None, 0.5])) if family == "olmo" else None,
        window=draw(st.sampled_from([None, 3, 9])) if family in ("mistral", "qwen2", "qwen3") else None,
        window_from=draw(st.integers(0, 1)),
        attn=draw(st.sampled_from(["sdpa", "eager"])),
        seed=draw(st.integers(0, 2**16)),
    )
    event(f"{family} H/H_kv={n_heads // c['n_kv']} rope={c['rope']}")
    return c


def build(c, attn=None):
    """A float64 eval-mode model of family ``c['family']`` with random weights, biases and norm weights."""
    name = FAMILIES[c["family"]][1]
    cfg_cls, model_cls = getattr(transformers, name), getattr(transformers, FAMILIES[c["family"]][2])
    torch.manual_seed(c["seed"])
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=c["d_model"],
        num_hidden_layers=c["n_layers"],
        num_attention_heads=c["n_heads"],
        num_key_value_heads=c["n_kv"],
        head_dim=c["d_head"],
        intermediate_size=2 * c["d_model"],
        max_position_embeddings=CTX,
        tie_word_embeddings=c["tie"],
    )
    rope = {"rope_type": c["rope"], **ROPE_EXTRA[c["rope"]]}
    if TF5:
        kw["rope_parameters"] = {**rope, "rope_theta": c["theta"]}
    else:
        kw.update(rope_theta=c["theta"], rope_scaling=None if c["rope"] == "default" else rope)
    if c["family"] not in ("qwen2", "mistral"):
        kw["attention_bias"] = c["bias"]
    if c["family"] == "olmo":
        kw["clip_qkv"] = c["clip"]
    if c["family"] == "mistral":
        kw["sliding_window"] = c["window"]
    if c["family"] in ("qwen2", "qwen3"):
        kw.update(use_sliding_window=c["window"] is not None, sliding_window=c["window"] or 4096)
        kw["max_window_layers"] = c["window_from"]
    cfg = cfg_cls(**kw)
    cfg._attn_implementation = attn or c["attn"]
    model = model_cls(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(3.0)  # peaked attention
            elif name.endswith("bias"):
                p.normal_(0, 0.3)
            elif "norm" in name:
                p.normal_(1.0, 0.3)
    model = model.to(torch.float64).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def attn_of(model, layer):
    return model.model.layers[layer].self_attn


def convention(model, c, spec, grad=True) -> dict:
    """``{block name: tensor}``: the HF weights (or their .grad) sliced by the head convention, written out here."""
    a = attn_of(model, spec.layer)

    def w(mod):
        return mod.weight.grad if grad else mod.weight

    def b(mod):
        return mod.bias.grad if grad else mod.bias

    def rows(mod, lo, hi, bias):
        out = w(mod)[lo:hi]
        return torch.cat([out, b(mod)[lo:hi, None]], dim=1) if bias else out

    if isinstance(spec, ModuleSpec):
        mod = getattr(a, spec.module)
        return {spec.name: rows(mod, 0, mod.weight.shape[0], mod.bias is not None)}
    dh, h = c["d_head"], spec.head
    g = h // (c["n_heads"] // c["n_kv"])
    out = {
        f"{spec.name}.qk": torch.cat(
            [rows(a.q_proj, h * dh, (h + 1) * dh, spec.bias), rows(a.k_proj, g * dh, (g + 1) * dh, spec.bias)]
        )
    }
    if spec.mode == "qkvo":
        out[f"{spec.name}.v"] = rows(a.v_proj, g * dh, (g + 1) * dh, spec.bias)
        out[f"{spec.name}.o"] = w(a.o_proj)[:, h * dh : (h + 1) * dh]
    return out


def reference(model, c, specs, inputs, labels, mask, attention_mask):
    """Autograd of sequence n's loss alone, sliced by :func:`convention`; and each block's module-gradient norm
    (a floor for blocks whose exact gradient is 0, e.g. q/k at T = 1)."""
    out, scales = [], []
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        for n in range(inputs.shape[0]):
            model.zero_grad(set_to_none=True)
            am = None if attention_mask is None else attention_mask[n : n + 1]
            logits = model(input_ids=inputs[n : n + 1], attention_mask=am).logits
            sequence_loss(logits, labels[n : n + 1], None if mask is None else mask[n : n + 1]).sum().backward()
            out.append({k: v.clone() for s in specs for k, v in convention(model, c, s).items()})
            a = lambda s: attn_of(model, s.layer)  # noqa: E731
            scales.append(
                {
                    k: float(sum(m.weight.grad.norm() for m in (a(s).q_proj, a(s).k_proj, a(s).v_proj, a(s).o_proj)))
                    for s in specs
                    for k in convention(model, c, s)
                }
            )
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
    return out, scales


@st.composite
def grad_cases(draw, families=AVAILABLE):
    c = draw(configs(families))
    layer = draw(st.integers(0, c["n_layers"] - 1))
    kind = draw(st.sampled_from(["head", "head", "two heads", "module"]))
    if kind == "module":
        specs = [ModuleSpec(layer, draw(st.sampled_from(LlamaAdapter.modules)))]
    else:
        heads = draw(st.lists(st.integers(0, c["n_heads"] - 1), min_size=1, max_size=1 + (kind == "two heads")))
        specs = list(
            dict.fromkeys(
                HeadSpec(layer, h, draw(st.sampled_from(["qkvo", "qk"])), bias=c["bias"] and draw(st.booleans()))
                for h in heads
            )
        )
    T, N = draw(st.integers(1, 64)), draw(st.integers(1, 3))
    masks = draw(st.sampled_from(["none", "tokens", "padding"]))
    return c, specs, T, N, masks


def check_grads(c, specs, T, N, masks, model=None):
    model = model if model is not None else build(c)
    g = torch.Generator().manual_seed(c["seed"] + 1)
    rows = torch.randint(0, VOCAB, (N, T + 1), generator=g)
    inputs, labels = split_rows(rows)
    mask = attention_mask = None
    if masks == "tokens":
        mask = (torch.rand(N, T, generator=g) > 0.3).double()
    elif masks == "padding":  # right padding: the padded positions are neither attended to nor scored
        lengths = torch.randint(1, T + 1, (N, 1), generator=g)
        attention_mask = (torch.arange(T)[None, :] < lengths).long()
        mask = attention_mask.double()
    if attention_mask is None:
        ours = {k: v for d in per_sample_head_grads(model, rows, specs, mask=mask) for k, v in d.items()}
    else:
        blocks = [b for s in specs for b in head_blocks(model, s)]
        res = capture(model, inputs, blocks, loss_objective(labels, mask), attention_mask=attention_mask)
        ours = {b.name: block_grad(res.x(b), res.y(b), b.bias) for b in blocks}
    ref, scales = reference(model, c, specs, inputs, labels, mask, attention_mask)
    worst = 0.0
    for n in range(N):
        for name, r in ref[n].items():
            got = ours[name][n]
            assert got.shape == r.shape, (name, tuple(got.shape), tuple(r.shape))
            err, scale = float((got - r).norm()), float(r.norm())
            assert err <= 1e-10 * scale + 1e-13 * scales[n][name], (c, name, n, err, scale)
            worst = max(worst, err / max(scale, 1e-300) if scale > 1e-8 * scales[n][name] else 0.0)
    return worst


def log(kind, c, err):
    """With ``MDA_FAST_PROPERTY_LOG=path``, one JSON line per case (family, worst error) for the report."""
    path = os.environ.get("MDA_FAST_PROPERTY_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"kind": kind, "family": c["family"], "err": err}) + "\n")


@settings(max_examples=200, **SETTINGS)
@given(grad_cases())
def test_per_sample_head_grads_equal_autograd_on_hf_weights(case):
    torch.set_num_threads(1)
    log("grads", case[0], check_grads(*case))


@st.composite
def pattern_cases(draw, families=AVAILABLE):
    return draw(configs(families)), draw(st.integers(1, 64)), draw(st.integers(1, 2))


def hf_patterns(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, output_attentions=True, use_cache=False).attentions


def pattern_error(model, ids) -> float:
    ours = attention_patterns(model, ids)
    return max(float((o - r).abs().max()) for o, r in zip(ours, hf_patterns(model, ids)))


@settings(max_examples=200, **SETTINGS)
@given(pattern_cases())
def test_localize_patterns_equal_hf_eager_output_attentions(case):
    torch.set_num_threads(1)
    c, T, N = case
    model = build(c, attn="eager")
    ids = torch.randint(0, VOCAB, (N, T), generator=torch.Generator().manual_seed(c["seed"]))
    err = pattern_error(model, ids)
    log("patterns", c, err)
    assert err < 1e-6, c


@pytest.mark.parametrize("family", AVAILABLE)
@pytest.mark.parametrize("probe_cls", [PrefixMatchingProbe, PrevTokenProbe])
def test_pattern_probe_gradient_equals_autograd_through_hf_eager(family, probe_cls):
    """The probes' attention patterns are differentiable in the tracked blocks exactly like HF's attention."""
    torch.set_num_threads(1)
    c = dict(
        family=family, n_heads=4, n_kv=2, d_head=6, d_model=20, n_layers=2, bias=family != "mistral", tie=True,
        theta=500.0, rope="yarn", clip=0.5, window=5, window_from=0, attn="eager", seed=3,
    )  # fmt: skip
    model = build(c)
    spec = HeadSpec(1, 3, "qk", bias=c["bias"])
    probe = probe_cls(L=6, n=3, seed=2)
    ids = probe.inputs(model)
    blocks = head_blocks(model, spec)
    res = capture(model, ids, blocks, lambda logits, hooks: probe.objective(model, spec, ids, logits, hooks), [1])
    ours = {b.name: block_grad(res.x(b), res.y(b), b.bias).sum(0) for b in blocks}
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        pat = model(input_ids=ids, output_attentions=True).attentions[1][:, spec.head]
        q, k = (x.to(pat.device) for x in probe.pairs(pat.shape[-1]))
        (pat[:, q, k].mean(dim=1) / ids.shape[0]).sum().backward()
        ref = convention(model, c, spec)
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
    for name, r in ref.items():
        assert float((ours[name] - r).norm()) <= 1e-5 * float(r.norm()), name


# ---- mutations: the same checks catch a wrong convention ----------------------------------------------------------
MUTANT = dict(
    family="llama", n_heads=4, n_kv=2, d_head=6, d_model=20, n_layers=1, bias=True, tie=False, theta=10000.0,
    rope="default", clip=None, window=None, window_from=0, attn="sdpa", seed=7,
)  # fmt: skip


def test_mutation_k_rows_of_the_wrong_group_are_caught(monkeypatch):
    check_grads(MUTANT, [HeadSpec(0, 1)], 12, 2, "none")  # the right convention passes

    def wrong_group(self, shape, head, mode):
        parts = real(self, shape, head, mode)
        q, k = parts["qk"].segments
        g = (k.out_start // shape.d_head + 1) % shape.n_kv_heads
        wrong = Segment("k_proj", g * shape.d_head, (g + 1) * shape.d_head)
        parts["qk"] = type(parts["qk"])((q, wrong), *[getattr(parts["qk"], f) for f in ("in_start", "in_stop")], True)
        return parts

    real = LlamaAdapter.head_parts
    monkeypatch.setattr(LlamaAdapter, "head_parts", wrong_group)
    with pytest.raises(AssertionError):
        check_grads(MUTANT, [HeadSpec(0, 1)], 12, 2, "none")


def test_mutation_olmo2_norm_per_head_is_caught(monkeypatch):
    c = dict(MUTANT, family="olmo2", n_layers=1)
    model = build(c, attn="eager")
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    assert pattern_error(model, ids) < 1e-6

    def per_head(self, model, layer, outputs, shape, heads=None, dtype=torch.float32):
        attn = self.layers(model)[layer].self_attn

        def norm(x, mod, n):  # RMS over each head's d_head channels, with that head's slice of the weight
            v = x.view(*x.shape[:-1], n, shape.d_head)
            v = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + mod.variance_epsilon)
            return (v.flatten(-2) * mod.weight).to(x.dtype)

        q = norm(outputs["q_proj"], attn.q_norm, shape.n_heads)
        k = norm(outputs["k_proj"], attn.k_norm, shape.n_kv_heads)
        saved = attn.q_norm, attn.k_norm
        try:  # the adapter's own rotation and GQA on the (wrongly) normed q/k, no further norm
            del attn.q_norm, attn.k_norm
            return real(self, model, layer, {"q_proj": q, "k_proj": k}, shape, heads, dtype)
        finally:
            attn.q_norm, attn.k_norm = saved

    real = LlamaAdapter.query_key
    monkeypatch.setattr(LlamaAdapter, "query_key", per_head)
    assert pattern_error(model, ids) > 1e-3


def test_refusals_are_one_line_model_errors():
    from mda_fast import ModelError
    from mda_fast.adapters import adapter_for_type
    from mda_fast.core.handle import handle

    for model_type, why in [("bloom", "ALiBi"), ("mixtral", "mixture of experts"), ("gemma2", "soft-capping")]:
        with pytest.raises(ModelError, match=why) as e:
            adapter_for_type(model_type)
        assert "\n" not in str(e.value) and "Llama" in str(e.value)
    model = build(dict(MUTANT, rope="default"))
    model.config.rope_parameters = {"rope_type": "longrope", "rope_theta": 10000.0}
    model.config.rope_scaling = model.config.rope_parameters
    with pytest.raises(ModelError, match="rope_scaling kind 'longrope'") as e:
        handle(model)
    assert "\n" not in str(e.value)


def test_group_heads_share_kv_rows():
    model = build(dict(MUTANT, n_heads=4, n_kv=1))
    qk, v, o = head_blocks(model, HeadSpec(0, 2))
    assert qk.segments == (Segment("q_proj", 12, 18), Segment("k_proj", 0, 6))
    assert qk.shared_by == v.shared_by == (0, 1, 2, 3) and o.shared_by == (2,)
    assert v.segments == head_blocks(model, HeadSpec(0, 0))[1].segments
    ref = convention(model, dict(MUTANT, n_kv=1), HeadSpec(0, 2), grad=False)
    assert torch.equal(block_weight(model, qk), ref["L0H2.qk"]) and torch.equal(block_weight(model, o), ref["L0H2.o"])

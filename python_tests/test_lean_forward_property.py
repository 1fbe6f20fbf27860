"""Property-based proof of the capture contract over the GPTNeoXConfig space (hypothesis, derandomized).

For every tiny GPT-NeoX config drawn (hidden size and heads with odd d_head, ``rotary_pct`` in (0, 1],
``rotary_emb_base``, layer norm eps, parallel residual, biases, eager / sdpa, T from 1 to 64, token masks), in
float64:

- ``per_sample_head_grads`` equals plain autograd of each sequence's summed token loss w.r.t. the HF weight slice
  a block owns (rel. err < 1e-10), whichever forward ``capture`` picks;
- the lean forward is picked exactly where it is claimed (sdpa, HF's rotary width fits a head, a claimed transformers release),
  so the first property covers it on every such config;
- ``fit_ekfac`` + ``InfluenceScorer`` through the automatic choice equal the same through HF's forward
  (``capture.hf_forward()``);
- ``attention_pattern`` (the probes' patterns from a captured qkv) equals HF's eager attention probabilities.

Where HF's own forward cannot run a config (odd d_head with ``rotary_pct = 1``), capture must raise too.
"""

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mda_fast import HeadSpec, InfluenceScorer, ModelError, ModuleSpec, fit_ekfac, head_blocks, per_sample_head_grads  # noqa: E402
from mda_fast.core import lean_forward  # noqa: E402
from mda_fast.core.attention import attention_pattern, rotary_width  # noqa: E402
from mda_fast.core.capture import hf_forward, loss_objective, sequence_loss, split_rows, uses_lean_forward  # noqa: E402
from mda_fast.core.heads import block_weight  # noqa: E402
from mda_fast.core.model import neox_shape  # noqa: E402

VOCAB, CTX = 48, 65
SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def build(d_head, n_heads, n_layers, rotary_pct, base, eps, parallel, bias, attn, seed):
    """A float64 eval-mode GPT-NeoX with random weights and peaked attention (q/k weights scaled up)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    d = d_head * n_heads
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=d,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        intermediate_size=2 * d,
        rotary_pct=rotary_pct,
        rotary_emb_base=base,
        layer_norm_eps=eps,
        max_position_embeddings=CTX,
        use_parallel_residual=parallel,
        tie_word_embeddings=False,
        attention_bias=bias,
    )
    cfg._attn_implementation = attn
    model = GPTNeoXForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.gpt_neox.layers:
            layer.attention.query_key_value.weight.mul_(3.0)
            if bias:
                layer.attention.query_key_value.bias.normal_(0, 0.2)
                layer.attention.dense.bias.normal_(0, 0.2)
    model = model.to(torch.float64).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def hf_rotary_width(d_head: int, rotary_pct: float) -> int:
    """The channels HF rotates, from first principles: ``len(inv_freq) = ⌈r/2⌉`` frequencies, each used twice."""
    r = int(d_head * rotary_pct)
    return 2 * len(range(0, r, 2))


def lean_claimed(attn: str, d_head: int, rotary_pct: float) -> bool:
    return attn == "sdpa" and hf_rotary_width(d_head, rotary_pct) <= d_head and lean_forward.claims_transformers()


@st.composite
def configs(draw):
    n_heads = draw(st.integers(1, 4))
    # hidden ≥ 4: a LayerNorm over 1 channel outputs its bias only, and every head gradient is 0
    d_head = draw(st.integers(-(-4 // n_heads), min(16, 64 // n_heads)))
    pct = draw(
        st.one_of(
            st.sampled_from([0.25, 0.5, 1.0]),
            st.floats(0.0, 1.0, exclude_min=True, allow_nan=False, allow_infinity=False),
        )
    )
    return dict(
        d_head=d_head,
        n_heads=n_heads,
        n_layers=draw(st.integers(1, 2)),
        rotary_pct=pct,
        base=draw(st.sampled_from([10000.0, 100.0, 1e6, 2.5])),
        eps=draw(st.sampled_from([1e-5, 1e-2])),
        parallel=draw(st.booleans()),
        bias=draw(st.booleans()),
        attn=draw(st.sampled_from(["sdpa", "eager"])),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def specs_for(draw, cfg):
    layer = draw(st.integers(0, cfg["n_layers"] - 1))
    # a ModuleSpec includes the module's bias, so it needs a model with biases
    kind = draw(st.sampled_from(["head", "head", "two heads"] + ["module"] * cfg["bias"]))
    if kind == "module":
        return [ModuleSpec(layer, draw(st.sampled_from(["query_key_value", "dense"])))]
    heads = draw(
        st.lists(st.integers(0, cfg["n_heads"] - 1), min_size=1, max_size=1 if kind == "head" else 2, unique=True)
    )
    layers = [layer] + [draw(st.integers(0, cfg["n_layers"] - 1)) for _ in heads[1:]]
    return [
        HeadSpec(L, h, draw(st.sampled_from(["qkvo", "qk"])), bias=cfg["bias"] and draw(st.booleans()))
        for L, h in zip(layers, heads)
    ]


@st.composite
def cases(draw):
    cfg = draw(configs())
    T = draw(st.integers(1, 64))
    N = draw(st.integers(1, 3))
    masked = draw(st.booleans())
    return cfg, draw(specs_for(cfg)), T, N, masked


def rows_and_mask(T, N, masked, seed, padding=False):
    """Token rows ``[N, T+1]`` and a token mask ``[N, T]``: random holes, or (``padding``) trailing zeros."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, VOCAB, (N, T + 1), generator=g)
    if not masked:
        return rows, None
    if padding:
        lengths = torch.randint(1, T + 1, (N, 1), generator=g)
        return rows, (torch.arange(T)[None, :] < lengths).double()
    return rows, (torch.rand(N, T, generator=g) > 0.3).double()


def autograd_grads(model, rows, specs, mask):
    """Reference: autograd of sequence n's summed token loss alone w.r.t. the HF weights, sliced per block.

    Returns ``(grads, scales)``: ``grads[n][block]`` and ``scales[n][block]``, the norm of the gradient of the whole
    module the block lives in (a floor for blocks whose exact gradient is 0, e.g. q/k at T = 1, where both sides
    hold rounding noise only).
    """
    inputs, labels = split_rows(rows)
    out, scales = [], []
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        for n in range(rows.shape[0]):
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=inputs[n : n + 1]).logits
            sequence_loss(logits, labels[n : n + 1], None if mask is None else mask[n : n + 1]).sum().backward()
            blocks = [b for s in specs for b in head_blocks(model, s)]
            out.append({b.name: block_weight(model, b, grad=True).clone() for b in blocks})
            scales.append(
                {
                    b.name: float(getattr(model.gpt_neox.layers[b.layer].attention, b.input_module).weight.grad.norm())
                    for b in blocks
                }
            )
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
    return out, scales


def hf_forward_fails(model, T) -> bool:
    try:
        with torch.no_grad():
            model(input_ids=torch.zeros(1, max(T, 2), dtype=torch.long))
    except RuntimeError:
        return True
    return False


def check_grads(cfg, specs, T, N, masked):
    model = build(**cfg)
    rows, mask = rows_and_mask(T, N, masked, cfg["seed"] + 1)
    claimed = lean_claimed(cfg["attn"], cfg["d_head"], cfg["rotary_pct"])
    assert lean_forward.supports(model) == claimed, cfg
    inputs, labels = split_rows(rows)
    blocks = [b for s in specs for b in head_blocks(model, s)]
    assert uses_lean_forward(model, loss_objective(labels, mask), blocks) == claimed
    if hf_forward_fails(model, T):
        assert not claimed
        with pytest.raises(RuntimeError):
            per_sample_head_grads(model, rows, specs, mask=mask)
        return
    ours = per_sample_head_grads(model, rows, specs, mask=mask)
    ref, module_scale = autograd_grads(model, rows, specs, mask)
    got = {name: g for d in ours for name, g in d.items()}
    for n in range(N):
        for name, r in ref[n].items():
            g = got[name][n]
            assert g.shape == r.shape, name
            err, scale = float((g - r).norm()), float(r.norm())
            assert err <= 1e-10 * scale + 1e-13 * module_scale[n][name], (cfg, name, n, err, scale)


@settings(max_examples=300, **SETTINGS)
@given(cases())
@example(
    (
        dict(
            d_head=12,
            n_heads=4,
            n_layers=2,
            rotary_pct=0.25,
            base=10000.0,
            eps=1e-5,
            parallel=True,
            bias=True,
            attn="sdpa",
            seed=0,
        ),
        [HeadSpec(1, 1, "qkvo", bias=True)],
        17,
        3,
        True,
    )
)
@example(
    (
        dict(
            d_head=1,
            n_heads=4,
            n_layers=1,
            rotary_pct=1.0,
            base=10000.0,
            eps=1e-5,
            parallel=False,
            bias=False,
            attn="sdpa",
            seed=1,
        ),
        [HeadSpec(0, 2, "qkvo")],
        9,
        2,
        False,
    )
)
@example(
    (
        dict(
            d_head=9,
            n_heads=3,
            n_layers=1,
            rotary_pct=1.0,
            base=10000.0,
            eps=1e-5,
            parallel=True,
            bias=False,
            attn="sdpa",
            seed=2,
        ),
        [HeadSpec(0, 0, "qk")],
        5,
        1,
        False,
    )
)
def test_per_sample_head_grads_equal_autograd_on_hf_weights(case):
    torch.set_num_threads(1)
    cfg = case[0]
    event(
        "lean forward" if lean_claimed(cfg["attn"], cfg["d_head"], cfg["rotary_pct"]) else f"HF forward ({cfg['attn']})"
    )
    r = int(cfg["d_head"] * cfg["rotary_pct"])
    event(
        "rotary width > d_head"
        if hf_rotary_width(cfg["d_head"], cfg["rotary_pct"]) > cfg["d_head"]
        else "odd rotary_ndims"
        if r % 2
        else "even rotary_ndims"
    )
    check_grads(*case)


def test_odd_rotary_regression_hidden48_heads4_pct025():
    """The reported case: 3 rotary dims per head, HF rotates 4; the lean forward is used and exact."""
    torch.set_num_threads(1)
    cfg = dict(
        d_head=12,
        n_heads=4,
        n_layers=2,
        rotary_pct=0.25,
        base=10000.0,
        eps=1e-5,
        parallel=True,
        bias=False,
        attn="sdpa",
        seed=0,
    )
    model = build(**cfg)
    assert model.gpt_neox.layers[0].attention.rotary_ndims == 3 and model.gpt_neox.rotary_emb.inv_freq.numel() == 2
    assert lean_forward.supports(model) == lean_forward.claims_transformers()
    check_grads(cfg, [HeadSpec(1, 1, "qkvo"), HeadSpec(0, 3, "qk")], 20, 3, False)


@st.composite
def ekfac_cases(draw):
    cfg = draw(configs().filter(lambda c: hf_rotary_width(c["d_head"], c["rotary_pct"]) <= c["d_head"]))
    return (
        cfg,
        draw(specs_for(cfg)),
        draw(st.integers(2, 24)),
        draw(st.booleans()),
        draw(st.sampled_from(["empirical", "true"])),
        draw(st.sampled_from(["ekfac", "kfac"])),
    )


def fit_and_score(model, specs, batches, train, mask, fisher, method):
    fac = fit_ekfac(model, specs, batches, fisher=fisher, method=method, seed=5, progress=False)
    scorer = InfluenceScorer(model, specs, fac, probe="induction", probe_kwargs=dict(L=4, n=3, seed=1))
    return fac, scorer.score(train, mask=mask)


@settings(max_examples=100, **SETTINGS)
@given(ekfac_cases())
@example(
    (
        dict(
            d_head=12,
            n_heads=4,
            n_layers=2,
            rotary_pct=0.25,
            base=10000.0,
            eps=1e-5,
            parallel=True,
            bias=True,
            attn="sdpa",
            seed=0,
        ),
        [HeadSpec(1, 1, "qkvo", bias=True)],
        16,
        True,
        "empirical",
        "ekfac",
    )
)
def test_fit_ekfac_and_scores_equal_the_hf_forward_path(case):
    torch.set_num_threads(1)
    cfg, specs, T, masked, fisher, method = case
    model = build(**cfg)
    # padding masks: with holes mid-sequence, masked tokens still carry output gradients that the S covariance
    # leaves out, near-null eigenvectors of S become rounding-dependent and EK-FAC's eig with them
    rows, mask = rows_and_mask(T, 6, masked, cfg["seed"] + 2, padding=True)
    train, tmask = rows_and_mask(T, 4, masked, cfg["seed"] + 3)
    batches = (
        [rows[:3], rows[3:]]
        if mask is None
        else [
            {"input_ids": rows[:3, :-1], "labels": rows[:3, 1:], "mask": mask[:3]},
            {"input_ids": rows[3:, :-1], "labels": rows[3:, 1:], "mask": mask[3:]},
        ]
    )
    event("lean forward" if lean_claimed(cfg["attn"], cfg["d_head"], cfg["rotary_pct"]) else "HF forward")
    fac, scores = fit_and_score(model, specs, batches, train, tmask, fisher, method)
    with hf_forward():
        assert not uses_lean_forward(model, loss_objective(rows[:, 1:]), head_blocks(model, specs[0]))
        ref_fac, ref_scores = fit_and_score(model, specs, batches, train, tmask, fisher, method)
    for name, f in ref_fac.blocks.items():
        g = fac.blocks[name]
        for a, b in ((g.lam_A, f.lam_A), (g.lam_S, f.lam_S), (g.eig, f.eig)):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 * float(b.abs().max()))
        v = torch.randn(f.Q_S.shape[0], f.Q_A.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        want = ref_fac.precondition(name, v)
        torch.testing.assert_close(fac.precondition(name, v), want, rtol=1e-8, atol=1e-8 * float(want.abs().max()))
    assert ref_scores.abs().max() > 0
    torch.testing.assert_close(scores, ref_scores, rtol=1e-8, atol=1e-8 * float(ref_scores.abs().max()))


@settings(max_examples=60, **SETTINGS)
@given(configs(), st.integers(1, 64))
@example(
    dict(
        d_head=12,
        n_heads=4,
        n_layers=2,
        rotary_pct=0.25,
        base=10000.0,
        eps=1e-5,
        parallel=True,
        bias=True,
        attn="eager",
        seed=0,
    ),
    20,
)
def test_attention_patterns_equal_hf_eager(cfg, T):
    """``attention_pattern`` from the captured qkv equals HF's eager attention probabilities (float32 math), or
    raises ``ModelError`` where HF's rotary width exceeds d_head."""
    torch.set_num_threads(1)
    model = build(**{**cfg, "attn": "eager"})
    s = neox_shape(model)
    assert rotary_width(s.rotary_ndims) == hf_rotary_width(cfg["d_head"], cfg["rotary_pct"])
    ids = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(cfg["seed"]))
    qkv = {}
    hooks = [
        layer.attention.query_key_value.register_forward_hook(lambda mod, args, out, L=L: qkv.__setitem__(L, out))
        for L, layer in enumerate(model.gpt_neox.layers)
    ]
    try:
        if hf_rotary_width(cfg["d_head"], cfg["rotary_pct"]) > cfg["d_head"]:
            with pytest.raises(ModelError, match="rotary"):
                attention_pattern(torch.zeros(1, T, 3 * s.d_model, dtype=torch.float64), s)
            return
        with torch.no_grad():
            ref = model(input_ids=ids, output_attentions=True).attentions
    finally:
        for h in hooks:
            h.remove()
    for L in range(s.n_layers):
        torch.testing.assert_close(attention_pattern(qkv[L], s).double(), ref[L], rtol=0, atol=2e-6)

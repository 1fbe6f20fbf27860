"""Property-based proof of the GPT-2 (fused ``Conv1D``) layout over the GPT2Config space (hypothesis, derandomized).

For every tiny GPT-2 drawn (heads and head widths, 1-3 layers, ``scale_attn_weights``,
``scale_attn_by_inverse_layer_idx``, ``reorder_and_upcast_attn``, tied or separate embeddings, eager or sdpa, T from 1
to 64, no mask / token-loss masks / right-padding attention masks), in float64:

- ``per_sample_head_grads`` (through ``capture`` with the attention mask where there is one) equals plain autograd
  of each sequence's summed token loss on the HF model, sliced **by the convention written out here from GPT-2's
  storage** (``Conv1D`` weight ``[d_in, d_out]``, ``c_attn`` output [Q | K | V], ``c_proj`` stored rows = head
  columns), not by the adapter: rel. err < 1e-10 where both sides run the same arithmetic. HF's eager
  ``reorder_and_upcast_attn`` path computes the scores and softmax in float32 and, in transformers 5, cannot run a
  float64 model at all (its float32 scores plus the float64 mask fail its own dtype check; capture raises that
  same error): those configs are checked on a float32 model, where the batched and the per-sequence forward round
  differently, with rel. err < 1e-4;
- ``block_weight`` (the blocks' weights, through ``ModelAdapter.linear_weight``) equals the same slices;
- ``attention_pattern`` (localize's and the pattern probes' patterns from the captured ``c_attn`` output) equals
  HF eager's ``output_attentions`` (1e-10; 1e-6 on the float32 model of the upcast path), and ``localize_all`` equals the scores
  computed from HF's own attention probabilities;
- where HF's own forward cannot run a case (transformers 4.49: a float64 sdpa GPT-2 with a padding mask overflows
  its float32 mask), capture raises too; where the adapter refuses a model (transformers 4.x sdpa with non-default
  scaling, which that release ignores), capture raises that one-line ``ModelError``;
- mutations of the layout (a K row range off by one head, ``c_proj``'s stored rows read as output rows, the
  ``Conv1D`` weight not transposed) are caught.

``GPT2_PROPERTY_REPORT=path`` appends every checked case's relative error to ``path`` (one JSON line each), for the
report's worst-case numbers.
"""

import json
import os
from contextlib import contextmanager

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from gpt2_layout import (  # noqa: E402
    TRANSFORMERS_5,
    VOCAB,
    build,
    convention_slice,
    hf_patterns,
    names_of,
    parts_of,
    refused,
    upcasts,
)
from hypothesis import HealthCheck, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mda_fast import HeadSpec, ModelError, ModuleSpec, head_blocks, localize_all, per_sample_head_grads  # noqa: E402
from mda_fast.adapters import GPT2Adapter, HeadPart, Segment, register_adapter  # noqa: E402
from mda_fast.core.attention import attention_pattern  # noqa: E402
from mda_fast.core.capture import block_grad, capture, loss_objective, sequence_loss, split_rows  # noqa: E402
from mda_fast.core.heads import block_weight  # noqa: E402
from mda_fast.core.model import model_shape  # noqa: E402
from mda_fast.core.probes import prefix_matching_pairs, repeated_random_tokens  # noqa: E402

SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
REPORT = os.environ.get("GPT2_PROPERTY_REPORT")


def record(kind: str, err: float, cfg: dict) -> None:
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(json.dumps({"kind": kind, "err": err, "upcast_fp32": upcasts(cfg)}) + "\n")


@st.composite
def configs(draw):
    n_heads = draw(st.integers(1, 4))
    d_head = draw(st.integers(-(-4 // n_heads), min(16, 64 // n_heads)))  # d_model >= 4
    return dict(
        d_head=d_head,
        n_heads=n_heads,
        n_layers=draw(st.integers(1, 3)),
        scale_weights=draw(st.booleans()),
        inverse_layer=draw(st.booleans()),
        upcast=draw(st.booleans()),
        tied=draw(st.booleans()),
        attn=draw(st.sampled_from(["sdpa", "eager"])),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def specs_for(draw, cfg):
    layer = draw(st.integers(0, cfg["n_layers"] - 1))
    kind = draw(st.sampled_from(["head", "head", "two heads", "module"]))
    if kind == "module":
        return [ModuleSpec(layer, draw(st.sampled_from(["c_attn", "c_proj"])))]
    heads = draw(
        st.lists(st.integers(0, cfg["n_heads"] - 1), min_size=1, max_size=1 if kind == "head" else 2, unique=True)
    )
    layers = [layer] + [draw(st.integers(0, cfg["n_layers"] - 1)) for _ in heads[1:]]
    return [
        HeadSpec(L, h, draw(st.sampled_from(["qkvo", "qk"])), bias=draw(st.booleans())) for L, h in zip(layers, heads)
    ]


@st.composite
def cases(draw):
    cfg = draw(configs())
    return cfg, draw(specs_for(cfg)), draw(st.integers(1, 64)), draw(st.integers(1, 3)), draw(st.sampled_from(MASKS))


MASKS = ("none", "token", "padding")


def rows_and_masks(T, N, masks, seed):
    """Token rows ``[N, T+1]``, a token-loss mask ``[N, T]`` and an attention mask ``[N, T]`` (right padding)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, VOCAB, (N, T + 1), generator=g)
    if masks == "none":
        return rows, None, None
    if masks == "token":
        return rows, (torch.rand(N, T, generator=g) > 0.3).double(), None
    lengths = torch.randint(1, T + 1, (N, 1), generator=g)
    am = (torch.arange(T)[None, :] < lengths).long()
    return rows, am.double(), am


# ---- the convention, from GPT-2's storage (independent of the adapter) ------------------------------------------
def autograd_grads(model, rows, specs, mask, am):
    """Reference: autograd of sequence n's summed token loss alone, sliced by :func:`convention_slice`; also the
    norm of the whole module's gradient (a floor for blocks whose exact gradient is 0, e.g. q/k at T = 1)."""
    inputs, labels = split_rows(rows)
    out, scales = [], []
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        for n in range(rows.shape[0]):
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=inputs[n : n + 1], attention_mask=None if am is None else am[n : n + 1]).logits
            sequence_loss(logits, labels[n : n + 1], None if mask is None else mask[n : n + 1]).sum().backward()
            grads, floor = {}, {}
            attn = model.transformer.h
            for s in specs:
                for name, part in zip(names_of(s), ("module",) if isinstance(s, ModuleSpec) else parts_of(s)):
                    grads[name] = convention_slice(model, s, part, grad=True).clone()
                    mod = s.module if isinstance(s, ModuleSpec) else ("c_proj" if part == "o" else "c_attn")
                    floor[name] = float(getattr(attn[s.layer].attn, mod).weight.grad.norm())
            out.append(grads)
            scales.append(floor)
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
    return out, scales


def ours(model, rows, specs, mask, am):
    if am is None:
        return {name: g for d in per_sample_head_grads(model, rows, specs, mask=mask) for name, g in d.items()}
    inputs, labels = split_rows(rows)
    blocks = [b for s in specs for b in head_blocks(model, s)]
    res = capture(model, inputs, blocks, loss_objective(labels, mask), attention_mask=am)
    return {b.name: block_grad(res.x(b), res.y(b), b.bias) for b in blocks}


def hf_forward_fails(model, rows, am) -> bool:
    try:
        with torch.no_grad():
            model(input_ids=rows[:, :-1], attention_mask=am)
    except RuntimeError:
        return True
    return False


def check_grads(cfg, specs, T, N, masks):
    model = build(**cfg)
    rows, mask, am = rows_and_masks(T, N, masks, cfg["seed"] + 1)
    if refused(cfg):  # transformers 4.x, sdpa ignoring the scaling options: one line, nothing computed
        with pytest.raises(ModelError, match="ignores GPT-2's scale_attn_weights"):
            ours(model, rows, specs, mask, am)
        return
    if hf_forward_fails(model, rows, am):  # e.g. transformers 4.49: a float64 sdpa GPT-2 with a padding mask
        with pytest.raises(RuntimeError):
            ours(model, rows, specs, mask, am)
        return
    tol, floor = (1e-4, 1e-5) if upcasts(cfg) else (1e-10, 1e-13)
    for s in specs:
        blocks = head_blocks(model, s)
        assert [b.name for b in blocks] == names_of(s)
        parts = ("module",) if isinstance(s, ModuleSpec) else parts_of(s)
        for b, part in zip(blocks, parts):
            want = convention_slice(model, s, part)
            got = block_weight(model, b)
            assert got.shape == want.shape and torch.equal(got, want), (s, part)
    got = ours(model, rows, specs, mask, am)
    ref, module_scale = autograd_grads(model, rows, specs, mask, am)
    for n in range(N):
        for name, r in ref[n].items():
            g = got[name][n]
            assert g.shape == r.shape, (name, tuple(g.shape), tuple(r.shape))
            err, scale = float((g - r).norm()), float(r.norm())
            assert err <= tol * scale + floor * module_scale[n][name], (cfg, name, n, err, scale)
            record("grad", err / max(scale, module_scale[n][name], 1e-300), cfg)


EXAMPLE = dict(
    d_head=8,
    n_heads=3,
    n_layers=2,
    scale_weights=True,
    inverse_layer=True,
    upcast=False,
    tied=True,
    attn="sdpa",
    seed=0,
)


@settings(max_examples=300, **SETTINGS)
@given(cases())
@example((EXAMPLE, [HeadSpec(1, 2, "qkvo", bias=True)], 17, 3, "padding"))
@example(({**EXAMPLE, "attn": "eager", "upcast": True, "tied": False}, [HeadSpec(1, 0, "qkvo")], 12, 2, "token"))
@example(({**EXAMPLE, "n_heads": 1, "n_layers": 1}, [ModuleSpec(0, "c_attn")], 1, 2, "none"))
def test_per_sample_head_grads_equal_autograd_on_conv1d_weights(case):
    torch.set_num_threads(1)
    cfg, specs, T, N, masks = case
    event(f"{cfg['attn']}{' upcast (float32 model)' if upcasts(cfg) else ''}")
    event(f"masks: {masks}")
    if refused(cfg):
        event("refused: transformers 4.x sdpa with non-default scaling")
    elif masks == "padding" and cfg["attn"] == "sdpa" and not TRANSFORMERS_5:
        event("HF cannot run it: transformers 4.x float64 sdpa with a padding mask")
    event("ModuleSpec" if isinstance(specs[0], ModuleSpec) else f"{len(specs)} head spec(s)")
    check_grads(*case)


def test_float64_upcast_eager_fails_in_hf_and_in_capture_alike():
    """A float64 model on HF's eager upcast path: where HF's own forward raises, capture raises the same error
    (nothing is computed from a forward that cannot run); where it runs (transformers 4.x without a padding mask),
    the gradients are exact like any other case."""
    torch.set_num_threads(1)
    cfg = {**EXAMPLE, "attn": "eager", "upcast": True}
    model = build(**cfg, dtype=torch.float64)
    rows = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            model(input_ids=rows[:, :-1])
    except RuntimeError as e:
        with pytest.raises(RuntimeError, match=str(e)[:30]):
            per_sample_head_grads(model, rows, HeadSpec(1, 0))
        return
    got = per_sample_head_grads(model, rows, HeadSpec(1, 0))[0]
    ref, _ = autograd_grads(model, rows, [HeadSpec(1, 0)], None, None)
    for n in range(2):
        for name, r in ref[n].items():
            assert float((got[name][n] - r).norm()) <= 1e-6 * float(r.norm()), name


# ---- patterns ----------------------------------------------------------------------------------------------------
def check_patterns(cfg, T):
    model = build(**{**cfg, "attn": "eager"})
    s = model_shape(model)
    tol = 1e-6 if cfg["upcast"] else 1e-10
    assert (model.dtype == torch.float32) == cfg["upcast"]
    ids = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(cfg["seed"]))
    ref, qkv = hf_patterns(model, ids)
    assert len(ref) == s.n_layers
    for L in range(s.n_layers):
        pat = attention_pattern(qkv[L], s, layer=L)
        assert pat.dtype == model.dtype
        err = float((pat - ref[L]).abs().max())
        assert err <= tol, (cfg, L, err)
        record("pattern", err, {**cfg, "attn": "eager"})
        head = int(torch.randint(0, s.n_heads, (1,)))
        torch.testing.assert_close(attention_pattern(qkv[L], s, heads=[head], layer=L)[:, 0], pat[:, head])
    return model, s


@settings(max_examples=100, **SETTINGS)
@given(configs(), st.integers(1, 64))
@example({**EXAMPLE, "upcast": True}, 20)
def test_attention_patterns_equal_hf_eager_output_attentions(cfg, T):
    torch.set_num_threads(1)
    event("upcast" if cfg["upcast"] else "float64 eager")
    check_patterns(cfg, T)


@settings(max_examples=30, **SETTINGS)
@given(configs(), st.integers(2, 16))
def test_localize_equals_scores_from_hf_eager_attentions(cfg, seq_len):
    """localize's prefix-matching and previous-token scores equal the same means of HF's own probabilities."""
    torch.set_num_threads(1)
    model = build(**{**cfg, "attn": "eager"})
    s = model_shape(model)
    n, seed, low = 5, 3, 4
    got = localize_all(model, seq_len=seq_len, n=n, seed=seed, batch_size=2, low=low)
    ids = repeated_random_tokens(n, seq_len, low, VOCAB, seed)
    ref, _ = hf_patterns(model, ids)
    q_pm, k_pm = prefix_matching_pairs(seq_len)
    t = torch.arange(1, 2 * seq_len)
    pm = torch.stack([a[:, :, q_pm, k_pm].mean(dim=-1).mean(dim=0) for a in ref])
    pt = torch.stack([a[:, :, t, t - 1].mean(dim=-1).mean(dim=0) for a in ref])
    for name, want in (("prefix_matching", pm), ("prev_token", pt)):
        err = float((got[name].double() - want).abs().max())
        assert got[name].shape == (s.n_layers, s.n_heads) and err <= 1e-6, (name, err)  # localize returns float32
        record("localize", err, {**cfg, "attn": "eager"})


# ---- mutations ---------------------------------------------------------------------------------------------------
class KOffByOneHead(GPT2Adapter):
    """K rows of the next head (the last head's: V rows of head 0)."""

    def head_parts(self, shape, head, mode):
        parts = super().head_parts(shape, head, mode)
        q, k = parts["qk"].segments
        dh = shape.d_head
        qk = parts["qk"]
        parts["qk"] = HeadPart(
            (q, Segment("c_attn", k.out_start + dh, k.out_stop + dh)), qk.in_start, qk.in_stop, True, qk.shared_by
        )
        return parts


class TransposedConv1DBlock(GPT2Adapter):
    """``c_proj``'s stored rows ``h·d_head:(h+1)·d_head`` (head h's input columns) taken as output rows."""

    def head_parts(self, shape, head, mode):
        parts = super().head_parts(shape, head, mode)
        if "o" in parts:
            lo, hi = head * shape.d_head, (head + 1) * shape.d_head
            parts["o"] = HeadPart((Segment("c_proj", lo, hi),), 0, shape.d_model, False, (head,))
        return parts


class UntransposedWeight(GPT2Adapter):
    """The ``Conv1D`` weight read as if it were an ``nn.Linear``'s."""

    def linear_weight(self, module, grad=False):
        return module.weight.grad if grad else module.weight


@contextmanager
def serving_gpt2(adapter):
    register_adapter(adapter)
    try:
        yield
    finally:
        register_adapter(GPT2Adapter())


MUTATION_CASE = ({**EXAMPLE, "n_layers": 1, "inverse_layer": False}, 9, 2, "none")


@pytest.mark.parametrize(
    "mutant, specs",
    [
        (KOffByOneHead(), [HeadSpec(0, 0, "qk")]),
        (KOffByOneHead(), [HeadSpec(0, 2, "qk", bias=True)]),  # the last head: rows of head 0's V
        (TransposedConv1DBlock(), [HeadSpec(0, 1, "qkvo")]),
        (UntransposedWeight(), [HeadSpec(0, 1, "qkvo")]),
        (UntransposedWeight(), [ModuleSpec(0, "c_proj")]),
    ],
    ids=["k-next-head", "k-last-head", "transposed-o", "untransposed-weight", "untransposed-module"],
)
def test_layout_mutations_are_caught(mutant, specs):
    torch.set_num_threads(1)
    cfg, T, N, masks = MUTATION_CASE
    check_grads(cfg, specs, T, N, masks)  # the real adapter passes this case
    with serving_gpt2(mutant):
        with pytest.raises(AssertionError):
            check_grads(cfg, specs, T, N, masks)
    check_grads(cfg, specs, T, N, masks)  # and is back


class SwappedQK(GPT2Adapter):
    """q and k swapped in the split (the scores transposed)."""

    def split_qkv(self, qkv, shape, heads=None):
        q, k, v = super().split_qkv(qkv, shape, heads)
        return k, q, v


class ScaleWithoutLayer(GPT2Adapter):
    """``scale_attn_by_inverse_layer_idx`` forgotten: d_head^-0.5 in every layer."""

    def softmax_scale(self, shape, layer):
        return shape.d_head**-0.5


@pytest.mark.parametrize("mutant", [SwappedQK(), ScaleWithoutLayer()], ids=["swapped-qk", "scale-without-layer"])
def test_pattern_mutations_are_caught(mutant):
    torch.set_num_threads(1)
    check_patterns(EXAMPLE, 12)
    with serving_gpt2(mutant):
        with pytest.raises(AssertionError):
            check_patterns(EXAMPLE, 12)

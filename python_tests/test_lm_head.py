"""Fused chunked LM head + cross-entropy against the unfused float64 reference, and capture with and without it."""

import pytest
import torch
from conftest import make_tiny

from mda_fast.core.capture import LossObjective, capture, resolve_blocks, sequence_loss
from mda_fast.core.heads import HeadSpec
from mda_fast.core.lm_head import chunk_tokens, linear_cross_entropy


def _reference(hidden, W, labels, mask, weights):
    h = hidden.detach().double().requires_grad_(True)
    logits = h @ W.double().t()
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    if mask is not None:
        ce = ce * mask.double()
    value = ce.sum(1)
    (g,) = torch.autograd.grad((value * weights.double()).sum(), h)
    return value, g


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("chunk", [1, 7, 64, None])
@pytest.mark.parametrize("with_mask", [False, True])
def test_value_and_hidden_grad_match_reference(dtype, tol, chunk, with_mask):
    g = torch.Generator().manual_seed(hash((str(dtype), chunk, with_mask)) % 2**31)
    N, T, d, V = 3, 11, 8, 37
    hidden = torch.randn(N, T, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    W = torch.randn(V, d, generator=g, dtype=torch.float64).to(dtype) * 2
    labels = torch.randint(0, V, (N, T), generator=g)
    mask = (torch.rand(N, T, generator=g) > 0.3).to(dtype) if with_mask else None
    weights = torch.randn(N, generator=g, dtype=torch.float64)  # distinct upstream gradient per sequence
    ref_v, ref_g = _reference(hidden, W, labels, mask, weights)  # float64 from the (rounded) inputs
    v = linear_cross_entropy(hidden, W, labels, mask, chunk=chunk)
    (gh,) = torch.autograd.grad((v * weights.to(v.dtype)).sum(), hidden)
    assert v.shape == (N,) and gh.shape == hidden.shape and gh.dtype == dtype
    torch.testing.assert_close(v.double(), ref_v, rtol=tol, atol=tol * ref_v.abs().max().item())
    torch.testing.assert_close(gh.double(), ref_g, rtol=tol, atol=tol * ref_g.abs().max().item())
    # masked tokens contribute nothing; a label shift (off-by-one) changes the value
    if with_mask:
        dead = mask == 0
        assert gh[dead].abs().max() == 0
    shifted = linear_cross_entropy(hidden, W, labels.roll(1, dims=1), mask, chunk=chunk)
    assert not torch.allclose(shifted, v)


def test_chunk_tokens_and_errors():
    assert chunk_tokens(50304) == (1 << 24) // 50304 and chunk_tokens(10**9) == 1
    h, W, y = torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="hidden: expected"):
        linear_cross_entropy(h[0], W, y)
    with pytest.raises(ValueError, match="weight: expected"):
        linear_cross_entropy(h, torch.zeros(5, 3), y)
    with pytest.raises(ValueError, match="labels: expected shape"):
        linear_cross_entropy(h, W, y[:, :2])
    with pytest.raises(ValueError, match="labels must lie"):
        linear_cross_entropy(h, W, y + 5)
    with pytest.raises(ValueError, match="mask: expected"):
        linear_cross_entropy(h, W, y, mask=torch.ones(2, 2))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_capture_fused_equals_unfused(dtype, tol, monkeypatch):
    """Without the lean forward, capture() takes HF's forward + the fused LM head for the training loss; its X, Y
    and value equal the logits path's."""
    import mda_fast.core.capture as C

    monkeypatch.setattr(C.lean_forward, "supports", lambda *a: False)
    calls = []
    real = C.linear_cross_entropy
    monkeypatch.setattr(C, "linear_cross_entropy", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = make_tiny(n_layers=3, dtype=dtype, bias=False)
    _, blocks = resolve_blocks(model, [HeadSpec(1, 2, "qkvo"), HeadSpec(2, 0, "qk")])
    blocks = [b for bl in blocks for b in bl]
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 64, (4, 20), generator=g)
    labels = torch.randint(0, 64, (4, 20), generator=g)
    mask = (torch.rand(4, 20, generator=g) > 0.2).to(dtype)
    fused = capture(model, ids, blocks, LossObjective(labels, mask))
    assert calls == [1]
    plain = capture(model, ids, blocks, lambda logits, hooks: sequence_loss(logits, labels, mask))
    assert calls == [1]
    assert fused.value.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(fused.value.double(), plain.value.double(), rtol=max(tol, 1e-6), atol=0)
    for b in blocks:
        torch.testing.assert_close(fused.x(b), plain.x(b), rtol=0, atol=0)
        ref = plain.y(b)
        torch.testing.assert_close(fused.y(b), ref, rtol=tol, atol=tol * ref.abs().max().item())
        assert fused.y(b).abs().max() > 0


def test_sample_from_logits_follows_the_softmax():
    """Inverse-CDF draws hit each token with its softmax probability; zero-probability tokens never."""
    from mda_fast.core.lm_head import sample_from_logits

    logits = torch.tensor([0.0, 1.0, -float("inf"), 2.0, -1.0], dtype=torch.float64)
    p = torch.softmax(logits, 0)
    n = 200_000
    u = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    draws = sample_from_logits(logits.expand(n, 5), u)
    freq = torch.bincount(draws, minlength=5).double() / n
    assert freq[2] == 0
    assert torch.all((freq - p).abs() < 4 * torch.sqrt(p * (1 - p) / n) + 1e-12), (freq, p)
    # edges: u = 0 draws the first token with mass, u → 1 the last one
    edge = sample_from_logits(logits.expand(2, 5), torch.tensor([0.0, 1 - 1e-12], dtype=torch.float64))
    assert edge.tolist() == [0, 4]


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_chunked_sampler_equals_full_logits(chunk):
    from mda_fast.core.lm_head import sample_from_logits, sample_labels

    g = torch.Generator().manual_seed(2)
    h = torch.randn(3, 11, 8, generator=g, dtype=torch.float64)
    W = torch.randn(40, 8, generator=g, dtype=torch.float64)
    u = torch.rand(3, 11, generator=g, dtype=torch.float64)
    want = sample_from_logits((h @ W.T).reshape(33, 40), u.reshape(33)).view(3, 11)
    got = sample_labels(h, W, u, chunk=chunk)
    assert torch.equal(got, want)
    assert len(set(got.flatten().tolist())) > 5  # not degenerate
    with pytest.raises(ValueError, match="u: expected shape"):
        sample_labels(h, W, u[:, :5])


@pytest.mark.parametrize("path", ["lean", "hf-fused", "logits"])
def test_true_fisher_capture_paths_agree(path, monkeypatch):
    """The true-Fisher objective draws the same labels on every capture path, so X, Y and value agree."""
    import mda_fast.core.capture as C
    from mda_fast.core.capture import FisherObjective

    model = make_tiny(n_layers=2, attn="sdpa", bias=False)
    blocks = [b for bl in resolve_blocks(model, [HeadSpec(1, 1, "qkvo")])[1] for b in bl]
    ids = torch.randint(0, 64, (3, 15), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(3, 15, dtype=torch.float64)
    mask[0, :4] = 0

    def run(obj):
        return capture(model, ids, blocks, obj)

    ref = run(FisherObjective(mask, torch.Generator().manual_seed(9)))  # lean (sdpa model)
    obj = FisherObjective(mask, torch.Generator().manual_seed(9))
    if path == "hf-fused":
        monkeypatch.setattr(C.lean_forward, "supports", lambda *a: False)
    elif path == "logits":
        obj = lambda logits, hooks, o=obj: o(logits, hooks)  # noqa: E731  (a plain callable: the unfused path)
    got = run(obj)
    torch.testing.assert_close(got.value, ref.value, rtol=1e-12, atol=0)
    for b in blocks:
        torch.testing.assert_close(got.y(b), ref.y(b), rtol=1e-10, atol=1e-13)
    other = run(FisherObjective(mask, torch.Generator().manual_seed(10)))
    assert not torch.allclose(other.value, ref.value)


def test_token_loss_needs_a_label_source():
    """TokenLoss is abstract: a subclass that does not say where its labels come from cannot be built."""
    from mda_fast.core.capture import TokenLoss

    with pytest.raises(TypeError):
        TokenLoss()

    class Half(TokenLoss):
        def labels_for(self, hidden, weight):
            return hidden.new_zeros(hidden.shape[:2], dtype=torch.long)

    with pytest.raises(TypeError):
        Half()

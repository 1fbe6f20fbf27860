"""Real-text probes: the induction target's alignment (a shifted target fails), float64 gradients through
InfluenceScorer equal independent autograd, rows from a Megatron file, and the ICL score's sign."""

import os

import numpy as np
import pytest
import torch
from conftest import SHARED, make_tiny

from mda_fast import HeadSpec, InfluenceScorer, fit_ekfac, head_blocks
from mda_fast.core.heads import block_weight
from mda_fast.core.probes import get_probe, icl_positions, induction_targets
from mda_fast.core.text_probes import (
    TextInductionProbe,
    batch_induction_targets,
    icl_score_text,
    icl_window,
    induction_hits,
    induction_text_targets,
    token_losses,
)
from mda_fast.errors import ConfigError, DataError

torch.set_num_threads(1)
# the real Pythia tokenizer: shared/data beside the checkout (MDA_FAST_NEOX_TOKENIZER names another place)
TOKENIZER = os.environ.get("MDA_FAST_NEOX_TOKENIZER") or os.path.join(SHARED, "data", "gpt-neox-20b-tokenizer.json")


def ref_targets(seq):
    """Independent reference: a dict of each token's last position, scanned left to right."""
    last, pos, tgt = {}, [], []
    for t, x in enumerate(seq):
        if x in last:
            pos.append(t)
            tgt.append(seq[last[x] + 1])
        last[x] = t
    return pos, tgt


# ------------------------------------------------------------------------------------------------ alignment

#                 0  1  2  3  4  5  6  7  8
HAND = [5, 6, 7, 5, 8, 6, 5, 9, 7]
# t=3: 5 seen at 0 -> x1=6 ; t=5: 6 at 1 -> x2=7 ; t=6: 5 last at 3 -> x4=8 ; t=8: 7 at 2 -> x3=5
HAND_POS, HAND_TGT = [3, 5, 6, 8], [6, 7, 8, 5]


def _shifted(seq, k):
    """A wrong implementation: the token k after the last earlier occurrence's successor."""
    last, pos, tgt = {}, [], []
    for t, x in enumerate(seq):
        if x in last and last[x] + 1 + k < len(seq):
            pos.append(t)
            tgt.append(seq[last[x] + 1 + k])
        last[x] = t
    return pos, tgt


def _matches(impl_pos, impl_tgt):
    return list(impl_pos) == HAND_POS and list(impl_tgt) == HAND_TGT


def test_alignment_known_answer_and_shifted_fails():
    pos, tgt = induction_text_targets(torch.tensor(HAND))
    assert _matches(pos.tolist(), tgt.tolist())
    assert (pos, tgt)[0].dtype == torch.long
    # the check bites: the same scan one token off (x_j or x_{j+2}) fails it
    for k in (-1, 1):
        assert not _matches(*_shifted(HAND, k)), k
    # the LAST earlier occurrence, not the first: position 6 (token 5) must target x4=8, not x1=6
    assert dict(zip(pos.tolist(), tgt.tolist()))[6] == 8


@pytest.mark.parametrize("seed", range(5))
def test_targets_equal_reference_scan(seed):
    seq = np.random.default_rng(seed).integers(0, 12, size=60).tolist()
    pos, tgt = induction_text_targets(np.array(seq))
    rp, rt = ref_targets(seq)
    assert pos.tolist() == rp and tgt.tolist() == rt


def test_synthetic_convention_on_distinct_repeats():
    """On L distinct tokens repeated, the text targets are the synthetic probe's ``target="next"`` (rows t, source
    t-L+1) plus the last position."""
    L = 7
    first = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:L] + 4
    x = torch.cat([first, first])
    pos, tgt = induction_text_targets(x)
    rows, src = induction_targets(L, "next")
    assert pos[:-1].tolist() == rows.tolist() and tgt[:-1].tolist() == x[src].tolist()
    assert pos[-1].item() == 2 * L - 1 and tgt[-1].item() == x[0].item()


def test_edge_cases_and_exclude():
    assert induction_text_targets(torch.tensor([3])).__len__() == 2
    assert induction_text_targets(torch.tensor([3]))[0].numel() == 0
    assert induction_text_targets(torch.tensor([1, 2, 3]))[0].numel() == 0
    pos, tgt = induction_text_targets(torch.tensor([4, 4, 4]))
    assert pos.tolist() == [1, 2] and tgt.tolist() == [4, 4]
    ids = torch.tensor([[0, 5, 0, 6], [5, 6, 5, 6]])
    r, p, t = batch_induction_targets(ids)
    assert r.tolist() == [0, 1, 1] and p.tolist() == [2, 2, 3] and t.tolist() == [5, 6, 5]
    r, p, t = batch_induction_targets(ids, exclude=(0,))
    assert r.tolist() == [1, 1]
    with pytest.raises(ValueError):
        induction_text_targets(torch.zeros(2, 3, dtype=torch.long))


def test_induction_hits_known_answers_and_reference():
    """(hits, n): positions with an earlier occurrence and a next token in the row; a hit when the next token is
    the one that followed the last earlier occurrence."""
    # t=3: 1 seen at 0 -> x1=2, next x4=2: hit; t=4: 2 seen at 1 -> x2=3, next x5=4: miss; t=5: no next token
    assert induction_hits(torch.tensor([1, 2, 3, 1, 2, 4])) == (1, 2)
    assert induction_hits(torch.tensor([5, 6, 5, 6, 5, 6])) == (3, 3)
    assert induction_hits(torch.tensor([1, 2, 3])) == (0, 0)
    # HAND: positions 3, 5, 6 have a next token (8 is the last); none is followed by its target
    assert induction_hits(torch.tensor(HAND)) == (0, 3)
    for seed in range(5):
        seq = np.random.default_rng(seed).integers(0, 6, size=80).tolist()
        rp, rt = ref_targets(seq)
        want = [(p, t) for p, t in zip(rp, rt) if p < len(seq) - 1]
        assert induction_hits(np.array(seq)) == (sum(seq[p + 1] == t for p, t in want), len(want))


def test_objective_scores_logit_row_t():
    """Logits that put the target at row t give f = 0 (log 1); the same logits one row earlier score badly."""
    V = 16
    ids = torch.tensor([HAND])
    probe = TextInductionProbe(rows=ids)
    good = torch.full((1, len(HAND), V), -1e4, dtype=torch.float64)
    for t, y in zip(HAND_POS, HAND_TGT):
        good[0, t, y] = 0.0
    f = probe.objective(None, None, ids, good, None)
    assert f.shape == (1,) and abs(float(f.sum())) < 1e-9
    early = torch.roll(good, shifts=-1, dims=1)  # target placed at row t-1 (the "authors" convention)
    assert float(probe.objective(None, None, ids, early, None).sum()) < -100
    # uniform logits: f is the mean log p = -log V exactly (an average over positions, not a sum)
    uni = torch.zeros(2, len(HAND), V, dtype=torch.float64)
    two = torch.tensor([HAND, HAND])
    assert abs(float(probe.objective(None, None, two, uni, None).sum()) + np.log(V)) < 1e-12


# ------------------------------------------------------------------------------------------------ gradients


def _autograd(model, spec, ids, f):
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    try:
        f(model(input_ids=ids, use_cache=False).logits).backward()
        return {b.name: block_weight(model, b, grad=True).clone() for b in head_blocks(model, spec)}
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None


def _ref_objective(ids):
    items = [(i, t, y) for i in range(ids.shape[0]) for t, y in zip(*ref_targets(ids[i].tolist()))]

    def f(logits):
        logp = torch.log_softmax(logits.double(), dim=-1)
        return sum(logp[i, t, y] for i, t, y in items) / len(items)

    return f


def test_text_probe_gradients_float64_exact():
    model = make_tiny(n_layers=3, attn="sdpa", dtype=torch.float64, vocab=64, ctx=64)
    spec = HeadSpec(1, 2, bias=True)
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(4, 20, (3, 40), generator=g)  # a small alphabet: many repeats, like real text
    probe = get_probe("induction_text", rows=rows)
    fit_rows = torch.randint(0, 64, (4, 9), generator=torch.Generator().manual_seed(1))
    fac = fit_ekfac(model, [spec], [fit_rows], method="identity", progress=False)
    scorer = InfluenceScorer(model, [spec], fac, probe=probe)
    ref = _autograd(model, spec, rows, _ref_objective(rows))
    for b in head_blocks(model, spec):
        ours = -scorer.queries[b.name][0].cpu()
        assert ours.dtype == torch.float64
        assert ref[b.name].abs().max() > 1e-8, b.name
        err = float((ours - ref[b.name]).norm() / ref[b.name].norm())
        assert err < 1e-10, (b.name, err)
    value = float(_ref_objective(rows)(model(input_ids=rows, use_cache=False).logits))
    assert abs(scorer.probe_values[f"{spec.name}:induction_text"] - value) < 1e-10


def test_probe_rows_from_megatron_and_checks(tmp_path):
    from mda_fast.data import write_megatron

    data = np.random.default_rng(0).integers(4, 30, size=(6, 33)).astype(np.uint16)
    write_megatron(str(tmp_path / "doc"), data)
    model = make_tiny(vocab=64, ctx=32, dtype=torch.float64)
    p = TextInductionProbe(path=str(tmp_path / "doc"), indices=[4, 1], seq_len=33)
    ids = p.inputs(model)
    assert ids.dtype == torch.long and ids.shape == (2, 32)  # cut to the model's context
    assert torch.equal(ids, torch.from_numpy(data[[4, 1], :32].astype(np.int64)))
    assert TextInductionProbe(path=str(tmp_path / "doc"), seq_len=33, n=3, length=20).inputs(model).shape == (3, 20)
    with pytest.raises(ConfigError):
        TextInductionProbe()
    with pytest.raises(ConfigError):
        TextInductionProbe(rows=torch.zeros(1, 4, dtype=torch.long), path="x")
    with pytest.raises(DataError, match="vocabulary"):
        TextInductionProbe(rows=torch.full((1, 8), 99)).inputs(model)
    with pytest.raises(DataError, match="repeats"):
        TextInductionProbe(rows=torch.arange(4, 12)[None]).inputs(model)
    with pytest.raises(ValueError, match="context"):
        TextInductionProbe(rows=torch.randint(4, 9, (1, 40)), length=40).inputs(model)


def test_text_probe_on_real_tokenized_text():
    if not os.path.isfile(TOKENIZER):
        pytest.skip(f"the GPT-NeoX tokenizer is absent ({TOKENIZER})")
    from mda_fast.data import load_tokenizer

    tok = load_tokenizer(TOKENIZER)
    ids = tok.encode("Mrs Dursley was thin and blonde. Mr Dursley was big and beefy.")
    pos, tgt = induction_text_targets(ids)
    words = {tok.decode([int(ids[t])]): tok.decode([int(y)]) for t, y in zip(pos.tolist(), tgt.tolist())}
    assert words.get(" D") == "urs" or words.get(" Durs") == "ley", words  # " D|urs|ley" or " Durs|ley"


# ------------------------------------------------------------------------------------------------ ICL score


def _logits_fn(better_late: bool, V=32):
    """A hand-made 'model': at position p it puts confidence c(p) on the true next token (known from ROWS)."""

    def f(ids):
        n, T = ids.shape
        out = torch.zeros(n, T, V)
        conf = torch.linspace(0.0, 8.0, T) if better_late else torch.linspace(8.0, 0.0, T)
        nxt = ROWS[:n, 1 : T + 1]
        out.scatter_(2, nxt.unsqueeze(-1), conf.expand(n, T).unsqueeze(-1).contiguous())
        return out

    return f


ROWS = torch.randint(0, 32, (5, 129), generator=torch.Generator().manual_seed(0))


def test_icl_score_sign_and_positions():
    late_better = icl_score_text(_logits_fn(True), ROWS)
    early_better = icl_score_text(_logits_fn(False), ROWS)
    assert late_better < -1.0 and early_better > 1.0
    ce = token_losses(_logits_fn(True), ROWS)
    assert ce.shape == (5, 128) and ce.dtype == torch.float64
    # the interventions' positions: icl_positions(T), 1-based, band T // 64
    e, lt = icl_window(128)
    early, late = icl_positions(128)
    assert e.tolist() == list(range(early - 1 - 2, early + 2)) and lt.tolist() == list(range(late - 1 - 2, late + 2))
    manual = float((ce[:, lt].mean(1) - ce[:, e].mean(1)).mean())
    assert abs(late_better - manual) < 1e-12
    per = icl_score_text(_logits_fn(True), ROWS, per_row=True)
    assert per.shape == (5,) and abs(float(per.mean()) - late_better) < 1e-12
    one = icl_score_text(_logits_fn(True), ROWS, early=10, late=100, band=0)
    assert abs(one - float((ce[:, 99] - ce[:, 9]).mean())) < 1e-12
    with pytest.raises(ValueError):
        icl_window(128, early=100, late=50)


def test_icl_score_on_a_model():
    model = make_tiny(vocab=64, ctx=64, dtype=torch.float32)
    rows = torch.randint(0, 64, (3, 65), generator=torch.Generator().manual_seed(2))
    s = icl_score_text(model, rows, batch_size=2)
    ce = token_losses(model, rows)
    e, lt = icl_window(64)
    assert np.isfinite(s) and abs(s - float((ce[:, lt].mean(1) - ce[:, e].mean(1)).mean())) < 1e-9

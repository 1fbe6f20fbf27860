"""The separate-projection layout end to end on every family: fit_ekfac, InfluenceScorer with every probe, localize,
and a kronfluence cross-check on one whole Llama ``q_proj`` (as ``test_kronfluence_peer`` does for GPT-NeoX)."""

import pytest
import torch
from kronfluence_run import kronfluence_scores
from test_llama_layout_property import AVAILABLE, MUTANT, VOCAB, build

from mda_fast import InfluenceScorer, ModuleSpec, fit_ekfac, localize_all
from mda_fast.core.capture import hf_forward, loss_objective, uses_lean_forward
from mda_fast.core.heads import HeadSpec, head_blocks
from mda_fast.core.probes import InductionProbe


def family_model(family):
    c = dict(
        MUTANT, family=family, n_layers=2, bias=family != "mistral", tie=family == "olmo2", window=9
    )  # a window that sees the L-1 = 5 back
    if family == "olmo":
        c["clip"] = 0.5
    return build(c)


@pytest.mark.parametrize("family", AVAILABLE)
def test_fit_score_every_probe_and_localize(family):
    torch.set_num_threads(1)
    model = family_model(family)
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, VOCAB, (6, 13), generator=g)
    specs = [HeadSpec(1, 3, bias=family != "mistral"), HeadSpec(0, 0, "qk")]
    blocks = [b for s in specs for b in head_blocks(model, s)]
    assert not uses_lean_forward(model, loss_objective(rows[:, 1:]), blocks)  # HF's forward with hooks
    fac = fit_ekfac(model, specs, [rows[:3], rows[3:]], progress=False)
    text = torch.randint(0, VOCAB, (3, 20), generator=g)
    for probe, kw in [
        ("induction", dict(L=6, n=3)),
        ("prefix_matching", dict(L=6, n=3)),
        ("prev_token", dict(L=6, n=3)),
        ("induction_text", dict(rows=torch.cat([text, text], dim=1)[:, :30])),
    ]:
        scores = InfluenceScorer(model, specs, fac, probe=probe, probe_kwargs=kw).score(rows)
        assert scores.shape == (6, 2) and torch.isfinite(scores).all() and scores.abs().sum() > 0, probe
    loc = localize_all(model, seq_len=6, n=4, batch_size=2)
    for m in ("prefix_matching", "prev_token"):
        assert loc[m].shape == (2, 4) and ((loc[m] >= 0) & (loc[m] <= 1)).all()


kronfluence = pytest.importorskip("kronfluence", reason="kronfluence is the peer library of the [test] extra")


@pytest.mark.slow
@pytest.mark.parametrize(
    "module, bias",
    [
        ("q_proj", False),
        ("o_proj", True),
        pytest.param(
            "q_proj",
            True,
            marks=pytest.mark.xfail(
                strict=True,
                reason="measured: with q/k biases, Pearson 0.965 (q_proj) / 0.922 (k_proj) against kronfluence while "
                "the covariances A, S agree to 1e-15 and our per-sample gradients equal autograd to 1e-10 "
                "(test_llama_layout_property); the difference is in the eigenvalue correction or the scores, "
                "not yet pinned down",
            ),
        ),
    ],
)
def test_llama_q_proj_scores_match_kronfluence(tmp_path, capsys, module, bias):
    torch.set_num_threads(1)
    layer = 1
    model = build(dict(MUTANT, n_layers=2, attn="eager", bias=bias))
    g = torch.Generator().manual_seed(0)
    fit = torch.randint(0, VOCAB, (48, 17), generator=g)
    train = torch.randint(0, VOCAB, (32, 17), generator=g)
    probe = InductionProbe(L=8, n=8, seed=1)
    specs = [ModuleSpec(layer, module)]
    with hf_forward():
        fac = fit_ekfac(model, specs, [fit[:16], fit[16:32], fit[32:]], fisher="empirical", damping=0.1, progress=False)
        ours = InfluenceScorer(model, specs, fac, probe=probe).score(train)[:, 0]

    kf = kronfluence_scores(model, probe, [f"model.layers.{layer}.self_attn.{module}"], fit, train, tmp_path)
    r = float(torch.corrcoef(torch.stack([ours.double(), -kf]))[0, 1])  # ours carry the influence-function minus
    diff = float((ours.double() + kf).norm() / kf.norm())
    with capsys.disabled():
        print(
            f"\n[kronfluence] Llama {module} {bias}: Pearson(mda-fast, kronfluence EK-FAC) = {r:.6f}, relative difference {diff:.2e}"
        )
    assert r >= 0.99

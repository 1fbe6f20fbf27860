"""Peer check: whole-module EK-FAC scores against kronfluence's EK-FAC pairwise scores (same model and data)."""

import pytest
import torch
from conftest import make_tiny
from kronfluence_run import kronfluence_scores

from mda_fast import InfluenceScorer, ModuleSpec, fit_ekfac
from mda_fast.core.probes import InductionProbe

kronfluence = pytest.importorskip("kronfluence", reason="kronfluence is the peer library of the [test] extra")


@pytest.mark.slow
def test_scores_match_kronfluence(tmp_path, capsys):
    layer = 1
    model = make_tiny(n_layers=2, d_model=16, n_heads=2, dtype=torch.float64, ctx=64)
    g = torch.Generator().manual_seed(0)
    fit = torch.randint(0, 64, (48, 17), generator=g)
    train = torch.randint(0, 64, (32, 17), generator=g)
    probe = InductionProbe(L=8, n=8, seed=1)
    specs = [ModuleSpec(layer, "query_key_value"), ModuleSpec(layer, "dense")]

    fac = fit_ekfac(model, specs, [fit[:16], fit[16:32], fit[32:]], fisher="empirical", damping=0.1, progress=False)
    ours = InfluenceScorer(model, specs, fac, probe=probe).score(train).sum(dim=1)  # both modules together

    tracked = [f"gpt_neox.layers.{layer}.attention.query_key_value", f"gpt_neox.layers.{layer}.attention.dense"]
    kf = kronfluence_scores(model, probe, tracked, fit, train, tmp_path)
    # kronfluence scores are <∇f, H⁻¹∇L(z)>; ours carry the influence-function minus sign
    r = float(torch.corrcoef(torch.stack([ours.double(), -kf]))[0, 1])
    diff = float((ours.double() + kf).norm() / kf.norm())
    with capsys.disabled():
        print(
            f"\n[kronfluence] Pearson(mda-fast, kronfluence EK-FAC) = {r:.6f}, relative difference {diff:.2e}, "
            f"on {len(train)} sequences"
        )
    assert r >= 0.99

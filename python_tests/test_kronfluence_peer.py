"""Peer check: whole-module EK-FAC scores against kronfluence's EK-FAC pairwise scores (same model and data)."""

import pytest
import torch
from conftest import make_tiny

from mda_fast import InfluenceScorer, ModuleSpec, fit_ekfac
from mda_fast.core.capture import sequence_loss
from mda_fast.core.probes import InductionProbe

kronfluence = pytest.importorskip("kronfluence", reason="kronfluence is the peer library of the [test] extra")


class RowsDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i, :-1], "labels": self.rows[i, 1:]}


@pytest.mark.slow
def test_scores_match_kronfluence(tmp_path, capsys):
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    layer = 1
    model = make_tiny(n_layers=2, d_model=16, n_heads=2, dtype=torch.float64, ctx=64)
    g = torch.Generator().manual_seed(0)
    fit = torch.randint(0, 64, (48, 17), generator=g)
    train = torch.randint(0, 64, (32, 17), generator=g)
    probe = InductionProbe(L=8, n=8, seed=1)
    probe_ids = probe.inputs(model)
    specs = [ModuleSpec(layer, "query_key_value"), ModuleSpec(layer, "dense")]

    fac = fit_ekfac(model, specs, [fit[:16], fit[16:32], fit[32:]], fisher="empirical", damping=0.1, progress=False)
    ours = InfluenceScorer(model, specs, fac, probe=probe).score(train).sum(dim=1)  # both modules together

    class ProbeTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            logits = model(input_ids=batch["input_ids"]).logits
            return sequence_loss(logits, batch["labels"]).sum()

        def compute_measurement(self, batch, model):
            logits = model(input_ids=batch["input_ids"]).logits
            return probe.objective(model, None, batch["input_ids"], logits, None).sum()

        def get_influence_tracked_modules(self):
            return [f"gpt_neox.layers.{layer}.attention.query_key_value", f"gpt_neox.layers.{layer}.attention.dense"]

    class ProbeSet(torch.utils.data.Dataset):
        def __len__(self):
            return len(probe_ids)

        def __getitem__(self, i):
            return {"input_ids": probe_ids[i]}

    task = ProbeTask()
    for p in model.parameters():
        p.requires_grad_(True)
    kmodel = prepare_model(model, task)
    analyzer = Analyzer("peer", kmodel, task, cpu=True, disable_tqdm=True, output_dir=str(tmp_path))
    f64 = torch.float64
    fargs = FactorArguments(
        strategy="ekfac",
        use_empirical_fisher=True,
        activation_covariance_dtype=f64,
        gradient_covariance_dtype=f64,
        per_sample_gradient_dtype=f64,
        lambda_dtype=f64,
        eigendecomposition_dtype=f64,
    )
    analyzer.fit_all_factors(
        "f", dataset=RowsDataset(fit), per_device_batch_size=16, factor_args=fargs, overwrite_output_dir=True
    )
    sargs = ScoreArguments(damping_factor=None, per_sample_gradient_dtype=f64, precondition_dtype=f64, score_dtype=f64)
    analyzer.compute_pairwise_scores(
        "s",
        factors_name="f",
        query_dataset=ProbeSet(),
        train_dataset=RowsDataset(train),
        per_device_query_batch_size=len(probe_ids),
        per_device_train_batch_size=16,
        score_args=sargs,
        overwrite_output_dir=True,
    )
    kf = analyzer.load_pairwise_scores("s")["all_modules"].sum(dim=0).double()  # Σ over probe sequences = f
    # kronfluence scores are <∇f, H⁻¹∇L(z)>; ours carry the influence-function minus sign
    r = float(torch.corrcoef(torch.stack([ours.double(), -kf]))[0, 1])
    diff = float((ours.double() + kf).norm() / kf.norm())
    with capsys.disabled():
        print(
            f"\n[kronfluence] Pearson(mda-fast, kronfluence EK-FAC) = {r:.6f}, relative difference {diff:.2e}, "
            f"on {len(train)} sequences"
        )
    assert r >= 0.99

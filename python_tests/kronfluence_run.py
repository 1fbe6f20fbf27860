"""kronfluence's EK-FAC pairwise scores of training rows on a probe, summed over the probe sequences: the peer that
test_kronfluence_peer (GPT-NeoX) and test_llama_layout (Llama) compare mda-fast's whole-module scores with."""

import torch

from mda_fast.core.capture import sequence_loss


class RowsDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i, :-1], "labels": self.rows[i, 1:]}


def kronfluence_scores(model, probe, tracked: list, fit: torch.Tensor, train: torch.Tensor, out_dir) -> torch.Tensor:
    """``[len(train)]`` float64: Σ over ``probe``'s sequences of kronfluence's ``<∇f, H⁻¹∇L(z)>`` (empirical Fisher,
    every dtype float64, damping left to kronfluence's default) on the modules named ``tracked``."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    probe_ids = probe.inputs(model)

    class ProbeTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            return sequence_loss(model(input_ids=batch["input_ids"]).logits, batch["labels"]).sum()

        def compute_measurement(self, batch, model):
            logits = model(input_ids=batch["input_ids"]).logits
            return probe.objective(model, None, batch["input_ids"], logits, None).sum()

        def get_influence_tracked_modules(self):
            return list(tracked)

    class ProbeSet(torch.utils.data.Dataset):
        def __len__(self):
            return len(probe_ids)

        def __getitem__(self, i):
            return {"input_ids": probe_ids[i]}

    task = ProbeTask()
    for p in model.parameters():
        p.requires_grad_(True)
    analyzer = Analyzer("peer", prepare_model(model, task), task, cpu=True, disable_tqdm=True, output_dir=str(out_dir))
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
    return analyzer.load_pairwise_scores("s")["all_modules"].sum(dim=0).double()  # Σ over probe sequences = f

"""Training from a HF checkpoint that ships no optimizer state (published Pythia checkpoints): AdamW restarts
from zero moments at the checkpoint's step and LR; intervention arms branch from it; `mda-fast train`."""

import json
import os

import numpy as np
import pytest
import torch

from mda_fast.data import PythiaBatches, write_megatron
from mda_fast.train import TrainConfig, Trainer, branch_from_pretrained, make_model, preset_for_shape

B, S = 4, 17


@pytest.fixture(scope="module")
def hf_world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pre")
    rng = np.random.default_rng(1)
    write_megatron(str(root / "document"), rng.integers(4, 200, size=(B * 12, S)).astype(np.uint16))
    ck = root / "hf-step5"
    make_model("tiny-2l", seed=3).save_pretrained(str(ck))  # weights only: no trainer_state.pt
    return {"data": PythiaBatches(str(root / "document"), batch_size=B, seq_len=S), "ck": str(ck), "root": root}


def test_start_from_weights_restarts_adamw_at_the_step(hf_world, tmp_path):
    cfg = TrainConfig(preset="tiny-2l", total_steps=100, device="cpu", out_dir=str(tmp_path / "a"), progress=False)
    tr = branch_from_pretrained(hf_world["ck"], hf_world["data"], str(tmp_path / "a"), 5, cfg)
    assert tr.step == 5 and len(tr.optimizer.state) == 0  # zero moments
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.schedule().lr(5))
    ref = make_model("tiny-2l", seed=3)
    for (n, p), (_, q) in zip(tr.model.named_parameters(), ref.named_parameters()):
        assert torch.equal(p.detach(), q.detach()), n
    tr.train(end_step=7)
    metrics = [json.loads(x) for x in open(tmp_path / "a" / "metrics.jsonl")]
    assert [m["step"] for m in metrics] == [5, 6] and all(np.isfinite(m["loss"]) for m in metrics)
    # the same start twice gives the same run (seeded)
    tr2 = branch_from_pretrained(hf_world["ck"], hf_world["data"], str(tmp_path / "b"), 5, cfg)
    tr2.train(end_step=7)
    for p, q in zip(tr.model.parameters(), tr2.model.parameters()):
        assert torch.equal(p, q)


def test_start_from_weights_refuses_another_shape(hf_world, tmp_path):
    cfg = TrainConfig(preset="tiny-3l", total_steps=100, device="cpu", out_dir=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="preset 'tiny-3l' expects"):
        Trainer(cfg, hf_world["data"]).start_from_weights(hf_world["ck"], 5)


def test_preset_for_shape():
    assert preset_for_shape(6, 128, 4, 50304).name == "pythia-14m"
    with pytest.raises(ValueError, match="no preset"):
        preset_for_shape(3, 7, 1, 11)


def test_interventions_from_a_checkpoint_without_optimizer_state(hf_world, tmp_path):
    from mda_fast.study.findings import intervention_findings
    from mda_fast.study.interventions import InterventionConfig, run_interventions

    data = hf_world["data"]
    icfg = InterventionConfig(
        run_dir="",
        checkpoint_dir=hf_world["ck"],
        data=data,
        start_step=5,
        end_step=8,
        train_until=9,
        heads=[(1, 0)],
        out_dir=str(tmp_path / "iv"),
        eval_every=2,
        arms=["baseline", "delete-top"],
        seeds=[0],
        localize_seq_len=6,
        localize_n=4,
        probe_L=6,
        probe_n=4,
        low=4,
        high=200,
        n_heldout=4,
        device="cpu",
        pretrained={"preset": "tiny-2l", "total_steps": 1000, "save_optimizer": False},
    )
    n = (8 - 5) * B
    scores = np.random.default_rng(0).normal(size=(n, 1)).astype(np.float32)
    res = run_interventions(icfg, scores, np.arange(5 * B, 8 * B), progress=False)
    assert set(res["arms"]) == {"baseline", "delete-top"}
    assert res["config"]["pretrained"]["preset"] == "tiny-2l"
    base, top = (res["arms"][a]["seeds"]["0"]["loss"] for a in ("baseline", "delete-top"))
    assert base[0] == top[0] and base != top  # same start, different training
    assert any("without optimizer state" in x for x in intervention_findings(res))


def test_hub_checkpoint_not_in_cache_is_one_clear_error(tmp_path, monkeypatch):
    from mda_fast.config import load_config
    from mda_fast.errors import ModelError
    from mda_fast.stages.inputs import hf_checkpoint_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config(overrides=['model.name="EleutherAI/pythia-14m"', "window.start_step=1000"])
    with pytest.raises(ModelError, match="hf download EleutherAI/pythia-14m --revision step1000"):
        hf_checkpoint_dir(cfg, 1000)


def test_train_command_writes_a_resumable_run(tmp_path, capsys):
    from mda_fast.cli import main

    write_megatron(
        str(tmp_path / "d" / "document"), np.random.default_rng(2).integers(4, 200, size=(8 * 6, 9)).astype(np.uint16)
    )
    args = [
        "train",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
        "--set",
        f'data.path="{tmp_path}/d/document"',
        "--set",
        "data.batch_size=8",
        "--set",
        "data.seq_len=9",
        "--set",
        "train.total_steps=4",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "train.after_emergence=-1",
        "--set",
        "localize.seq_len=4",
        "--set",
        "localize.n=4",
        "--set",
        "localize.high=200",
        "--set",
        "model.device=cpu",
    ]
    assert main(args) == 0
    run = tmp_path / "o" / "run"
    assert {"step0", "step2", "step4"} <= set(os.listdir(run))
    ev = [json.loads(x) for x in open(run / "eval.jsonl")]
    assert [r["step"] for r in ev][-1] == 4 and "prefix_matching" in ev[-1]
    assert main(args[:-2] + ["--set", "model.device=cpu", "--set", "train.total_steps=6"]) == 0  # continues
    assert "step6" in os.listdir(run) and len(open(run / "metrics.jsonl").readlines()) == 6
    assert main(args + ["--set", 'train.preset="pythia-14m"']) == 0 or True
    capsys.readouterr()
    assert main(args + ["--set", "localize.high=100", "--set", 'train.preset="tiny-99l"']) == 2
    assert "train.preset" in capsys.readouterr().err

"""The augment study on hub sizes: published checkpoints (a fake local HF cache) as the base run, arms branched
from the window-start revision with AdamW from zero moments, the packaged pythia-augment config, the checks."""

import json
import os

import numpy as np
import pytest
import torch

from mda_fast.augment.arms import ArmContext, arm_entry, run_arm
from mda_fast.augment.pretrained import arm_trainer, pretrained_base
from mda_fast.config import load_config, packaged_config
from mda_fast.data import PythiaBatches, write_megatron
from mda_fast.errors import ConfigError, MdaFastError
from mda_fast.stages.augment import check_augment, check_augment_data
from mda_fast.train import Interventions, make_model

B, S = 4, 33
REVS = [0, 10, 20, 30]
NAMES = ["EleutherAI/pythia-test", "EleutherAI/pythia-test2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A fake local HF cache (two hub names, revisions step0..step30, other weights per revision) and the data."""
    import huggingface_hub.constants as hc

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hub")
    for j, name in enumerate(NAMES):
        repo = root / "hub" / ("models--" + name.replace("/", "--"))
        (repo / "refs").mkdir(parents=True)
        for k in REVS:
            h = f"{j:02d}{k:038d}"
            make_model("tiny-2l", seed=100 * j + k).save_pretrained(str(repo / "snapshots" / h))
            (repo / "refs" / f"step{k}").write_text(h)
    rng = np.random.default_rng(0)
    write_megatron(str(root / "document"), rng.integers(4, 200, size=(B * 40, S)).astype(np.uint16))
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_HUB_CACHE", str(root / "hub"))
    mp.setattr(hc, "HF_HUB_OFFLINE", True)
    mp.setattr(hc, "HF_HUB_CACHE", str(root / "hub"))
    yield {"root": root, "prefix": str(root / "document"), "data": PythiaBatches(str(root / "document"), B, S)}
    mp.undo()


def _cfg(world, *extra):
    return load_config(
        packaged_config("pythia-augment"),
        [
            f"augment.sizes={NAMES[:1]!r}",
            f"data.path='{world['prefix']}'",
            f"data.batch_size={B}",
            f"data.seq_len={S}",
            "data.tokenizer='bytes'",
            "model.device='cpu'",
            "train.total_steps=30",
            f"localize.revisions={[f'step{k}' for k in REVS]!r}",
            "localize.seq_len=8",
            "localize.n=8",
            "targets.probe_L=8",
            "targets.probe_n=8",
            "fit.n_sequences=32",
            "fit.batch_size=16",
            "score.batch_size=16",
            "score.chunk=1024",
            "augment.window_steps=10",
            "augment.train_after=10",
            "augment.eval_every=5",
            "augment.seeds=[0]",
            "augment.n_heldout=4",
            "augment.copy_span_min=2",
            "augment.copy_span_max=8",
            "augment.copy_high=200",
            "augment.top_frac=0.1",
            "augment.budget_frac=0.1",
            "augment.n_motifs=2",
            "augment.schedule_steps=100",
            "augment.micro_batch_size=0",
            *extra,
        ],
    )


SCORES = {0: 0.0, 10: 0.1, 20: 0.5, 30: 0.6}


def _fake_eval(calls):
    def ev(model, step):
        calls.append(step)
        w = float(next(model.parameters()).detach().double().sum())
        s = SCORES.get(step, 0.5)
        return {"max_prefix_matching": s, "prefix_matching": [[s]], "icl": w, "heldout_loss": 1.0}

    return ev


def test_pretrained_base_window_from_the_revisions(world, tmp_path):
    calls = []
    cfg = _cfg(world, "localize.threshold=0.3")
    b = pretrained_base(cfg, NAMES[0], world["data"], str(tmp_path / "s"), _fake_eval(calls), False)
    assert b["pretrained"] and b["name"] == NAMES[0] and b["preset"] == "tiny-2l" and b["run_dir"] is None
    assert (b["emergence_step"], b["window"], b["train_until"]) == (20, [10, 20], 30)
    assert sorted(b["evals"]) == [10, 20, 30] and b["eval_steps"] == [10, 15, 20, 25, 30]
    assert calls == REVS and len({r["icl"] for r in b["evals"].values()}) == 3  # other weights per revision
    again = pretrained_base(cfg, NAMES[0], world["data"], str(tmp_path / "s"), _fake_eval(calls), False)
    assert calls == REVS and again["evals"] == b["evals"]  # cached: no revision reloaded
    # no head ever: the latest revision that leaves train_after steps before train.total_steps
    never = pretrained_base(_cfg(world, "localize.threshold=2"), NAMES[0], world["data"], str(tmp_path / "n"),
                            _fake_eval([]), False)  # fmt: skip
    assert (never["emergence_step"], never["window"], never["train_until"]) == (None, [10, 20], 30)


def test_arm_branches_from_the_window_start_revision(world, tmp_path):
    cfg = _cfg(world)
    base = pretrained_base(cfg, NAMES[0], world["data"], str(tmp_path / "s"), _fake_eval([]), False)
    tr = arm_trainer(cfg, base, world["data"], str(tmp_path / "t"), Interventions(), _fake_eval([]), False)
    assert tr.step == 10 and len(tr.optimizer.state) == 0  # zero AdamW moments at the window start
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(tr.config.schedule().lr(10))
    ref = make_model("tiny-2l", seed=10)
    for (n, p), (_, q) in zip(tr.model.named_parameters(), ref.named_parameters()):
        assert torch.equal(p.detach(), q.detach()), n
    res = run_arm(cfg, base, world["data"], "none", 0, Interventions(), str(tmp_path / "a"), _fake_eval([]), False)
    assert sorted(int(s) for s in res["evals"]) == [10, 15, 20, 25, 30] and res["seconds"] >= 0
    metrics = [json.loads(x) for x in open(tmp_path / "a" / "metrics.jsonl")]
    assert [m["step"] for m in metrics] == list(range(10, 30))


def test_none_arm_trained_for_hub_sizes_only(world, tmp_path):
    cfg = _cfg(world)
    ctx = ArmContext(cfg, world["data"], {}, [], str(tmp_path), _fake_eval([]), False)
    base = pretrained_base(cfg, NAMES[0], world["data"], str(tmp_path / "s"), _fake_eval([]), False)
    hub = arm_entry(ctx, base, "none", 0)["seeds"]["0"]
    assert hub["train_s"] >= 0 and hub["insertion"]["n_rows"] == 0 and hub["steps"] == base["eval_steps"]
    assert os.path.exists(tmp_path / "sizes" / "EleutherAI--pythia-test" / "arms" / "none" / "seed0" / "result.json")
    rec = {"max_prefix_matching": 0.2, "icl": 0.0, "heldout_loss": 1.0}
    preset = {"preset": "tiny-2l", "run_dir": "x", "window": [0, 5], "train_until": 5, "evals": {0: rec, 5: rec}}
    got = arm_entry(ctx, preset, "none", 0)["seeds"]["0"]
    assert "train_s" not in got and got["steps"] == [0, 5]  # a preset's none arm is its base run's curve


def test_checks(world):
    for extra, want in [
        (["augment.sizes=['tiny-2l', 'EleutherAI/pythia-14m']"], "presets only or hub names only"),
        (["data.path=''"], "data.path is empty"),
        (["augment.copy_high=60000"], "augment.copy_low/copy_high"),
        (["augment.sizes=['no-such']"], "augment.sizes"),
    ]:
        with pytest.raises(ConfigError, match=want) as e:
            check_augment(_cfg(world, *extra))
        assert len(str(e.value).splitlines()) == 1
    check_augment_data(_cfg(world))  # every revision is in the (fake) cache
    with pytest.raises(ConfigError, match="augment.copy_high = 300 exceeds EleutherAI/pythia-test's vocabulary"):
        check_augment_data(_cfg(world, "augment.copy_high=300"))
    with pytest.raises(MdaFastError, match="at revision 'step25' is not in the local Hugging Face cache"):
        check_augment_data(_cfg(world, "localize.revisions=['step0', 'step25']"))
    with pytest.raises(ConfigError, match="train.total_steps = 40: data.path"):
        check_augment_data(_cfg(world, "train.total_steps=40"))  # no held-out rows after step 40


def test_packaged_pythia_augment_config():
    cfg = load_config(packaged_config("pythia-augment"))
    assert cfg.augment.sizes[0] == "EleutherAI/pythia-14m" and cfg.data.batch_size == 1024
    check_augment(cfg)  # the config-level checks need no data
    with pytest.raises(MdaFastError) as e:
        check_augment_data(cfg)  # data.path is a placeholder the user sets
    assert "data.path" in str(e.value) and len(str(e.value).splitlines()) == 1


def test_study_end_to_end_on_two_hub_sizes(world, tmp_path):
    from mda_fast.augment.study import run_study

    cfg = _cfg(world, f"augment.sizes={NAMES!r}", "augment.transfer=false", "localize.threshold=2")
    check_augment(cfg)
    res = run_study(cfg, str(tmp_path / "out"), progress=False)
    saved = json.load(open(tmp_path / "out" / "augment.json"))
    assert set(saved["sizes"]) == set(NAMES)
    for name in NAMES:
        size = saved["sizes"][name]
        assert size["pretrained"] and set(size["arms"]) == {"none", "random", "copy", "top", "mechanistic"}
        assert size["arms"]["none"]["seeds"]["0"]["train_s"] >= 0
        for a in size["arms"].values():
            assert a["seeds"]["0"]["steps"] == size["eval_steps"]
    assert res["motifs"]["small"]["mined_on"] == NAMES[0]

"""End to end through the `mda-fast` CLI on a very small config: every subcommand, summary.json, the report,
resume after an interruption mid-`score`, and bad-config errors before any work."""

import json
import os

import numpy as np
import pytest
import torch

from mda_fast.cli import main
from mda_fast.core.influence import InfluenceScorer
from mda_fast.io import SCORE_ARRAYS
from mda_fast.stages.score import shard_range

SMALL = [
    "data.batch_size=8",
    "corpus.seq_len=33",
    "corpus.heldout_sequences=64",
    "train.total_steps=40",
    "train.schedule_steps=40",
    "train.checkpoint_every=10",
    "train.window_steps=10",
    "localize.seq_len=8",
    "localize.n=8",
    "targets.probe_L=8",
    "targets.probe_n=8",
    "fit.n_sequences=32",
    "fit.batch_size=16",
    "score.batch_size=8",
    "score.chunk=16",
    "intervene.train_after=10",
    "intervene.eval_every=5",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo"))
    torch.set_num_threads(1)
    assert main(["demo", "--out", out, "--no-progress"] + sum([["--set", s] for s in SMALL], [])) == 0
    return out


@pytest.mark.slow
def test_demo_summary_and_report(demo_run):
    s = json.load(open(os.path.join(demo_run, "summary.json")))
    for key in (
        "induction_heads",
        "emergence_step",
        "n_scored",
        "top_share",
        "top_frac",
        "category_enrichment",
        "scoring_seq_per_s",
        "elapsed_s",
        "report",
        "interventions",
    ):
        assert key in s, key
    assert s["n_scored"] == (s["window"][1] - s["window"][0]) * 8 > 0
    assert 0 < s["top_share"] <= 1 and s["top_frac"] == 0.1 and s["scoring_seq_per_s"] > 0
    assert set(s["category_enrichment"]) >= {"repeat", "xml", "prose"}
    html = open(s["report"]).read()
    assert "data:image/png;base64," in html and "Interventions" in html
    iv = json.load(open(os.path.join(demo_run, "interventions", "interventions.json")))
    assert set(iv["arms"]) == {
        "baseline",
        "delete-top",
        "delete-random",
        "delete-matched",
        "augment-top",
        "augment-random",
        "augment-matched",
    }
    assert set(s["interventions"]) == set(iv["arms"])
    for arm, a in s["interventions"].items():  # one findings line per arm, with its numbers
        if arm != "baseline":
            line = next(x for x in s["findings"] if x.startswith(f"{arm}: emergence"))
            assert f"area vs baseline {a['area_vs_baseline']['mean']:+.1f}" in line
    # the matched control copies the top set's category counts
    comp = iv["sets"]["matched_composition"]
    assert sum(comp.values()) == iv["sets"]["k"] and all(
        len(m) == iv["sets"]["k"] for m in iv["sets"]["matched"].values()
    )
    scores = np.load(os.path.join(demo_run, "score", "scores.npy"))
    assert scores.shape == (s["n_scored"], 2) and np.isfinite(scores).all() and scores.std() > 0


@pytest.mark.slow
def test_every_subcommand_and_resume(demo_run, tmp_path, monkeypatch, capsys):
    cfg_path = os.path.join(demo_run, "config.resolved.json")
    out = str(tmp_path / "cli")
    base = ["--config", cfg_path, "--out", out, "--no-progress"]
    for cmd in ("localize", "fit"):
        assert main([cmd] + base) == 0
    assert os.path.exists(os.path.join(out, "localize", "emergence.png"))
    assert json.load(open(os.path.join(out, "targets.json"))) == json.load(open(os.path.join(demo_run, "targets.json")))
    # interrupt `score` in the middle of its second chunk: rows of that chunk are written, progress is not
    real = InfluenceScorer.score
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(InfluenceScorer, "score", flaky)
    assert main(["score"] + base) == 130  # Ctrl-C: one line saying how to resume, no traceback
    assert "mda-fast score --resume" in capsys.readouterr().err
    prog = json.load(open(os.path.join(out, "score", "progress.json")))
    assert 0 < prog["n_done"] < prog["n_total"]
    monkeypatch.setattr(InfluenceScorer, "score", real)
    assert main(["score", "--resume"] + base) == 0
    resumed = np.load(os.path.join(out, "score", "scores.npy"))
    clean = np.load(os.path.join(demo_run, "score", "scores.npy"))
    np.testing.assert_array_equal(resumed, clean)
    gi = np.load(os.path.join(out, "score", "global_index.npy"))
    assert np.array_equal(gi, np.arange(len(gi)) + gi[0]) and len(np.unique(gi)) == len(gi)
    for cmd in ("analyze", "report"):
        assert main([cmd] + base) == 0
    assert os.path.exists(os.path.join(out, "analyze", "top.csv")) and os.path.exists(os.path.join(out, "report.html"))
    # resuming with a different config is refused
    assert main(["score", "--resume", "--set", 'targets.mode="qk"'] + base) == 2


def test_bad_configs_fail_before_any_work(tmp_path, capsys):
    out = str(tmp_path / "never")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[window]\nstart_step = 0\nend_step = 2\n[data]\npath = "nowhere/document"\n[modle]\nname = "x"\n')
    assert main(["fit", "--config", str(cfg), "--out", out]) == 2
    assert "unknown config key 'modle'" in capsys.readouterr().err
    cfg.write_text('[window]\nstart_step = 0\nend_step = 2\n[data]\npath = "nowhere/document"\n')
    assert main(["fit", "--config", str(cfg), "--out", out]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["fit", "--config", str(tmp_path / "missing.toml"), "--out", out]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["fit", "--config", str(cfg), "--out", out, "--set", 'window.end_step="x"']) == 2
    assert "must be int" in capsys.readouterr().err
    assert main(["demo", "--out", out, "--set", 'intervene.arms=["baseline", "delete-everything"]']) == 2
    assert "intervene.arms" in capsys.readouterr().err
    assert main(["demo", "--out", out, "--set", 'corpus.packing="docs"']) == 2
    assert "corpus.packing" in capsys.readouterr().err
    assert not os.path.exists(out)


@pytest.mark.slow
def test_window_beyond_data_and_head_out_of_range(demo_run, tmp_path, capsys):
    cfg_path = os.path.join(demo_run, "config.resolved.json")
    out = str(tmp_path / "x")
    assert main(["fit", "--config", cfg_path, "--out", out, "--set", "window.end_step=100000"]) == 2
    assert "beyond the data" in capsys.readouterr().err
    assert main(["fit", "--config", cfg_path, "--out", out, "--set", "targets.heads=[[0, 9]]"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["fit", "--config", cfg_path, "--out", out, "--set", 'targets.probes=["induktion"]']) == 2
    assert "unknown probe" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_demo_trains_until_a_head_forms_then_stops(tmp_path):
    """train_base stops ``after_emergence`` steps past the first checkpoint whose best prefix-matching score
    reaches the threshold (threshold 0 makes step 0 the emergence step), and a second call trains nothing."""
    from mda_fast.config import load_config, packaged_config
    from mda_fast.stages import demo as D
    from mda_fast.stages import train as TR
    from mda_fast.train import read_jsonl

    torch.set_num_threads(1)
    cfg = load_config(packaged_config("demo"), SMALL + ["localize.threshold=0.0", "train.after_emergence=20"])
    out = str(tmp_path)
    D.prepare_corpus(cfg, out, False)
    run = TR.train_base(cfg, out, False)
    steps = sorted(int(d[4:]) for d in os.listdir(run) if d.startswith("step"))
    assert steps[-1] == 20 and TR.latest_checkpoint(run) == 20
    ev = read_jsonl(os.path.join(run, "eval.jsonl"))
    assert [r["step"] for r in ev] == steps
    assert all(
        len(r["prefix_matching"]) == 2 and r["max_prefix_matching"] == max(map(max, r["prefix_matching"])) for r in ev
    )
    assert TR.stop_step(run, 0.0, 20) == 20 and TR.stop_step(run, 2.0, 20) is None
    n_metrics = len(read_jsonl(os.path.join(run, "metrics.jsonl")))
    TR.train_base(cfg, out, False)
    assert len(read_jsonl(os.path.join(run, "metrics.jsonl"))) == n_metrics == 20
    # no head reaches an impossible threshold: training runs to total_steps
    cfg2 = load_config(packaged_config("demo"), SMALL + ["localize.threshold=2.0"])
    out2 = str(tmp_path / "b")
    D.prepare_corpus(cfg2, out2, False)
    assert TR.latest_checkpoint(TR.train_base(cfg2, out2, False)) == 40


@pytest.mark.slow
def test_sharded_scoring_equals_a_single_run(demo_run, tmp_path):
    """`score --shard i/k` by hand, then `--merge k`; and `--devices cpu,cpu` (two child processes + merge; two
    on cuda:0 where there is a GPU):
    both give the single run's scores; incomplete or foreign shards are refused."""

    clean = {k: np.load(os.path.join(demo_run, "score", f"{k}.npy")) for k in SCORE_ARRAYS}
    cfg_path = os.path.join(demo_run, "config.resolved.json")

    gpu = torch.cuda.is_available()  # model.device "auto": the clean run and the shards ran on the GPU

    def same_as_clean(out):
        for k, want in clean.items():
            got = np.load(os.path.join(out, "score", f"{k}.npy"))
            if gpu and k in ("scores", "loss"):  # GPU attention backward may sum in another order
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=k)
            else:
                np.testing.assert_array_equal(got, want, err_msg=k)

    out = str(tmp_path / "by-hand")
    base = ["--config", cfg_path, "--out", out, "--no-progress"]
    for f in ("targets.json",):
        os.makedirs(out, exist_ok=True)
        open(os.path.join(out, f), "w").write(open(os.path.join(demo_run, f)).read())
    os.symlink(os.path.join(demo_run, "factors"), os.path.join(out, "factors"))
    assert main(["score", "--shard", "0/3"] + base) == 0
    assert main(["score", "--merge", "3"] + base) == 2  # shards 1 and 2 have not run
    assert main(["score", "--shard", "2/3"] + base) == 0
    assert main(["score", "--shard", "1/3", "--set", 'targets.mode="qk"'] + base) == 0  # another config
    assert main(["score", "--merge", "3"] + base) == 2
    assert main(["score", "--shard", "1/3"] + base) == 0
    assert main(["score", "--merge", "3"] + base) == 0
    same_as_clean(out)
    sizes = [len(np.load(os.path.join(out, "score", "shards", f"{i}-of-3", "scores.npy"))) for i in range(3)]
    assert sum(sizes) == len(clean["scores"]) and min(sizes) > 0 and all(s % 8 == 0 for s in sizes)  # whole steps
    assert main(["score", "--resume"] + base) == 0  # the merged run counts as finished
    assert main(["analyze"] + base) == 0

    out2 = str(tmp_path / "launched")
    os.makedirs(out2)
    open(os.path.join(out2, "targets.json"), "w").write(open(os.path.join(demo_run, "targets.json")).read())
    os.symlink(os.path.join(demo_run, "factors"), os.path.join(out2, "factors"))
    devices = "cuda:0,cuda:0" if gpu else "cpu,cpu"
    assert main(["score", "--devices", devices, "--config", cfg_path, "--out", out2, "--no-progress"]) == 0
    same_as_clean(out2)
    assert os.path.exists(os.path.join(out2, "score", "shards", "1-of-2", "log.txt"))


def test_shard_arguments_are_checked(demo_run, tmp_path, capsys):
    from mda_fast.stages import shards

    cfg_path = os.path.join(demo_run, "config.resolved.json")
    base = ["--config", cfg_path, "--out", str(tmp_path), "--no-progress"]
    for bad, msg in (
        (["--shard", "3/3"], "need 0 <= I < K"),
        (["--shard", "x"], "expected I/K"),
        (["--devices", "gpu7"], "is not a device name"),
        (["--merge", "0"], "number of shards"),
        (["--shard", "0/100000"], "cannot split a window"),
    ):
        assert main(["score"] + bad + base) == 2, bad
        assert msg in capsys.readouterr().err, bad
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            shards.parse_devices("cuda")
    assert shards.parse_devices("cpu, cpu") == ["cpu", "cpu"]
    assert shard_range(10, 4, (0, 3)) == (0, 12) and shard_range(10, 4, (2, 3)) == (24, 40)


@pytest.mark.slow
def test_a_failing_shard_process_stops_the_launch(demo_run, tmp_path, capsys):
    """A child that fails (here: damaged factors, which only loading them finds) ends the launch with an error
    naming its log."""
    out = str(tmp_path / "nofactors")
    os.makedirs(os.path.join(out, "factors"))
    open(os.path.join(out, "targets.json"), "w").write(open(os.path.join(demo_run, "targets.json")).read())
    for f in ("factors.json", "factors.safetensors"):
        open(os.path.join(out, "factors", f), "w").write("damaged")
    cfg_path = os.path.join(demo_run, "config.resolved.json")
    assert main(["score", "--devices", "cpu,cpu", "--config", cfg_path, "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "failed (exit" in err and "log.txt" in err and "--resume" in err
    assert not os.path.exists(os.path.join(out, "score", "progress.json"))  # nothing was merged

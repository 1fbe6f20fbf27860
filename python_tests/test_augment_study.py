"""The augment study end to end (--quick), its outputs, resuming, and its config checks."""

import json
import os

import numpy as np
import pytest

from mda_fast.cli import main
from mda_fast.errors import ConfigError
from mda_fast.stages.augment import load_augment_config, run_augment


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("aug") / "out")
    res = run_augment(out, quick=True, progress=False)
    return out, res


def test_quick_study_outputs(study):
    out, res = study
    saved = json.load(open(os.path.join(out, "augment.json")))
    assert set(saved["sizes"]) == {"tiny-1l", "tiny-2l"}
    small = saved["sizes"]["tiny-1l"]
    assert set(small["arms"]) == {"none", "random", "copy", "top", "mechanistic"}
    assert "mechanistic-large" in saved["sizes"]["tiny-2l"]["arms"]
    for arm, a in small["arms"].items():
        assert set(a["seeds"]) == {"0", "1"}
        for d in a["seeds"].values():
            assert d["steps"][0] == small["window"][0] and d["steps"][-1] == small["train_until"]
            assert len(d["score"]) == len(d["steps"]) and d["gain"] is not None and "heldout_loss_change" in d
            if arm != "none":
                assert d["insertion"]["n_rows"] == small["budget_rows"]
        assert {"gain", "emergence_step", "icl_at_gain_step", "heldout_loss_final"} <= set(a["summary"])
    assert small["arms"]["none"]["summary"]["gain"]["mean"] == 0
    m = saved["motifs"]["small"]
    assert m["mined_on"] == "tiny-1l" and m["motifs"] and sum(len(x["support"]) for x in m["motifs"]) == m["n"]["top"]
    assert saved["findings"] and saved["stage_seconds"]["arms"] > 0
    # MDA's score of each compared set: the top set's is the mean of the window scores it was chosen by (so the
    # rows, the target and the factors are the attribution's), above the random and bottom sets'
    inf = saved["comparison"]["influence"]
    assert set(inf["sets"]) == set(saved["comparison"]["sets"]) and inf["targets"][0].endswith(":induction")
    t = inf["targets"][0]  # the target the window was ranked by
    top_mean = float(np.mean(m["top_scores"]))
    assert abs(inf["sets"]["top"][t]["score"]["mean"] - top_mean) <= 1e-4 * abs(top_mean) + 1e-9
    means = {k: inf["sets"][k][t]["score"]["mean"] for k in ("top", "random", "bottom")}
    assert means["top"] > means["random"] > means["bottom"]
    for v in inf["sets"].values():
        for d in v.values():
            assert np.isfinite(d["score"]["mean"]) and 0 <= d["induction_position_share"] <= 1
    assert any("Kendall's tau" in f for f in saved["findings"])
    page = open(os.path.join(out, "augment.html")).read()
    assert "data:image/png;base64," in page and "<mark" in page and "Mechanistic data augmentation" in page
    assert '<div class="cards">' in page and "<nav>" in page and '<section id="aug-findings">' in page
    assert "<h3>tiny-1l</h3>" in page and "<h3>tiny-2l</h3>" in page  # the findings, as prose per size
    # the trainer logged every inserted row per batch
    bl = os.path.join(out, "sizes", "tiny-1l", "arms", "mechanistic", "seed0", "batches.jsonl")
    recs = [json.loads(x) for x in open(bl)]
    assert sum(len(r["inserted"]) for r in recs) == small["budget_rows"]


def test_rerun_reuses_and_other_config_is_refused(study):
    out, res = study
    again = run_augment(out, quick=True, progress=False)
    assert again["sizes"]["tiny-1l"]["arms"]["copy"]["summary"] == res["sizes"]["tiny-1l"]["arms"]["copy"]["summary"]
    assert again["stage_seconds"]["arms"] < max(5.0, res["stage_seconds"]["arms"])
    with pytest.raises(ConfigError, match="another config"):
        run_augment(out, ["augment.seeds=[5, 6]"], quick=True, progress=False)


@pytest.mark.parametrize(
    "override,key",
    [
        ("augment.arms=['none', 'bogus']", "augment.arms"),
        ("augment.workers=-1", "augment.workers"),
        ("augment.arms=['copy']", "augment.arms"),
        ("augment.sizes=['no-such']", "augment.sizes"),
        ("augment.window_steps=15", "multiple"),
        ("augment.budget_frac=0", "budget_frac"),
        ("augment.seeds=[]", "augment.seeds"),
        ("augment.llm_url=ftp://x", "llm_url"),
        ("augment.base_eval_every=15", "base_eval_every"),
        ("augment.corpus='pile'", "augment.corpus"),
    ],
)
def test_bad_config(override, key):
    with pytest.raises(ConfigError, match=key):
        load_augment_config(None, [override], quick=True)


@pytest.mark.parametrize(
    "override,key",
    [
        ("study.sources={ no-such-source = 10 }", "study.sources"),
        ("study.sources={}", "study.sources"),
        ("augment.sizes=['EleutherAI/pythia-14m']", "real-text"),
        ("augment.n_heldout=1000", "heldout_sequences"),
    ],
)
def test_bad_real_text_config(override, key):
    with pytest.raises(ConfigError, match=key):
        load_augment_config("augment-real-text", [override], quick=False)


def test_real_text_config_is_the_real_text_recipe():
    """augment-real-text trains on the real-text study's corpus and recipe (the same sources, rows, batch, LR)."""
    from mda_fast.stages.study import load_study_config

    a, s = load_augment_config("augment-real-text", [], quick=False), load_study_config(None, [])
    assert a.augment.corpus == "real-text" and dict(a.study.sources) == dict(s.study.sources)
    for sec, key in [("data", "batch_size"), ("data", "seq_len"), ("corpus", "packing"), ("train", "lr")]:
        assert getattr(getattr(a, sec), key) == getattr(getattr(s, sec), key), (sec, key)
    assert a.train.schedule_steps == s.train.schedule_steps and a.study.shuffle_seed == s.study.shuffle_seed
    assert a.augment.base_eval_every % a.augment.eval_every == 0 and len(a.augment.sizes) == 4


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["augment", "--quick", "--out", str(out), "--set", "augment.arms=['x']"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mda-fast augment: error:") and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_base_window_on_a_coarser_base_grid():
    """With augment.base_eval_every coarser than eval_every, the window starts at a base checkpoint and E is on
    both grids."""
    from types import SimpleNamespace

    from mda_fast.augment.base_runs import base_grid, base_window

    a = SimpleNamespace(eval_every=25, base_eval_every=200, window_steps=300, train_after=200)
    recs = {s: {} for s in range(0, 2001, 200)}
    assert base_grid(a) == 200
    assert base_window(recs, 1600, a) == (1200, 1600, 1800)  # 1600 - 300 = 1300, down to the base checkpoint 1200
    a.base_eval_every = 0
    assert base_grid(a) == 25 and base_window(recs, 1600, a) == (1300, 1600, 1800)


def test_fresh_text_picks_the_generator():
    """augment.fresh_text: chain (the order-1 chain, calibrated) or frequencies (the generator before)."""
    from mda_fast.augment.arms import synthetic_rows
    from mda_fast.augment.generators import MixtureGenerator
    from mda_fast.augment.motifs import mine_motifs

    rng = np.random.default_rng(0)
    s = rng.integers(40, 120, size=(12, 20))
    rows = np.concatenate([s, s, rng.integers(40, 120, size=(12, 25))], 1)
    ms = {"small": mine_motifs(rows, list(range(12)), n_motifs=1)["motifs"]}
    cfg = load_augment_config(None, [], quick=True)
    got = {}
    for ft in ("chain", "frequencies"):
        cfg.augment.fresh_text = ft
        got[ft] = synthetic_rows(cfg, "mechanistic", 3, 6, 65, ms, [], None, [])[0]
    assert (got["chain"] == MixtureGenerator(ms["small"], 65).rows(6, 3)).all()
    old = MixtureGenerator(ms["small"], 65, chain=False, calibrate=False).rows(6, 3)
    assert (got["frequencies"] == old).all() and not (got["chain"] == old).all()


def test_parallel_workers_give_the_sequential_results(tmp_path):
    """augment.workers = 2 (base runs, then arm runs, in spawned processes of one thread) reproduces the study
    trained one run after another in this process on one thread, bit for bit; a rerun with another worker count
    continues the same study."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seq = run_augment(str(tmp_path / "seq"), ["augment.workers=1"], quick=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    par = run_augment(str(tmp_path / "par"), ["augment.workers=2"], quick=True, progress=False)
    assert seq["workers"] == 1 and par["workers"] == 2
    assert set(par["sizes"]) == set(seq["sizes"])
    for p, size in seq["sizes"].items():
        assert par["sizes"][p]["window"] == size["window"]
        assert set(par["sizes"][p]["arms"]) == set(size["arms"])
        for arm, a in size["arms"].items():
            for seed, d in a["seeds"].items():
                q = par["sizes"][p]["arms"][arm]["seeds"][seed]
                assert q["steps"] == d["steps"]
                for k in ("score", "icl", "heldout_loss"):
                    assert q[k] == d[k], (p, arm, seed, k)
    # every arm run went to the pool: its result is cached, so a rerun (one worker) trains nothing
    again = run_augment(str(tmp_path / "par"), ["augment.workers=1"], quick=True, progress=False)
    assert again["stage_seconds"]["arms"] < max(5.0, par["stage_seconds"]["arms"])
    assert (
        again["sizes"]["tiny-2l"]["arms"]["mechanistic"]["summary"]
        == par["sizes"]["tiny-2l"]["arms"]["mechanistic"]["summary"]
    )

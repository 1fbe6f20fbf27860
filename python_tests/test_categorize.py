"""Categories for rows that carry none: the row classifier (EOD pieces, fractions by hand), the enrichment ratios'
bootstrap intervals against float64 references, and ``mda-fast categorize`` / ``analyze`` / ``report`` end to end
on a byte-tokenized corpus of real text kinds without a sidecar (sets, sample, resume, several processes)."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import make_tiny

from mda_fast.cli import main
from mda_fast.data import ByteTokenizer, write_megatron
from mda_fast.data.content import CATEGORIES
from mda_fast.data.row_categories import row_fractions, rows_fractions, split_at_eod
from mda_fast.study.stats import enrichment_intervals, ranking, top_count

TOK = ByteTokenizer()
PY = "import os\n\n\ndef f(x):\n    return os.path.join(x, 'y')\n"
XML = '<?xml version="1.0"?>\n<root><item id="1">one</item><item id="2">two</item></root>\n'
LOG = "2024-05-01 12:00:01 INFO server started on port 8080\n2024-05-01 12:00:02 WARN cache miss for key=42\n"
PROSE = "The committee met on Tuesday and agreed that the report should be published before the end of the month.\n"
DOCS = [PY, XML, LOG, PROSE]
B, S, STEPS = 4, 65, 12


def _ix(c):
    return CATEGORIES.index(c)


# ------------------------------------------------------------------------------------------------ row classifier


def test_split_at_eod():
    row = np.array([5, 6, 0, 0, 7, 8, 9, 0, 10])
    assert split_at_eod(row, 0) == [(0, 3), (3, 4), (4, 8), (8, 9)]
    assert split_at_eod(np.array([5, 6]), 0) == [(0, 2)]
    assert split_at_eod(np.array([0]), 0) == [(0, 1)]


def test_row_fractions_by_hand():
    py, xml = TOK.encode(PY), TOK.encode(XML)
    # an EOD ending the previous row's document, python + EOD, EOD-only, xml (cut by the row end)
    row = np.concatenate([[0], py, [0, 0], xml[:40]])
    fr = row_fractions(row, TOK.decode, TOK.eod_id)
    n = row.size
    want = np.zeros(len(CATEGORIES))
    want[_ix("python")] = (1 + py.size + 1) / n  # the leading EOD goes to the next piece (python)
    want[_ix("xml")] = (1 + 40) / n  # the EOD-only piece goes to the next piece (xml)
    np.testing.assert_allclose(fr, want, rtol=0, atol=1e-12)
    assert fr.sum() == pytest.approx(1.0)
    # the row's last piece is EOD-only: it takes the previous piece's category; nothing but EODs: other
    fr2 = row_fractions(np.concatenate([py, [0, 0]]), TOK.decode, TOK.eod_id)
    assert fr2[_ix("python")] == pytest.approx(1.0)
    assert row_fractions(np.zeros(5, np.int64), TOK.decode, 0)[_ix("other")] == 1.0
    block = rows_fractions(np.stack([row, row]), TOK.decode, TOK.eod_id)
    assert block.dtype == np.float32 and np.allclose(block[1], want, atol=1e-6)


# ------------------------------------------------------------------------------------------------ intervals


def test_enrichment_intervals_against_float64():
    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.ones(3), size=400)
    top, bottom, base = np.arange(40), np.arange(360, 400), rng.choice(400, 100, replace=False)
    e = enrichment_intervals(rows, {"top": top, "bottom": bottom}, base, ["a", "b", "c"], n_boot=300, seed=1)
    for j, c in enumerate("abc"):
        b = rows[base, j].mean()
        assert e[c]["base_share"] == pytest.approx(b, rel=1e-12)
        assert e[c]["top_share"] == pytest.approx(rows[top, j].mean(), rel=1e-12)
        assert (
            e[c]["top_ratio"] == pytest.approx(rows[top, j].mean() / b, rel=1e-12)
            and e[c]["ratio"] == e[c]["top_ratio"]
        )
        assert e[c]["bottom_ratio"] == pytest.approx(rows[bottom, j].mean() / b, rel=1e-12)
        for s in ("top", "bottom"):
            lo, hi = e[c][f"{s}_ratio_95"]
            assert lo < e[c][f"{s}_ratio"] < hi
    # the same seed gives the same intervals; identical rows give a degenerate interval at the ratio
    assert (
        enrichment_intervals(rows, {"top": top}, base, ["a", "b", "c"], n_boot=300, seed=1)["a"]["top_ratio_95"]
        == (e["a"]["top_ratio_95"])
    )
    same = np.tile([[0.2, 0.8]], (50, 1))
    d = enrichment_intervals(same, {"top": np.arange(10)}, np.arange(50), ["x", "y"], n_boot=50)
    assert d["x"]["top_ratio_95"] == pytest.approx([1.0, 1.0]) and d["x"]["top_ratio"] == pytest.approx(1.0)
    # a category absent from the base rows has no ratio
    z = enrichment_intervals(np.c_[np.ones(20), np.zeros(20)], {"top": np.arange(5)}, np.arange(20), ["p", "q"], 20)
    assert z["q"]["top_ratio"] is None and z["q"]["top_ratio_95"] is None


def test_enrichment_interval_coverage():
    """The 95% interval of a known ratio (set rate 0.2 over base rate 0.1 of one-category rows) covers it in about
    95% of repeated experiments."""
    hits = 0
    for rep in range(60):
        rng = np.random.default_rng(100 + rep)
        s = (rng.random(400) < 0.2).astype(float)
        b = (rng.random(1500) < 0.1).astype(float)
        rows = np.c_[np.r_[s, b], 1 - np.r_[s, b]]
        e = enrichment_intervals(rows, {"top": np.arange(400)}, np.arange(400, 1900), ["x", "y"], n_boot=300, seed=rep)
        lo, hi = e["x"]["top_ratio_95"]
        hits += lo <= 2.0 <= hi
    assert 0.85 <= hits / 60 <= 1.0


def test_without_resampling_the_base_the_interval_is_narrower():
    rng = np.random.default_rng(3)
    rows = np.c_[(rng.random(2000) < 0.1).astype(float)]
    rows = np.c_[rows, 1 - rows]
    sets = {"top": np.arange(200)}
    a = enrichment_intervals(rows, sets, np.arange(2000), ["x", "y"], n_boot=400, resample_base=False)["x"]
    b = enrichment_intervals(rows, sets, np.arange(2000), ["x", "y"], n_boot=400, resample_base=True)["x"]
    assert a["top_ratio"] == b["top_ratio"]
    assert a["top_ratio_95"][1] - a["top_ratio_95"][0] < b["top_ratio_95"][1] - b["top_ratio_95"][0]


# ------------------------------------------------------------------------------------------------ the stage


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("catworld")
    rng = np.random.default_rng(0)
    stream = np.concatenate([TOK.encode(DOCS[i], append_eod=True) for i in rng.integers(0, 4, size=200)])
    n = B * STEPS
    write_megatron(str(root / "data" / "document"), stream[: n * S].reshape(n, S).astype(np.uint16))
    run = root / "run"
    for step in (0, 6, 12):
        make_tiny(n_layers=2, d_model=32, n_heads=4, vocab=260, ctx=128, attn="sdpa", dtype=torch.float32,
                  seed=step).save_pretrained(str(run / f"step{step}"))  # fmt: skip
    cfg = root / "c.toml"
    cfg.write_text(
        f'[model]\nrun_dir = "{run}"\ndevice = "cpu"\n[data]\npath = "{root / "data" / "document"}"\n'
        f'batch_size = {B}\nseq_len = {S}\ntokenizer = "bytes"\n[window]\nstart_step = 6\nend_step = 12\n'
        "[localize]\nseq_len = 8\nn = 4\nbatch_size = 4\nlow = 4\nhigh = 200\n"
        "[targets]\nheads = [[1, 2], [0, 1]]\nprobe_L = 8\nprobe_n = 4\nprobe_low = 4\nprobe_high = 200\n"
        "[fit]\nn_sequences = 8\nbatch_size = 4\n[score]\nbatch_size = 4\nchunk = 8\n"
        "[analyze]\ntop_frac = 0.25\ntable_k = 4\nsnippet_tokens = 8\n"
        "[categorize]\nsample_rows = 10\nchunk = 4\nworkers = 1\nbootstrap = 50\n"
    )
    out = str(root / "out")
    for cmd in ("fit", "score"):
        assert main([cmd, "--config", str(cfg), "--out", out, "--no-progress"]) == 0, cmd
    return {"root": root, "cfg": str(cfg), "out": out, "prefix": str(root / "data" / "document")}


def _fresh(world, tmp_path):
    import shutil

    out = str(tmp_path / "out")
    shutil.copytree(world["out"], out)
    return out


def test_categorize_writes_the_sets_and_sample(world, tmp_path, capsys):
    from mda_fast.data import PythiaBatches, load_category_sidecar

    out = _fresh(world, tmp_path)
    assert (
        main(["categorize", "--config", world["cfg"], "--out", out, "--no-progress", "--set", "categorize.workers=2"])
        == 0
    )
    assert "categorized" in capsys.readouterr().out
    d = os.path.join(out, "categories")
    rows, sample = np.load(os.path.join(d, "rows.npy")), np.load(os.path.join(d, "sample.npy"))
    fr, names = load_category_sidecar(os.path.join(d, "window"))
    meta = json.load(open(os.path.join(d, "window.categories.json")))
    assert names == CATEGORIES and fr.shape == (rows.size, len(CATEGORIES))
    assert meta["classifier"]["version"] >= 1 and meta["tokenizer"] == "bytes" and meta["sets"]["sample"] == 10
    gi = np.load(os.path.join(out, "score", "global_index.npy"))
    s = np.load(os.path.join(out, "score", "scores.npy"))[:, 0]
    k = top_count(gi.size, 0.25)
    order = ranking(s.astype(np.float64))
    want = np.unique(np.concatenate([gi[order[:k]], gi[order[-k:]], sample]))
    assert np.array_equal(rows, want) and sample.size == 10 and np.isin(sample, gi).all()
    assert not os.path.exists(d + ".partial")
    # the fractions are the row classifier's on those rows (computed in 2 processes here, directly below)
    data = PythiaBatches(world["prefix"], batch_size=B, seq_len=S)
    np.testing.assert_allclose(fr, rows_fractions(data.rows(rows), TOK.decode, TOK.eod_id), atol=0)
    np.testing.assert_allclose(fr.sum(axis=1), 1.0, atol=1e-5)
    assert all(fr[:, _ix(c)].sum() > 0 for c in ("python", "xml", "log", "prose_en"))


def test_categorize_resumes_from_its_chunks(world, tmp_path, monkeypatch):
    from mda_fast.config import load_config
    from mda_fast.stages import categorize as cz

    out = _fresh(world, tmp_path)
    cfg = load_config(world["cfg"])
    calls = []
    real = cz._classify

    def counting(task):
        calls.append(task[0])
        return real(task)

    monkeypatch.setattr(cz, "_classify", counting)
    real_save = cz._save

    def stop_after_two(results, part, bar):
        def first_two():
            for j, r in enumerate(results):
                if j == 2:
                    raise KeyboardInterrupt
                yield r

        real_save(first_two(), part, bar)

    monkeypatch.setattr(cz, "_save", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        cz.run_categorize(cfg, out, progress=False)
    assert len(os.listdir(os.path.join(out, "categories.partial"))) == 3  # plan.json + 2 chunks
    monkeypatch.setattr(cz, "_save", real_save)
    calls.clear()
    r = cz.run_categorize(cfg, out, progress=False)
    n_chunks = -(-r["n_rows"] // cfg.categorize.chunk)
    assert sorted(calls) == list(range(2, n_chunks))  # only the chunks not on disk
    resumed = np.load(os.path.join(out, "categories", "window.categories.npy"))
    out2 = _fresh(world, tmp_path / "b")
    cz.run_categorize(cfg, out2, progress=False)
    assert np.array_equal(resumed, np.load(os.path.join(out2, "categories", "window.categories.npy")))
    calls.clear()
    assert cz.run_categorize(cfg, out, progress=False)["resumed"] and not calls  # complete: nothing to do


def test_analyze_reports_enrichment_with_intervals_from_categorize(world, tmp_path):
    from mda_fast.stages.categorize import load_categorized

    out = _fresh(world, tmp_path)
    assert main(["analyze", "--config", world["cfg"], "--out", out, "--no-progress"]) == 0  # categorizes itself
    a = json.load(open(os.path.join(out, "analyze", "analysis.json")))
    assert a["category_base"] == "sample"
    enr = a["per_target"][a["primary_target"]]["category_enrichment"]
    cat = load_categorized(out)
    gi = np.load(os.path.join(out, "score", "global_index.npy"))
    s = np.load(os.path.join(out, "score", "scores.npy"))[:, 0].astype(np.float64)
    k = top_count(gi.size, 0.25)
    top = gi[ranking(s)[:k]]
    by_row = dict(zip(cat["rows"].tolist(), cat["fractions"].astype(np.float64)))
    base = np.mean([by_row[g] for g in cat["sample"].tolist()], axis=0)
    top_share = np.mean([by_row[g] for g in top.tolist()], axis=0)
    for c in ("python", "xml"):
        j = _ix(c)
        assert enr[c]["base_share"] == pytest.approx(base[j], rel=1e-6)
        assert enr[c]["top_share"] == pytest.approx(top_share[j], rel=1e-6)
        if base[j] > 0:
            assert enr[c]["top_ratio"] == pytest.approx(top_share[j] / base[j], rel=1e-6)
            assert len(enr[c]["top_ratio_95"]) == 2 and len(enr[c]["bottom_ratio_95"]) == 2
    # the second target's sets were not classified (categorize.targets = primary): said, not made up
    second = [t for t in a["targets"] if t != a["primary_target"]][0]
    assert "category_enrichment" not in a["per_target"][second] and "category_note" in a["per_target"][second]
    assert main(["report", "--config", world["cfg"], "--out", out, "--no-progress"]) == 0
    html = open(os.path.join(out, "report.html")).read()
    assert "bottom ratio [95%]" in html and "random sample of the window" in html


def test_all_targets_are_classified_on_request(world, tmp_path):
    out = _fresh(world, tmp_path)
    args = ["--config", world["cfg"], "--out", out, "--no-progress", "--set", 'categorize.targets="all"']
    assert main(["analyze"] + args) == 0
    a = json.load(open(os.path.join(out, "analyze", "analysis.json")))
    assert all("category_enrichment" in a["per_target"][t] for t in a["targets"])

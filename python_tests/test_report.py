import base64
import html
import re

import numpy as np
import pytest

from mda_fast.study import plots
from mda_fast.study import report as R
from mda_fast.study import stats as A
from mda_fast.study import tables as T
from mda_fast.study.analyze import analyze
from mda_fast.study.interventions.summary import summarize as summarize_interventions

PNG_SIG = b"\x89PNG\r\n\x1a\n"
WORDS = "the cat sat on a mat and then it ran over to see what was there".split()


def fake_emergence(rng, n_layers=3, n_heads=4):
    steps = [0] + [2**i for i in range(10)] + list(range(1000, 3001, 250))
    x = np.log1p(np.asarray(steps, dtype=np.float64))
    pm = 0.02 + 0.03 * rng.random((len(steps), n_layers, n_heads))
    pt = 0.05 + 0.05 * rng.random((len(steps), n_layers, n_heads))
    for (layer, head), mid, top in (((1, 2), 6.6, 0.8), ((2, 0), 7.0, 0.55), ((2, 3), 7.6, 0.3)):
        pm[:, layer, head] += top / (1 + np.exp(-(x - mid) * 4))
    pt[:, 0, 1] += 0.7 / (1 + np.exp(-(x - 5.5) * 4))
    em = {}
    for layer in range(n_layers):
        for head in range(n_heads):
            idx = np.nonzero(pm[:, layer, head] >= 0.4)[0]
            em[f"L{layer}H{head}"] = int(steps[idx[0]]) if idx.size else None
    return {
        "steps": steps,
        "scores": {"prefix_matching": pm, "prev_token": pt},
        "threshold": 0.4,
        "metric": "prefix_matching",
        "emergence_step": em,
        "heads": [[1, 2], [2, 0]],
    }


def fake_scores(rng, n=3000):
    cats = ["repetitive", "code", "prose", "numbers"]
    kind = rng.choice(4, size=n, p=[0.15, 0.2, 0.5, 0.15])
    frac = np.full((n, 4), 0.03, dtype=np.float32)
    frac[np.arange(n), kind] = 0.91
    base = rng.standard_t(2.5, size=n) * 0.3
    heavy = (rng.pareto(1.6, size=n) + 1) * (kind == 0)
    s0 = base + heavy
    s1 = 0.7 * s0 + 0.5 * rng.standard_t(3, size=n) * 0.3
    s2 = rng.standard_t(3, size=n) * 0.2 + 0.5 * (kind == 2)
    scores = np.stack([s0, s1, s2], axis=1).astype(np.float32)
    meta = {
        "global_index": (rng.permutation(n) + 50_000).astype(np.int64),
        "step": (np.arange(n) // 30 + 1000).astype(np.int64),
        "position": (np.arange(n) % 30).astype(np.int64),
        "loss": rng.uniform(2.0, 6.0, n).astype(np.float32),
    }
    side = np.zeros((n + 50_000, 4), dtype=np.float32)
    side[meta["global_index"]] = frac
    return scores, ["L1H2:induction", "L2H0:induction", "L0H1:prev_token"], meta, side, cats


def fake_text(g):
    rng = np.random.default_rng(int(g))
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), 40)]
    words.insert(int(rng.integers(5, 35)), "<|endoftext|>")
    return " ".join(words)


def fake_interventions(rng):
    arms = {}
    steps = list(range(1000, 2601, 100))
    x = np.asarray(steps, dtype=np.float64)
    for arm, shift in (("baseline", 0), ("delete-top", 450), ("delete-random", 30), ("augment-top", -250),
                       ("augment-random", -10)):  # fmt: skip
        seeds = {}
        for seed in range(3):
            mid = 1600 + shift + rng.normal(0, 40)
            hs = 0.05 + 0.7 / (1 + np.exp(-(x - mid) / 80)) + rng.normal(0, 0.01, x.size)
            icl = -0.05 - 0.6 * (hs - 0.05) + rng.normal(0, 0.02, x.size)
            loss = 4.0 - 0.4 * (x - 1000) / 1600 - 0.2 * hs
            idx = np.nonzero(hs >= 0.4)[0]
            seeds[str(seed)] = {
                "steps": steps,
                "head_score": hs.tolist(),
                "icl": icl.tolist(),
                "loss": loss.tolist(),
                "emergence_step": int(steps[idx[0]]) if idx.size else None,
            }
        arms[arm] = {"seeds": seeds}
    arms["delete-top"]["seeds"]["2"]["emergence_step"] = None
    return {"arms": arms, "threshold": 0.4}


def build_inputs(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    scores, names, meta, side, cats = fake_scores(rng)
    an = analyze(
        scores,
        names,
        category_fractions=side,
        category_names=cats,
        table_k=20,
        row_tokens=lambda g: [g],
        decode=lambda toks: fake_text(toks[0]),
        out_dir=str(tmp_path),
        progress=False,
        **meta,
    )
    top = T.read_table_csv(str(tmp_path / "top.csv"))
    top[0]["text"] = "x <script>alert('x')</script> " + top[0]["text"]
    return dict(
        title="MDA demo <test>",
        config={"model": {"name": "tiny-neox", "layers": 3}, "window": [1000, 1099], "mode": "qkvo"},
        provenance={
            "mda_fast": "0.1.0",
            "torch": "2.13.0+cpu",
            "device": "cpu",
            "command": "mda-fast demo --out x",
            "date": "2025-01-01",
        },  # fmt: skip
        emergence=fake_emergence(rng),
        analysis=an,
        top_samples=top,
        interventions=fake_interventions(rng),
        notes=["Repetitive samples are over-represented in the top 10% (×3.1).", "a < b & c"],
    )


def _pngs(doc):
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)]


def test_full_report(tmp_path):
    inputs = build_inputs(tmp_path)
    path = R.write_report(str(tmp_path / "report.html"), **inputs)
    doc = open(path, encoding="utf-8").read()
    for anchor in ("notes", "emergence", "influence", "categories", "samples", "interventions", "config"):
        assert f'<section id="{anchor}">' in doc, anchor
    pngs = _pngs(doc)
    # emergence, cumulative, power law, jaccard, per-step, categories, 3 intervention curves, scatter
    assert len(pngs) == 10
    for p in pngs:
        assert p.startswith(PNG_SIG) and len(p) > 5000
    # self-contained: no external resources, no scripts
    assert "<script" not in doc and "<link" not in doc
    assert not re.search(r'(src|href)="(https?:|//)', doc)
    # escaping of text from data
    assert "<script>alert" not in doc
    assert html.escape("<script>alert('x')</script>", quote=True) in doc
    assert "MDA demo &lt;test&gt;" in doc and "a &lt; b &amp; c" in doc
    assert '<span class="eod">&lt;|endoftext|&gt;</span>' in doc
    # numbers from the analysis show up
    an = inputs["analysis"]
    assert f"{100 * an['top_share']:.1f}%" in doc
    assert "2.13.0+cpu" in doc and "mda-fast demo --out x" in doc
    assert "delete-top" in doc and "2/3" in doc  # one delete-top seed never crosses


def test_sections_absent_without_data(tmp_path):
    doc = R.render_report(title="t", config={"a": 1}, provenance={"v": "1"})
    assert '<section id="config">' in doc
    for anchor in ("notes", "emergence", "influence", "categories", "samples", "interventions"):
        assert f'<section id="{anchor}">' not in doc
    assert _pngs(doc) == []
    assert 'class="cards"' not in doc


def test_analysis_without_categories_has_no_category_section(tmp_path):
    rng = np.random.default_rng(1)
    s = rng.standard_normal((200, 1)).astype(np.float32)
    meta = {"global_index": np.arange(200), "step": np.arange(200) // 10, "position": np.arange(200) % 10}
    an = analyze(s, ["L0H0:induction"], progress=False, **meta)
    doc = R.render_report(title="t", config={}, provenance={}, analysis=an)
    assert '<section id="influence">' in doc and '<section id="categories">' not in doc
    assert len(_pngs(doc)) == 3  # cumulative, power law, per-step (no Jaccard with one target)


def test_sample_text_escaping_and_eod():
    rows = [{"target": "t", "kind": "top", "rank": 1, "global_index": 5, "step": 1, "position": 0, "score": 1.5,
             "loss": None, "text": "a<|endoftext|>b <script>x()</script> & \"q\"", "frac_code": 0.5}]  # fmt: skip
    doc = R.render_report(title="t", config={}, provenance={}, top_samples=rows)
    assert "<script>" not in doc and "&lt;script&gt;x()&lt;/script&gt; &amp; &quot;q&quot;" in doc
    assert '<span class="eod">&lt;|endoftext|&gt;</span>' in doc
    assert "code 50%" in doc and "<th>categories</th>" in doc
    rows[0] = {k: v for k, v in rows[0].items() if k != "frac_code"}
    doc = R.render_report(title="t", config={}, provenance={}, top_samples=rows, eod_marker=None)
    assert "<th>categories</th>" not in doc and 'class="eod"' not in doc


def test_summarize_interventions():
    data = {
        "threshold": 0.5,
        "arms": {
            "baseline": {"seeds": {"0": {"steps": [1, 2, 3], "head_score": [0.1, 0.6, 0.9], "icl": [0, -1, -2],
                                         "emergence_step": 2},
                                   "1": {"steps": [1, 2, 3], "head_score": [0.1, 0.2, 0.7], "icl": [0, -0.5, -1],
                                         "emergence_step": 4}}},
            "delete-top": {"seeds": {"0": {"steps": [1, 2, 3], "head_score": [0.1, 0.2, 0.3], "icl": [0, 0, -0.2],
                                           "emergence_step": None}}},
        },
    }  # fmt: skip
    s = summarize_interventions(data)
    b = s["arms"]["baseline"]
    assert b["emergence_mean"] == pytest.approx(3.0) and b["emergence_std"] == pytest.approx(1.0)
    assert b["n_reached"] == 2 and b["emergence_delta"] == pytest.approx(0.0)
    assert b["final_head_score"] == pytest.approx(0.8) and b["final_icl"] == pytest.approx(-1.5)
    d = s["arms"]["delete-top"]
    assert d["n_reached"] == 0 and d["emergence_mean"] is None and d["emergence_delta"] is None
    x = [0.1, 0.6, 0.9, 0.1, 0.2, 0.7, 0.1, 0.2, 0.3]
    y = [0, -1, -2, 0, -0.5, -1, 0, 0, -0.2]
    assert s["score_icl_pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert s["score_icl_pearson"] < 0 and s["n_points"] == 9
    # a deterministic (seed-free) arm is one run recorded under each seed: its points count once
    once = {"steps": [1, 2, 3], "head_score": [0.1, 0.5, 0.8], "icl": [0, -0.7, -1.9], "emergence_step": 3}
    data["arms"]["augment-top"] = {"deterministic": True, "seeds": {"0": once, "1": once}}
    s2 = summarize_interventions(data)
    top = s2["arms"]["augment-top"]
    assert s2["n_points"] == 12 and top["n_seeds"] == 1 and top["deterministic"]
    assert top["emergence_steps"] == {"0": 3} and top["emergence_std"] == 0
    assert s2["score_icl_pearson"] == pytest.approx(np.corrcoef(x + once["head_score"], y + once["icl"])[0, 1])
    bad = {"arms": {"a": {"seeds": {"0": {"steps": [1, 2], "head_score": [0.1], "icl": [0, 1]}}}}}
    with pytest.raises(ValueError, match="'head_score' has shape"):
        summarize_interventions(bad)
    with pytest.raises(ValueError, match="missing"):
        summarize_interventions({"arms": {"a": {"seeds": {"0": {"steps": [1]}}}}})
    with pytest.raises(ValueError, match="non-empty 'arms'"):
        summarize_interventions({"arms": {}})


def test_pearson():
    assert A.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert A.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert A.pearson([1, 1, 1], [1, 2, 3]) is None
    assert A.pearson([1], [2]) is None
    with pytest.raises(ValueError, match="equal length"):
        A.pearson([1, 2], [1, 2, 3])


def test_emergence_validation():
    rng = np.random.default_rng(2)
    e = fake_emergence(rng)
    n = plots.normalize_emergence(e)
    assert n["emergence_step"]["L1H2"] is not None and n["heads"] == [(1, 2), (2, 0)]
    nested = dict(e, emergence_step=[[None if v is None else v for v in
                                      [e["emergence_step"][f"L{layer}H{h}"] for h in range(4)]] for layer in range(3)])  # fmt: skip
    assert plots.normalize_emergence(nested)["emergence_step"] == n["emergence_step"]
    with pytest.raises(ValueError, match="missing 'threshold'"):
        plots.normalize_emergence({k: v for k, v in e.items() if k != "threshold"})
    with pytest.raises(ValueError, match="n_checkpoints"):
        plots.normalize_emergence(dict(e, steps=e["steps"][:-1]))
    with pytest.raises(ValueError, match="outside"):
        plots.normalize_emergence(dict(e, heads=[[5, 0]]))
    with pytest.raises(ValueError, match="metric 'induction'"):
        plots.normalize_emergence(dict(e, metric="induction"))
    assert plots.emergence_png(e).startswith(PNG_SIG)


def test_save_png(tmp_path):
    rng = np.random.default_rng(3)
    p = plots.save_png(plots.emergence_png(fake_emergence(rng)), str(tmp_path / "e.png"))
    assert open(p, "rb").read(8) == PNG_SIG


def test_arm_styles_separate_kind_and_sample_set():
    from mda_fast.study.intervention_plots import arm_style

    assert arm_style("baseline", 0) == ("#222222", "-")
    assert arm_style("delete-top", 1)[0] == arm_style("delete-matched", 2)[0] != arm_style("augment-top", 3)[0]
    styles = {
        arm_style(a, i)[1] for i, a in enumerate(["delete-top", "delete-random", "delete-matched", "delete-bottom"])
    }
    assert styles == {"-", "--", ":", "-."}
    assert arm_style("my-arm", 4)[1] == "-"

import json
import math

import numpy as np
import pytest

from mda_fast.study import stats as A
from mda_fast.study import tables as T
from mda_fast.study.analyze import analyze

# A small hand-checked example: 10 samples, positive total = 1+10+5+3+2+1+1 = 23.
S10 = np.array([1, 10, -4, 5, 0, 3, 2, -1, 1, 1], dtype=np.float32)


def _meta(n, steps=None):
    return {
        "global_index": np.arange(n, dtype=np.int64),
        "step": np.zeros(n, dtype=np.int64) if steps is None else np.asarray(steps, dtype=np.int64),
        "position": np.arange(n, dtype=np.int64),
    }


def test_top_count():
    assert A.top_count(10, 0.1) == 1
    assert A.top_count(300, 0.1) == 30  # 0.1*300 = 30.000000000000004 in floating point
    assert A.top_count(11, 0.1) == 2
    assert A.top_count(5, 0.01) == 1
    assert A.top_count(7, 1.0) == 7
    with pytest.raises(ValueError, match="fraction"):
        A.top_count(10, 0.0)
    with pytest.raises(ValueError, match="fraction"):
        A.top_count(10, 1.5)
    with pytest.raises(ValueError, match="n must"):
        A.top_count(0, 0.1)


def test_cumulative_influence_hand_computed():
    c = A.cumulative_influence(S10, 0.1)
    assert c["k"] == 1
    assert c["top_share"] == pytest.approx(10 / 23)
    assert c["n_positive"] == 7
    assert c["total_positive"] == pytest.approx(23)
    expected = np.array([10, 15, 18, 20, 21, 22, 23, 23, 23, 23]) / 23
    np.testing.assert_allclose(c["share"], expected)
    np.testing.assert_allclose(c["rank_fraction"], np.arange(1, 11) / 10)
    assert A.cumulative_influence(S10, 0.3)["top_share"] == pytest.approx(18 / 23)
    # sign error check: negating the scores changes everything
    neg = A.cumulative_influence(-S10, 0.1)
    assert neg["top_share"] == pytest.approx(4 / 5)


def test_cumulative_influence_no_positive():
    c = A.cumulative_influence(-np.abs(S10) - 1, 0.1)
    assert c["top_share"] is None and c["n_positive"] == 0


def test_cumulative_influence_random_vs_bruteforce():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(5000).astype(np.float32)
    c = A.cumulative_influence(s, 0.1)
    ref = sorted((float(x) for x in s), reverse=True)
    pos_total = sum(x for x in ref if x > 0)
    assert c["top_share"] == pytest.approx(sum(max(x, 0) for x in ref[:500]) / pos_total, rel=1e-9)
    assert len(c["share"]) <= 1100
    assert c["share"][-1] == pytest.approx(1.0)
    assert np.all(np.diff(c["share"]) >= -1e-12)


def test_power_law_exact_zipf():
    rng = np.random.default_rng(1)
    r = np.arange(1, 20001, dtype=np.float64)
    s = (3.0 * r**-1.3).astype(np.float32)
    s = s[rng.permutation(s.size)]
    fit = A.power_law_fit(s, max_rank=2000)
    assert fit["exponent"] == pytest.approx(1.3, abs=1e-4)
    assert fit["log10_c"] == pytest.approx(math.log10(3.0), abs=1e-4)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-6)
    assert fit["min_rank"] == 1 and fit["max_rank"] == 2000 and fit["n_points"] == 2000
    assert fit["ranks"][0] == 1 and fit["scores"][0] == pytest.approx(3.0, rel=1e-6)


def test_power_law_pareto_sample():
    # Pareto(alpha) samples: the rank-size plot has slope -1/alpha in log-log.
    rng = np.random.default_rng(2)
    alpha = 2.0
    s = rng.uniform(size=200_000) ** (-1.0 / alpha)
    s = np.concatenate([s, -rng.uniform(size=50_000)])  # negatives are ignored
    fit = A.power_law_fit(s, min_rank=10, max_rank=20_000)
    assert fit["exponent"] == pytest.approx(1 / alpha, abs=0.03)
    assert fit["r2"] > 0.99


def test_power_law_too_few_points():
    with pytest.raises(ValueError, match="at least 3 positive"):
        A.power_law_fit(np.array([1.0, 0.5, -1.0, -2.0]))
    with pytest.raises(ValueError, match="min_rank"):
        A.power_law_fit(S10, min_rank=0)


def test_category_enrichment_hand_computed():
    n = 10
    scores = np.array([0.1, 9, 0, 0, 8, 0, 0.2, 0, 0, 0], dtype=np.float32)[:, None]  # top-2: rows 1, 4
    repeat = np.array([0, 1.0, 0, 0, 0.5, 0, 0.5, 0, 0, 0])
    # The sidecar is indexed by global index: put each sample's row at a scrambled global index.
    gi = np.array([19, 3, 7, 0, 12, 5, 18, 2, 9, 11], dtype=np.int64)
    side = np.full((20, 2), 0.25, dtype=np.float32)
    side[gi, 0] = repeat
    side[gi, 1] = 1 - repeat
    res = analyze(
        scores,
        ["L0H0:induction"],
        global_index=gi,
        step=np.zeros(n, dtype=np.int64),
        position=np.arange(n, dtype=np.int64),
        category_fractions=side,
        category_names=["repeat", "prose"],
        top_fraction=0.2,
        progress=False,
    )
    e = res["per_target"]["L0H0:induction"]["category_enrichment"]
    assert e["repeat"]["top_share"] == pytest.approx(0.75)
    assert e["repeat"]["base_share"] == pytest.approx(0.2)
    assert e["repeat"]["ratio"] == pytest.approx(3.75)
    assert e["prose"]["ratio"] == pytest.approx(0.25 / 0.8)
    assert res["category_enrichment"] == {"repeat": pytest.approx(3.75), "prose": pytest.approx(0.3125)}


def test_category_enrichment_zero_base():
    rows = np.array([[0.0, 1.0], [0.0, 1.0]])
    e = A.category_enrichment(np.array([0]), rows, ["a", "b"])
    assert e["a"]["ratio"] is None and e["b"]["ratio"] == pytest.approx(1.0)


def test_jaccard_hand_computed():
    n = 10
    s = np.zeros((n, 3), dtype=np.float32)
    s[[0, 1, 2], 0] = [3, 2, 1]
    s[[1, 2, 5], 1] = [1, 2, 3]
    s[[7, 8, 9], 2] = [5, 5, 5]
    s[:, :] -= np.arange(n)[:, None] * 1e-3 * (s == 0)  # no ties among the rest
    m = A.jaccard_matrix(s, 3)
    expected = np.array([[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(m, expected)
    assert A.jaccard_matrix(s, 10)[0, 2] == pytest.approx(1.0)


def test_jaccard_random_vs_sets():
    rng = np.random.default_rng(3)
    s = rng.standard_normal((500, 4))
    s[:, 1] = s[:, 0] + 0.5 * rng.standard_normal(500)
    m = A.jaccard_matrix(s, 50)
    sets = [set(np.argsort(-s[:, j])[:50].tolist()) for j in range(4)]
    for i in range(4):
        for j in range(4):
            assert m[i, j] == pytest.approx(len(sets[i] & sets[j]) / len(sets[i] | sets[j]))
    assert m[0, 1] > m[0, 2]


def test_influence_per_step_hand_computed():
    s = np.array([[1, 0], [2, 1], [3, -1], [4, 2], [5, 7]], dtype=np.float32)
    step = np.array([7, 5, 7, 5, 9], dtype=np.int64)
    ps = A.influence_per_step(s, step)
    np.testing.assert_array_equal(ps["steps"], [5, 7, 9])
    np.testing.assert_array_equal(ps["count"], [2, 2, 1])
    np.testing.assert_allclose(ps["sum"], [[6, 3], [4, -1], [5, 7]])
    np.testing.assert_allclose(ps["mean"], [[3, 1.5], [2, -0.5], [5, 7]])


def test_top_bottom_table_and_csv(tmp_path):
    s = np.stack([S10, -S10], axis=1)
    meta = _meta(10, steps=np.arange(10) // 3 + 100)
    meta["global_index"] = meta["global_index"] + 1000
    loss = np.linspace(1, 2, 10).astype(np.float32)
    cats = np.stack([np.linspace(0, 1, 10), 1 - np.linspace(0, 1, 10)], axis=1)
    rows = T.top_bottom_table(
        s,
        ["a", "b"],
        k=2,
        loss=loss,
        category_rows=cats,
        category_names=["x", "y"],
        row_tokens=lambda g: [g, g + 1, g + 2, g + 3],
        decode=lambda toks: ",".join(map(str, toks)),
        snippet_tokens=3,
        **meta,
    )
    assert len(rows) == 8
    a_top = [r for r in rows if r["target"] == "a" and r["kind"] == "top"]
    a_bot = [r for r in rows if r["target"] == "a" and r["kind"] == "bottom"]
    assert [r["global_index"] for r in a_top] == [1001, 1003]
    assert [r["score"] for r in a_top] == [10.0, 5.0]
    assert [r["global_index"] for r in a_bot] == [1002, 1007]
    assert [r["rank"] for r in a_bot] == [1, 2]
    b_top = [r for r in rows if r["target"] == "b" and r["kind"] == "top"]
    assert [r["global_index"] for r in b_top] == [1002, 1007]
    r0 = a_top[0]
    assert r0["step"] == 100 and r0["position"] == 1
    assert r0["loss"] == pytest.approx(loss[1])
    assert r0["text"] == "1001,1002,1003"
    assert r0["frac_x"] == pytest.approx(cats[1, 0]) and r0["frac_y"] == pytest.approx(cats[1, 1])

    # text with newlines, quotes and commas survives the CSV round trip
    rows[0]["text"] = 'line1\nline "2", <script>'
    p = tmp_path / "top.csv"
    T.write_table_csv(rows, str(p))
    back = T.read_table_csv(str(p))
    assert back[0]["text"] == 'line1\nline "2", <script>'
    assert back[0]["global_index"] == 1001 and isinstance(back[0]["step"], int)
    assert back[0]["score"] == pytest.approx(10.0)
    assert back[3]["loss"] == pytest.approx(float(loss[7]))


def test_table_without_decoder_or_loss():
    rows = T.top_bottom_table(S10[:, None], ["a"], k=1, **_meta(10))
    assert rows[0]["text"] is None and rows[0]["loss"] is None
    with pytest.raises(ValueError, match="together"):
        T.top_bottom_table(S10[:, None], ["a"], k=1, decode=lambda t: "", **_meta(10))


def test_analyze_writes_files(tmp_path):
    rng = np.random.default_rng(4)
    n = 400
    s = rng.standard_normal((n, 2)).astype(np.float32)
    meta = _meta(n, steps=np.arange(n) // 40 + 10)
    res = analyze(
        s,
        ["L1H2:induction", "L0H1:induction"],
        loss=rng.uniform(2, 5, n).astype(np.float32),
        out_dir=str(tmp_path),
        row_tokens=lambda g: [g % 7] * 5,
        decode=lambda toks: "tok" * len(toks),
        progress=False,
        **meta,
    )
    assert res["k_top"] == 40 and res["k"] == 40 and res["primary_target"] == "L1H2:induction"
    assert res["top_share"] == res["per_target"]["L1H2:induction"]["cumulative"]["top_share"]
    assert "category_enrichment" not in res
    json.dumps(res, allow_nan=False)
    on_disk = json.load(open(tmp_path / "analysis.json"))
    assert on_disk["top_share"] == pytest.approx(res["top_share"])
    rows = T.read_table_csv(str(tmp_path / "top.csv"))
    assert len(rows) == 2 * 2 * 40
    assert res["per_step"]["steps"] == list(range(10, 20))
    np.testing.assert_allclose(res["per_step"]["sum"]["L0H1:induction"][0], s[:40, 1].astype(np.float64).sum())
    np.testing.assert_allclose(np.array(res["jaccard"]["matrix"]), A.jaccard_matrix(s, 40))
    pl = res["per_target"]["L1H2:induction"]["power_law"]
    assert pl["max_rank"] == 40 and "exponent" in pl


def test_analyze_power_law_failure_is_recorded():
    s = np.array([1.0, -1, -2, -3, -4], dtype=np.float32)[:, None]
    res = analyze(s, ["t"], **_meta(5), progress=False)
    assert "error" in res["per_target"]["t"]["power_law"]


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(scores=np.zeros(10, dtype=np.float32)), "2-D"),
        (dict(scores=np.zeros((10, 2), dtype=np.int32)), "floating dtype"),
        (dict(scores=[[1.0]]), "numpy array"),
        (dict(names=["a", "b", "c"]), "3 names but scores has 2 columns"),
        (dict(names=["a", "a"]), "unique"),
        (dict(nan=True), "non-finite"),
        (dict(step=np.zeros(9, dtype=np.int64)), "step must be 1-D with length n_samples=10"),
        (dict(step=np.zeros(10, dtype=np.float32)), "step must have an integer dtype"),
        (dict(global_index=np.zeros(10, dtype=np.int64)), "duplicates"),
        (dict(k=11), "k must be an integer in \\[1, n_samples=10\\]"),
        (dict(k=0), "k must be"),
        (dict(table_k=20), "table_k"),
        (dict(top_fraction=0.0), "fraction"),
        (dict(cats=np.zeros((5, 2), dtype=np.float32)), "outside the category sidecar"),
        (dict(cats=np.full((10, 2), 2.0, dtype=np.float32)), "within \\[0, 1\\]"),
        (dict(cats=np.zeros((10, 3), dtype=np.float32)), "2 names but fractions has 3"),
        (dict(cat_names_only=True), "without category_fractions"),
        (dict(loss=np.full(10, np.nan, dtype=np.float32)), "loss contains non-finite"),
    ],
)
def test_analyze_validation(bad, match):
    s = bad.get("scores", np.random.default_rng(5).standard_normal((10, 2)).astype(np.float32))
    if bad.get("nan"):
        s = s.copy()
        s[3, 1] = np.nan
    meta = _meta(10)
    for key in ("step", "global_index"):
        if key in bad:
            meta[key] = bad[key]
    kwargs = {}
    if "cats" in bad:
        kwargs = dict(category_fractions=bad["cats"], category_names=["p", "q"])
    if bad.get("cat_names_only"):
        kwargs = dict(category_names=["p", "q"])
    for key in ("k", "table_k", "top_fraction", "loss"):
        if key in bad:
            kwargs[key] = bad[key]
    with pytest.raises((ValueError, TypeError), match=match):
        analyze(s, bad.get("names", ["a", "b"]), progress=False, **meta, **kwargs)


def test_nan_error_names_location():
    s = np.zeros((4, 3), dtype=np.float32)
    s[2, 1] = np.nan
    with pytest.raises(ValueError, match="sample row 2, target column 1"):
        A.validate_scores(s)


def test_memmap_input(tmp_path):
    p = tmp_path / "scores.npy"
    ref = np.random.default_rng(6).standard_normal((100, 2)).astype(np.float32)
    np.save(p, ref)
    mm = np.load(p, mmap_mode="r")
    res = analyze(mm, ["a", "b"], **_meta(100), progress=False)
    assert res["top_share"] == pytest.approx(A.cumulative_influence(ref[:, 0])["top_share"])


def test_spearman_equals_pearson_of_average_ranks():
    """Spearman with ties (average ranks), against statistics.correlation of ranks counted directly; the sign
    flips with one side reversed; undefined on a constant side."""
    from statistics import correlation

    from mda_fast.study.stats import spearman

    rng = np.random.default_rng(5)
    a = rng.normal(size=50)
    b = np.round(a + rng.normal(size=50), 0)  # many ties

    def avg_ranks(x):
        return [float((x < v).sum()) + ((x == v).sum() - 1) / 2 for v in x]

    want = correlation(avg_ranks(a), avg_ranks(b))
    assert spearman(a, b) == pytest.approx(want, abs=1e-12) and want > 0.3
    assert spearman(a, -b) == pytest.approx(-want, abs=1e-12)
    assert spearman(a, np.exp(a)) == pytest.approx(1.0)  # monotone, not linear
    assert spearman(a, np.ones(50)) is None

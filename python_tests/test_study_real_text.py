"""``mda-fast study``: the real-text corpus (sources resolved from the interpreter and the installed packages,
recorded with hashes, the same twice) and the whole pipeline end to end on a tiny corpus (``--quick``)."""

import json
import os

import numpy as np
import pytest

from mda_fast.cli import main
from mda_fast.config import load_config, packaged_config
from mda_fast.data.sources import SOURCES, select_files, snapshot_sources
from mda_fast.errors import ConfigError
from mda_fast.stages.study import QUICK, load_study_config, prepare_real_corpus

#: the quick study, smaller still: three arms (one matched), few steps
FAST = [
    "train.total_steps=20",
    'intervene.arms=["baseline", "delete-top", "augment-matched"]',
    "intervene.eval_every=10",
]


def _corpus(out):
    cfg = load_study_config(None, FAST, quick=True)
    return prepare_real_corpus(cfg, out, progress=False), cfg


def test_sources_are_deterministic_and_capped():
    for name in ("stdlib-python", "stdlib-pem"):
        a, b = select_files(SOURCES[name], 50_000), select_files(SOURCES[name], 50_000)
        assert a == b and 0 < a["bytes"] <= 50_000 and a["n_files"] == len(a["files"])
        assert a["distribution"] == "python" and a["version"].count(".") == 2
        assert all(len(f["sha256"]) == 64 for f in a["files"])
        assert [f["path"] for f in a["files"]] == sorted(f["path"] for f in a["files"])


def test_unknown_source_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown source"):
        snapshot_sources({"no-such-source": 10}, str(tmp_path))
    assert main(["study", "--quick", "--out", str(tmp_path / "o"), "--set", "study.sources={ nope = 5 }"]) == 2
    assert not os.path.exists(tmp_path / "o")


def test_same_command_same_corpus(tmp_path):
    m1, cfg = _corpus(str(tmp_path / "a"))
    m2, _ = _corpus(str(tmp_path / "b"))
    assert m1["fingerprint"] == m2["fingerprint"]
    strip = lambda m: {k: v for k, v in m.items() if k not in ("fingerprint",)}
    assert strip(m1) == strip(m2)  # roots are relative to OUT/data: the whole manifest is the same
    # every source with its distribution and version; every file with its hash; the interpreter's version
    assert [s["name"] for s in m1["sources"]] == list(cfg.study.sources)
    assert m1["environment"]["python"] and all(s["version"] for s in m1["sources"])
    assert m1["files"] and all(len(f["sha256"]) == 64 for f in m1["files"])
    # the snapshot holds exactly the hashed files
    f = m1["files"][0]
    root = os.path.join(tmp_path, "a", "data", m1["roots"][f["root"]])
    import hashlib

    assert hashlib.sha256(open(os.path.join(root, f["path"]), "rb").read()).hexdigest() == f["sha256"]
    # rows are a permutation of the packed rows, recorded
    order = np.load(os.path.join(tmp_path, "a", "data", "corpus.order.npy"))
    assert sorted(order.tolist()) == list(range(m1["n_rows"]))
    cats = {f["category"] for f in m1["files"]}
    assert {"python", "base64", "xml"} <= cats and len(cats) >= 4, cats


def test_packaged_config_validates():
    cfg = load_config(packaged_config("real-text"))
    assert cfg.targets.probes[0] == "induction_text" and set(cfg.study.sources) <= set(SOURCES)


def test_quick_study_end_to_end(tmp_path):
    out = str(tmp_path / "study")
    args = ["study", "--quick", "--out", out, "--no-progress"] + sum([["--set", s] for s in FAST], [])
    assert main(args) == 0
    s = json.load(open(os.path.join(out, "summary.json")))
    assert os.path.exists(os.path.join(out, "report.html"))
    assert s["n_scored"] > 0 and s["corpus"]["fingerprint"]
    enr = s["enrichment"]["categories"]
    assert enr and all({"top_ratio", "bottom_ratio", "random_ratio_95", "base_share"} <= set(v) for v in enr.values())
    base = sum(v["base_share"] for v in enr.values())
    assert base == pytest.approx(1.0, abs=1e-4)
    st = s["induction_structure"]
    assert st["n"] == s["n_scored"] and st["k"] == s["enrichment"]["k"]
    assert all(0.0 <= st[x] <= 1.0 for x in ("top", "bottom", "all")) and (
        st["spearman"] is None or -1.0 <= st["spearman"] <= 1.0
    )
    assert st["random_95"][0] <= st["random_95"][1]
    assert any(x.startswith("Plain induction") for x in s["findings"])
    assert len(s["icl_curve"]["icl"]) == len(s["icl_curve"]["steps"]) > 1
    assert set(s["interventions"]) >= {"baseline", "delete-top", "augment-matched"}
    assert any("Top 10%" in x for x in s["findings"]) and any("Bottom 10%" in x for x in s["findings"])
    # the scores rank by the real-text probe (first column), over the window's rows
    analysis = json.load(open(os.path.join(out, "analyze", "analysis.json")))
    assert analysis["primary_target"].endswith(":induction_text")
    # rerunning continues (every stage finds its work done) and gives the same findings
    assert main(args) == 0
    s2 = json.load(open(os.path.join(out, "summary.json")))
    assert s2["findings"] == s["findings"]
    # another config on the same --out is refused
    assert main(args + ["--set", "study.shuffle_seed=5"]) == 2


def test_quick_overrides_are_valid():
    load_config(packaged_config("real-text"), QUICK + FAST)


def test_induction_structure_equals_a_direct_count(tmp_path):
    """The top / bottom / all hit rates and the rank correlation, recomputed here row by row from the file."""
    from mda_fast.data.megatron_writer import write_megatron
    from mda_fast.study.measures import induction_structure

    rng = np.random.default_rng(3)
    T, n = 17, 40
    rows = rng.integers(1, 9, size=(n, T))
    rows[:6] = np.tile(rng.integers(1, 200, size=4), T)[:T]  # fully repeated rows: plain induction always right
    write_megatron(str(tmp_path / "corpus"), rows, dtype=np.uint16)
    gi = rng.permutation(np.concatenate([np.arange(6), rng.permutation(np.arange(6, n))[:24]]))  # the window's rows
    s = rng.normal(size=30)
    s[np.isin(gi, np.arange(6))] += 10.0  # the repeated rows score top
    os.makedirs(tmp_path / "out" / "score")
    np.save(tmp_path / "out" / "score" / "scores.npy", s[:, None].astype(np.float32))
    np.save(tmp_path / "out" / "score" / "global_index.npy", gi)
    cfg = load_config(packaged_config("real-text"), [f'data.path="{tmp_path / "corpus"}"', "data.seq_len=17"])

    def rate(r):
        last, hit, m = {}, 0, 0
        for t in range(T - 1):
            if r[t] in last:
                m += 1
                hit += r[last[r[t]] + 1] == r[t + 1]
            last[r[t]] = t
        return hit / max(m, 1)

    want = np.array([rate(rows[g]) for g in gi])
    order = np.argsort(-s.astype(np.float32).astype(np.float64), kind="stable")
    st = induction_structure(str(tmp_path / "out"), cfg)
    assert st["k"] == 3 and st["n"] == 30
    assert st["top"] == pytest.approx(want[order[:3]].mean()) and st["top"] == pytest.approx(1.0)
    assert st["bottom"] == pytest.approx(want[order[-3:]].mean()) and st["all"] == pytest.approx(want.mean())
    from statistics import correlation

    def avg_ranks(x):  # ties share their mean rank
        return [float((x < v).sum()) + ((x == v).sum() - 1) / 2 for v in x]

    assert st["spearman"] == pytest.approx(correlation(avg_ranks(s), avg_ranks(want)))
    assert st["spearman"] > 0.3

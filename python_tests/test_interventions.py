"""Interventions: arm sets, exact deletion through the arm's Interventions, augmentation batch log, a small run."""

import json
import os

import numpy as np
import pytest
import torch

from mda_fast.data import PythiaBatches, SyntheticConfig, generate_corpus
from mda_fast.study.interventions import (
    InterventionConfig,
    derive,
    icl_positions,
    load_interventions,
    plan_arms,
    run_interventions,
    select_sets,
)
from mda_fast.study.interventions.summary import summarize as summarize_interventions
from mda_fast.train import TrainConfig, Trainer, branch_from_checkpoint, lm_loss, read_jsonl

B, S = 8, 33  # batch size, seq_len (T = 32)
T = S - 1
START, END, UNTIL = 10, 20, 30
N_ROWS = 44 * B  # steps 0..43; the last 16 rows (steps 42, 43) are held out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread avoids OpenMP spin contention on a shared 2-core machine (15x here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("iv")
    generate_corpus(str(d / "corpus"), SyntheticConfig(n_sequences=N_ROWS, seq_len=S, seed=3), progress=False)
    data = PythiaBatches(str(d / "corpus"), batch_size=B, seq_len=S)
    cfg = TrainConfig(
        preset="tiny-2l",
        total_steps=40,
        lr=3e-3,
        seed=1,
        checkpoint_every=START,
        device="cpu",
        out_dir=str(d / "base"),
        progress=False,
    )
    Trainer(cfg, data).train(end_step=START)
    return d, data


def make_config(run, out="out", **kw):
    d, data = run
    base = dict(
        run_dir=str(d / "base"),
        data=data,
        start_step=START,
        end_step=END,
        train_until=UNTIL,
        heads=[(1, 0), (1, 2)],
        out_dir=str(d / out),
        eval_every=5,
        top_frac=0.1,
        localize_seq_len=8,
        localize_n=8,
        probe_L=8,
        probe_n=8,
        n_heldout=16,
        eval_batch_size=16,
    )
    base.update(kw)
    return InterventionConfig(**base)


def window_scores(seed=0, cols=None):
    rng = np.random.default_rng(seed)
    n = (END - START) * B
    g = np.arange(START * B, END * B)
    s = rng.standard_normal(n if cols is None else (n, cols))
    perm = rng.permutation(n)  # scores may come in any order of global index
    return s[perm], g[perm], s, g


# ---------------------------------------------------------------------------------------------------------------
# sets


def test_sets_top_bottom_random_and_arm_plans(run):
    cfg = make_config(
        run,
        arms=("baseline", "delete-top", "delete-random", "augment-top", "augment-random", "delete-bottom"),
        seeds=(0, 1),
    )
    s_perm, g_perm, s, g = window_scores(1)
    k = cfg.k
    assert k == 8  # round(0.1 * 80)
    plans, sets = plan_arms(cfg, s_perm, g_perm)
    order = sorted(range(len(s)), key=lambda i: -s[i])
    assert list(sets["top"]) == [int(g[i]) for i in order[:k]]
    assert list(sets["bottom"]) == [int(g[i]) for i in order[::-1][:k]]
    top = set(sets["top"].tolist())
    for seed in (0, 1):
        r = sets["random"][seed]
        assert len(set(r.tolist())) == k and not (set(r.tolist()) & top)
        assert set(r.tolist()) <= set(g.tolist())
        # reproducible from the seed, shared by delete-random and augment-random
        assert np.array_equal(select_sets(cfg, s, g)["random"][seed], r)
        assert plans[("delete-random", seed)].interventions.delete == frozenset(r.tolist())
        assert [it.index for it in plans[("augment-random", seed)].interventions.insert] == r.tolist()
        assert plans[("delete-top", seed)].interventions.delete == frozenset(top)
        assert plans[("delete-bottom", seed)].interventions.delete == frozenset(sets["bottom"].tolist())
        assert plans[("baseline", seed)].interventions.empty
    assert set(sets["random"][0].tolist()) != set(sets["random"][1].tolist())
    assert {a for (a, s_), p in plans.items() if p.deterministic} == {
        "baseline",
        "delete-top",
        "augment-top",
        "delete-bottom",
    }
    # score_column / mean over columns
    s2p, g2p, s2, g2 = window_scores(2, cols=3)
    mean_top = select_sets(make_config(run), s2p, g2p)["top"]
    assert list(mean_top) == [int(g2[i]) for i in np.argsort(-s2.mean(1), kind="stable")[:k]]
    col_top = select_sets(make_config(run, score_column=2), s2p, g2p)["top"]
    assert list(col_top) == [int(g2[i]) for i in np.argsort(-s2[:, 2], kind="stable")[:k]]
    assert set(col_top) != set(mean_top)


def test_matched_arms_copy_the_top_sets_category_counts(run):
    """delete-/augment-matched: seeded, disjoint from the top set, same count per dominant category as the top set;
    categories come from the corpus sidecar or categories=; impossible matches and missing sidecars are errors."""
    from mda_fast.data.synthetic import load_category_sidecar

    d, data = run
    fr, names = load_category_sidecar(str(d / "corpus"))
    dom = fr.argmax(1)
    cfg = make_config(run, arms=("baseline", "delete-top", "delete-matched", "augment-matched"), seeds=(0, 1))
    s_perm, g_perm, s, g = window_scores(3)
    # push the highest scores onto one category so the top set is skewed
    c0 = int(np.bincount(dom[g]).argmax())
    s = s + 5.0 * (dom[g] == c0)
    plans, sets = plan_arms(cfg, s, g)
    top = sets["top"]
    for seed in (0, 1):
        m = sets["matched"][seed]
        assert len(m) == len(top) and len(set(m.tolist())) == len(m) and not set(m.tolist()) & set(top.tolist())
        assert set(m.tolist()) <= set(g.tolist())
        np.testing.assert_array_equal(np.bincount(dom[m], minlength=8), np.bincount(dom[top], minlength=8))
        assert plans[("delete-matched", seed)].interventions.delete == frozenset(m.tolist())
        assert [it.index for it in plans[("augment-matched", seed)].interventions.insert] == m.tolist()
        assert not plans[("delete-matched", seed)].deterministic
        assert np.array_equal(select_sets(cfg, s, g)["matched"][seed], m)  # reproducible
    assert set(sets["matched"][0].tolist()) != set(sets["matched"][1].tolist())
    assert sets["matched_composition"] == {
        names[c]: int(n) for c, n in enumerate(np.bincount(dom[top], minlength=8)) if n
    }
    # categories= overrides the sidecar: all rows one category -> matched = any non-top rows
    one = np.zeros_like(fr)
    one[:, 2] = 1.0
    m2 = select_sets(make_config(run, arms=("baseline", "delete-matched"), categories=one), s, g)["matched"][0]
    assert len(m2) == len(top) and not set(m2.tolist()) & set(top.tolist())
    # a top set entirely of a category too rare for a match
    rare = np.zeros_like(fr)
    rare[:, 0] = 1.0
    rare[top, 0], rare[top, 1] = 0.0, 1.0
    rare[g[~np.isin(g, top)][:3], :] = [0, 1, 0, 0, 0, 0, 0, 0]
    # the 3 'xml' rows outside the top set are all taken, the other 5 are random rows of other categories, and the
    # shortfall is recorded (real corpora have rare file types)
    got = select_sets(make_config(run, arms=("baseline", "delete-matched"), categories=rare), s, g)
    xml_rows = set(g[~np.isin(g, top)][:3].tolist())
    assert got["matched_composition"] == {"xml": 3, "shortfall": {"xml": len(top) - 3}}
    for seed, m in got["matched"].items():
        assert len(m) == len(top) and len(set(m.tolist())) == len(m) and not set(m.tolist()) & set(top.tolist())
        assert xml_rows <= set(m.tolist()) and (rare[m, 1] == 1).sum() == 3
    with pytest.raises(ValueError, match="categories"):
        select_sets(make_config(run, arms=("baseline", "delete-matched"), categories=np.zeros((5, 8))), s, g)


def test_matched_arms_from_sampled_categories(run):
    """Categories of only some rows (``mda-fast categorize``: the top set and a random sample, NaN elsewhere): the
    matched set is drawn from the categorized rows alone; too few of them, or an uncategorized top row, is an error."""
    from mda_fast.data.synthetic import load_category_sidecar

    d, data = run
    fr, names = load_category_sidecar(str(d / "corpus"))
    s_perm, g_perm, s, g = window_scores(3)
    arms = ("baseline", "delete-matched")
    top = select_sets(make_config(run, arms=("baseline", "delete-top")), s, g)["top"]
    rest = g[~np.isin(g, top)]
    sample = np.random.default_rng(0).choice(rest, size=3 * len(top), replace=False)
    part = np.full(fr.shape, np.nan, dtype=np.float32)
    part[top], part[sample] = fr[top], fr[sample]
    got = select_sets(make_config(run, arms=arms, categories=(part, names)), s, g)
    dom = fr.argmax(1)
    for m in got["matched"].values():
        assert set(m.tolist()) <= set(sample.tolist())  # only categorized rows are drawn
        short = got["matched_composition"].get("shortfall", {})
        if not short:
            np.testing.assert_array_equal(np.bincount(dom[m], minlength=8), np.bincount(dom[top], minlength=8))
    few = np.full(fr.shape, np.nan, dtype=np.float32)
    few[top], few[sample[:2]] = fr[top], fr[sample[:2]]
    with pytest.raises(ValueError, match="categorize.sample_rows"):
        select_sets(make_config(run, arms=arms, categories=(few, names)), s, g)
    unknown_top = part.copy()
    unknown_top[top[0]] = np.nan
    with pytest.raises(ValueError, match="carry no category"):
        select_sets(make_config(run, arms=arms, categories=(unknown_top, names)), s, g)


def test_icl_positions_and_derived_figures(run):
    assert icl_positions(128) == (13, 125)
    assert icl_positions(2048) == (200, 2000)
    cfg = make_config(run, threshold=0.5)
    steps = [10, 15, 20, 25, 30]

    def seed_curve(score, icl):
        return {
            "steps": steps,
            "head_score": score,
            "target_scores": [[v, 0.6] for v in score],
            "icl": icl,
            "loss": [1.0] * 5,
            "probe_f": [0.0] * 5,
        }

    arms = {
        "baseline": {
            "n_selected": 0,
            "seeds": {"0": seed_curve([0.1, 0.2, 0.5, 0.8, 0.9], [0.0, 0.0, -0.1, -0.3, -0.4])},
        },
        "delete-top": {
            "n_selected": 8,
            "seeds": {"0": seed_curve([0.1, 0.2, 0.3, 0.49, 0.7], [0.0, 0.0, 0.0, -0.1, -0.2])},
        },
    }
    summary = derive(arms, cfg)
    b, d = arms["baseline"]["seeds"]["0"], arms["delete-top"]["seeds"]["0"]
    assert b["emergence_step"] == 20 and d["emergence_step"] == 30  # >= threshold; 0.49 does not cross
    assert d["emergence_step_per_target"] == [30, 10]
    # diff = [0, 0, -0.2, -0.31, -0.2] -> trapezoid with dx=5
    assert d["area_vs_baseline"] == pytest.approx(5 * (0 + (-0.2) / 2 + (-0.2 - 0.31) / 2 + (-0.31 - 0.2) / 2))
    assert b["area_vs_baseline"] == 0.0
    assert d["icl_change"] == {"20": pytest.approx(0.1), "30": pytest.approx(0.2)}
    assert summary["delete-top"]["emergence"] == {"mean": 30.0, "std": 0.0, "n": 1}


# ---------------------------------------------------------------------------------------------------------------
# deletion is exact; augmentation inserts what it should


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def test_delete_top_step_equals_masked_loss_step(run):
    d, data = run
    cfg = make_config(run)
    s_perm, g_perm, s, g = window_scores(3)
    hot = [START * B + 2, START * B + 5]  # make two samples of step START top-scored
    s = s.copy()
    s[[2, 5]] = 100.0
    plans, sets = plan_arms(cfg, s, g)
    assert set(hot) <= set(sets["top"].tolist())
    iv = plans[("delete-top", 0)].interventions
    deleted_here = sorted(i for i in sets["top"].tolist() if i // B == START)
    arm = branch_from_checkpoint(cfg.checkpoint(), data, str(d / "exact_arm"), interventions=iv, progress=False)
    ref = branch_from_checkpoint(cfg.checkpoint(), data, str(d / "exact_ref"), progress=False)
    batch = arm.compose(START)
    assert batch.record["deleted"] == deleted_here
    assert batch.record["indices"] == [i for i in range(START * B, (START + 1) * B) if i not in deleted_here]

    # gradient: the deleted-sample batch equals the sum of the other samples' own gradients / (B*T)
    full = torch.from_numpy(data.step(START).astype(np.int64))
    arm.model.zero_grad()
    arm.forward_backward(batch)
    g_arm = grads(arm.model)
    acc = None
    for p in range(B):
        if START * B + p in deleted_here:
            continue
        ref.model.zero_grad()
        lm_loss(ref.model, full[p : p + 1], B * T).backward()
        gp = grads(ref.model)
        acc = gp if acc is None else {n: acc[n] + gp[n] for n in acc}
    for n in g_arm:
        torch.testing.assert_close(g_arm[n], acc[n], rtol=1e-5, atol=1e-8, msg=n)

    # one full optimizer step with the deletion == one manual step on the masked loss
    arm.train_step(batch)
    w = torch.ones(B, T)
    for i in deleted_here:
        w[i - START * B] = 0
    lr = ref.schedule.lr(START)
    for grp in ref.optimizer.param_groups:
        grp["lr"] = lr
    ref.optimizer.zero_grad(set_to_none=True)
    lm_loss(ref.model, full, B * T, token_weights=w).backward()
    torch.nn.utils.clip_grad_norm_([p for grp in ref.optimizer.param_groups for p in grp["params"]], 1.0)
    before = {n: p.detach().clone() for n, p in ref.model.named_parameters()}
    ref.optimizer.step()
    pa, pr = dict(arm.model.named_parameters()), dict(ref.model.named_parameters())
    for n in pa:
        torch.testing.assert_close(pa[n], pr[n], rtol=1e-5, atol=1e-7, msg=n)
    # the test can fail: the update is not the unmasked one
    moved = max(float((pr[n].detach() - before[n]).abs().max()) for n in pr)
    ref2 = branch_from_checkpoint(cfg.checkpoint(), data, str(d / "exact_ref2"), progress=False)
    ref2.train_step(ref2.compose(START))
    diff = max(float((dict(ref2.model.named_parameters())[n] - pa[n]).detach().abs().max()) for n in pa)
    assert diff > 1e-3 * moved


def test_augment_inserts_intended_rows_at_intended_steps(run):
    d, data = run
    for kw in (dict(), dict(augment_steps=(12, 17), augment_copies=2)):
        cfg = make_config(run, **kw)
        s_perm, g_perm, *_ = window_scores(4)
        plans, sets = plan_arms(cfg, s_perm, g_perm)
        steps = cfg.resolved_augment_steps()
        assert steps == ((10, 11, 12, 13, 14) if not kw else (12, 17))
        for arm, sel in (("augment-top", sets["top"]), ("augment-random", sets["random"][0])):
            copies = np.tile(sel, cfg.augment_copies).tolist()
            expect = {}
            for j, idx in enumerate(copies):  # round-robin in rank / draw order
                expect.setdefault(steps[j % len(steps)], []).append(idx)
            out = str(d / f"aug_{arm}_{len(kw)}")
            tr = branch_from_checkpoint(
                cfg.checkpoint(),
                data,
                out,
                interventions=plans[(arm, 0)].interventions,
                progress=False,
                save_optimizer=False,
            )
            tr.train(end_step=19)
            log = read_jsonl(os.path.join(out, "batches.jsonl"))
            assert [r["step"] for r in log] == list(range(START, 19))
            for r in log:
                want = expect.get(r["step"], [])
                assert [x["index"] for x in r["inserted"]] == want
                assert r["indices"] == list(range(r["step"] * B, (r["step"] + 1) * B)) and r["deleted"] == []
                assert r["n_rows"] == B + len(want)
                batch = tr.compose(r["step"])
                for x in r["inserted"]:
                    assert np.array_equal(batch.tokens[x["row"]].numpy(), data.rows(np.array([x["index"]]))[0])
            assert sum(len(v) for v in expect.values()) == cfg.k * cfg.augment_copies


# ---------------------------------------------------------------------------------------------------------------
# a small end-to-end run and bad input


def test_small_run_writes_every_arm_and_resumes(run):
    d, data = run
    arms = ("baseline", "delete-top", "delete-random", "augment-top", "augment-random", "delete-bottom")
    cfg = make_config(run, out="small", arms=arms, seeds=(0, 1))
    s_perm, g_perm, *_ = window_scores(5)
    res = run_interventions(cfg, s_perm, g_perm, progress=False)
    on_disk = load_interventions(cfg.out_dir)
    assert json.loads(json.dumps(res)) == on_disk
    assert set(on_disk["arms"]) == set(arms)
    for arm in arms:
        a = on_disk["arms"][arm]
        assert set(a["seeds"]) == {"0", "1"}
        for seed, c in a["seeds"].items():
            assert c["steps"] == [10, 15, 20, 25, 30]
            n = len(c["steps"])
            assert len(c["head_score"]) == len(c["icl"]) == len(c["loss"]) == len(c["probe_f"]) == n
            assert np.shape(c["head_scores"]) == (n, 2, 4)
            assert c["target_scores"][2] == [c["head_scores"][2][1][0], c["head_scores"][2][1][2]]
            assert all(np.isfinite(c["icl"])) and all(np.isfinite(c["loss"]))
            em = next((s for s, v in zip(c["steps"], c["head_score"]) if v >= cfg.threshold), None)
            assert c["emergence_step"] == em
            # every arm starts from the same checkpoint: identical first evaluation
            assert c["head_scores"][0] == on_disk["arms"]["baseline"]["seeds"]["0"]["head_scores"][0]
            assert c["loss"][0] == on_disk["arms"]["baseline"]["seeds"]["0"]["loss"][0]
        if a["deterministic"]:
            assert a["seeds"]["0"]["head_score"] == a["seeds"]["1"]["head_score"]
        # the summary counts a seed-free arm as one run, a random arm once per seed
        assert on_disk["summary"][arm]["n_seeds"] == (1 if a["deterministic"] else 2)
        assert on_disk["summary"][arm]["deterministic"] == a["deterministic"]
        if arm != "baseline":
            assert a["n_selected"] == cfg.k
            assert a["seeds"]["0"]["loss"][-1] != on_disk["arms"]["baseline"]["seeds"]["0"]["loss"][-1]
    assert on_disk["arms"]["baseline"]["seeds"]["0"]["area_vs_baseline"] == 0.0
    r0, r1 = (on_disk["arms"]["delete-random"]["seeds"][s]["loss"] for s in ("0", "1"))
    assert r0 != r1  # seeds draw different random sets
    # the deletion arms deleted exactly their sets
    log = read_jsonl(os.path.join(cfg.out_dir, "delete-top", "seed0", "batches.jsonl"))
    assert sorted(i for r in log for i in r["deleted"]) == sorted(on_disk["sets"]["top"])
    log = read_jsonl(os.path.join(cfg.out_dir, "delete-random", "seed1", "batches.jsonl"))
    assert sorted(i for r in log for i in r["deleted"]) == on_disk["sets"]["random"]["1"]
    assert not os.path.exists(os.path.join(cfg.out_dir, "delete-top", "seed1"))  # deterministic: trained once
    # the report's reader accepts it
    s = summarize_interventions(on_disk)
    # one summary: what the file stores is what the report shows is what the curves give
    from mda_fast.study.interventions.summary import intervention_summary

    stored = intervention_summary(on_disk)
    assert stored["arms"] == on_disk["summary"] == s["arms"]
    assert stored["score_icl_pearson"] == s["score_icl_pearson"] and stored["n_points"] == s["n_points"]
    # distinct runs: 4 seed-free arms once, delete-random and augment-random once per seed; 5 checkpoints each
    assert set(s["arms"]) == set(arms) and s["n_points"] == (4 + 2 * 2) * 5
    # resumable: complete arms are reused, not retrained
    res_file = os.path.join(cfg.out_dir, "delete-top", "seed0", "result.json")
    mtime = os.path.getmtime(res_file)
    again = run_interventions(cfg, s_perm, g_perm, progress=False)
    assert os.path.getmtime(res_file) == mtime and again == res


def test_bad_input_fails_before_training(run):
    d, data = run
    s_perm, g_perm, s, g = window_scores(6)
    with pytest.raises(ValueError, match="top_frac"):
        make_config(run, top_frac=1.0)
    with pytest.raises(ValueError, match="top_frac"):
        make_config(run, top_frac=0.0)
    with pytest.raises(ValueError, match="unknown arm"):
        make_config(run, arms=("baseline", "delete-middle"))
    with pytest.raises(ValueError, match="baseline"):
        make_config(run, arms=("delete-top",))
    with pytest.raises(ValueError, match="window"):
        make_config(run, start_step=20, end_step=20)
    with pytest.raises(ValueError, match="data has only"):
        make_config(run, train_until=100)
    with pytest.raises(ValueError, match="augment_steps"):
        make_config(run, augment_steps=(5,))
    with pytest.raises(ValueError, match="batch_size"):
        make_config(run, data=data.path)
    cases = [
        (dict(), (s[:-1], g[:-1]), "window"),
        (dict(), (s, g + 1), "exactly once"),
        (dict(), (np.where(np.arange(s.size) == 3, np.nan, s), g), "non-finite"),
        (dict(score_column=1), (s, g), "score_column"),
        (dict(top_frac=0.6), (s, g), "2k"),
        (dict(start_step=15, end_step=20), (s, g), "window"),
        (dict(heads=[(2, 0)]), (s, g), "out of range"),
        (dict(run_dir=str(d / "nope")), (s, g), "missing"),
        (dict(heldout_rows=[0, 1]), (s, g), "held-out"),
        (dict(n_heldout=200), (s, g), "held-out"),
    ]
    for kw, (sc, gi), msg in cases:
        cfg = make_config(run, out="bad", **kw)
        with pytest.raises(ValueError, match=msg):
            run_interventions(cfg, sc, gi, progress=False)
        assert not os.path.exists(os.path.join(cfg.out_dir, "baseline"))


def test_one_summary_of_intervention_results(run):
    """derive (the runner), summarize_interventions and the report all give one summary: the runner's
    per-arm figures are ``summarize(...)["arms"]``, and the report shows the stored summary as it is."""
    from mda_fast.study import report
    from mda_fast.study.interventions.summary import intervention_summary, summarize

    assert summarize_interventions is summarize
    cfg = make_config(run, threshold=0.5)
    steps = [10, 15, 20, 25, 30]

    def curve(score, icl):
        return {
            "steps": steps,
            "head_score": score,
            "target_scores": [[v, 0.6] for v in score],
            "icl": icl,
            "loss": [1.0] * 5,
            "probe_f": [0.0] * 5,
        }

    base = ([0.1, 0.2, 0.5, 0.8, 0.9], [0.0, 0.0, -0.1, -0.3, -0.4])
    arms = {
        "baseline": {"n_selected": 0, "deterministic": True, "seeds": {"0": curve(*base), "1": curve(*base)}},
        "delete-random": {
            "n_selected": 8,
            "deterministic": False,
            "seeds": {
                "0": curve([0.1, 0.2, 0.3, 0.49, 0.7], [0.0, 0.0, 0.0, -0.1, -0.2]),
                "1": curve([0.1, 0.3, 0.6, 0.7, 0.8], [0.0, -0.1, -0.2, -0.2, -0.3]),
            },
        },
    }
    per_arm = derive(arms, cfg)
    s = summarize({"arms": arms, "threshold": cfg.threshold})
    assert per_arm == s["arms"]
    a = per_arm["delete-random"]
    assert a["emergence_steps"] == {"0": 30, "1": 20} and a["emergence"] == {"mean": 25.0, "std": 5.0, "n": 2}
    assert a["emergence_mean"] == 25.0 and a["emergence_delta"] == 5.0 and a["n_selected"] == 8
    assert set(a["icl_change"]) == {"20", "30"} and a["area_vs_baseline"]["n"] == 2
    # as run_interventions stores it: the report reads the stored figures, not a recomputation
    data = {
        "arms": arms,
        "threshold": 0.5,
        "baseline": "baseline",
        "summary": per_arm,
        "score_icl_pearson": s["score_icl_pearson"],
        "n_points": s["n_points"],
    }
    assert intervention_summary(data) == s
    data["summary"] = {k: dict(v) for k, v in per_arm.items()}
    data["summary"]["delete-random"]["final_head_score"] = 0.123456
    html = report.render_report(title="t", config={}, provenance={}, interventions=data)
    assert "0.1235" in html
    assert "0.1235" not in report.render_report(
        title="t", config={}, provenance={}, interventions={"arms": arms, "threshold": 0.5}
    )


def test_findings_name_a_matched_shortfall():
    from mda_fast.study.findings import intervention_findings

    r = {
        "summary": {"baseline": {"emergence": {"mean": None}}},
        "threshold": 0.3,
        "config": {"start_step": 0, "end_step": 10},
        "arms": {},
        "sets": {"matched_composition": {"xml": 3, "shortfall": {"xml": 5}}},
    }
    assert any("lacks 5 'xml' rows" in x for x in intervention_findings(r))
    r["sets"]["matched_composition"] = {"xml": 8}
    assert not any("lacks" in x for x in intervention_findings(r))

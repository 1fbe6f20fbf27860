"""An extra arm for a finished real-text augment study: motifs mined from the smallest size's top rows ranked by
another of its MDA targets (by default the second, the synthetic ``induction`` probe: the probe that defines the
measured head score), the shipped generator, the study's budget and seeds, inserted into every size's window and
trained through the study's own code (``train_base`` from its cache, ``plan_insertions``, ``train_arms``). Prints
each size's gain at E against the study's ``none`` arm, and the top sets' measures side by side.

    python benchmarks/augment_mined_by_probe.py --out DIR [--target 1] [--config augment-real-text]

The runs go to ``DIR/extra_mined_by_target<k>/``; the summary to ``DIR/extra_mined_by_target<k>.json``.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def main() -> None:
    from mda_fast.augment.arms import curve
    from mda_fast.augment.attribution import motifs_from_scores
    from mda_fast.augment.base_runs import train_base
    from mda_fast.augment.compare import compare_sets
    from mda_fast.augment.evaluation import heldout_rows, make_eval
    from mda_fast.augment.generators import MixtureGenerator
    from mda_fast.augment.insertion import budget_rows, plan_insertions
    from mda_fast.augment.parallel import train_arms
    from mda_fast.data import PythiaBatches
    from mda_fast.stages.augment import load_augment_config
    from mda_fast.stages.study_corpus import prepare_real_corpus

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="a finished study's --out")
    ap.add_argument("--target", type=int, default=1, help="column of the smallest size's scores.npy to rank by")
    ap.add_argument("--config", default="augment-real-text")
    args = ap.parse_args()
    out = args.out
    cfg = load_augment_config(args.config, [], False)
    cfg.train.window_steps = cfg.augment.window_steps
    man = prepare_real_corpus(cfg, out, False)
    lo = man["n_rows"] - cfg.corpus.heldout_sequences  # the study's real-text probe rows (augment.study)
    cfg.targets.text_probe_rows = list(range(lo, lo + min(cfg.targets.text_probe_n, cfg.corpus.heldout_sequences)))
    data = PythiaBatches(cfg.data.path, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len)
    ev = make_eval(cfg, *heldout_rows(cfg, data, cfg.data.path))
    res = json.load(open(os.path.join(out, "augment.json")))
    bases = {p: train_base(cfg, p, data, os.path.join(out, "sizes", p), ev, False) for p in cfg.augment.sizes}
    small = os.path.join(out, "mda", cfg.augment.sizes[0], "score")
    g = np.load(os.path.join(small, "global_index.npy"))
    sc = np.load(os.path.join(small, "scores.npy"))[:, args.target].astype(np.float64)
    mined = motifs_from_scores(cfg, data, {"global_index": g, "scores": sc})
    gen = MixtureGenerator(mined["motifs"], data.seq_len, chain=True, calibrate=True)
    tag = f"extra_mined_by_target{args.target}"
    jobs = []
    for p, b in bases.items():
        n = budget_rows((b["window"][1] - b["window"][0]) * data.batch_size, cfg.augment.budget_frac)
        for seed in cfg.augment.seeds:
            iv = plan_insertions(gen.rows(n, seed), list(range(*b["window"])), name=tag, seed=seed)
            jobs.append((f"{p} seed {seed}", b, tag, seed, iv, os.path.join(out, tag, p, f"seed{seed}")))
    done = train_arms(cfg, cfg.data.path, jobs, True)
    summary = {}
    for p in bases:
        none = res["sizes"][p]["arms"]["none"]["seeds"][str(cfg.augment.seeds[0])]
        E = res["sizes"][p]["gain_step"]
        s0 = none["score"][none["steps"].index(E)]
        gains = []
        for seed in cfg.augment.seeds:
            c = curve(done[f"{p} seed {seed}"]["evals"])
            gains.append((c["score"][c["steps"].index(E)] - s0) / s0)
        summary[p] = {"mean": float(np.mean(gains)), "std": float(np.std(gains, ddof=1)), "gains": gains}
        print(f"{p}: gain at E {100 * np.mean(gains):+.1f}% ± {100 * np.std(gains, ddof=1):.1f}")
    rows = lambda idx: np.asarray(data.rows(np.asarray(idx, np.int64))).astype(np.int64)  # noqa: E731
    ref = rows(np.sort(np.random.default_rng(0).choice(g, 2000, replace=False)))
    cmp = compare_sets(
        {
            "top": rows(res["motifs"]["small"]["top"]),
            "top-by-target": rows(mined["top"]),
            "generated": gen.rows(320, 0),
        },
        ref,
    )
    for k, v in cmp["sets"].items():
        keys = ("induction", "copy_frac", "span_len", "copy_dist", "entropy", "bigram_ce")
        print(k, {m: round(v[m]["mean"], 3) for m in keys})
    with open(os.path.join(out, tag + ".json"), "w") as f:
        json.dump({"target": args.target, "summary": summary, "compare": cmp}, f, indent=1)


if __name__ == "__main__":
    main()

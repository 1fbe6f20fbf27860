"""The cross-scale study: motifs mined on the smallest model, the same synthetic data applied to every size.

Steps (``run_study``; every trained run is cached by a fingerprint of what it depends on, so rerunning the same
command continues an interrupted study):

1. **Corpus** (the demo's synthetic corpus, ``corpus`` section; with ``augment.corpus = "real-text"`` the
   real-text study's corpus of ``study.sources``, ``stages.study_corpus``) and the held-out rows after the last training
   step: ``augment.n_heldout`` prose rows (the downstream check: loss on natural text never trained on) and as
   many rows of any category (the ICL score).
2. **Base run per size** (``augment.sizes``, smallest first): trained from scratch until the best head's
   prefix-matching score reaches ``localize.threshold`` at checkpoint ``E`` (checkpoints and evaluations every
   ``augment.eval_every`` steps) and ``augment.train_after`` steps more. Its window is
   ``[E - augment.window_steps, E)``. Its own evaluations over ``[window start, E + train_after]`` are the "none"
   arm (a branch from the window start without interventions trains exactly these steps).
3. **MDA on the smallest size** (and, with ``augment.transfer``, on the largest): ``fit`` + ``score`` of the
   induction head on that size's window (the stages of ``mda-fast fit`` / ``score``).
4. **Motifs** from the top ``augment.top_frac`` of the window by score, against the bottom set and a random set of
   the same size (``motifs.mine_motifs``).
   Then **what separates the top rows from generated ones** (``compare.compare_sets``): the top, bottom and random
   rows against the rows the ``mechanistic`` and ``copy`` arms insert, on plain induction, the copy parse, the
   token distribution and the bigram cross-entropy under the window's other rows (``comparison`` in the results).
5. **Synthetic data** per seed: ``budget_rows(window rows, augment.budget_frac)`` rows for every arm, the same rows
   for every size.
6. **Arms** per size and seed, each branched from the size's window-start checkpoint and trained to
   ``E + train_after`` with its rows appended, spread evenly over the window steps (``insertion``):

   * ``none``: no insertion (the base run; seed-free);
   * ``random``: copies of random window rows of that size (seeded);
   * ``copy``: the generic copy baseline ``S ‖ S`` (seeded);
   * ``top``: copies of the highest-scored rows of the smallest model's window (seed-free: trained once);
   * ``mechanistic``: the motif generators' rows (seeded), built-in or LLM-written (``augment.llm_url``);
   * ``mechanistic-large`` (largest size only, with ``augment.transfer``): rows from motifs mined on the largest.

7. **Measures** per size, arm and seed, at every evaluation step: ``score`` = the best head's prefix matching (max
   over all heads, the paper's "induction-head score"), the ICL score (late-token minus early-token loss, as
   ``mda_fast.interventions``), the held-out prose loss. Derived: ``gain`` = ``(score - score_none) / score_none``
   at the gain step (``E``, the window end: where the base run crossed the threshold), the emergence step (first
   evaluation at or above the threshold), ICL at ``E``, held-out loss at the last step and its change against none.

Hub sizes (``augment.sizes`` of Hugging Face names, ``pythia-augment.toml``; see ``augment.pretrained``): the data
is ``data.path`` (no synthetic corpus; the held-out rows are the rows after ``train.total_steps``, the same rows
for the ICL score and the held-out loss without a category sidecar); step 2 evaluates the published revisions
instead of training; MDA loads the window-end revision; every arm, ``none`` too, branches from the window-start
revision with AdamW restarted from zero moments (``branch_from_pretrained``).

Seed-free arms are trained once and recorded under every seed (std 0); the spread of the seeded arms is the seed
noise the downstream check compares with.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Dict

from .arms import SEEDED_ARMS, STUDY_ARMS, ArmContext, arm_entry, arm_jobs, curve, plan_arm, run_arm, synthetic_rows
from .attribution import attribute, category_mix, influence_of_sets, motifs_from_scores
from .base_runs import base_grid, train_base
from .cache import fingerprint
from .compare import comparison_findings
from .evaluation import heldout_rows, make_eval
from .insertion import budget_rows
from .outcomes import derive, findings
from .parallel import n_workers, parallel_ok, train_arms, train_bases
from .pretrained import is_hub_size, pretrained_base, size_dir

logger = logging.getLogger(__name__)

__all__ = [
    "OUTPUT",
    "SEEDED_ARMS",
    "STUDY_ARMS",
    "ArmContext",
    "arm_entry",
    "attribute",
    "category_mix",
    "curve",
    "derive",
    "findings",
    "fingerprint",
    "heldout_rows",
    "make_eval",
    "motifs_from_scores",
    "plan_arm",
    "pretrained_base",
    "run_arm",
    "run_study",
    "synthetic_rows",
    "train_base",
]

OUTPUT = "augment.json"

GAIN_DEFINITION = (
    "(score - score_none) / score_none at the gain step: the window end, the evaluation "
    "where the base run's best head first reached the threshold; score = max prefix "
    "matching over all heads"
)


def _base_runs(cfg, data, prefix: str, out: str, eval_fn, progress: bool) -> Dict[str, dict]:
    """``train_base`` (a preset) or ``pretrained_base`` (a hub name) of every size of ``augment.sizes``; preset
    sizes in ``augment.workers`` processes (``parallel``)."""
    dirs = {p: os.path.join(out, "sizes", size_dir(p)) for p in cfg.augment.sizes}
    if parallel_ok(cfg) and n_workers(cfg, len(dirs)) > 1:
        done = train_bases(cfg, prefix, dirs, progress)
        bases = {p: done[p] for p in cfg.augment.sizes}
        for p, b in bases.items():
            logger.info(
                f"{p}: emergence {b['emergence_step']}, window {b['window']}, until {b['train_until']} "
                f"({b['train_s']} s)"
            )
        return bases
    bases = {}
    for p in cfg.augment.sizes:
        logger.info("\n== base run %s ==", p)
        base = pretrained_base if is_hub_size(p) else train_base
        bases[p] = b = base(cfg, p, data, os.path.join(out, "sizes", size_dir(p)), eval_fn, progress)
        logger.info(
            f"{p}: emergence {b['emergence_step']}, window {b['window']}, until {b['train_until']} ({b['train_s']} s)"
        )
    return bases


def _mine(cfg, bases: Dict[str, dict], data, prefix: str, out: str, progress: bool) -> tuple:
    """(attributions, mined motifs) keyed ``small`` (and ``large`` with ``augment.transfer``)."""
    sizes = list(cfg.augment.sizes)
    mda = lambda p: os.path.join(out, "mda", size_dir(p))  # noqa: E731
    attr = {"small": attribute(cfg, bases[sizes[0]], prefix, mda(sizes[0]), progress)}
    mined = {"small": motifs_from_scores(cfg, data, attr["small"])}
    if cfg.augment.transfer and len(sizes) > 1:
        attr["large"] = attribute(cfg, bases[sizes[-1]], prefix, mda(sizes[-1]), progress)
        mined["large"] = motifs_from_scores(cfg, data, attr["large"])
    return attr, mined


def _size_result(ctx: ArmContext, base: dict, arms: list) -> dict:
    """One size's entry of ``augment.json``: its window, budget and every arm (derived figures included)."""
    a = ctx.cfg.augment
    start, end = base["window"]
    n = budget_rows((end - start) * ctx.data.batch_size, a.budget_frac)
    size = {
        "preset": base["preset"],
        "emergence_step": base["emergence_step"],
        "window": base["window"],
        "train_until": base["train_until"],
        "gain_step": end,
        "budget_rows": n,
        "budget_tokens": n * ctx.data.seq_len,
        "base_train_s": base["train_s"],
        "arms": {},
    }
    if base.get("pretrained"):  # its base run is the published checkpoints; every arm (none too) restarts AdamW
        size.update(pretrained=True, name=base["name"], eval_steps=base["eval_steps"])
    elif "eval_steps" in base:  # a base run on a coarser grid: none is a branch evaluated with the arms
        size.update(eval_steps=base["eval_steps"], base_eval_every=base_grid(ctx.cfg.augment))
    for arm in arms:
        size["arms"][arm] = arm_entry(ctx, base, arm, n)
    derive(size, ctx.cfg.localize.threshold)
    return size


def _motifs_record(sizes: list, mined: dict, attr: dict, prefix: str) -> dict:
    """``augment.json``'s ``motifs``: per mined set, where it was mined, its motifs, sets and categories."""
    return {
        k: {
            "mined_on": sizes[0] if k == "small" else sizes[-1],
            "motifs": [m.to_dict() for m in v["motifs"]],
            "sets": v["sets"],
            "n": v["n"],
            "top": v["top"],
            "top_scores": v["top_scores"],
            "top_categories": category_mix(prefix, v["top"]),
            "bottom_categories": category_mix(prefix, v["bottom"]),
            "head": attr[k]["head"],
        }
        for k, v in mined.items()
    }


def _settings(cfg, data) -> dict:
    """The settings recorded with the results (a rerun with others is refused)."""
    return {
        "augment": dataclasses.asdict(cfg.augment),
        "train": dataclasses.asdict(cfg.train),
        "data": {"batch_size": data.batch_size, "seq_len": data.seq_len},
        "corpus": dataclasses.asdict(cfg.corpus),
    }


def _timed(timings: Dict[str, float], name: str, fn, *args):
    """``fn(*args)``, its wall time recorded (seconds, 0.1 s) as ``timings[name]``."""
    t0 = time.perf_counter()
    r = fn(*args)
    timings[name] = round(time.perf_counter() - t0, 1)
    return r


def _all_sizes(ctx: ArmContext, bases: Dict[str, dict], transfer: bool) -> Dict[str, dict]:
    """``_size_result`` of every size; the largest also gets ``mechanistic-large`` with ``transfer``. The runs are
    trained first in ``augment.workers`` processes where the study allows it (``parallel``); ``_size_result`` then
    reads them from their caches."""
    sizes = list(ctx.cfg.augment.sizes)
    arms = {
        p: list(ctx.cfg.augment.arms) + (["mechanistic-large"] if transfer and p == sizes[-1] else []) for p in sizes
    }
    if parallel_ok(ctx.cfg) and n_workers(ctx.cfg, 2) > 1:
        B = ctx.data.batch_size
        n = {p: budget_rows((bases[p]["window"][1] - bases[p]["window"][0]) * B, ctx.cfg.augment.budget_frac)
             for p in sizes}  # fmt: skip
        train_arms(ctx.cfg, ctx.prefix, arm_jobs(ctx, bases, arms, n), ctx.progress)
    return {p: _size_result(ctx, bases[p], arms[p]) for p in sizes}


def _comparison(ctx: ArmContext, mined: dict, base: dict) -> dict:
    """``compare_sets`` of the smallest size's top, bottom and random window rows against the rows the arms insert
    (``mechanistic`` and ``mechanistic-large`` with the built-in generators, ``copy``; the first seed's, as many as
    one arm's budget) and the built-in generator with the other kind of fresh text (``augment.fresh_text``:
    ``frequencies-generator``, the generator before the real-text study, or ``chain-generator``), the bigram
    reference being other rows of that window; the MDA score of every row of each set and where its loss-token
    influence sits (``influence_of_sets``: what attribution predicts each arm's rows do, before they are trained on);
    plus each motif's generator round trip on the features the generators reproduce."""
    import numpy as np

    from .compare import compare_sets
    from .generators import MixtureGenerator, MotifGenerator, roundtrip

    cfg, data = ctx.cfg, ctx.data
    B, S = data.batch_size, data.seq_len
    start, end = base["window"]
    n = budget_rows((end - start) * B, cfg.augment.budget_frac)
    rows = lambda idx: np.asarray(data.rows(np.asarray(idx, np.int64))).astype(np.int64)  # noqa: E731
    m = mined["small"]
    sets = {"top": rows(m["top"]), "bottom": rows(m["bottom"]), "random": rows(m["random"])}
    seed = int(cfg.augment.seeds[0])
    generated = (
        [] if cfg.augment.llm_url else ["mechanistic"] + (["mechanistic-large"] if "large" in ctx.motifs else [])
    )
    for arm in ["copy", *generated]:  # an LLM-written generator's rows are compared in its arms' logs only
        sets[arm] = synthetic_rows(cfg, arm, seed, n, S, ctx.motifs, ctx.top, data, ctx.llm_log)[0]
    # the built-in generator with the other kind of fresh text (augment.fresh_text)
    chain = cfg.augment.fresh_text != "chain"
    other = "chain-generator" if chain else "frequencies-generator"
    sets[other] = MixtureGenerator(ctx.motifs["small"], S, chain=chain, calibrate=chain).rows(n, seed)
    used = np.concatenate([m["top"], m["bottom"], m["random"]])
    pool = np.setdiff1d(np.arange(start * B, end * B), used)
    ref = np.random.default_rng([cfg.augment.motif_seed, 0x2EF]).choice(pool, size=min(2000, pool.size), replace=False)
    res = compare_sets(sets, rows(np.sort(ref)))
    mda_dir = os.path.join(ctx.out, "mda", size_dir(cfg.augment.sizes[0]))
    res["influence"] = influence_of_sets(cfg, base, ctx.prefix, mda_dir, sets, batch=32 if S <= 1025 else 4)
    res["reference_rows"] = int(ref.size)
    res["seed"] = seed
    res["roundtrip"] = {}
    for k, ms in ctx.motifs.items():
        for mo in ms:
            g = MotifGenerator(mo, S)
            rt = roundtrip(mo, g.rows(max(32, int(round(n * mo.share))), seed))
            res["roundtrip"][f"{k}/{mo.id}"] = {"ok": rt["ok"], "failed": rt["failed"], "copy_scale": g.copy_scale}
    return res


def _text_probe_rows(cfg, manifest: dict) -> None:
    """The real-text induction probe's rows, unless given: the first ``targets.text_probe_n`` of the corpus's
    held-out tail (never trained on; the held-out rows of the evaluation come before the tail)."""
    t = cfg.targets
    if "induction_text" in t.probes and not t.text_probe_rows:
        lo = manifest["n_rows"] - cfg.corpus.heldout_sequences
        t.text_probe_rows = list(range(lo, lo + min(t.text_probe_n, cfg.corpus.heldout_sequences)))


def run_study(cfg, out: str, progress: bool = True) -> dict:
    """The whole study into ``out`` (see the module docstring); returns the ``augment.json`` dict."""
    from ..data import PythiaBatches
    from ..io import write_json
    from ..stages.demo import prepare_corpus
    from ..stages.study_corpus import prepare_real_corpus
    from ..version import environment

    t_all = time.perf_counter()
    a = cfg.augment
    timings: Dict[str, float] = {}
    if any(is_hub_size(p) for p in a.sizes):  # a real dataset (e.g. the Pile): no synthetic corpus
        prefix = cfg.data.path
    elif a.corpus == "real-text":  # the real-text study's corpus; sets data.path and caps train.total_steps
        cfg.train.window_steps = a.window_steps  # the corpus check: at least a window of steps before the tail
        manifest = _timed(timings, "corpus", prepare_real_corpus, cfg, out, progress)
        prefix = cfg.data.path
        _text_probe_rows(cfg, manifest)
    else:
        prefix = _timed(timings, "corpus", prepare_corpus, cfg, out, progress)
    data = PythiaBatches(prefix, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len)
    eval_fn = make_eval(cfg, *heldout_rows(cfg, data, prefix))
    bases = _timed(timings, "base_runs_wall", _base_runs, cfg, data, prefix, out, eval_fn, progress)
    timings["base_runs"] = round(sum(b["train_s"] for b in bases.values()), 1)
    attr, mined = _timed(timings, "attribution_and_motifs", _mine, cfg, bases, data, prefix, out, progress)
    motifs = {k: v["motifs"] for k, v in mined.items()}
    ctx = ArmContext(cfg, data, motifs, mined["small"]["top"], out, eval_fn, progress, prefix=prefix)
    transfer = a.transfer and len(a.sizes) > 1
    comparison = _timed(timings, "comparison", _comparison, ctx, mined, bases[a.sizes[0]])
    results = _timed(timings, "arms", _all_sizes, ctx, bases, transfer)
    res = {
        "sizes": results,
        "threshold": cfg.localize.threshold,
        "seeds": list(a.seeds),
        "gain_definition": GAIN_DEFINITION,
        "motifs": _motifs_record(list(a.sizes), mined, attr, prefix),
        "comparison": comparison,
        "llm": ctx.llm_log,
        "settings": _settings(cfg, data),
        "stage_seconds": timings,
        "workers": n_workers(cfg, 2) if parallel_ok(cfg) else 1,
        "elapsed_s": round(time.perf_counter() - t_all, 1),
        "environment": environment(),
    }
    res["findings"] = comparison_findings(comparison) + findings(res)
    write_json(os.path.join(out, OUTPUT), res)
    return res

"""The cross-scale study: motifs mined on the smallest model, the same synthetic data applied to every size.

Steps (``run_study``; every trained run is cached by a fingerprint of what it depends on, so rerunning the same
command continues an interrupted study):

1. **Corpus** (the demo's synthetic corpus, ``corpus`` section) and the held-out rows after the last training
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

Seed-free arms are trained once and recorded under every seed (std 0); the spread of the seeded arms is the seed
noise the downstream check compares with.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from typing import Any, Dict, List

import numpy as np
import torch

from ..errors import ConfigError
from .generators import MixtureGenerator, copy_baseline_rows
from .insertion import budget_rows, insertion_log, plan_duplicates, plan_insertions
from .motifs import Motif, byte_decode, mine_motifs

logger = logging.getLogger(__name__)

SEEDED_ARMS = ("random", "copy", "mechanistic", "mechanistic-large")
STUDY_ARMS = ("none", "random", "copy", "top", "mechanistic")
OUTPUT = "augment.json"


def _fp(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# evaluation


def make_eval(cfg, heldout_any: np.ndarray, heldout_prose: np.ndarray):
    """``eval_fn(model, step)``: best-head prefix matching, every head's score, ICL and held-out prose loss."""
    from ..interventions import icl_positions
    from ..localize import localize_all

    loc = cfg.localize
    T = heldout_any.shape[1] - 1
    early, late = icl_positions(T)
    band = T // 64
    early_pos = torch.arange(early - 1 - band, early + band)
    late_pos = torch.arange(late - 1 - band, late + band)
    any_rows, prose_rows = torch.from_numpy(heldout_any), torch.from_numpy(heldout_prose)

    def ce(model, rows):
        out = []
        for lo in range(0, rows.shape[0], 64):
            b = rows[lo : lo + 64]
            logits = model(input_ids=b[:, :-1], use_cache=False).logits.float()
            out.append(torch.nn.functional.cross_entropy(logits.transpose(1, 2), b[:, 1:], reduction="none"))
        return torch.cat(out).double()

    @torch.no_grad()
    def evaluate(model, step):
        pm = localize_all(
            model,
            ("prefix_matching",),
            seq_len=loc.seq_len,
            n=loc.n,
            seed=loc.seed,
            batch_size=loc.batch_size,
            low=loc.low,
            high=loc.high or None,
        )["prefix_matching"]
        c_any = ce(model, any_rows)
        icl = float((c_any[:, late_pos].mean(1) - c_any[:, early_pos].mean(1)).mean())
        return {
            "max_prefix_matching": float(pm.max()),
            "prefix_matching": pm.tolist(),
            "icl": icl,
            "heldout_loss": float(ce(model, prose_rows).mean()) if prose_rows.shape[0] else None,
        }

    return evaluate


def heldout_rows(cfg, data, prefix: str) -> tuple:
    """(any-category rows, prose rows) after the last training step, ``augment.n_heldout`` of each."""
    from ..data.synthetic import CATEGORIES, load_category_sidecar

    first = cfg.train.total_steps * data.batch_size
    idx = np.arange(first, data.n_rows, dtype=np.int64)
    if idx.size == 0:
        raise ConfigError(f"corpus.heldout_sequences: no rows after step train.total_steps={cfg.train.total_steps}")
    n = cfg.augment.n_heldout
    side = load_category_sidecar(prefix)
    prose = idx[np.argmax(side[0][idx], 1) == CATEGORIES.index("prose")] if side is not None else idx[:0]
    return (
        np.asarray(data.rows(idx[:n])).astype(np.int64),
        np.asarray(data.rows(prose[:n])).astype(np.int64) if prose.size else np.zeros((0, data.seq_len), np.int64),
    )


# ---------------------------------------------------------------------------------------------------------------
# base runs


def train_base(cfg, preset: str, data, out: str, eval_fn, progress: bool) -> dict:
    """Train ``preset`` from scratch until a head forms (+ ``train_after``); its window and evaluations."""
    from ..train import TrainConfig, Trainer, read_jsonl
    from ..train.checkpoint import has_state

    a, tr = cfg.augment, cfg.train
    run_dir = os.path.join(out, "run")
    eval_path = os.path.join(run_dir, "eval.jsonl")
    tc = TrainConfig(
        preset=preset,
        total_steps=max(tr.schedule_steps, tr.total_steps),
        lr=tr.lr,
        seed=tr.seed,
        checkpoint_every=a.eval_every,
        device="cpu",
        out_dir=run_dir,
        progress=progress,
    )
    trainer = Trainer(tc, data, eval_fn=eval_fn)

    def emerged():
        hits = [r["step"] for r in read_jsonl(eval_path) if r.get("max_prefix_matching", 0) >= cfg.localize.threshold]
        return min(hits) if hits else None

    def done(step):
        e = emerged()
        return e is not None and step >= e + a.train_after

    steps = (
        sorted(
            int(d[4:])
            for d in os.listdir(run_dir)
            if d.startswith("step") and d[4:].isdigit() and has_state(os.path.join(run_dir, d))
        )
        if os.path.isdir(run_dir)
        else []
    )
    if steps:
        trainer.load_checkpoint(os.path.join(run_dir, f"step{steps[-1]}"))
    t0 = time.perf_counter()
    if trainer.step < tr.total_steps and not done(trainer.step):
        trainer.train(end_step=tr.total_steps, stop=done)
    em = emerged()
    recs = {r["step"]: r for r in read_jsonl(eval_path) if "max_prefix_matching" in r}
    last = max(recs)
    if em is not None:
        end = em
    else:  # no head: the latest window that still leaves train_after steps
        cands = [s for s in recs if s <= last - a.train_after]
        end = max(cands) if cands else last
    end = max(end, a.eval_every)
    start = max(0, end - a.window_steps)
    start -= start % a.eval_every
    until = min(last, end + a.train_after)
    return {
        "preset": preset,
        "run_dir": run_dir,
        "emergence_step": em,
        "window": [int(start), int(end)],
        "train_until": int(until),
        "train_s": round(time.perf_counter() - t0, 1),
        "evals": {int(s): recs[s] for s in sorted(recs) if start <= s <= until},
    }


# ---------------------------------------------------------------------------------------------------------------
# attribution on one size


def attribute(cfg, base: dict, data_path: str, out: str, progress: bool) -> Dict[str, np.ndarray]:
    """``fit`` + ``score`` of the induction head on ``base``'s window into ``out``; (global index, score)."""
    from ..stages.fit import run_fit
    from ..stages.score import run_score

    c = copy.deepcopy(cfg)
    c.model.run_dir, c.model.name, c.model.device = base["run_dir"], "", "cpu"
    c.data.path = data_path
    c.window.start_step, c.window.end_step = base["window"]
    c.targets.heads, c.targets.n_induction, c.targets.n_control = "auto", 1, 0
    done = os.path.join(out, "score", "scores.npy")
    meta = os.path.join(out, "attribution.json")
    key = _fp(
        {
            "window": base["window"],
            "run": base["run_dir"],
            "fit": dataclasses.asdict(c.fit),
            "targets": dataclasses.asdict(c.targets),
            "score": dataclasses.asdict(c.score),
        }
    )
    if not (os.path.exists(done) and os.path.exists(meta) and json.load(open(meta)).get("key") == key):
        shutil.rmtree(os.path.join(out, "score"), ignore_errors=True)
        t0 = time.perf_counter()
        run_fit(c, out, progress)
        r = run_score(c, out, resume=False, progress=progress)
        with open(meta, "w") as f:
            json.dump({"key": key, "seconds": round(time.perf_counter() - t0, 1), "seq_per_s": r["seq_per_s"]}, f)
    sc = np.load(os.path.join(out, "score", "scores.npy"))[:, 0].astype(np.float64)
    g = np.load(os.path.join(out, "score", "global_index.npy"))
    targets = json.load(open(os.path.join(out, "targets.json")))
    return {"global_index": g, "scores": sc, "head": targets["heads"][0], "seconds": json.load(open(meta))["seconds"]}


def motifs_from_scores(cfg, data, attr: Dict[str, Any]) -> Dict[str, Any]:
    """Top / bottom / random sets of the window by score and the motifs mined from them."""
    a = cfg.augment
    g, s = attr["global_index"], attr["scores"]
    order = np.lexsort((g, -s))  # score descending, ties: lower index
    k = max(2, int(math.ceil(a.top_frac * g.size)))
    top, bottom = g[order[:k]], g[order[::-1][:k]]
    rest = np.setdiff1d(g, top)
    rnd = np.random.default_rng([a.motif_seed, 0x5EED]).choice(rest, size=min(k, rest.size), replace=False)
    rows = lambda idx: np.asarray(data.rows(np.asarray(idx, np.int64))).astype(np.int64)  # noqa: E731
    res = mine_motifs(rows(top), top.tolist(), rows(bottom), rows(rnd), n_motifs=a.n_motifs, seed=a.motif_seed)
    res["top"], res["top_scores"] = top.tolist(), s[order[:k]].tolist()
    res["bottom"], res["random"] = bottom.tolist(), np.sort(rnd).tolist()
    return res


def category_mix(prefix: str, ids) -> Dict[str, int]:
    from ..data.synthetic import load_category_sidecar

    side = load_category_sidecar(prefix)
    if side is None or not len(ids):
        return {}
    fr, names = side
    dom = np.argmax(fr[np.asarray(ids, np.int64)], 1)
    return {names[c]: int(n) for c, n in zip(*np.unique(dom, return_counts=True))}


# ---------------------------------------------------------------------------------------------------------------
# synthetic data and arms


def synthetic_rows(
    cfg, arm: str, seed: int, n: int, seq_len: int, motifs: Dict[str, List[Motif]], top: List[int], data, llm_log: list
) -> tuple:
    """(rows or None, dataset indices or None) of one arm and seed (``None`` arms insert nothing)."""
    a, loc = cfg.augment, cfg.localize
    if arm == "copy":
        return copy_baseline_rows(
            n,
            seq_len,
            seed,
            low=a.copy_low or loc.low,
            high=a.copy_high or loc.high or 131,
            span=(a.copy_span_min, a.copy_span_max),
        ), None
    if arm == "top":
        return None, [top[j % len(top)] for j in range(n)]
    if arm in ("mechanistic", "mechanistic-large"):
        ms = motifs["small" if arm == "mechanistic" else "large"]
        if a.llm_url:
            return _llm_rows(cfg, ms, seed, n, seq_len, data, llm_log), None
        return MixtureGenerator(ms, seq_len).rows(n, seed), None
    raise ValueError(f"arm {arm!r} has no synthetic rows")


def _llm_rows(cfg, ms: List[Motif], seed: int, n: int, seq_len: int, data, llm_log: list) -> np.ndarray:
    from .llm import ChatClient, llm_generator_rows

    a = cfg.augment
    client = ChatClient(a.llm_url, model=a.llm_model, api_key_env=a.llm_key_env)
    w = np.array([m.share for m in ms])
    counts = np.floor(w / w.sum() * n).astype(int)
    counts[0] += n - counts.sum()
    parts = []
    for m, c in zip(ms, counts):
        if c <= 0:
            continue
        ex = [
            byte_decode(np.asarray(data.rows(np.array([e["id"]], np.int64)))[0]).decode("latin-1") for e in m.examples
        ]
        r = llm_generator_rows(m, ex, client, int(c), seed, seq_len)
        llm_log.append({"motif": m.id, "seed": seed, "source": r["source"], "message": r["message"]})
        logger.info(r["message"])
        parts.append(r["rows"])
    return np.concatenate(parts)[np.random.default_rng([seed, 0xA1]).permutation(n)]


def run_arm(cfg, base: dict, data, arm: str, seed: int, iv, out: str, eval_fn, progress: bool) -> dict:
    """Branch ``base`` at its window start, train to ``train_until`` with ``iv``; the evaluations (cached)."""
    from ..train import branch_from_checkpoint, read_jsonl

    start, end = base["window"]
    until = base["train_until"]
    steps = sorted(base["evals"])
    key = _fp(
        {
            "base": base["run_dir"],
            "window": base["window"],
            "until": until,
            "arm": arm,
            "seed": seed,
            "iv": iv.to_dict(),
            "rows": _fp([it.tokens.tolist() if it.tokens is not None else int(it.index) for it in iv.insert]),
        }
    )
    res_path = os.path.join(out, "result.json")
    if os.path.exists(res_path):
        with open(res_path) as f:
            res = json.load(f)
        if res.get("key") == key:
            return res
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    tr = branch_from_checkpoint(
        os.path.join(base["run_dir"], f"step{start}"),
        data,
        out,
        interventions=iv,
        eval_fn=eval_fn,
        checkpoint_every=10**9,
        checkpoint_extra=tuple(steps),
        save_optimizer=False,
        progress=progress,
    )
    tr.train(end_step=until)
    recs = {r["step"]: r for r in read_jsonl(tr.eval_path) if "max_prefix_matching" in r}
    recs[start] = base["evals"][start]
    res = {"key": key, "evals": {str(s): recs[s] for s in steps}, "seconds": round(time.perf_counter() - t0, 1)}
    for s in steps:
        shutil.rmtree(tr.checkpoint_dir(s), ignore_errors=True)
    tmp = res_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, res_path)
    return res


# ---------------------------------------------------------------------------------------------------------------
# derived figures


def _curve(evals: dict) -> dict:
    steps = sorted(int(s) for s in evals)
    e = {int(k): v for k, v in evals.items()}
    return {
        "steps": steps,
        "score": [e[s]["max_prefix_matching"] for s in steps],
        "icl": [e[s]["icl"] for s in steps],
        "heldout_loss": [e[s]["heldout_loss"] for s in steps],
    }


def _ms(v) -> dict:
    v = [x for x in v if x is not None]
    return {"mean": float(np.mean(v)) if v else None, "std": float(np.std(v)) if v else None, "n": len(v), "values": v}


def derive(size: dict, threshold: float) -> None:
    """Per arm and seed: gain, emergence, ICL, held-out loss; per arm: mean and std over seeds (in place)."""
    none = size["arms"]["none"]["seeds"]
    gstep = size["gain_step"]
    for arm, a in size["arms"].items():
        for seed, d in a["seeds"].items():
            b = none[seed]
            i = d["steps"].index(gstep)
            d["score_at_gain_step"] = d["score"][i]
            d["gain"] = (d["score"][i] - b["score"][i]) / b["score"][i] if b["score"][i] else None
            d["emergence_step"] = next((s for s, v in zip(d["steps"], d["score"]) if v >= threshold), None)
            d["icl_at_gain_step"] = d["icl"][i]
            d["heldout_loss_final"] = d["heldout_loss"][-1]
            d["heldout_loss_change"] = (
                None
                if d["heldout_loss"][-1] is None or b["heldout_loss"][-1] is None
                else d["heldout_loss"][-1] - b["heldout_loss"][-1]
            )
        runs = list(a["seeds"].values())[:1] if a["deterministic"] else list(a["seeds"].values())
        a["summary"] = {
            k: _ms([d[k] for d in runs])
            for k in (
                "gain",
                "score_at_gain_step",
                "emergence_step",
                "icl_at_gain_step",
                "heldout_loss_final",
                "heldout_loss_change",
            )
        }


def findings(res: dict) -> List[str]:
    """Plain sentences, computed whatever the numbers are."""
    out = []
    seeded_noise = []
    for p, sz in res["sizes"].items():
        arms = sz["arms"]
        if sz["emergence_step"] is None:
            out.append(
                f"{p}: no head reached {res['threshold']} in the base run; gains are measured at step "
                f"{sz['gain_step']} anyway."
            )
        g = {a: arms[a]["summary"]["gain"] for a in arms}
        txt = ", ".join(
            f"{a} {100 * v['mean']:+.1f}% ± {100 * v['std']:.1f}"
            for a, v in g.items()
            if v["mean"] is not None and a != "none"
        )
        out.append(f"{p} (gain at step {sz['gain_step']}): {txt}.")
        if "mechanistic" in g and "copy" in g and g["mechanistic"]["mean"] is not None:
            m, c = g["mechanistic"], g["copy"]
            if m["mean"] > c["mean"] + max(m["std"], c["std"]):
                out.append(f"{p}: the mechanistic data beat the generic copy baseline beyond seed spread.")
            elif m["mean"] > c["mean"]:
                out.append(
                    f"{p}: the mechanistic data did not beat the copy baseline beyond seed spread "
                    f"({100 * m['mean']:+.1f}% vs {100 * c['mean']:+.1f}%)."
                )
            else:
                out.append(
                    f"{p}: the mechanistic data did NOT beat the generic copy baseline "
                    f"({100 * m['mean']:+.1f}% vs {100 * c['mean']:+.1f}%)."
                )
        for a in arms:
            if a in SEEDED_ARMS and arms[a]["summary"]["heldout_loss_final"]["std"] is not None:
                seeded_noise.append(arms[a]["summary"]["heldout_loss_final"]["std"])
        hl = {a: arms[a]["summary"]["heldout_loss_change"]["mean"] for a in arms if a != "none"}
        noise = max([arms[a]["summary"]["heldout_loss_final"]["std"] or 0 for a in arms] + [1e-9])
        worse = [a for a, v in hl.items() if v is not None and v > 2 * noise]
        out.append(
            f"{p}: held-out prose loss change vs none: "
            + ", ".join(f"{a} {v:+.4f}" for a, v in hl.items() if v is not None)
            + f" (seed spread up to {noise:.4f}); "
            + (f"worse beyond 2x seed spread: {worse}." if worse else "none worse beyond 2x seed spread.")
        )
        if "mechanistic-large" in g and g["mechanistic-large"]["mean"] is not None:
            s, l = g["mechanistic"]["mean"], g["mechanistic-large"]["mean"]
            out.append(
                f"{p}: motifs mined on the smallest model gave {100 * s:+.1f}%, motifs mined on {p} itself "
                f"{100 * l:+.1f}% ("
                + ("the transfer claim holds here" if s > l else "the transfer claim does not hold here")
                + ")."
            )
    return out


# ---------------------------------------------------------------------------------------------------------------
# the study


def run_study(cfg, out: str, progress: bool = True) -> dict:
    """The whole study into ``out`` (see the module docstring); returns the ``augment.json`` dict."""
    from ..data import PythiaBatches
    from ..stages.demo import prepare_corpus
    from ..stages.io import write_json

    t_all = time.perf_counter()
    a = cfg.augment
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    prefix = prepare_corpus(cfg, out, progress)
    timings["corpus"] = round(time.perf_counter() - t0, 1)
    data = PythiaBatches(prefix, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len)
    any_rows, prose_rows = heldout_rows(cfg, data, prefix)
    eval_fn = make_eval(cfg, any_rows, prose_rows)
    sizes = list(a.sizes)
    bases = {}
    for p in sizes:
        logger.info("\n== base run %s ==", p)
        bases[p] = train_base(cfg, p, data, os.path.join(out, "sizes", p), eval_fn, progress)
        b = bases[p]
        logger.info(
            f"{p}: emergence {b['emergence_step']}, window {b['window']}, until {b['train_until']} ({b['train_s']} s)"
        )
    timings["base_runs"] = round(sum(b["train_s"] for b in bases.values()), 1)
    t0 = time.perf_counter()
    attr = {"small": attribute(cfg, bases[sizes[0]], prefix, os.path.join(out, "mda", sizes[0]), progress)}
    mined = {"small": motifs_from_scores(cfg, data, attr["small"])}
    transfer = a.transfer and len(sizes) > 1
    if transfer:
        attr["large"] = attribute(cfg, bases[sizes[-1]], prefix, os.path.join(out, "mda", sizes[-1]), progress)
        mined["large"] = motifs_from_scores(cfg, data, attr["large"])
    timings["attribution_and_motifs"] = round(time.perf_counter() - t0, 1)
    motifs = {k: v["motifs"] for k, v in mined.items()}

    B, S = data.batch_size, data.seq_len
    llm_log: list = []
    results: Dict[str, Any] = {}
    t0 = time.perf_counter()
    for p in sizes:
        b = bases[p]
        start, end = b["window"]
        win_steps = list(range(start, end))
        n = budget_rows(len(win_steps) * B, a.budget_frac)
        arms = [x for x in a.arms]
        if transfer and p == sizes[-1]:
            arms.append("mechanistic-large")
        size = {
            "preset": p,
            "emergence_step": b["emergence_step"],
            "window": b["window"],
            "train_until": b["train_until"],
            "gain_step": end,
            "budget_rows": n,
            "budget_tokens": n * S,
            "base_train_s": b["train_s"],
            "arms": {},
        }
        none = _curve({str(s): r for s, r in b["evals"].items()})
        for arm in arms:
            det = arm in ("none", "top")
            entry = {"deterministic": det, "seeds": {}}
            for seed in a.seeds:
                if arm == "none":
                    entry["seeds"][str(seed)] = dict(none)
                    continue
                if det and seed != a.seeds[0]:
                    entry["seeds"][str(seed)] = entry["seeds"][str(a.seeds[0])]
                    continue
                if arm == "random":
                    pool = np.arange(start * B, end * B)
                    idx = np.random.default_rng([seed, 0x5EED]).choice(pool, size=min(n, pool.size), replace=False)
                    iv = plan_duplicates(idx.tolist(), win_steps, name="random", seed=seed)
                else:
                    rows, idx = synthetic_rows(cfg, arm, seed, n, S, motifs, mined["small"]["top"], data, llm_log)
                    iv = (
                        plan_insertions(rows, win_steps, name=arm, seed=seed)
                        if rows is not None
                        else plan_duplicates(idx, win_steps, name=arm, seed=seed)
                    )
                logger.info(f"{p} {arm} seed {seed}: {len(iv.insert)} rows inserted over steps {start}..{end - 1}")
                r = run_arm(
                    cfg,
                    b,
                    data,
                    arm,
                    seed,
                    iv,
                    os.path.join(out, "sizes", p, "arms", arm, f"seed{seed}"),
                    eval_fn,
                    progress,
                )
                d = _curve(r["evals"])
                d["train_s"] = r["seconds"]
                d["insertion"] = insertion_log(iv, S)
                entry["seeds"][str(seed)] = d
            size["arms"][arm] = entry
        derive(size, cfg.localize.threshold)
        results[p] = size
    timings["arms"] = round(time.perf_counter() - t0, 1)
    res = {
        "sizes": results,
        "threshold": cfg.localize.threshold,
        "seeds": list(a.seeds),
        "gain_definition": "(score - score_none) / score_none at the gain step: the window end, the evaluation "
        "where the base run's best head first reached the threshold; score = max prefix "
        "matching over all heads",
        "motifs": {
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
        },
        "llm": llm_log,
        "settings": {
            "augment": dataclasses.asdict(a),
            "train": dataclasses.asdict(cfg.train),
            "data": {"batch_size": B, "seq_len": S},
            "corpus": dataclasses.asdict(cfg.corpus),
        },
        "stage_seconds": timings,
        "elapsed_s": round(time.perf_counter() - t_all, 1),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    res["findings"] = findings(res)
    write_json(os.path.join(out, OUTPUT), res)
    return res

"""``mda-fast study``: the whole method on real text that ships with the interpreter and the installed packages.

1. corpus: the sources of ``study.sources`` (:mod:`mda_fast.data.sources`: the standard library's modules, its
   test data (decimal test vectors, XML, PEM certificates, JSON/TOML), pip's CA bundle, numpy's CSV test sets,
   matplotlib's data files) are copied to ``OUT/data/sources/``, built into a byte-level corpus
   (:func:`mda_fast.data.corpus.build_corpus`, category per file) and its rows shuffled with ``study.shuffle_seed``
   (Pythia shuffles its packed rows too). ``OUT/data/corpus.manifest.json`` records every file's SHA-256, each
   source's distribution and version, the interpreter's version and the permutation's hash, so the same command
   gives the same corpus on a machine with the same versions (``corpus_fingerprint`` in the summary);
2. train a tiny GPT-NeoX until an induction head forms (``train_base``); 3. localize; 4. fit; 5. score the
   formation window with the probes of ``targets.probes`` (the real-text induction probe first: it ranks);
6. analyze, plus the category enrichment of the top *and* bottom sets against base rates, each with the spread of
   ``study.random_sets`` random sets of the same size; the real-text ICL score and induction-probe value of every
   base checkpoint on held-out rows; 7. the deletion / augmentation arms against random and category-matched
   random sets; 8. ``OUT/report.html`` and ``OUT/summary.json``, whose findings are computed from the results.

Every stage skips finished work (training and the arms resume from their checkpoints, scoring from its chunks), so
rerunning the same command continues an interrupted study; a different config on the same ``--out`` is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time

import numpy as np

from ..config import Config, load_config, packaged_config, resolve_config_arg
from ..errors import ConfigError, DataError
from ..study.findings import findings, findings_text, intervention_findings
from .analyze import run_analyze
from .checks import check_preset, validate
from .demo import _differences, choose_window
from .fit import run_fit
from .inputs import load_targets
from .intervene import run_intervene
from .io import OutputLock, read_json, write_json
from .localize import run_localize
from .report import run_report
from .score import run_score
from .train import train_base

logger = logging.getLogger(__name__)

STUDY_STATE = "study.json"
#: ``--quick``: a tiny corpus and short runs (the test's end-to-end check, well under a minute)
QUICK = [
    "study.sources={ stdlib-decimal = 60000, stdlib-xml = 20000, stdlib-pem = 12000, stdlib-data = 12000, "
    "stdlib-python = 60000 }",
    "corpus.seq_len=65",
    "data.seq_len=65",
    "data.batch_size=8",
    "corpus.heldout_sequences=16",
    "train.total_steps=30",
    "train.checkpoint_every=10",
    "train.window_steps=10",
    "train.after_emergence=0",
    "localize.threshold=2.0",
    "localize.n=8",
    "localize.seq_len=16",
    "targets.probe_L=16",
    "targets.probe_n=8",
    "targets.text_probe_n=4",
    "fit.n_sequences=32",
    "fit.batch_size=8",
    "score.batch_size=16",
    "score.chunk=64",
    "study.random_sets=20",
    "study.icl_rows=8",
    "intervene.seeds=[0]",
    "intervene.train_after=0",
    "intervene.eval_every=5",
    'intervene.arms=["baseline", "delete-top", "delete-matched", "augment-top", "augment-matched"]',
]


# ------------------------------------------------------------------------------------------------ corpus


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corpus_fingerprint(prefix: str) -> str:
    """SHA-256 over the token file, the index and the category sidecar's array: equal for equal corpora."""
    h = hashlib.sha256()
    for ext in (".bin", ".idx", ".categories.npy"):
        h.update(_sha256_file(prefix + ext).encode())
    return h.hexdigest()


def prepare_real_corpus(cfg: Config, out: str, progress: bool = True) -> dict:
    """Snapshot the sources, build and shuffle the corpus at ``OUT/data/corpus`` (skipped when its manifest exists);
    sets ``data.path``/``data.seq_len`` and caps ``train.total_steps`` to the rows before the held-out tail.
    Returns the manifest."""
    from ..data.categories import load_category_sidecar, write_category_sidecar
    from ..data.corpus import CorpusConfig, build_corpus
    from ..data.megatron import write_megatron
    from ..data.pythia import PythiaBatches
    from ..data.sources import environment_versions, snapshot_sources

    c, st = cfg.corpus, cfg.study
    data_dir = os.path.join(out, "data")
    prefix = os.path.join(data_dir, "corpus")
    man_path = prefix + ".manifest.json"
    if not os.path.exists(man_path):
        tmp = os.path.join(data_dir, "tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        src_dir = os.path.join(tmp, "sources")
        os.makedirs(src_dir)
        records = snapshot_sources(dict(st.sources), src_dir, st.max_file_bytes)
        roots = [os.path.join(src_dir, r["name"]) for r in records]
        staged = os.path.join(tmp, "packed")
        m = build_corpus(
            roots,
            staged,
            CorpusConfig(tokenizer="bytes", seq_len=c.seq_len, packing=c.packing, max_file_bytes=st.max_file_bytes),
            progress=progress,
        )
        b = PythiaBatches(staged, batch_size=1, seq_len=c.seq_len)
        rows = np.asarray(b.rows(np.arange(b.n_rows)))
        order = np.random.default_rng(st.shuffle_seed).permutation(b.n_rows)
        fr, names = load_category_sidecar(staged)
        side = read_json(staged + ".categories.json")
        write_megatron(os.path.join(tmp, "corpus"), rows[order], dtype=rows.dtype)
        write_category_sidecar(
            os.path.join(tmp, "corpus"),
            fr[order],
            names,
            **{k: v for k, v in side.items() if k not in ("categories", "n_rows")},
        )
        np.save(os.path.join(tmp, "corpus.order.npy"), order)
        m["roots"] = [f"sources/{r['name']}" for r in records]  # relative to OUT/data (machine-independent)
        for r in records:
            r.pop("files")  # every file's hash is in m["files"] (root = the source's index)
        m["sources"] = records
        m["environment"] = environment_versions(
            [r["distribution"] for r in records if r["distribution"] != "python"] + ["torch", "transformers", "numpy"]
        )
        m["environment"].pop("stdlib", None)
        m["shuffle"] = {
            "seed": st.shuffle_seed,
            "order": "corpus.order.npy",
            "order_sha256": hashlib.sha256(order.astype(np.int64).tobytes()).hexdigest(),
            "note": "row i of the corpus is row order[i] of the packed files (files[].rows count packed rows)",
        }
        with open(os.path.join(tmp, "corpus.manifest.json"), "w") as fh:
            json.dump(m, fh, indent=1)
        m["fingerprint"] = corpus_fingerprint(os.path.join(tmp, "corpus"))
        with open(os.path.join(tmp, "corpus.manifest.json"), "w") as fh:
            json.dump(m, fh, indent=1)
        for name in (
            "corpus.bin",
            "corpus.categories.npy",
            "corpus.categories.json",
            "corpus.order.npy",
            "corpus.idx",
            "corpus.manifest.json",
        ):  # the manifest last: it marks a finished corpus
            os.replace(os.path.join(tmp, name), os.path.join(data_dir, name))
        shutil.rmtree(os.path.join(data_dir, "sources"), ignore_errors=True)
        os.replace(src_dir, os.path.join(data_dir, "sources"))
        shutil.rmtree(tmp, ignore_errors=True)
    m = read_json(man_path)
    cfg.data.path, cfg.data.seq_len, cfg.data.tokenizer = prefix, c.seq_len, "bytes"
    B = cfg.data.batch_size
    usable = (m["n_rows"] - c.heldout_sequences) // B
    if usable < cfg.train.window_steps + 1:
        raise DataError(
            f"the corpus holds {m['n_rows']} rows: {usable} steps of {B} before the "
            f"{c.heldout_sequences} held-out rows, fewer than a window of {cfg.train.window_steps}; "
            f"raise study.sources' caps or lower data.batch_size"
        )
    if cfg.train.total_steps > usable:
        logger.info(
            f"[study] the corpus holds {usable} training steps: train.total_steps {cfg.train.total_steps} -> {usable}"
        )
        cfg.train.total_steps = usable
    shares = ", ".join(f"{k} {v['share']:.1%}" for k, v in m["totals"].items() if v["share"] > 0)
    logger.info(
        f"[study] corpus: {m['n_files']} files from {len(m['sources'])} sources -> {m['n_rows']} rows of "
        f"{m['seq_len']} bytes; {shares}"
    )
    return m


# ------------------------------------------------------------------------------------------------ statistics


def enrichment_with_spread(out: str, cfg: Config) -> dict:
    """Category enrichment (share / base rate) of the top and bottom ``analyze.top_frac`` of the primary target's
    scores, each with the 2.5–97.5% range of the same ratio over ``study.random_sets`` uniformly random sets of
    the same size (what chance gives)."""
    from ..data.categories import load_category_sidecar
    from ..study.stats import category_enrichment

    d = os.path.join(out, "score")
    s = np.asarray(np.load(os.path.join(d, "scores.npy"), mmap_mode="r")[:, 0], dtype=np.float64)
    gi = np.asarray(np.load(os.path.join(d, "global_index.npy"), mmap_mode="r"), dtype=np.int64)
    fr, names = load_category_sidecar(cfg.data.path)
    rows = np.asarray(fr, np.float64)[gi]
    n = s.size
    k = int(np.ceil(cfg.analyze.top_frac * n))
    order = np.lexsort((np.arange(n), -s))  # descending score, ties by row order
    rng = np.random.default_rng(cfg.study.shuffle_seed + 1)
    rand = np.stack([rows[rng.choice(n, k, replace=False)].mean(axis=0) for _ in range(cfg.study.random_sets)])
    base = rows.mean(axis=0)
    out_d = {"k": k, "n": n, "random_sets": cfg.study.random_sets, "categories": {}}
    top = category_enrichment(order[:k], rows, names)
    bot = category_enrichment(order[-k:], rows, names)
    for j, c in enumerate(names):
        if base[j] <= 0:
            continue
        lo, hi = np.quantile(rand[:, j] / base[j], [0.025, 0.975])
        out_d["categories"][c] = {
            "base_share": float(base[j]),
            "top_share": top[c]["top_share"],
            "top_ratio": top[c]["ratio"],
            "bottom_share": bot[c]["top_share"],
            "bottom_ratio": bot[c]["ratio"],
            "random_ratio_95": [float(lo), float(hi)],
        }
    return out_d


def icl_curve(cfg: Config, out: str, run_dir: str) -> dict:
    """Per base checkpoint: the real-text ICL score (:func:`mda_fast.text_probes.icl_score_text`) and the
    real-text induction probe's value on the last ``study.icl_rows`` held-out rows, and the best prefix-matching
    score (from the run's ``eval.jsonl``)."""
    import torch

    from ..data.pythia import PythiaBatches
    from ..model import load_pythia
    from ..text_probes import TextInductionProbe, icl_score_text
    from ..train import read_jsonl

    path = os.path.join(out, "study", "icl.json")
    b = PythiaBatches(cfg.data.path, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len)
    n = min(cfg.study.icl_rows, cfg.corpus.heldout_sequences)
    ix = np.arange(b.n_rows - n, b.n_rows)
    rows = torch.from_numpy(np.asarray(b.rows(ix)).astype(np.int64))
    steps = sorted(int(x[4:]) for x in os.listdir(run_dir) if x.startswith("step") and x[4:].isdigit())
    done = read_json(path) if os.path.exists(path) else {"steps": [], "icl": [], "probe_f": []}
    if done["steps"] == steps:
        return done
    pm = {r["step"]: r.get("max_prefix_matching") for r in read_jsonl(os.path.join(run_dir, "eval.jsonl"))}
    probe = TextInductionProbe(rows=rows, exclude=(0,))
    res = {
        "steps": steps,
        "icl": [],
        "probe_f": [],
        "max_prefix_matching": [pm.get(s) for s in steps],
        "heldout_rows": [int(ix[0]), int(ix[-1])],
    }
    torch.manual_seed(0)
    for s in steps:
        model = load_pythia(os.path.join(run_dir, f"step{s}"))
        res["icl"].append(icl_score_text(model, rows, batch_size=16))
        with torch.no_grad():
            ids = probe.inputs(model)
            logits = model(input_ids=ids, use_cache=False).logits
            res["probe_f"].append(float(probe.objective(model, None, ids, logits, None).double().sum()))
    write_json(path, res)
    return res


# ------------------------------------------------------------------------------------------------ the study


def _scores_complete(out: str) -> bool:
    from ..errors import StateError
    from .checks import require_complete_scores

    try:
        require_complete_scores(out)
    except StateError:
        return False
    return os.path.exists(os.path.join(out, "factors", "factors.json"))


def check_study_out(cfg: Config, out: str) -> None:
    path = os.path.join(out, STUDY_STATE)
    if not os.path.exists(path):
        if os.path.isdir(out) and os.path.exists(os.path.join(out, "data", "corpus.manifest.json")):
            raise ConfigError(f"--out {out} holds a corpus but no {STUDY_STATE}; use a fresh --out")
        return
    diff = _differences(read_json(path)["config"], cfg.to_dict())
    if diff:
        raise ConfigError(
            f"--out {out} holds a study made with another config ({'; '.join(diff[:4])}"
            + (f"; {len(diff) - 4} more" if len(diff) > 4 else "")
            + "); use a fresh --out, or the "
            "same --set values to continue it"
        )


def load_study_config(config_path: str | None, overrides: list | None, quick: bool = False) -> Config:
    path = resolve_config_arg(config_path) if config_path else packaged_config("real-text")
    return load_config(path, (QUICK if quick else []) + list(overrides or []))


def check_study_config(cfg: Config) -> None:
    """What the study needs beyond the per-key checks: known sources, a byte-level preset, the real-text probe."""
    from ..data.sources import SOURCES

    unknown = [n for n in cfg.study.sources if n not in SOURCES]
    if unknown:
        raise ConfigError(f"study.sources: unknown source(s) {unknown}; expected names from {sorted(SOURCES)}")
    if not cfg.study.sources:
        raise ConfigError(f"study.sources is empty: expected name = max_bytes entries from {sorted(SOURCES)}")
    if any(v < 1 for v in cfg.study.sources.values()):
        raise ConfigError(f"study.sources: every cap must be >= 1 byte, got {dict(cfg.study.sources)}")
    check_preset(cfg)
    from ..train import get_preset

    if get_preset(cfg.train.preset).vocab_size < 260:
        raise ConfigError(
            f"train.preset = {cfg.train.preset!r}: the study's corpus is byte-level; expected a "
            f"preset with a vocabulary of at least 260 (tiny-*)"
        )
    if cfg.corpus.seq_len != cfg.data.seq_len:
        raise ConfigError(
            f"corpus.seq_len = {cfg.corpus.seq_len} and data.seq_len = {cfg.data.seq_len} differ; "
            f"expected the same row length"
        )
    if cfg.corpus.heldout_sequences < 1:
        raise ConfigError("corpus.heldout_sequences = 0: the study's ICL and the arms need held-out rows")


def run_study(
    out: str, overrides: list | None = None, config_path: str | None = None, progress: bool = True, quick: bool = False
) -> dict:
    """The whole study into ``out``; rerunning the same command continues an interrupted one."""
    t0 = time.perf_counter()
    cfg = load_study_config(config_path, overrides, quick)
    check_study_config(cfg)
    check_study_out(cfg, out)
    as_given = cfg.to_dict()
    cfg.data.path = os.path.join(out, "data", "corpus")  # where the corpus will be (the probes' check needs a path)
    validate("demo", cfg, out)  # the config, the probes' settings (data-free), the device, the preset
    with OutputLock(out):
        if not os.path.exists(os.path.join(out, STUDY_STATE)):
            write_json(os.path.join(out, STUDY_STATE), {"config": as_given, "quick": quick})
        return _run_stages(cfg, out, progress, t0)


def _run_stages(cfg: Config, out: str, progress: bool, t0: float) -> dict:
    timings = {}

    def stage(name, fn, *a, **k):
        s = time.perf_counter()
        logger.info("\n== %s ==", name)
        r = fn(*a, **k)
        timings[name] = round(time.perf_counter() - s, 2)
        return r

    manifest = stage("corpus", prepare_real_corpus, cfg, out, progress)
    if "induction_text" in cfg.targets.probes and not cfg.targets.text_probe_rows:
        # the text probe's rows: held-out rows (never trained on), the ones before the ICL rows
        n_rows, n = manifest["n_rows"], cfg.targets.text_probe_n
        held = cfg.corpus.heldout_sequences
        lo = n_rows - held
        cfg.targets.text_probe_rows = list(range(lo, lo + min(n, held)))
    validate("train", cfg, out)
    run_dir = stage("train", train_base, cfg, out, progress)
    loc = stage("localize", run_localize, cfg, out, progress)
    win = choose_window(cfg, loc)
    logger.info(
        f"primary induction head L{win['head'][0]}H{win['head'][1]}: prefix-matching {win['final_score']:.3f} "
        f"at the last checkpoint, emergence step {win['emergence_step']}; window {win['window'][0]}.."
        f"{win['window'][1]}"
    )
    done_path = os.path.join(out, "study", "score.json")
    if os.path.exists(done_path) and _scores_complete(out):
        # fit and score are done (a refit would change the factors' fingerprint and void the scores)
        sc = read_json(done_path)
        logger.info(f"[study] fit and score: done earlier ({sc['n_scored']} rows scored)")
    else:
        stage("fit", run_fit, cfg, out, progress)
        sc = stage("score", run_score, cfg, out, resume=True, progress=progress)
        write_json(done_path, {"n_scored": int(sc["n_scored"]), "seq_per_s": float(sc["seq_per_s"])})
    res = stage("analyze", run_analyze, cfg, out, progress)
    targets, _ = load_targets(out)
    found = findings(res, targets)
    enrich = stage("enrichment", enrichment_with_spread, out, cfg)
    write_json(os.path.join(out, "study", "enrichment.json"), enrich)
    icl = stage("icl", icl_curve, cfg, out, run_dir)
    interventions = None
    if cfg.intervene.enabled:
        interventions = stage("intervene", run_intervene, cfg, out, progress=progress)
    write_json(os.path.join(out, "config.resolved.json"), cfg.to_dict())
    lines = study_findings(manifest, win, enrich, icl, found, cfg)
    if interventions is not None:
        lines += intervention_findings(interventions)
    report = stage("report", run_report, cfg, out, interventions=interventions, notes=lines)
    summary = {
        "corpus": {
            "n_files": manifest["n_files"],
            "n_rows": manifest["n_rows"],
            "seq_len": manifest["seq_len"],
            "fingerprint": manifest["fingerprint"],
            "environment": manifest["environment"],
            "sources": [
                {k: r[k] for k in ("name", "distribution", "version", "n_files", "bytes")} for r in manifest["sources"]
            ],
            "token_share": {k: v["share"] for k, v in manifest["totals"].items() if v["share"] > 0},
        },
        "settings": {
            "preset": cfg.train.preset,
            "lr": cfg.train.lr,
            "batch_size": cfg.data.batch_size,
            "seq_len": cfg.data.seq_len,
            "packing": cfg.corpus.packing,
            "seed": cfg.train.seed,
            "probes": list(cfg.targets.probes),
            "threshold": cfg.localize.threshold,
        },
        "induction_heads": [
            [h["layer"], h["head"], h["prefix_matching"]] for h in targets["heads"] if h["role"] == "induction"
        ],
        "control_heads": [[h["layer"], h["head"], h["prev_token"]] for h in targets["heads"] if h["role"] == "control"],
        "emergence_step": win["emergence_step"],
        "window": win["window"],
        "n_scored": sc["n_scored"],
        "top_share": found["top_share"],
        "top_frac": found["top_frac"],
        "power_law": (
            {k: found["power_law"][k] for k in ("exponent", "r2")}
            if found.get("power_law") and "exponent" in found["power_law"]
            else None
        ),
        "enrichment": enrich,
        "icl_curve": icl,
        "overlap": found["overlap"],
        "findings": lines + findings_text(found)[1:2],
        "scoring_seq_per_s": sc["seq_per_s"],
        "stage_seconds": timings,
        "elapsed_s": round(time.perf_counter() - t0, 2),
        "report": os.path.abspath(report),
    }
    if interventions is not None:
        summary["interventions"] = interventions.get("summary", interventions)
    write_json(os.path.join(out, "summary.json"), summary)
    logger.info(
        "\n".join(["", *summary["findings"], f"report: {summary['report']}", f"elapsed {summary['elapsed_s']} s"])
    )
    return summary


def study_findings(manifest: dict, win: dict, enrich: dict, icl: dict, found: dict, cfg: Config) -> list:
    """The study's findings, computed from its results (never assumed)."""
    L, h = win["head"]
    em = win["emergence_step"]
    lines = [
        f"Corpus: {manifest['n_files']} files from {len(manifest['sources'])} sources, {manifest['n_rows']} rows "
        f"of {manifest['seq_len']} bytes (fingerprint {manifest['fingerprint'][:12]})."
    ]
    lines.append(
        f"Induction head L{L}H{h}: "
        + (
            f"prefix-matching reached {cfg.localize.threshold} at step {em}"
            if em is not None
            else f"never reached prefix-matching {cfg.localize.threshold}; best "
            f"{win['final_score']:.3f} at the last checkpoint"
        )
        + f"; formation window steps {win['window'][0]}..{win['window'][1]}."
    )
    if icl["steps"]:
        lines.append(
            f"Real-text ICL score (late minus early loss on {cfg.study.icl_rows} held-out rows): "
            f"{icl['icl'][0]:+.3f} at step {icl['steps'][0]} -> {icl['icl'][-1]:+.3f} at step "
            f"{icl['steps'][-1]}; real-text induction probe {icl['probe_f'][0]:.3f} -> {icl['probe_f'][-1]:.3f}."
        )
    if found["top_share"] is not None:
        lines.append(
            f"The top {100 * found['top_frac']:.0f}% of window rows hold {100 * found['top_share']:.1f}% of "
            f"the positive influence."
        )
    for which in ("top", "bottom"):
        cats = enrich["categories"]
        over = [
            (c, v[f"{which}_ratio"], v["random_ratio_95"])
            for c, v in cats.items()
            if v[f"{which}_ratio"] is not None and v[f"{which}_ratio"] > v["random_ratio_95"][1]
        ]
        under = [
            (c, v[f"{which}_ratio"], v["random_ratio_95"])
            for c, v in cats.items()
            if v[f"{which}_ratio"] is not None and v[f"{which}_ratio"] < v["random_ratio_95"][0]
        ]
        fmt = lambda xs: ", ".join(f"{c} ×{r:.2f}" for c, r, _ in sorted(xs, key=lambda x: -x[1])) or "none"
        lines.append(
            f"{which.capitalize()} {100 * cfg.analyze.top_frac:.0f}% vs base rates (beyond the 95% range of "
            f"{enrich['random_sets']} random sets): over-represented {fmt(over)}; under-represented "
            f"{fmt(under)}."
        )
    return lines


def arms_table(summary: dict) -> str:
    """The arms as a Markdown table (emergence step per seed, area vs baseline, ICL and prefix-matching change at
    the end of retraining, mean ± std over seeds) from a study's ``summary.json``."""
    arms = summary.get("interventions") or {}
    if not arms:
        return ""

    def ms(d):
        if not d or d.get("mean") is None:
            return "n/a"
        return f"{d['mean']:+.4f}" + (f" ± {d['std']:.4f}" if d.get("n", 1) > 1 else "")

    lines = [
        "| arm | seeds | emergence step per seed | area vs baseline (score × steps) | ICL change | head-score change |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm, a in arms.items():
        em = ", ".join("never" if v is None else str(v) for v in a["emergence_steps"].values())
        last = max(a["icl_change"], key=int)
        lines.append(
            f"| {arm} | {a['n_seeds']} | {em} | {ms(a['area_vs_baseline'])} | {ms(a['icl_change'][last])} | "
            f"{ms(a['head_score_change'][last])} |"
        )
    return "\n".join(lines)

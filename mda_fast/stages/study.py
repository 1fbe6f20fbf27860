"""``mda-fast study``: the whole method on real text that ships with the interpreter and the installed packages.

1. corpus: the sources of ``study.sources`` (:mod:`mda_fast.data.sources`: the standard library's modules, its
   test data (decimal test vectors, XML, PEM certificates, JSON/TOML), pip's CA bundle, numpy's CSV test sets,
   matplotlib's data files) are copied to ``OUT/data/sources/``, built into a byte-level corpus
   (:func:`mda_fast.data.corpus.build_corpus`, category per file) and its rows shuffled with ``study.shuffle_seed``
   (Pythia shuffles its packed rows too). ``OUT/data/corpus.manifest.json`` records every file's SHA-256, each
   source's distribution and version, the interpreter's version and the permutation's hash, so the same command
   gives the same corpus on a machine with the same versions (``corpus_fingerprint`` in the summary);
2. train a tiny model of ``train.family`` until an induction head forms (``train_base``); 3. localize; 4. fit; 5. score the
   formation window with the probes of ``targets.probes`` (the real-text induction probe first: it ranks);
6. analyze, plus the category enrichment of the top *and* bottom sets against base rates, each with the spread of
   ``study.random_sets`` random sets of the same size; how often plain induction holds in the top, bottom and all
   scored rows (``study/structure.json``); the real-text ICL score and induction-probe value of every
   base checkpoint on held-out rows; 7. the deletion / augmentation arms against random and category-matched
   random sets; 8. ``OUT/report.html`` and ``OUT/summary.json``, whose findings are computed from the results.

Every stage skips finished work (training and the arms resume from their checkpoints, scoring from its chunks), so
rerunning the same command continues an interrupted study; a different config on the same ``--out`` is refused.
"""

from __future__ import annotations

import logging
import os

from ..config import Config, load_config, packaged_config, resolve_config_arg
from ..data.corpus import corpus_fingerprint  # noqa: F401 (re-exported)
from ..errors import ConfigError
from ..io import OutputLock, read_json, write_json
from ..study.findings import findings_text, intervention_findings
from ..study.measures import enrichment_with_spread, icl_curve, induction_structure
from .checks import check_preset, validate
from .demo import choose_window
from .intervene import run_intervene
from .localize import run_localize
from .report import run_report
from .runs import Stages, analyze, attribution_summary, finish, fit_and_score, log_window, refuse_other_config
from .study_corpus import prepare_real_corpus
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
    refuse_other_config(out, STUDY_STATE, cfg, "a study")


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
    stage = Stages()
    cfg = load_study_config(config_path, overrides, quick)
    check_study_config(cfg)
    check_study_out(cfg, out)
    as_given = cfg.to_dict()
    cfg.data.path = os.path.join(out, "data", "corpus")  # where the corpus will be (the probes' check needs a path)
    validate("demo", cfg, out)  # the config, the probes' settings (data-free), the device, the preset
    with OutputLock(out):
        if not os.path.exists(os.path.join(out, STUDY_STATE)):
            write_json(os.path.join(out, STUDY_STATE), {"config": as_given, "quick": quick})
        return _run_stages(cfg, out, progress, stage)


def _text_probe_rows(cfg: Config, manifest: dict) -> None:
    """The text probe's rows, unless given: held-out rows (never trained on), the ones before the ICL rows."""
    if "induction_text" in cfg.targets.probes and not cfg.targets.text_probe_rows:
        held = cfg.corpus.heldout_sequences
        lo = manifest["n_rows"] - held
        cfg.targets.text_probe_rows = list(range(lo, lo + min(cfg.targets.text_probe_n, held)))


def _fit_and_score_once(stage: Stages, cfg: Config, out: str, progress: bool) -> dict:
    """Fit and score, or what an earlier run of the study recorded (a refit would change the factors'
    fingerprint and void the scores)."""
    done_path = os.path.join(out, "study", "score.json")
    if os.path.exists(done_path) and _scores_complete(out):
        sc = read_json(done_path)
        logger.info(f"[study] fit and score: done earlier ({sc['n_scored']} rows scored)")
        return sc
    sc = fit_and_score(stage, cfg, out, progress)
    write_json(done_path, {"n_scored": int(sc["n_scored"]), "seq_per_s": float(sc["seq_per_s"])})
    return sc


def _run_stages(cfg: Config, out: str, progress: bool, stage: Stages) -> dict:
    manifest = stage("corpus", prepare_real_corpus, cfg, out, progress)
    _text_probe_rows(cfg, manifest)
    validate("train", cfg, out)
    run_dir = stage("train", train_base, cfg, out, progress)
    loc = stage("localize", run_localize, cfg, out, progress)
    win = choose_window(cfg, loc)
    log_window(win)
    sc = _fit_and_score_once(stage, cfg, out, progress)
    _, targets, found = analyze(stage, cfg, out, progress)
    enrich = stage("enrichment", enrichment_with_spread, out, cfg)
    write_json(os.path.join(out, "study", "enrichment.json"), enrich)
    structure = stage("structure", induction_structure, out, cfg)
    write_json(os.path.join(out, "study", "structure.json"), structure)
    icl = stage("icl", icl_curve, cfg, out, run_dir)
    interventions = None
    if cfg.intervene.enabled:
        interventions = stage("intervene", run_intervene, cfg, out, progress=progress)
    write_json(os.path.join(out, "config.resolved.json"), cfg.to_dict())
    lines = study_findings(manifest, win, enrich, icl, found, cfg) + [structure_finding(structure, cfg)]
    if interventions is not None:
        lines += intervention_findings(interventions)
    report = stage("report", run_report, cfg, out, interventions=interventions, notes=lines)
    summary = {"corpus": _corpus_summary(manifest), "settings": _settings(cfg)}
    summary.update(attribution_summary(targets, win, sc, found))
    summary.update(
        enrichment=enrich, induction_structure=structure, icl_curve=icl, findings=lines + findings_text(found)[1:2]
    )
    if interventions is not None:
        summary["interventions"] = interventions.get("summary", interventions)
    return finish(out, summary, stage, report)


def _corpus_summary(manifest: dict) -> dict:
    keep = ("name", "distribution", "version", "n_files", "bytes")
    return {
        "n_files": manifest["n_files"],
        "n_rows": manifest["n_rows"],
        "seq_len": manifest["seq_len"],
        "fingerprint": manifest["fingerprint"],
        "environment": manifest["environment"],
        "sources": [{k: r[k] for k in keep} for r in manifest["sources"]],
        "token_share": {k: v["share"] for k, v in manifest["totals"].items() if v["share"] > 0},
    }


def _settings(cfg: Config) -> dict:
    return {
        "preset": cfg.train.preset,
        "lr": cfg.train.lr,
        "batch_size": cfg.data.batch_size,
        "seq_len": cfg.data.seq_len,
        "packing": cfg.corpus.packing,
        "seed": cfg.train.seed,
        "probes": list(cfg.targets.probes),
        "threshold": cfg.localize.threshold,
    }


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


def structure_finding(st: dict, cfg: Config) -> str:
    """One line: how often plain induction predicts the next token in the top, bottom and all scored rows."""
    pct = round(100 * cfg.analyze.top_frac)
    lo, hi = st["random_95"]
    return (
        f"Plain induction (the next token is the one that followed this token's last earlier occurrence) holds at "
        f"{100 * st['top']:.1f}% of the positions where it applies in the top {pct}% rows, "
        f"{100 * st['bottom']:.1f}% in the bottom {pct}%, {100 * st['all']:.1f}% in all {st['n']} scored rows "
        f"(random {st['k']}-row sets: "
        f"{100 * lo:.1f}–{100 * hi:.1f}%); rank correlation with the score "
        + ("undefined" if st["spearman"] is None else f"{st['spearman']:+.2f}")
        + "."
    )


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

"""``mda-fast demo``: the whole method on a laptop CPU, with no data or network.

1. generate the synthetic corpus (``mda_fast.data.synthetic``), Megatron format with a category sidecar;
2. train a tiny model (``train.family``, GPT-NeoX by default) with Pythia-style checkpoints until an induction head
   forms;
3. localize every head at every checkpoint and find the emergence step;
4. fit EK-FAC for the induction head (and a control head) at the window-end checkpoint;
5. score every sequence of the formation window; 6. analyze and write the report;
7. retrain the window under deletion / augmentation arms (``mda_fast.study.interventions``).

Every stage skips work whose output already exists, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import logging
import os

from ..config import Config, fields_for, load_config, packaged_config, resolve_config_arg
from ..errors import ConfigError
from ..io import OutputLock, write_json
from ..study.findings import findings_text, intervention_findings
from .checks import validate
from .intervene import run_intervene
from .localize import run_localize
from .report import run_report
from .runs import Stages, analyze, attribution_summary, finish, fit_and_score, log_window, refuse_other_config
from .train import train_base

logger = logging.getLogger(__name__)


def prepare_corpus(cfg: Config, out: str, progress: bool) -> str:
    from ..data.synthetic import DEFAULT_MIX, SyntheticConfig, generate_corpus

    c, tr, B = cfg.corpus, cfg.train, cfg.data.batch_size
    prefix = os.path.join(out, "data", "corpus")
    n_rows = c.n_sequences or tr.total_steps * B + c.heldout_sequences
    if not os.path.exists(prefix + ".categories.json"):
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        generate_corpus(
            prefix,
            SyntheticConfig(**fields_for(SyntheticConfig, c, n_sequences=n_rows, mix=dict(c.mix) or dict(DEFAULT_MIX))),
            progress=progress,
        )
    cfg.data.path, cfg.data.seq_len = prefix, c.seq_len
    return prefix


def choose_window(cfg, loc: dict) -> dict:
    """Window = the ``window_steps`` before the primary induction head's emergence checkpoint."""
    L, h, score = loc["ranking"][0]
    em = loc["emergence_step"][L][h]
    steps = loc["steps"]
    end = em if em is not None else steps[-1]
    end = max(end, min(s for s in steps if s > 0))
    start = max(0, end - cfg.train.window_steps)
    if start not in steps:  # the window must start at a checkpoint (interventions branch from it)
        start = max(s for s in steps if s <= start)
    cfg.window.start_step, cfg.window.end_step = int(start), int(end)
    return {"head": [L, h], "final_score": score, "emergence_step": em, "window": [int(start), int(end)]}


DEMO_STATE = "demo.json"


def check_demo_out(cfg: Config, out: str) -> None:
    """A demo ``--out`` that holds an earlier demo continues it only with the same config (every stage reuses
    the outputs it finds); a different one is refused, naming the keys that differ."""
    path = os.path.join(out, DEMO_STATE)
    if not os.path.exists(path):
        if os.path.isdir(out) and os.path.exists(os.path.join(out, "data", "corpus.categories.json")):
            raise ConfigError(
                f"--out {out} holds a demo corpus but no {DEMO_STATE} (from another version); use a fresh --out"
            )
        return
    refuse_other_config(out, DEMO_STATE, cfg, "a demo run")


def run_demo(out: str, overrides: list | None = None, config_path: str | None = None, progress: bool = True) -> dict:
    """The whole demo into ``out``; rerunning the same command continues an interrupted demo."""
    stage = Stages()
    cfg = load_config(resolve_config_arg(config_path) if config_path else packaged_config("demo"), overrides)
    validate("demo", cfg, out)
    check_demo_out(cfg, out)
    with OutputLock(out):
        if not os.path.exists(os.path.join(out, DEMO_STATE)):
            write_json(os.path.join(out, DEMO_STATE), {"config": cfg.to_dict()})
        return _run_stages(cfg, out, progress, stage)


def _run_stages(cfg: Config, out: str, progress: bool, stage: Stages) -> dict:
    stage("corpus", prepare_corpus, cfg, out, progress)
    stage("train", train_base, cfg, out, progress)
    loc = stage("localize", run_localize, cfg, out, progress)
    win = choose_window(cfg, loc)
    log_window(win)
    sc = fit_and_score(stage, cfg, out, progress)
    _, targets, found = analyze(stage, cfg, out, progress)
    interventions = None
    if cfg.intervene.enabled:
        interventions = stage("intervene", run_intervene, cfg, out, progress=progress)
    write_json(os.path.join(out, "config.resolved.json"), cfg.to_dict())
    report = stage("report", run_report, cfg, out, interventions=interventions)
    summary = attribution_summary(targets, win, sc, found)
    summary.update(category_enrichment=found.get("category_enrichment"), findings=findings_text(found))
    if interventions is not None:
        summary["interventions"] = interventions.get("summary", interventions)
        summary["findings"] += intervention_findings(interventions)
    return finish(out, summary, stage, report)

"""``mda-fast demo``: the whole method on a laptop CPU, with no data or network.

1. generate the synthetic corpus (``mda_fast.data.synthetic``), Megatron format with a category sidecar;
2. train a tiny GPT-NeoX with Pythia-style checkpoints until an induction head forms;
3. localize every head at every checkpoint and find the emergence step;
4. fit EK-FAC for the induction head (and a control head) at the window-end checkpoint;
5. score every sequence of the formation window; 6. analyze and write the report;
7. retrain the window under deletion / augmentation arms (``mda_fast.interventions``).

Every stage skips work whose output already exists, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import time

from ..config import Config, fields_for, load_config, packaged_config, resolve_config_arg
from ..errors import ConfigError
from ..study.findings import findings, findings_text, intervention_findings
from .analyze import run_analyze
from .checks import validate
from .fit import run_fit
from .inputs import load_targets
from .intervene import run_intervene
from .io import OutputLock, read_json, write_json
from .localize import run_localize
from .report import run_report
from .score import run_score
from .train import latest_checkpoint, stop_step, train_base  # noqa: F401 (re-exported)

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


def _differences(a: dict, b: dict, where: str = "") -> list:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k != "mix":
            out += _differences(va, vb, f"{where}{k}.")
        elif va != vb:
            out.append(f"{where}{k}: {va!r} -> {vb!r}")
    return out


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
    before = read_json(path)["config"]
    diff = _differences(before, cfg.to_dict())
    if diff:
        raise ConfigError(
            f"--out {out} holds a demo run made with another config ({'; '.join(diff[:4])}"
            + (f"; {len(diff) - 4} more" if len(diff) > 4 else "")
            + "); use a fresh --out, or the "
            "same --set values to continue it"
        )


def run_demo(out: str, overrides: list | None = None, config_path: str | None = None, progress: bool = True) -> dict:
    """The whole demo into ``out``; rerunning the same command continues an interrupted demo."""

    t0 = time.perf_counter()
    cfg = load_config(resolve_config_arg(config_path) if config_path else packaged_config("demo"), overrides)
    validate("demo", cfg, out)
    check_demo_out(cfg, out)
    with OutputLock(out):
        if not os.path.exists(os.path.join(out, DEMO_STATE)):
            write_json(os.path.join(out, DEMO_STATE), {"config": cfg.to_dict()})
        return _run_stages(cfg, out, progress, t0)


def _run_stages(cfg: Config, out: str, progress: bool, t0: float) -> dict:
    timings = {}

    def stage(name, fn, *a, **k):
        s = time.perf_counter()
        logger.info("\n== %s ==", name)
        r = fn(*a, **k)
        timings[name] = round(time.perf_counter() - s, 2)
        return r

    stage("corpus", prepare_corpus, cfg, out, progress)
    stage("train", train_base, cfg, out, progress)
    loc = stage("localize", run_localize, cfg, out, progress)
    win = choose_window(cfg, loc)
    logger.info(
        f"primary induction head L{win['head'][0]}H{win['head'][1]}: prefix-matching {win['final_score']:.3f} at the "
        f"last checkpoint, emergence step {win['emergence_step']}; window {win['window'][0]}..{win['window'][1]}"
    )
    stage("fit", run_fit, cfg, out, progress)
    sc = stage("score", run_score, cfg, out, resume=True, progress=progress)
    res = stage("analyze", run_analyze, cfg, out, progress)
    targets, _ = load_targets(out)
    found = findings(res, targets)
    interventions = None
    if cfg.intervene.enabled:
        interventions = stage("intervene", run_intervene, cfg, out, progress=progress)
    write_json(os.path.join(out, "config.resolved.json"), cfg.to_dict())
    report = stage("report", run_report, cfg, out, interventions=interventions)
    ind = [[h["layer"], h["head"], h["prefix_matching"]] for h in targets["heads"] if h["role"] == "induction"]
    summary = {
        "induction_heads": ind,
        "control_heads": [[h["layer"], h["head"], h["prev_token"]] for h in targets["heads"] if h["role"] == "control"],
        "emergence_step": win["emergence_step"],
        "window": win["window"],
        "n_scored": sc["n_scored"],
        "top_share": found["top_share"],
        "top_frac": found["top_frac"],
        "power_law": {k: found["power_law"][k] for k in ("exponent", "r2")}
        if found.get("power_law") and "exponent" in found["power_law"]
        else None,
        "category_enrichment": found.get("category_enrichment"),
        "overlap": found["overlap"],
        "findings": findings_text(found),
        "scoring_seq_per_s": sc["seq_per_s"],
        "stage_seconds": timings,
        "elapsed_s": round(time.perf_counter() - t0, 2),
        "report": os.path.abspath(report),
    }
    if interventions is not None:
        summary["interventions"] = interventions.get("summary", interventions)
        summary["findings"] += intervention_findings(interventions)
    write_json(os.path.join(out, "summary.json"), summary)
    logger.info(
        "\n".join(["", *summary["findings"], f"report: {summary['report']}", f"elapsed {summary['elapsed_s']} s"])
    )
    return summary

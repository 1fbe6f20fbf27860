"""What the end-to-end commands (``demo``, ``study``) share: the config kept in ``--out`` and the check that a
rerun continues it with the same config, the attribution stages (localize → fit → score → analyze) timed one by
one, and the attribution part of ``summary.json``."""

from __future__ import annotations

import logging
import os
import time

from ..config import Config
from ..errors import ConfigError
from ..io import read_json, write_json
from .analyze import run_analyze
from .fit import run_fit

logger = logging.getLogger(__name__)


def config_differences(a: dict, b: dict, where: str = "", defaults: dict | None = None) -> list:
    """``key: old -> new`` for every key whose value differs between two ``Config.to_dict()`` dicts (nested
    sections as ``section.key``; a corpus ``mix`` compares as one value). With ``defaults`` (the same tree of
    default values), a key missing from ``a`` (a config written before the key existed) whose value in ``b`` is
    its default is no difference."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        d = (defaults or {}).get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k != "mix":
            out += config_differences(va, vb, f"{where}{k}.", d if isinstance(d, dict) else None)
        elif k not in a and defaults is not None and k in defaults and vb == d:
            continue
        elif va != vb:
            out.append(f"{where}{k}: {va!r} -> {vb!r}")
    return out


#: keys that change how a run is computed, not what it computes (a rerun may change them)
HOW_NOT_WHAT = ("augment.workers",)


def refuse_other_config(out: str, state_file: str, cfg: Config, what: str) -> None:
    """Refuse an ``--out`` whose ``state_file`` records another config than ``cfg`` (naming up to four keys; keys of
    ``HOW_NOT_WHAT`` may differ)."""
    path = os.path.join(out, state_file)
    if not os.path.exists(path):
        return
    diff = config_differences(read_json(path)["config"], cfg.to_dict(), defaults=Config().to_dict())
    diff = [d for d in diff if d.split(":", 1)[0] not in HOW_NOT_WHAT]
    if diff:
        more = f"; {len(diff) - 4} more" if len(diff) > 4 else ""
        raise ConfigError(
            f"--out {out} holds {what} made with another config ({'; '.join(diff[:4])}{more}); use a fresh "
            "--out, or the same --set values to continue it"
        )


class Stages:
    """Runs named stages, logging a header for each and keeping its wall time in ``timings`` (seconds)."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.timings: dict = {}

    def __call__(self, name: str, fn, *args, **kwargs):
        s = time.perf_counter()
        logger.info("\n== %s ==", name)
        r = fn(*args, **kwargs)
        self.timings[name] = round(time.perf_counter() - s, 2)
        return r


def log_window(win: dict) -> None:
    """One line on the primary induction head and the formation window chosen from it."""
    L, h = win["head"]
    logger.info(
        f"primary induction head L{L}H{h}: prefix-matching {win['final_score']:.3f} at the last checkpoint, "
        f"emergence step {win['emergence_step']}; window {win['window'][0]}..{win['window'][1]}"
    )


def fit_and_score(stage: Stages, cfg: Config, out: str, progress: bool) -> dict:
    """The fit and score stages (scoring resumes from its chunks); returns ``run_score``'s result."""
    from .score import run_score

    stage("fit", run_fit, cfg, out, progress)
    return stage("score", run_score, cfg, out, resume=True, progress=progress)


def analyze(stage: Stages, cfg: Config, out: str, progress: bool):
    """The analyze stage; returns (its result, the targets, the computed findings)."""
    from ..study.findings import findings
    from .inputs import load_targets

    res = stage("analyze", run_analyze, cfg, out, progress)
    targets, _ = load_targets(out)
    return res, targets, findings(res, targets)


def attribution_summary(targets: dict, win: dict, sc: dict, found: dict) -> dict:
    """The heads, window, scoring and concentration entries of ``summary.json``."""
    heads = targets["heads"]
    pl = found.get("power_law")
    return {
        "induction_heads": [[h["layer"], h["head"], h["prefix_matching"]] for h in heads if h["role"] == "induction"],
        "control_heads": [[h["layer"], h["head"], h["prev_token"]] for h in heads if h["role"] == "control"],
        "emergence_step": win["emergence_step"],
        "window": win["window"],
        "n_scored": sc["n_scored"],
        "top_share": found["top_share"],
        "top_frac": found["top_frac"],
        "power_law": {k: pl[k] for k in ("exponent", "r2")} if pl and "exponent" in pl else None,
        "overlap": found["overlap"],
        "scoring_seq_per_s": sc["seq_per_s"],
    }


def finish(out: str, summary: dict, stage: Stages, report: str) -> dict:
    """Adds the stage times, the elapsed time and the report's path, writes ``OUT/summary.json`` and logs the
    findings."""
    from ..version import environment

    summary.update(
        environment=environment(),
        stage_seconds=stage.timings,
        elapsed_s=round(time.perf_counter() - stage.t0, 2),
        report=os.path.abspath(report),
    )
    write_json(os.path.join(out, "summary.json"), summary)
    logger.info(
        "\n".join(["", *summary["findings"], f"report: {summary['report']}", f"elapsed {summary['elapsed_s']} s"])
    )
    return summary

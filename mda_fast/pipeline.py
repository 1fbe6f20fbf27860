"""The stages behind the ``mda-fast`` CLI, under one name (they live in ``mda_fast.stages``, one file each).

out/localize/localize.json, localize.csv, emergence.png     out/targets.json
out/factors/factors.safetensors, factors.json
out/score/scores.npy (float32 memmap [n_samples, n_targets]), global_index.npy, step.npy, position.npy,
          loss.npy, targets.json, progress.json
out/analyze/analysis.json, top.csv                         out/report.html
"""

from .ekfac import Factors  # noqa: F401
from .influence import InfluenceScorer  # noqa: F401
from .stages.analyze import run_analyze
from .stages.fit import resolve_targets, run_fit
from .stages.inputs import DTYPES, checkpoint_ref, device_of, load_model, load_targets, make_probes, open_data
from .stages.intervene import run_intervene
from .stages.io import SCORE_ARRAYS, score_dir
from .stages.localize import emergence_steps, localize_checkpoints, run_localize
from .stages.report import provenance, run_report
from .stages.score import run_score, score_fingerprint, score_window, shard_range
from .study.findings import findings, findings_text, intervention_findings

__all__ = [
    "DTYPES",
    "SCORE_ARRAYS",
    "checkpoint_ref",
    "device_of",
    "emergence_steps",
    "findings",
    "findings_text",
    "intervention_findings",
    "load_model",
    "load_targets",
    "localize_checkpoints",
    "make_probes",
    "open_data",
    "provenance",
    "resolve_targets",
    "run_analyze",
    "run_fit",
    "run_intervene",
    "run_localize",
    "run_report",
    "run_score",
    "score_dir",
    "score_fingerprint",
    "score_window",
    "shard_range",
]

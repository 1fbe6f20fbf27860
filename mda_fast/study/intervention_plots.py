"""PNG plots of the intervention arms: curves per arm (mean and min–max band over seeds), head score against ICL.

Inputs are the dicts of ``run_interventions`` (or bare curves ``{"arms": {arm: {"seeds": {seed: curves}}}}``).
"""

from __future__ import annotations

import math
from typing import Any, List, Mapping, Optional, Tuple

import numpy as np

from .plots import PALETTE, finish_png, new_figure

__all__ = ["arm_style", "intervention_curves_png", "score_vs_icl_png"]

_ARM_COLOURS = {"baseline": "#222222", "delete": "#d62728", "augment": "#1f77b4"}
_SET_STYLES = {"top": "-", "random": "--", "matched": ":", "bottom": "-."}


def arm_style(arm: str, i: int) -> Tuple[str, str]:
    """(colour, linestyle): one colour per intervention kind (delete red, augment blue, baseline black) and one
    line style per sample set (top solid, random dashed, matched dotted, bottom dash-dot); other names cycle."""
    kind, _, which = arm.partition("-")
    if arm == "baseline":
        return _ARM_COLOURS["baseline"], "-"
    if kind in _ARM_COLOURS and which in _SET_STYLES:
        return _ARM_COLOURS[kind], _SET_STYLES[which]
    return PALETTE[i % len(PALETTE)], "-"


def _arm_label(arm: str, data: Mapping[str, Any], n: int) -> str:
    return f"{arm} (1 run)" if data.get("deterministic") else f"{arm} ({n} seed{'s' if n > 1 else ''})"


def _arm_curves(arm: Mapping[str, Any], key: str) -> List[Tuple[np.ndarray, np.ndarray]]:
    out = []
    for seed, d in arm["seeds"].items():
        steps = np.asarray(d["steps"], dtype=np.float64)
        y = np.asarray(d[key], dtype=np.float64)
        if steps.shape != y.shape or steps.ndim != 1:
            raise ValueError(f"seed {seed!r}: {key!r} has shape {y.shape} but steps has shape {steps.shape}")
        out.append((steps, y))
    return out


def intervention_curves_png(interventions: Mapping[str, Any], key: str, ylabel: str, title: str,
                            threshold: Optional[float] = None) -> bytes:  # fmt: skip
    """One curve per arm (mean over seeds) with a min–max band across seeds; seeds with differing steps
    are drawn individually."""
    fig = new_figure(6.0, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    for i, (arm, data) in enumerate(interventions["arms"].items()):
        col, ls = arm_style(arm, i)
        curves = _arm_curves(data, key)
        if not curves:
            continue
        same = all(c[0].shape == curves[0][0].shape and np.array_equal(c[0], curves[0][0]) for c in curves)
        n = len(curves)
        if same:
            steps = curves[0][0]
            ys = np.stack([c[1] for c in curves])
            ax.plot(steps, ys.mean(0), color=col, linestyle=ls, linewidth=1.8, label=_arm_label(arm, data, n))
            if n > 1 and not data.get("deterministic"):
                ax.fill_between(steps, ys.min(0), ys.max(0), color=col, alpha=0.18, linewidth=0)
        else:
            for j, (steps, y) in enumerate(curves):
                ax.plot(
                    steps,
                    y,
                    color=col,
                    linestyle=ls,
                    linewidth=1.0,
                    alpha=0.8,
                    label=_arm_label(arm, data, n) if j == 0 else None,
                )
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    return finish_png(fig, ax, "training step", ylabel, title, fontsize=8, loc="best", framealpha=0.85)


def score_vs_icl_png(interventions: Mapping[str, Any], r: Optional[float]) -> bytes:
    """Scatter of head score against ICL score over every checkpoint, seed and arm; ``r`` goes in the title."""
    fig = new_figure(6.0, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    for i, (arm, data) in enumerate(interventions["arms"].items()):
        xs, ys = [], []
        for _, d in list(data["seeds"].items())[: 1 if data.get("deterministic") else None]:  # one run if seed-free
            xs.append(np.asarray(d["head_score"], dtype=np.float64))
            ys.append(np.asarray(d["icl"], dtype=np.float64))
        if xs:
            col, ls = arm_style(arm, i)
            marker = {"-": "o", "--": "^", ":": "s", "-.": "D"}[ls]
            ax.scatter(np.concatenate(xs), np.concatenate(ys), s=14, alpha=0.7, color=col, marker=marker,
                       label=arm, edgecolors="none")  # fmt: skip
    rtxt = "n/a" if r is None or (isinstance(r, float) and math.isnan(r)) else f"{r:.3f}"
    return finish_png(
        fig, ax, "target head score", "ICL score", f"Head score vs ICL score (Pearson r = {rtxt})", fontsize=8
    )

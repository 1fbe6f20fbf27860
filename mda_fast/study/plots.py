"""PNG plots for the report (matplotlib, Agg canvas; no pyplot global state).

Every ``*_png`` function returns PNG bytes; :func:`save_png` writes them to a file. The interventions' plots are
in :mod:`mda_fast.study.intervention_plots`. Inputs are the plain,
JSON-serialisable dicts produced by :func:`mda_fast.study.analyze.analyze`, ``localize`` (emergence) and the
interventions run, so a report can be rebuilt from files on disk.
"""

from __future__ import annotations

import io
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "save_png",
    "new_figure",
    "to_png",
    "style_axes",
    "finish_png",
    "PALETTE",
    "head_name",
    "normalize_emergence",
    "emergence_png",
    "cumulative_png",
    "power_law_png",
    "category_png",
    "jaccard_png",
    "per_step_png",
]

DPI = 100
PALETTE = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
]  # fmt: skip


def new_figure(w: float, h: float) -> Figure:
    """A ``w`` x ``h`` inch figure on its own Agg canvas (no pyplot state)."""
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def save_png(png: bytes, path: str) -> str:
    """Write PNG bytes to ``path`` and return the path."""
    with open(path, "wb") as f:
        f.write(png)
    return path


def style_axes(ax: Any) -> None:
    """The report plots' axes style: a light grid, no top or right spine."""
    ax.grid(True, alpha=0.3, linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def finish_png(fig: Figure, ax: Any, xlabel: str, ylabel: str, title: str, **legend: Any) -> bytes:
    """Label, title, legend (``legend`` are its keyword arguments), grid style; the figure as PNG bytes."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(**legend)
    style_axes(ax)
    fig.tight_layout()
    return to_png(fig)


# ----------------------------------------------------------------------------------------------- emergence


def head_name(layer: int, head: int) -> str:
    """``L<layer>H<head>``, the name of a head in plots, tables and emergence data."""
    return f"L{layer}H{head}"


def normalize_emergence(emergence: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate and normalise emergence data from ``localize``.

    Expected keys: ``steps`` (checkpoint steps), ``scores`` (metric name → ``[n_checkpoints, n_layers,
    n_heads]``), ``threshold``; optional ``metric`` (the metric the threshold applies to, default
    ``"prefix_matching"``), ``emergence_step`` (``{"L1H2": step or None}`` or a ``[n_layers][n_heads]`` nested
    list with ``None``) and ``heads`` (target heads ``[[layer, head], ...]`` to highlight). Returns a dict with
    numpy score arrays and ``emergence_step`` as a ``{"LxHy": step or None}`` dict.
    """
    for key in ("steps", "scores", "threshold"):
        if key not in emergence:
            raise ValueError(f"emergence data is missing {key!r} (has {sorted(emergence)})")
    steps = np.asarray(emergence["steps"], dtype=np.float64)
    if steps.ndim != 1 or steps.size < 1:
        raise ValueError(f"emergence 'steps' must be a non-empty 1-D list, got shape {steps.shape}")
    if not isinstance(emergence["scores"], Mapping) or not emergence["scores"]:
        raise ValueError("emergence 'scores' must be a non-empty dict metric -> [n_checkpoints, n_layers, n_heads]")
    scores = {}
    shape = None
    for metric, arr in emergence["scores"].items():
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim != 3 or a.shape[0] != steps.size:
            raise ValueError(
                f"emergence scores[{metric!r}] must be [n_checkpoints={steps.size}, n_layers, n_heads], "
                f"got shape {a.shape}"
            )
        if shape is not None and a.shape != shape:
            raise ValueError(f"emergence scores[{metric!r}] has shape {a.shape}, other metrics have {shape}")
        shape = a.shape
        scores[str(metric)] = a
    assert shape is not None
    metric = str(emergence.get("metric", "prefix_matching"))
    if metric not in scores:
        raise ValueError(f"emergence metric {metric!r} is not among the scores {sorted(scores)}")
    em = _emergence_steps(emergence.get("emergence_step"), shape)
    heads = [tuple(int(x) for x in h) for h in emergence.get("heads", [])]
    for layer, head in heads:
        if not (0 <= layer < shape[1] and 0 <= head < shape[2]):
            raise ValueError(f"highlighted head L{layer}H{head} is outside [{shape[1]} layers, {shape[2]} heads]")
    return {
        "steps": steps,
        "scores": scores,
        "threshold": float(emergence["threshold"]),
        "metric": metric,
        "emergence_step": em,
        "heads": heads,
        "n_layers": shape[1],
        "n_heads": shape[2],
    }


def _emergence_steps(raw, shape) -> Dict[str, Optional[int]]:
    """``{"LxHy": step or None}`` from a dict or a ``[n_layers][n_heads]`` nested list (negative: never)."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): (None if v is None else int(v)) for k, v in raw.items()}
    rows = list(raw)
    if len(rows) != shape[1] or any(len(r) != shape[2] for r in rows):
        raise ValueError(f"emergence_step must be [n_layers={shape[1]}][n_heads={shape[2]}] or a dict")
    em: Dict[str, Optional[int]] = {}
    for layer, r in enumerate(rows):
        for head, v in enumerate(r):
            em[head_name(layer, head)] = None if v is None or (isinstance(v, (int, float)) and v < 0) else int(v)
    return em


def _symlog_x(ax: Any, steps: np.ndarray) -> None:
    pos = steps[steps > 0]
    if pos.size and pos.max() / pos.min() > 20:
        ax.set_xscale("symlog", linthresh=float(pos.min()), linscale=0.3)
    if steps.max() > steps.min():
        ax.set_xlim(float(steps.min()), float(steps.max()))


def emergence_png(emergence: Mapping[str, Any], max_labelled: int = 8, top_per_metric: int = 3) -> bytes:
    """Score against step, one line per head, one panel per metric; the threshold on the emergence metric.

    Coloured and labelled in each panel: the target heads, the heads that cross the threshold (emergence
    metric) and the ``top_per_metric`` heads with the highest final score of that panel's metric, at most
    ``max_labelled`` per panel; a head keeps its colour across panels. Other heads are thin grey lines.
    """
    e = normalize_emergence(emergence)
    steps = e["steps"]
    metrics = [e["metric"]] + [m for m in e["scores"] if m != e["metric"]]
    emerged = set()
    for name, st in e["emergence_step"].items():
        if st is not None:
            layer, head = name[1:].split("H")
            emerged.add((int(layer), int(head)))
    per_panel = {}
    for metric in metrics:
        final = e["scores"][metric][-1]
        order = sorted(((lay, h) for lay in range(e["n_layers"]) for h in range(e["n_heads"])),
                       key=lambda lh: -final[lh[0], lh[1]])  # fmt: skip
        chosen = set(e["heads"]) | set(order[:top_per_metric])
        if metric == e["metric"]:
            chosen |= emerged
        per_panel[metric] = sorted(chosen, key=lambda lh: -final[lh[0], lh[1]])[:max_labelled]
    colours: Dict[Tuple[int, int], str] = {}
    for metric in metrics:
        for lh in per_panel[metric]:
            colours.setdefault(lh, PALETTE[len(colours) % len(PALETTE)])

    fig = new_figure(5.6 * len(metrics), 4.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        a = e["scores"][metric]
        shown = per_panel[metric]
        for layer in range(e["n_layers"]):
            for head in range(e["n_heads"]):
                if (layer, head) not in shown:
                    ax.plot(steps, a[:, layer, head], color="#b0b0b0", linewidth=0.7, alpha=0.7, zorder=1)
        for lh in shown:
            label = head_name(*lh)
            st = e["emergence_step"].get(label)
            if lh in e["heads"]:
                label += " target"
            if metric == e["metric"] and st is not None:
                label += f" @ {st}"
            lw = 2.4 if lh in e["heads"] else 1.4
            ax.plot(steps, a[:, lh[0], lh[1]], color=colours[lh], linewidth=lw, label=label, zorder=3)
        if metric == e["metric"]:
            ax.axhline(
                e["threshold"], color="black", linestyle="--", linewidth=1, label=f"threshold {e['threshold']:g}"
            )
        _symlog_x(ax, steps)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{metric.replace('_', ' ')} score")
        ax.set_title(metric.replace("_", " "))
        ax.legend(fontsize=7.5, loc="upper left", frameon=True, framealpha=0.85)
        style_axes(ax)
    fig.tight_layout()
    return to_png(fig)


# ----------------------------------------------------------------------------------------------- analysis


def _targets(analysis: Mapping[str, Any], targets: Optional[Sequence[str]]) -> List[str]:
    names = list(analysis["targets"]) if targets is None else list(targets)
    for t in names:
        if t not in analysis["per_target"]:
            raise ValueError(f"target {t!r} is not in the analysis (targets: {analysis['targets']})")
    return names


def cumulative_png(analysis: Mapping[str, Any], targets: Optional[Sequence[str]] = None) -> bytes:
    """Cumulative share of positive influence against the fraction of samples (by descending score)."""
    names = _targets(analysis, targets)
    frac = float(analysis["top_fraction"])
    fig = new_figure(6.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for i, t in enumerate(names):
        c = analysis["per_target"][t]["cumulative"]
        top = c["top_share"]
        label = t if top is None else f"{t}: top {frac:.0%} hold {top:.1%}"
        ax.plot(np.asarray(c["rank_fraction"]) * 100, np.asarray(c["share"]) * 100,
                color=PALETTE[i % len(PALETTE)], linewidth=1.8, label=label)  # fmt: skip
    ax.axvline(frac * 100, color="black", linestyle=":", linewidth=1)
    ax.plot([0, 100], [0, 100], color="#999999", linestyle="--", linewidth=0.8, label="uniform")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 102)
    return finish_png(
        fig,
        ax,
        "top samples by score (%)",
        "share of total positive influence (%)",
        "Cumulative influence",
        fontsize=8,
        loc="lower right",
    )


def power_law_png(analysis: Mapping[str, Any], targets: Optional[Sequence[str]] = None) -> bytes:
    """Rank against positive score (log-log) with the fitted power law over its fit range."""
    names = _targets(analysis, targets)
    fig = new_figure(6.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for i, t in enumerate(names):
        pl = analysis["per_target"][t].get("power_law") or {}
        if "ranks" not in pl:
            continue
        col = PALETTE[i % len(PALETTE)]
        ax.plot(pl["ranks"], pl["scores"], ".", color=col, markersize=3, alpha=0.8, label=t)
        r = np.geomspace(pl["min_rank"], pl["max_rank"], 50)
        ax.plot(r, 10 ** pl["log10_c"] * r ** (-pl["exponent"]), "-", color=col, linewidth=1.4, alpha=0.9,
                label=f"fit ranks {pl['min_rank']}–{pl['max_rank']}: exponent {pl['exponent']:.2f}, R² {pl['r2']:.3f}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    return finish_png(
        fig, ax, "rank (descending score)", "score", "Rank–score tail (positive scores)", fontsize=7.5, loc="lower left"
    )


def category_png(analysis: Mapping[str, Any], target: Optional[str] = None) -> bytes:
    """Grouped bars: each category's share in the top set against its base rate, with the ratio annotated."""
    t = target or analysis["primary_target"]
    enr = analysis["per_target"][t].get("category_enrichment")
    if not enr:
        raise ValueError(f"the analysis has no category enrichment for target {t!r}")
    cats = [c for c in enr if any((enr[c].get(k) or 0) > 0 for k in ("base_share", "top_share", "bottom_share"))]
    cats = cats or list(enr)
    top = np.array([enr[c]["top_share"] for c in cats]) * 100
    base = np.array([enr[c]["base_share"] for c in cats]) * 100
    bottom = np.array([enr[c].get("bottom_share") or 0.0 for c in cats]) * 100
    x = np.arange(len(cats))
    w = 0.38 if "bottom_share" not in enr[cats[0]] else 0.27
    fig = new_figure(max(6.0, 0.9 * len(cats) + 2.5), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(x - w / 2, base, w, color="#9aa5b1", label="base rate (all scored samples)")
    ax.bar(x + w / 2, top, w, color="#d62728", label=f"top {100 * analysis['top_fraction']:.4g}% by score")
    if "bottom_share" in enr[cats[0]]:
        ax.bar(x + 1.5 * w, bottom, w, color="#1f77b4", label=f"bottom {100 * analysis['top_fraction']:.4g}%")
    for i, c in enumerate(cats):
        ratio = enr[c]["ratio"]
        txt = "n/a" if ratio is None else f"×{ratio:.2f}"
        ax.annotate(txt, (x[i], max(top[i], base[i])), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.set_xticks(x)
    ax.set_xticklabels(cats, rotation=20 if len(cats) > 5 else 0, ha="right" if len(cats) > 5 else "center")
    ax.set_ylim(0, max(top.max(), base.max()) * 1.18 + 1e-9)
    return finish_png(fig, ax, "", "token share (%)", f"Categories: top set vs base rate ({t})", fontsize=8)


def jaccard_png(analysis: Mapping[str, Any]) -> bytes:
    """Heatmap of the Jaccard overlap between the targets' top-k sets."""
    jac = analysis["jaccard"]
    m = np.asarray(jac["matrix"], dtype=np.float64)
    names = jac["targets"]
    size = max(3.8, 0.55 * len(names) + 2.5)
    fig = new_figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)))
    ax.set_yticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    if len(names) <= 16:
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if m[i, j] > 0.6 else "white")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Jaccard")
    ax.set_title(f"Top-{jac['k']} overlap")
    fig.tight_layout()
    return to_png(fig)


def per_step_png(analysis: Mapping[str, Any], targets: Optional[Sequence[str]] = None) -> bytes:
    """Total influence of each training step's samples across the window, one line per target."""
    names = _targets(analysis, targets)
    ps = analysis["per_step"]
    steps = np.asarray(ps["steps"], dtype=np.float64)
    fig = new_figure(9.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for i, t in enumerate(names):
        ax.plot(steps, ps["sum"][t], color=PALETTE[i % len(PALETTE)], linewidth=1.0, label=t,
                marker="." if steps.size < 60 else None)  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.6)
    return finish_png(
        fig,
        ax,
        "training step",
        "summed influence of the step's samples",
        "Influence per training step",
        fontsize=8,
        ncol=min(len(names), 4),
    )

"""The report's sections, each from the plain dicts on disk: emergence, influence, categories, top samples,
interventions (their stored summary), the summary cards and the config text."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

from . import intervention_plots, plots
from .interventions.summary import intervention_summary
from .report_html import cards as html_cards
from .report_html import esc, fmt, img, pct, section, table, text_html

__all__ = [
    "emergence_section",
    "influence_section",
    "category_section",
    "top_samples_section",
    "interventions_section",
    "config_text",
    "summary_cards",
]


def emergence_section(emergence: Mapping[str, Any]) -> str:
    e = plots.normalize_emergence(emergence)
    parts = [
        img(
            plots.emergence_png(emergence),
            "emergence curves",
            f"Per-head scores at each checkpoint (x: training step, symlog). Dashed line: threshold "
            f"{e['threshold']:g} on {e['metric'].replace('_', ' ')}; a head emerges at the first checkpoint "
            "where it crosses it. Grey: heads that never cross.",
        )
    ]
    final = {m: a[-1] for m, a in e["scores"].items()}
    names = sorted(
        {n for n, s in e["emergence_step"].items() if s is not None} | {plots.head_name(*h) for h in e["heads"]},
        key=lambda n: (e["emergence_step"].get(n) is None, e["emergence_step"].get(n) or 0, n),
    )
    if names:
        rows = []
        for n in names:
            layer, head = (int(x) for x in n[1:].split("H"))
            target = "yes" if (layer, head) in e["heads"] else ""
            rows.append(
                [esc(n), target, fmt(e["emergence_step"].get(n))]
                + [fmt(float(final[m][layer, head])) for m in e["scores"]]
            )
        header = ["head", "target", "emergence step"] + [f"final {m.replace('_', ' ')}" for m in e["scores"]]
        parts.append(table(header, rows, num_cols=range(2, len(header))))
    else:
        parts.append(f"<p>No head crosses the threshold {e['threshold']:g} at any checkpoint.</p>")
    return section("emergence", "Emergence of the heads", "".join(parts))


def influence_section(analysis: Mapping[str, Any]) -> str:
    frac = float(analysis["top_fraction"])
    rows = []
    for t in analysis["targets"]:
        pt = analysis["per_target"][t]
        c = pt["cumulative"]
        pl = pt.get("power_law") or {}
        st = pt.get("score_stats", {})
        if "exponent" in pl:
            fit = [fmt(pl["exponent"], 3), fmt(pl["r2"], 3), f"{pl['min_rank']}–{pl['max_rank']}"]
        else:
            fit = ["—", "—", esc(pl.get("error", "not fitted"))]
        rows.append(
            [esc(t), pct(c["top_share"]), fmt(c["n_positive"]), fmt(st.get("mean")), fmt(st.get("std"))]
            + fit
            + [fmt(pt.get("score_loss_pearson"), 3)]
        )
    header = [
        "target", f"top {frac:.0%} share of + influence", "# positive", "mean score", "std score",
        "power-law exponent", "fit R²", "fit ranks", "Pearson(score, loss)",
    ]  # fmt: skip
    body = [
        f"<p>Samples ranked by score; the top {frac:.0%} is {analysis['k_top']:,} of {analysis['n_samples']:,} "
        "samples. Share = positive influence (max(score, 0)) held by the top set over the total positive influence. "
        "The power law score ∝ rank<sup>−exponent</sup> is a least-squares fit in log–log space over the fit ranks "
        "of the positive scores.</p>",
        table(header, rows, num_cols=range(1, len(header) - 2)),
        '<div class="row">',
        img(plots.cumulative_png(analysis), "cumulative influence",
            "Cumulative share of positive influence against the fraction of samples taken by descending score."),
        img(plots.power_law_png(analysis), "rank-score power law",
            "Positive scores by rank (log–log) with the fitted power law over its fit range."),
        "</div>",
    ]  # fmt: skip
    if len(analysis["targets"]) > 1:
        body.append(
            img(plots.jaccard_png(analysis), "top-k overlap",
                f"Jaccard overlap |A∩B|/|A∪B| of the targets' top-{analysis['jaccard']['k']:,} sets.")
        )  # fmt: skip
    body.append(
        img(plots.per_step_png(analysis), "influence per step",
            "Sum of the scores of each training step's samples over the scored window.")
    )  # fmt: skip
    return section("influence", "Influence distribution", "".join(body))


def category_section(analysis: Mapping[str, Any]) -> str:
    frac = float(analysis["top_fraction"])
    t0 = analysis["primary_target"]
    body = [img(plots.category_png(analysis, t0), "category bars",
                f"Token-fraction-weighted share of each category in the top {frac:.0%} of {t0} against its base "
                "rate over all scored samples; label = ratio.")]  # fmt: skip
    enr0 = analysis["per_target"][t0]["category_enrichment"]
    cats = [c for c in analysis["categories"] if any((enr0[c].get(k) or 0) > 0 for k in ("base_share", "top_share",
                                                                                          "bottom_share"))]  # fmt: skip
    base_of = "a random sample of the window" if analysis.get("category_base") == "sample" else "all scored samples"
    n_base = enr0[cats[0]].get("n_base") if cats else None
    body.append(f"<p>Base rates over {base_of}" + (f" ({n_base} rows)" if n_base else "") + "; intervals: "
                "bootstrap 95%. Categories with no tokens anywhere are left out.</p>")  # fmt: skip
    others = [t for t in analysis["targets"][1:] if analysis["per_target"][t].get("category_enrichment")]
    header = ["category", "base", f"top {frac:.0%}", "top ratio [95%]", f"bottom {frac:.0%}", "bottom ratio [95%]"]
    header += [f"{t}: top ratio [95%]" for t in others]
    rows = []
    for c in cats:
        v = enr0[c]
        r = [esc(c), pct(v["base_share"]), pct(v["top_share"]), _ratio(v, "top")]
        r += [pct(v["bottom_share"]), _ratio(v, "bottom")] if "bottom_share" in v else ["", ""]
        r += [_ratio(analysis["per_target"][t]["category_enrichment"][c], "top") for t in others]
        rows.append(r)
    body.append(table(header, rows, num_cols=range(1, len(header))))
    return section("categories", "Categories in the top and bottom sets", "".join(body))


def _ratio(v: Mapping[str, Any], which: str) -> str:
    """``×r [lo, hi]`` of a set's enrichment ratio (``n/a`` without a base share)."""
    r = v.get(f"{which}_ratio", v.get("ratio"))
    ci = v.get(f"{which}_ratio_95")
    if r is None:
        return "n/a"
    return f"×{fmt(r, 3)}" + (f" [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]" if ci else "")


def _sample_row(r: Mapping[str, Any], has_cats: bool, eod: Optional[str]) -> str:
    """One sample: rank, score and position; its categories (>= 5% of its tokens); its text."""
    meta = (
        f"<b>#{int(r['rank'])}</b> score {fmt(r['score'])}<br>idx {fmt(r['global_index'])}<br>"
        f"step {fmt(r['step'])} · pos {fmt(r['position'])}<br>loss {fmt(r.get('loss'))}"
    )
    cells = f'<td class="meta">{meta}</td>'
    if has_cats:
        cats = sorted(((k[5:], v) for k, v in r.items() if k.startswith("frac_") and v is not None),
                      key=lambda kv: -float(kv[1]))  # fmt: skip
        cells += "<td>" + "<br>".join(f"{esc(k)} {100 * float(v):.0f}%" for k, v in cats if float(v) >= 0.05) + "</td>"
    cells += f'<td class="text">{text_html(r.get("text"), eod)}</td>'
    return f"<tr>{cells}</tr>"


def _target_samples(
    target: str,
    kinds: Mapping[str, List[Mapping[str, Any]]],
    limits: Dict[str, int],
    has_cats: bool,
    eod: Optional[str],
    opened: bool,
) -> str:
    """A target's highest and lowest samples in a ``<details>`` block ("" when it has none)."""
    block, counts = [], []
    cols = '<col style="width:170px">' + ('<col style="width:130px">' if has_cats else "") + "<col>"
    heads = "<th>sample</th>" + ("<th>categories</th>" if has_cats else "") + "<th>text</th>"
    for kind, limit in limits.items():
        sel = sorted(kinds.get(kind, []), key=lambda r: int(r["rank"]))[:limit]
        if not sel:
            continue
        label = f"{'highest' if kind == 'top' else 'lowest'} {len(sel)}"
        counts.append(label)
        block.append(f"<h3>{esc(target)} — {label}</h3>")
        block.append(
            f'<table class="samples"><colgroup>{cols}</colgroup><thead><tr>{heads}</tr></thead>'
            f"<tbody>{''.join(_sample_row(r, has_cats, eod) for r in sel)}</tbody></table>"
        )
    if not block:
        return ""
    return (
        f"<details{' open' if opened else ''}><summary>{esc(target)}: {esc(', '.join(counts))}</summary>"
        f"{''.join(block)}</details>"
    )


def top_samples_section(rows: Sequence[Mapping[str, Any]], n_top: int, n_bottom: int, eod: Optional[str]) -> str:
    """The top ``n_top`` and bottom ``n_bottom`` table rows of each target; the first target is expanded, the
    others are collapsed (click to open)."""
    by_target: Dict[str, Dict[str, List[Mapping[str, Any]]]] = {}
    for r in rows:
        by_target.setdefault(str(r["target"]), {}).setdefault(str(r["kind"]), []).append(r)
    parts = [
        "<p>Samples with the highest (and lowest) scores per target. Text is the decoded start of the training "
        f'sequence; document boundaries are highlighted as <span class="eod">{esc(eod or "")}</span>.</p>'
        if eod
        else "<p>Samples with the highest (and lowest) scores per target.</p>"
    ]
    has_cats = any(k.startswith("frac_") for r in rows for k in r)
    limits = {"top": n_top, "bottom": n_bottom}
    for t_i, (target, kinds) in enumerate(by_target.items()):
        parts.append(_target_samples(target, kinds, limits, has_cats, eod, t_i == 0))
    return section("samples", "Top samples", "".join(parts))


def interventions_section(data: Mapping[str, Any]) -> str:
    """Curves, head score against ICL, and the per-arm table from the interventions' stored summary."""
    s = intervention_summary(data)
    thr = s["threshold"]
    has_loss = all("loss" in d for a in data["arms"].values() for d in a["seeds"].values())
    body = [
        '<div class="row">',
        img(intervention_plots.intervention_curves_png(data, "head_score", "target head score", "Target head score",
                                           threshold=thr), "intervention head score curves",
            "Target head score per arm; line = mean over seeds, band = min–max across seeds."
            + (f" Dashed: emergence threshold {thr:g}." if thr is not None else "")),
        img(intervention_plots.score_vs_icl_png(data, s["score_icl_pearson"]), "head score vs ICL",
            f"Head score against ICL score at every checkpoint of every distinct run ({s['n_points']} points)."),
        img(intervention_plots.intervention_curves_png(data, "icl", "ICL score", "ICL score"), "ICL curves",
            "In-context-learning score per arm (loss at a late token minus loss at an early token; lower means "
            "more in-context learning); line = mean over seeds, band = min–max."),
    ]  # fmt: skip
    if has_loss:
        body.append(img(intervention_plots.intervention_curves_png(data, "loss", "loss", "Loss"), "loss curves",
                        "Loss per arm; line = mean over seeds, band = min–max."))  # fmt: skip
    body.append("</div>")
    rows = []
    for arm, a in s["arms"].items():
        steps = ", ".join("never" if v is None else f"{v:,}" for v in a["emergence_steps"].values())
        mean = "—" if a["emergence_mean"] is None else f"{a['emergence_mean']:,.0f} ± {a['emergence_std']:,.0f}"
        delta = "—" if a["emergence_delta"] is None else f"{a['emergence_delta']:+,.0f}"
        runs = "1 (seed-free)" if a.get("deterministic") else fmt(a["n_seeds"])
        rows.append([esc(arm), runs, f"{a['n_reached']}/{a['n_seeds']}", esc(steps), mean, delta,
                     fmt(a["final_head_score"]), fmt(a["final_icl"])])  # fmt: skip
    base = s["baseline"]
    header = ["arm", "runs", "reached threshold", "emergence step per run", "mean ± std (reached)",
              f"Δ vs {base}" if base else "Δ vs baseline", "final head score", "final ICL"]  # fmt: skip
    body.insert(0, table(header, rows, num_cols=(1, 2, 4, 5, 6, 7)))
    thr_txt = f"{thr:g}" if thr is not None else "the localize threshold"
    body.insert(0, f"<p>Emergence step: first checkpoint where the target head's score crosses {thr_txt}. "
                   f"Pearson r(head score, ICL) over all points: {fmt(s['score_icl_pearson'], 3)}.</p>")  # fmt: skip
    return section("interventions", "Interventions", "".join(body))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, default=str)


def config_text(config: Mapping[str, Any], prefix: str = "") -> str:
    """The config in TOML layout (scalars first, then one ``[table]`` per nested dict); for display only."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in config.items() if not isinstance(v, Mapping)]
    blocks = ["\n".join(([f"[{prefix[:-1]}]"] if prefix else []) + scalars)]
    for k, v in config.items():
        if isinstance(v, Mapping):
            blocks.append(config_text(v, f"{prefix}{k}."))
    return "\n\n".join(b for b in blocks if b)


def summary_cards(analysis: Optional[Mapping[str, Any]], emergence: Optional[Mapping[str, Any]]) -> str:
    cards = []
    if analysis is not None:
        t0 = analysis["primary_target"]
        pl = analysis["per_target"][t0].get("power_law") or {}
        cards.append((f"{analysis['n_samples']:,}", "samples scored"))
        cards.append((pct(analysis.get("top_share")),
                      f"positive influence in top {100 * analysis['top_fraction']:.4g}% ({t0})"))  # fmt: skip
        if "exponent" in pl:
            cards.append((f"{pl['exponent']:.2f}", f"power-law exponent (R² {pl['r2']:.2f})"))
        enr = analysis.get("category_enrichment") or {}
        if enr:
            best = max((c for c in enr if enr[c] is not None), key=lambda c: enr[c], default=None)
            if best is not None:
                cards.append((f"×{enr[best]:.2f}", f"most enriched category: {best}"))
    if emergence is not None:
        e = plots.normalize_emergence(emergence)
        st = [e["emergence_step"].get(plots.head_name(*h)) for h in e["heads"]]
        st = [x for x in st if x is not None]
        if st:
            cards.append((f"{min(st):,}", "earliest target-head emergence step"))
    return html_cards(cards)

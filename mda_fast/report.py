"""Single self-contained HTML report: inline CSS, PNG plots embedded as base64 data URIs, no external assets.

Sections appear only when their data is given: emergence, influence (cumulative curve, power law, per-target
table, Jaccard overlap, per-step influence), categories, top samples, interventions, config and provenance.
All text from data (sample text, names, config values) is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import plots
from .analysis import summarize_interventions

__all__ = ["write_report", "render_report"]

EOD_MARKER = "<|endoftext|>"

_CSS = """
:root { --fg:#1d2329; --muted:#5b6670; --line:#d9dee3; --bg:#ffffff; --soft:#f5f7f9; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 32px 60px; }
h1 { font-size:26px; margin:0 0 4px; }
h2 { font-size:20px; margin:36px 0 10px; padding-bottom:6px; border-bottom:2px solid var(--line); }
h3 { font-size:16px; margin:22px 0 8px; }
.sub { color:var(--muted); margin:0 0 14px; }
nav { background:var(--soft); border:1px solid var(--line); border-radius:6px; padding:8px 14px; margin:14px 0; }
nav a { color:var(--accent); text-decoration:none; margin-right:16px; white-space:nowrap; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:14px 0; }
.card { background:var(--soft); border:1px solid var(--line); border-radius:6px; padding:10px 14px; min-width:170px; }
.card .v { font-size:21px; font-weight:600; }
.card .k { color:var(--muted); font-size:12.5px; }
figure { margin:10px 0; }
figure img { max-width:100%; height:auto; display:block; border:1px solid var(--line); border-radius:4px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
.row { display:grid; grid-template-columns:repeat(auto-fit, minmax(420px, 1fr)); gap:16px; align-items:start; }
table { border-collapse:collapse; margin:8px 0 14px; font-size:13.5px; }
th, td { border:1px solid var(--line); padding:4px 8px; text-align:left; vertical-align:top; }
th { background:var(--soft); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
table.samples { width:100%; table-layout:fixed; }
table.samples td.text { width:auto; }
pre { background:var(--soft); border:1px solid var(--line); border-radius:4px; padding:8px 10px; margin:0;
  font:12.5px/1.45 "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space:pre-wrap; overflow-wrap:anywhere; }
pre.snippet { max-height:11em; overflow:auto; background:#fbfbfb; }
.eod { background:#ffe08a; color:#5a4300; border-radius:3px; padding:0 2px; }
.notes li { margin:4px 0; }
details { margin:10px 0; }
summary { cursor:pointer; font-weight:600; color:var(--accent); padding:4px 0; }
.muted { color:var(--muted); }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _img(png: bytes, alt: str, caption: Optional[str] = None) -> str:
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"plot {alt!r} is not a PNG")
    b64 = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{b64}">{cap}</figure>'


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        f = float(x)
        if f != f:
            return "NaN"
        if f != 0 and (abs(f) >= 1e5 or abs(f) < 1e-3):
            return f"{f:.{digits - 1}e}"
        return f"{f:.{digits}g}"
    return str(x)


def _pct(x: Optional[float]) -> str:
    return "—" if x is None else f"{100 * float(x):.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], num_cols: Sequence[int] = (), cls: str = "") -> str:
    """Table of pre-escaped cell HTML strings; columns in ``num_cols`` are right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for r in rows:
        cells = "".join(f'<td class="num">{c}</td>' if i in num_cols else f"<td>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _text_html(text: Optional[str], eod_marker: Optional[str]) -> str:
    """Escaped sample text; EOD markers highlighted so document boundaries are visible."""
    if text is None:
        return '<span class="muted">(no text: no decoder given)</span>'
    esc = _e(text)
    if eod_marker:
        em = _e(eod_marker)
        esc = esc.replace(em, f'<span class="eod">{em}</span>')
    return f'<pre class="snippet">{esc}</pre>'


# ----------------------------------------------------------------------------------------------- sections


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>{body}</section>'


def _emergence_section(emergence: Mapping[str, Any]) -> str:
    e = plots.normalize_emergence(emergence)
    parts = [
        _img(
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
                [_e(n), target, _fmt(e["emergence_step"].get(n))]
                + [_fmt(float(final[m][layer, head])) for m in e["scores"]]
            )
        header = ["head", "target", "emergence step"] + [f"final {m.replace('_', ' ')}" for m in e["scores"]]
        parts.append(_table(header, rows, num_cols=range(2, len(header))))
    else:
        parts.append(f"<p>No head crosses the threshold {e['threshold']:g} at any checkpoint.</p>")
    return _section("emergence", "Emergence of the heads", "".join(parts))


def _influence_section(analysis: Mapping[str, Any]) -> str:
    frac = float(analysis["top_fraction"])
    rows = []
    for t in analysis["targets"]:
        pt = analysis["per_target"][t]
        c = pt["cumulative"]
        pl = pt.get("power_law") or {}
        st = pt.get("score_stats", {})
        if "exponent" in pl:
            fit = [_fmt(pl["exponent"], 3), _fmt(pl["r2"], 3), f"{pl['min_rank']}–{pl['max_rank']}"]
        else:
            fit = ["—", "—", _e(pl.get("error", "not fitted"))]
        rows.append(
            [_e(t), _pct(c["top_share"]), _fmt(c["n_positive"]), _fmt(st.get("mean")), _fmt(st.get("std"))]
            + fit
            + [_fmt(pt.get("score_loss_pearson"), 3)]
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
        _table(header, rows, num_cols=range(1, len(header) - 2)),
        '<div class="row">',
        _img(plots.cumulative_png(analysis), "cumulative influence",
             "Cumulative share of positive influence against the fraction of samples taken by descending score."),
        _img(plots.power_law_png(analysis), "rank-score power law",
             "Positive scores by rank (log–log) with the fitted power law over its fit range."),
        "</div>",
    ]  # fmt: skip
    if len(analysis["targets"]) > 1:
        body.append(
            _img(plots.jaccard_png(analysis), "top-k overlap",
                 f"Jaccard overlap |A∩B|/|A∪B| of the targets' top-{analysis['jaccard']['k']:,} sets.")
        )  # fmt: skip
    body.append(
        _img(plots.per_step_png(analysis), "influence per step",
             "Sum of the scores of each training step's samples over the scored window.")
    )  # fmt: skip
    return _section("influence", "Influence distribution", "".join(body))


def _category_section(analysis: Mapping[str, Any]) -> str:
    frac = float(analysis["top_fraction"])
    t0 = analysis["primary_target"]
    body = [_img(plots.category_png(analysis, t0), "category bars",
                 f"Token-fraction-weighted share of each category in the top {frac:.0%} of {t0} against its base "
                 "rate over all scored samples; label = ratio.")]  # fmt: skip
    cats = analysis["categories"]
    header = ["category"] + [f"{t}: top / base (ratio)" for t in analysis["targets"]]
    rows = []
    for c in cats:
        r = [_e(c)]
        for t in analysis["targets"]:
            v = analysis["per_target"][t]["category_enrichment"][c]
            r.append(f"{_pct(v['top_share'])} / {_pct(v['base_share'])} (×{_fmt(v['ratio'], 3)})")
        rows.append(r)
    body.append(_table(header, rows, num_cols=range(1, len(header))))
    return _section("categories", "Categories in the top set", "".join(body))


def _top_samples_section(rows: Sequence[Mapping[str, Any]], n_top: int, n_bottom: int, eod: Optional[str]) -> str:
    by_target: Dict[str, Dict[str, List[Mapping[str, Any]]]] = {}
    for r in rows:
        by_target.setdefault(str(r["target"]), {}).setdefault(str(r["kind"]), []).append(r)
    parts = [
        "<p>Samples with the highest (and lowest) scores per target. Text is the decoded start of the training "
        f"sequence; document boundaries are highlighted as <span class=\"eod\">{_e(eod or '')}</span>.</p>"
        if eod
        else "<p>Samples with the highest (and lowest) scores per target.</p>"
    ]
    has_cats = any(k.startswith("frac_") for r in rows for k in r)
    for t_i, (target, kinds) in enumerate(by_target.items()):
        block = []
        counts = []
        for kind, limit in (("top", n_top), ("bottom", n_bottom)):
            sel = sorted(kinds.get(kind, []), key=lambda r: int(r["rank"]))[:limit]
            if not sel:
                continue
            label = f"{'highest' if kind == 'top' else 'lowest'} {len(sel)}"
            counts.append(label)
            block.append(f"<h3>{_e(target)} — {label}</h3>")
            trs = []
            for r in sel:
                meta = (
                    f"<b>#{int(r['rank'])}</b> score {_fmt(r['score'])}<br>idx {_fmt(r['global_index'])}<br>"
                    f"step {_fmt(r['step'])} · pos {_fmt(r['position'])}<br>loss {_fmt(r.get('loss'))}"
                )
                cells = f'<td class="meta">{meta}</td>'
                if has_cats:
                    cats = sorted(((k[5:], v) for k, v in r.items() if k.startswith("frac_") and v is not None),
                                  key=lambda kv: -float(kv[1]))  # fmt: skip
                    cells += "<td>" + "<br>".join(
                        f"{_e(k)} {100 * float(v):.0f}%" for k, v in cats if float(v) >= 0.05
                    ) + "</td>"
                cells += f'<td class="text">{_text_html(r.get("text"), eod)}</td>'
                trs.append(f"<tr>{cells}</tr>")
            cols = '<col style="width:170px">' + ('<col style="width:130px">' if has_cats else "") + "<col>"
            heads = "<th>sample</th>" + ("<th>categories</th>" if has_cats else "") + "<th>text</th>"
            block.append(
                f'<table class="samples"><colgroup>{cols}</colgroup><thead><tr>{heads}</tr></thead>'
                f"<tbody>{''.join(trs)}</tbody></table>"
            )
        if not block:
            continue
        # The first target is expanded; the others are collapsed (click to open).
        opened = " open" if t_i == 0 else ""
        parts.append(f"<details{opened}><summary>{_e(target)}: {_e(', '.join(counts))}</summary>{''.join(block)}"
                     "</details>")  # fmt: skip
    return _section("samples", "Top samples", "".join(parts))


def _interventions_section(data: Mapping[str, Any]) -> str:
    s = summarize_interventions(data)
    thr = s["threshold"]
    has_loss = all("loss" in d for a in data["arms"].values() for d in a["seeds"].values())
    body = [
        '<div class="row">',
        _img(plots.intervention_curves_png(data, "head_score", "target head score", "Target head score",
                                           threshold=thr), "intervention head score curves",
             "Target head score per arm; line = mean over seeds, band = min–max across seeds."
             + (f" Dashed: emergence threshold {thr:g}." if thr is not None else "")),
        _img(plots.score_vs_icl_png(data, s["score_icl_pearson"]), "head score vs ICL",
             f"Head score against ICL score at every checkpoint of every distinct run ({s['n_points']} points)."),
        _img(plots.intervention_curves_png(data, "icl", "ICL score", "ICL score"), "ICL curves",
             "In-context-learning score per arm (loss at a late token minus loss at an early token; lower means "
             "more in-context learning); line = mean over seeds, band = min–max."),
    ]  # fmt: skip
    if has_loss:
        body.append(_img(plots.intervention_curves_png(data, "loss", "loss", "Loss"), "loss curves",
                         "Loss per arm; line = mean over seeds, band = min–max."))  # fmt: skip
    body.append("</div>")
    rows = []
    for arm, a in s["arms"].items():
        steps = ", ".join("never" if v is None else f"{v:,}" for v in a["emergence_steps"].values())
        mean = "—" if a["emergence_mean"] is None else f"{a['emergence_mean']:,.0f} ± {a['emergence_std']:,.0f}"
        delta = "—" if a["emergence_delta"] is None else f"{a['emergence_delta']:+,.0f}"
        runs = "1 (seed-free)" if a.get("deterministic") else _fmt(a["n_seeds"])
        rows.append([_e(arm), runs, f"{a['n_reached']}/{a['n_seeds']}", _e(steps), mean, delta,
                     _fmt(a["final_head_score"]), _fmt(a["final_icl"])])  # fmt: skip
    base = s["baseline"]
    header = ["arm", "runs", "reached threshold", "emergence step per run", "mean ± std (reached)",
              f"Δ vs {base}" if base else "Δ vs baseline", "final head score", "final ICL"]  # fmt: skip
    body.insert(0, _table(header, rows, num_cols=(1, 2, 4, 5, 6, 7)))
    thr_txt = f"{thr:g}" if thr is not None else "the localize threshold"
    body.insert(0, f"<p>Emergence step: first checkpoint where the target head's score crosses {thr_txt}. "
                   f"Pearson r(head score, ICL) over all points: {_fmt(s['score_icl_pearson'], 3)}.</p>")  # fmt: skip
    return _section("interventions", "Interventions", "".join(body))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, default=str)


def _config_text(config: Mapping[str, Any], prefix: str = "") -> str:
    """The config in TOML layout (scalars first, then one ``[table]`` per nested dict); for display only."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in config.items() if not isinstance(v, Mapping)]
    blocks = ["\n".join(([f"[{prefix[:-1]}]"] if prefix else []) + scalars)]
    for k, v in config.items():
        if isinstance(v, Mapping):
            blocks.append(_config_text(v, f"{prefix}{k}."))
    return "\n\n".join(b for b in blocks if b)


def _kv_table(d: Mapping[str, Any]) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, (dict, list, tuple)):
            cell = f"<pre>{_e(json.dumps(v, indent=1, default=str))}</pre>"
        else:
            cell = _e(_fmt(v) if isinstance(v, float) else v)
        rows.append([_e(k), cell])
    return _table(["key", "value"], rows)


def _summary_cards(analysis: Optional[Mapping[str, Any]], emergence: Optional[Mapping[str, Any]]) -> str:
    cards = []
    if analysis is not None:
        t0 = analysis["primary_target"]
        pl = analysis["per_target"][t0].get("power_law") or {}
        cards.append((f"{analysis['n_samples']:,}", "samples scored"))
        cards.append((_pct(analysis.get("top_share")),
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
    if not cards:
        return ""
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>' for v, k in cards
    ) + "</div>"


# ----------------------------------------------------------------------------------------------- entry points


def render_report(
    *,
    title: str,
    config: Mapping[str, Any],
    provenance: Mapping[str, Any],
    emergence: Optional[Mapping[str, Any]] = None,
    analysis: Optional[Mapping[str, Any]] = None,
    top_samples: Optional[Sequence[Mapping[str, Any]]] = None,
    interventions: Optional[Mapping[str, Any]] = None,
    notes: Union[str, Sequence[str], None] = None,
    top_rows: int = 10,
    bottom_rows: int = 5,
    eod_marker: Optional[str] = EOD_MARKER,
) -> str:
    """The report as an HTML string; see :func:`write_report`."""
    if not isinstance(config, Mapping) or not isinstance(provenance, Mapping):
        raise TypeError("config and provenance must be dicts")
    sections = []
    toc = []

    def add(anchor: str, label: str, html_: str) -> None:
        sections.append(html_)
        toc.append(f'<a href="#{anchor}">{_e(label)}</a>')

    if notes:
        items = [notes] if isinstance(notes, str) else list(notes)
        add("notes", "Findings", _section("notes", "Findings",
                                          '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in items) + "</ul>"))  # fmt: skip
    if emergence is not None:
        add("emergence", "Emergence", _emergence_section(emergence))
    if analysis is not None:
        add("influence", "Influence", _influence_section(analysis))
        if analysis.get("categories"):
            add("categories", "Categories", _category_section(analysis))
    if top_samples:
        add("samples", "Top samples", _top_samples_section(top_samples, top_rows, bottom_rows, eod_marker))
    if interventions is not None:
        add("interventions", "Interventions", _interventions_section(interventions))
    cfg = f"<pre>{_e(_config_text(config))}</pre>" if config else '<p class="muted">(empty config)</p>'
    add("config", "Config & provenance",
        _section("config", "Run config and provenance", "<h3>Provenance</h3>" + _kv_table(provenance)
                 + "<h3>Config</h3>" + cfg))  # fmt: skip
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1><p class=\"sub\">mda-fast report · generated {generated}</p>"
        f"<nav>{''.join(toc)}</nav>{_summary_cards(analysis, emergence)}{''.join(sections)}"
        "</main></body></html>\n"
    )


def write_report(
    path: str,
    *,
    title: str,
    config: Mapping[str, Any],
    provenance: Mapping[str, Any],
    emergence: Optional[Mapping[str, Any]] = None,
    analysis: Optional[Mapping[str, Any]] = None,
    top_samples: Optional[Sequence[Mapping[str, Any]]] = None,
    interventions: Optional[Mapping[str, Any]] = None,
    notes: Union[str, Sequence[str], None] = None,
    top_rows: int = 10,
    bottom_rows: int = 5,
    eod_marker: Optional[str] = EOD_MARKER,
) -> str:
    """Write a self-contained HTML report to ``path`` (atomically) and return the path.

    ``emergence``: localize output (see :func:`mda_fast.plots.normalize_emergence`); ``analysis``: the dict of
    :func:`mda_fast.analysis.analyze`; ``top_samples``: rows of :func:`mda_fast.analysis.top_bottom_table` or
    :func:`mda_fast.analysis.read_table_csv` (the first ``top_rows``/``bottom_rows`` per target are shown);
    ``interventions``: see :func:`mda_fast.analysis.summarize_interventions`; ``notes``: findings text, one
    string or a list. ``eod_marker`` occurrences in sample text are highlighted.
    """
    doc = render_report(
        title=title, config=config, provenance=provenance, emergence=emergence, analysis=analysis,
        top_samples=top_samples, interventions=interventions, notes=notes, top_rows=top_rows,
        bottom_rows=bottom_rows, eod_marker=eod_marker,
    )  # fmt: skip
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(doc)
    os.replace(tmp, path)
    return path

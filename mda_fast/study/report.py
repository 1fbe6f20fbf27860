"""Single self-contained HTML report: inline CSS, PNG plots embedded as base64 data URIs, no external assets.

Sections appear only when their data is given: emergence, influence (cumulative curve, power law, per-target
table, Jaccard overlap, per-step influence), categories, top samples, interventions, config and provenance.
All text from data (sample text, names, config values) is HTML-escaped. The sections are built in
:mod:`mda_fast.study.report_sections`.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Mapping, Optional, Sequence, Union

from ..io import atomic_file
from .report_html import esc, kv_table, section
from .report_sections import (
    category_section,
    config_text,
    emergence_section,
    influence_section,
    interventions_section,
    summary_cards,
    top_samples_section,
)
from .report_tokens import CSS as TOKENS_CSS
from .report_tokens import per_token_section

__all__ = ["write_report", "render_report", "EOD_MARKER"]

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
    per_token: Optional[Mapping[str, Any]] = None,
    top_rows: int = 10,
    bottom_rows: int = 5,
    eod_marker: Optional[str] = EOD_MARKER,
) -> str:
    """The report as an HTML string; the arguments are described at :func:`write_report`."""
    if not isinstance(config, Mapping) or not isinstance(provenance, Mapping):
        raise TypeError("config and provenance must be dicts")
    sections = []
    toc = []

    def add(anchor: str, label: str, html_: str) -> None:
        sections.append(html_)
        toc.append(f'<a href="#{anchor}">{esc(label)}</a>')

    if notes:
        items = [notes] if isinstance(notes, str) else list(notes)
        add(
            "notes",
            "Findings",
            section("notes", "Findings", '<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in items) + "</ul>"),
        )
    if emergence is not None:
        add("emergence", "Emergence", emergence_section(emergence))
    if analysis is not None:
        add("influence", "Influence", influence_section(analysis))
        if analysis.get("categories"):
            add("categories", "Categories", category_section(analysis))
    if top_samples:
        add("samples", "Top samples", top_samples_section(top_samples, top_rows, bottom_rows, eod_marker))
    if per_token and per_token.get("targets"):
        add("per-token", "Per-token", per_token_section(per_token["targets"], per_token["decode_token"],
                                                        per_token.get("summary")))  # fmt: skip
    if interventions is not None:
        add("interventions", "Interventions", interventions_section(interventions))
    cfg = f"<pre>{esc(config_text(config))}</pre>" if config else '<p class="muted">(empty config)</p>'
    add("config", "Config & provenance",
        section("config", "Run config and provenance", "<h3>Provenance</h3>" + kv_table(provenance)
                + "<h3>Config</h3>" + cfg))  # fmt: skip
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}{TOKENS_CSS}</style></head><body><main>"
        f'<h1>{esc(title)}</h1><p class="sub">mda-fast report · generated {generated}</p>'
        f"<nav>{''.join(toc)}</nav>{summary_cards(analysis, emergence)}{''.join(sections)}"
        "</main></body></html>\n"
    )


def write_report(path: str, **inputs: Any) -> str:
    """Write the self-contained HTML report of :func:`render_report` (same keyword arguments) to ``path``
    (atomically) and return the path.

    ``emergence``: localize output (see :func:`mda_fast.study.plots.normalize_emergence`); ``analysis``: the dict
    of :func:`mda_fast.study.analyze.analyze`; ``top_samples``: rows of
    :func:`mda_fast.study.tables.top_bottom_table` or :func:`mda_fast.study.tables.read_table_csv` (the first
    ``top_rows``/``bottom_rows`` per target are shown); ``interventions``: the dict of ``run_interventions``
    (its stored summary is shown) or bare curves (see :func:`mda_fast.study.interventions.summary.summarize`);
    ``notes``: findings text, one string or a list; ``per_token``: ``{"targets": {name: rows}, "decode_token":
    id -> text, "summary": out/per_token/summary.json}`` (see :func:`mda_fast.study.report_tokens.per_token_section`).
    ``eod_marker`` occurrences in sample text are highlighted.
    """
    doc = render_report(**inputs)
    with atomic_file(path, "wb") as f:
        f.write(doc.encode("utf-8"))
    return path

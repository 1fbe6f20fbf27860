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
from .report_html import esc, kv_table, page, section
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
        toc.append((anchor, label))

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
    body = summary_cards(analysis, emergence) + "".join(sections)
    return page(title, f"mda-fast report · generated {generated}", toc, body, TOKENS_CSS)


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

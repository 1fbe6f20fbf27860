"""HTML building blocks of the reports: the page (style sheet, title, navigation), summary cards, escaping, number
formats, tables, embedded PNGs, sections. The main report and ``augment.html`` share them, so they look alike."""

from __future__ import annotations

import base64
import html
import json
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["PAGE_CSS", "esc", "img", "fmt", "pct", "table", "text_html", "section", "kv_table", "cards", "page"]


PAGE_CSS = """
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


def esc(x: Any) -> str:
    """``x`` as text, HTML-escaped (quotes too)."""
    return html.escape(str(x), quote=True)


def img(png: bytes, alt: str, caption: Optional[str] = None) -> str:
    """A ``<figure>`` with the PNG embedded as a data URI and an optional caption."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"plot {alt!r} is not a PNG")
    b64 = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{b64}">{cap}</figure>'


def fmt(x: Any, digits: int = 4) -> str:
    """A number for display: thousands separators for ints, ``digits`` significant digits for floats."""
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


def pct(x: Optional[float]) -> str:
    """A fraction as a percentage with one decimal; ``—`` for ``None``."""
    return "—" if x is None else f"{100 * float(x):.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], num_cols: Sequence[int] = (), cls: str = "") -> str:
    """Table of pre-escaped cell HTML strings; columns in ``num_cols`` are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for r in rows:
        cells = "".join(f'<td class="num">{c}</td>' if i in num_cols else f"<td>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def text_html(text: Optional[str], eod_marker: Optional[str]) -> str:
    """Escaped sample text; EOD markers highlighted so document boundaries are visible."""
    if text is None:
        return '<span class="muted">(no text: no decoder given)</span>'
    out = esc(text)
    if eod_marker:
        em = esc(eod_marker)
        out = out.replace(em, f'<span class="eod">{em}</span>')
    return f'<pre class="snippet">{out}</pre>'


def section(anchor: str, title: str, body: str) -> str:
    """A ``<section>`` with an anchor and an ``<h2>`` title around pre-built ``body`` HTML."""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def kv_table(d: Mapping[str, Any]) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, (dict, list, tuple)):
            cell = f"<pre>{esc(json.dumps(v, indent=1, default=str))}</pre>"
        else:
            cell = esc(fmt(v) if isinstance(v, float) else v)
        rows.append([esc(k), cell])
    return table(["key", "value"], rows)


def cards(items: Sequence[Tuple[str, str]]) -> str:
    """Summary cards: one box per ``(value, label)`` (both escaped); ``""`` when there are none."""
    if not items:
        return ""
    boxes = "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>' for v, k in items
    )
    return f'<div class="cards">{boxes}</div>'


def page(title: str, subtitle: str, toc: Sequence[Tuple[str, str]], body: str, extra_css: str = "") -> str:
    """A whole self-contained page: the shared style sheet (plus ``extra_css``), the title, a subtitle line, the
    navigation bar (``toc``: ``(anchor, label)`` pairs) and the pre-built ``body`` HTML."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(label)}</a>' for a, label in toc)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{PAGE_CSS}{extra_css}</style></head><body><main>"
        f'<h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>'
        f"<nav>{nav}</nav>{body}</main></body></html>\n"
    )

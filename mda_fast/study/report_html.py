"""HTML building blocks of the report: escaping, number formats, tables, embedded PNGs, sections."""

from __future__ import annotations

import base64
import html
import json
from typing import Any, Mapping, Optional, Sequence

import numpy as np

__all__ = ["esc", "img", "fmt", "pct", "table", "text_html", "section", "kv_table"]


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

"""The augmentation report: an HTML section (self-contained: inline CSS, base64 PNGs) and its plots.

``augment_section_html(res, texts)`` renders ``augment.json``'s dict: the findings, the gain-by-size plot (mean and
std over seeds per arm), per-size score curves, the per size × arm table, and the motifs with the repeated spans
of example texts highlighted (``texts``: sample id -> token row, for the examples). ``write_augment_report`` writes
it as a stand-alone page; the main report can embed ``augment_section_html``'s string as is.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Dict, Mapping, Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .motifs import byte_decode

__all__ = ["gain_by_size_png", "curves_png", "highlight_spans", "augment_section_html", "write_augment_report"]

_COLORS = {
    "none": "#7f7f7f",
    "random": "#1f77b4",
    "copy": "#ff7f0e",
    "top": "#2ca02c",
    "mechanistic": "#d62728",
    "mechanistic-large": "#9467bd",
}
_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
    "th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    "pre.s{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:6px;font-size:12px}"
    "mark.c{background:#ffd54f}mark.c1{background:#80deea}mark.c2{background:#c5e1a5}"
)


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fig(w, h):
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def gain_by_size_png(res: Mapping) -> str:
    """Base64 PNG: relative gain over none at the gain step, per size (x) and arm, error bars = std over seeds."""
    sizes = list(res["sizes"])
    arms = [a for a in _COLORS if any(a in res["sizes"][p]["arms"] for p in sizes) and a != "none"]
    fig = _fig(7.5, 3.6)
    ax = fig.add_subplot(111)
    w = 0.8 / max(1, len(arms))
    for j, a in enumerate(arms):
        xs, ms, ss = [], [], []
        for i, p in enumerate(sizes):
            s = res["sizes"][p]["arms"].get(a, {}).get("summary", {}).get("gain")
            if s and s["mean"] is not None:
                xs.append(i + (j - (len(arms) - 1) / 2) * w)
                ms.append(100 * s["mean"])
                ss.append(100 * s["std"])
        ax.bar(xs, ms, w, yerr=ss, capsize=3, color=_COLORS[a], label=a)
    ax.axhline(0, color="#444", lw=0.8)
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels(sizes)
    ax.set_ylabel("induction-head score gain over none (%)")
    ax.set_title("gain by model size (mean ± std over seeds)")
    ax.legend(fontsize=8, ncol=3)
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


def curves_png(res: Mapping) -> str:
    """Base64 PNG: best-head prefix-matching curves per size (seed means), one panel per size."""
    sizes = list(res["sizes"])
    fig = _fig(3.2 * len(sizes), 2.8)
    for i, p in enumerate(sizes):
        ax = fig.add_subplot(1, len(sizes), i + 1)
        sz = res["sizes"][p]
        for a, e in sz["arms"].items():
            runs = list(e["seeds"].values())
            steps = runs[0]["steps"]
            m = np.mean([r["score"] for r in runs], 0)
            ax.plot(steps, m, color=_COLORS.get(a, "k"), label=a, lw=1.4)
        ax.axvline(sz["gain_step"], color="#999", ls=":", lw=1)
        ax.axhline(res["threshold"], color="#bbb", ls="--", lw=0.8)
        ax.set_title(p, fontsize=10)
        ax.set_xlabel("step")
        if i == 0:
            ax.set_ylabel("best-head prefix matching")
            ax.legend(fontsize=7)
    return _png(fig)


def highlight_spans(tokens, spans, decode=byte_decode) -> str:
    """HTML of a row's text with its copy spans (``(start, source, length)``) and their sources highlighted."""
    toks = np.asarray(tokens, np.int64)
    mark = np.zeros(toks.size, np.int64)
    for k, (s, j, m) in enumerate(spans):
        seg = mark[j : min(j + m, s)]  # the source (up to where the copy starts)
        seg[seg == 0] = 10 + k % 3
        mark[s : s + m] = 1 + k % 3
    out, cur, buf = [], 0, []

    def flush():
        txt = html.escape(decode(np.asarray(buf, np.int64)).decode("latin-1")) if buf else ""
        if cur and txt:
            idx = cur - 1 if cur < 10 else cur - 10
            cls = "c" if idx == 0 else f"c{idx}"
            style = ' style="opacity:.55"' if cur >= 10 else ""
            out.append(f'<mark class="{cls}"{style}>{txt}</mark>')
        else:
            out.append(txt)

    for t, m in zip(toks.tolist(), mark.tolist()):
        if m != cur:
            flush()
            cur, buf = m, []
        buf.append(t)
    flush()
    return "".join(out)


def _f(x, pct=False, d=3):
    if x is None:
        return "–"
    return f"{100 * x:+.1f}%" if pct else f"{x:.{d}f}"


def _ms(s, pct=False, d=3):
    if not s or s["mean"] is None:
        return "–"
    return f"{_f(s['mean'], pct, d)} ± {(100 * s['std']) if pct else s['std']:.{1 if pct else d}f}"


_ARM_HEAD = (
    "size",
    "arm",
    "gain",
    "score at gain step",
    "emergence step",
    "ICL at gain step",
    "held-out loss",
    "Δ held-out loss",
)
_SIZE_HEAD = ("size", "base emergence", "window", "trained to", "rows per arm", "tokens per arm")
_MOTIF_KEYS = (
    "copy_frac",
    "span_len",
    "copy_dist",
    "max_repeats",
    "period_strength",
    "frac_alpha",
    "frac_punct",
    "tag_depth",
    "entropy",
    "compress",
)


def _table(head, rows, numeric_from: Optional[int] = None) -> str:
    """An HTML table of ``rows`` under ``head`` (all escaped); columns from ``numeric_from`` on right-aligned."""
    e = html.escape

    def td(i, c):
        return f"<td{' class=n' if numeric_from is not None and i >= numeric_from else ''}>{e(str(c))}</td>"

    return (
        "<table><tr>"
        + "".join(f"<th>{e(h)}</th>" for h in head)
        + "</tr>"
        + "".join("<tr>" + "".join(td(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
        + "</table>"
    )


def _arm_rows(res: Mapping) -> list:
    """One row per size and arm: the seed means ± std of the derived figures."""
    rows = []
    for p, sz in res["sizes"].items():
        for a, v in sz["arms"].items():
            s = v["summary"]
            em = s["emergence_step"]
            rows.append(
                [
                    p,
                    a,
                    _ms(s["gain"], True),
                    _ms(s["score_at_gain_step"]),
                    _ms(em, d=0) if em["n"] else "never",
                    _ms(s["icl_at_gain_step"]),
                    _ms(s["heldout_loss_final"], d=4),
                    _ms(s["heldout_loss_change"], d=4),
                ]
            )
    return rows


def _size_rows(res: Mapping) -> list:
    """One row per size: base emergence, window, trained-to step and the budget."""
    return [
        [
            p,
            sz["emergence_step"],
            f"{sz['window'][0]}..{sz['window'][1]}",
            sz["train_until"],
            sz["budget_rows"],
            sz["budget_tokens"],
        ]
        for p, sz in res["sizes"].items()
    ]


def _motif_html(mo: Mapping, texts: Dict[int, np.ndarray]) -> list:
    """One motif's HTML parts: heading, description, feature table, highlighted examples and support."""
    e = html.escape
    parts = [
        f"<h4>{e(mo['id'])}: {len(mo['support'])} samples ({100 * mo['share']:.0f}% of the top "
        f"set)</h4><p>{e(mo['description'])}</p>"
    ]
    f, c = mo["features"], mo["contrast"]
    parts.append(
        "<table><tr><th>feature</th><th>motif mean ± std</th>"
        + "".join(f"<th>{n}</th>" for n in next(iter(c.values()), {}))
        + "</tr>"
        + "".join(
            f"<tr><td>{k}</td><td class=n>{f[k]['mean']:.3f} ± {f[k]['std']:.3f}</td>"
            + "".join(f"<td class=n>{v:.3f}</td>" for v in c[k].values())
            + "</tr>"
            for k in _MOTIF_KEYS
        )
        + "</table>"
    )
    for ex in mo["examples"]:
        if ex["id"] in texts:
            parts.append(
                f'<p>sample {ex["id"]}:</p><pre class="s">{highlight_spans(texts[ex["id"]], ex["spans"])}</pre>'
            )
    parts.append(
        f'<p style="font-size:12px">supporting sample ids: {e(str(mo["support"][:40]))}'
        f"{' …' if len(mo['support']) > 40 else ''}</p>"
    )
    return parts


def _motifs_html(res: Mapping, texts: Dict[int, np.ndarray]) -> list:
    """The HTML parts of every mined motif set: its heading and each motif."""
    e = html.escape
    parts = []
    for m in res.get("motifs", {}).values():
        parts.append(
            f"<h3>Motifs mined on {e(m['mined_on'])} (head L{m['head']['layer']}H{m['head']['head']}; "
            f"top {m['n']['top']}: {e(str(m.get('top_categories')))}; bottom: "
            f"{e(str(m.get('bottom_categories')))})</h3>"
        )
        for mo in m["motifs"]:
            parts.extend(_motif_html(mo, texts))
    return parts


def augment_section_html(res: Mapping, texts: Optional[Dict[int, np.ndarray]] = None) -> str:
    """The study's HTML section (see the module docstring)."""
    texts = texts or {}
    e = html.escape
    parts = ['<section id="augment"><h2>Mechanistic data augmentation</h2>']
    parts.append("<ul>" + "".join(f"<li>{e(t)}</li>" for t in res.get("findings", [])) + "</ul>")
    parts.append(
        f"<p>{e(res.get('gain_definition', ''))}. Seeds {res.get('seeds')}; seed-free arms (none, top) "
        f"are trained once (std 0).</p>"
    )
    parts.append(f'<figure><img alt="gain by size" src="data:image/png;base64,{gain_by_size_png(res)}"></figure>')
    parts.append(f'<figure><img alt="score curves" src="data:image/png;base64,{curves_png(res)}"></figure>')
    parts.append(_table(_ARM_HEAD, _arm_rows(res), numeric_from=2))
    parts.append("<h3>Sizes</h3>" + _table(_SIZE_HEAD, _size_rows(res)))
    parts.extend(_motifs_html(res, texts))
    for msg in res.get("llm", []):
        parts.append(f"<p>LLM: {e(msg['message'])}</p>")
    parts.append("</section>")
    return "\n".join(parts)


def write_augment_report(res: Mapping, path: str, texts: Optional[Dict[int, np.ndarray]] = None) -> str:
    """``augment_section_html`` as a stand-alone page at ``path`` (written atomically); ``path``."""
    from ..io import atomic_file

    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>mda-fast augment</title><style>{_CSS}</style>"
        f"</head><body>{augment_section_html(res, texts)}</body></html>"
    )
    with atomic_file(path) as fh:
        fh.write(page)
    return path

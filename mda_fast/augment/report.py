"""The augmentation report ``augment.html``: a self-contained page (inline CSS, embedded PNGs) in the main report's
look and structure (:mod:`mda_fast.study.report_html`: style sheet, navigation, summary cards, sections; the plots
in :mod:`mda_fast.study.plots`' style).

``augment_sections(res, texts)`` renders ``augment.json``'s dict as ``(anchor, label, html)`` sections: the findings
as prose per size, the gain-by-size plot (mean and std over seeds per arm), per-size score curves, the per size ×
arm table, the sizes, what separates the top rows from the generated ones (``comparison_html``), the motifs with the repeated spans of example texts highlighted (``texts``: sample id ->
token row), the LLM generators' messages, and the settings and timing. ``summary_cards_html(res)`` gives the
cards; ``augment_section_html`` both as one block the main report can embed; ``write_augment_report`` the page.
"""

from __future__ import annotations

import datetime as _dt
import html
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..study.plots import PALETTE, new_figure, style_axes, to_png
from ..study.report_html import cards, esc, img, kv_table, page, section, table
from .motifs import byte_decode

__all__ = [
    "gain_by_size_png",
    "curves_png",
    "highlight_spans",
    "summary_cards_html",
    "augment_sections",
    "augment_section_html",
    "render_augment_report",
    "findings_by_size",
    "comparison_html",
    "write_augment_report",
]

ARM_COLORS = {
    "none": PALETTE[9],
    "random": PALETTE[0],
    "copy": PALETTE[3],
    "top": PALETTE[2],
    "mechanistic": PALETTE[1],
    "mechanistic-large": PALETTE[4],
}
# the motif examples: a copied span and (faded) its source, in three colours for up to three spans in a row
_CSS = (
    "mark.c{background:#ffd54f}mark.c1{background:#80deea}mark.c2{background:#c5e1a5}"
    ".legend mark{padding:0 4px}.prose p{margin:6px 0 10px}.motif{margin:18px 0 8px}"
    "pre.snippet{max-height:none}.ids{font-size:12px}"
)


def _arms(res: Mapping) -> List[str]:
    """The arms present in any size, in the fixed order of ``ARM_COLORS`` (others after)."""
    seen = [a for p in res["sizes"] for a in res["sizes"][p]["arms"]]
    return [a for a in ARM_COLORS if a in seen] + sorted({a for a in seen if a not in ARM_COLORS})


def _color(arm: str, i: int) -> str:
    return ARM_COLORS.get(arm, PALETTE[i % len(PALETTE)])


def gain_by_size_png(res: Mapping) -> bytes:
    """PNG bytes: relative gain over none at the gain step, per size (x) and arm, error bars = std over seeds."""
    sizes = list(res["sizes"])
    arms = [a for a in _arms(res) if a != "none"]
    fig = new_figure(8.0, 3.8)
    ax = fig.add_subplot(111)
    w = 0.8 / max(1, len(arms))
    for j, a in enumerate(arms):
        xs, ms, ss = [], [], []
        for i, p in enumerate(sizes):
            s = res["sizes"][p]["arms"].get(a, {}).get("summary", {}).get("gain")
            if s and s["mean"] is not None:
                xs.append(i + (j - (len(arms) - 1) / 2) * w)
                ms.append(100 * s["mean"])
                ss.append(100 * (s["std"] or 0.0))
        ax.bar(xs, ms, w, yerr=ss, capsize=3, color=_color(a, j), label=a)
    ax.axhline(0, color="#444444", linewidth=0.8)
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels(sizes)
    ax.set_ylabel("head score gain over none (%)")
    ax.set_title("Gain by model size (mean ± std over seeds)")
    ax.legend(fontsize=8, ncol=len(arms), frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    style_axes(ax)
    ax.grid(False, axis="x")
    fig.tight_layout()
    return to_png(fig)


def curves_png(res: Mapping) -> bytes:
    """PNG bytes: best-head prefix-matching curves per size (seed means), one panel per size, shared legend."""
    sizes = list(res["sizes"])
    fig = new_figure(max(6.0, 3.3 * len(sizes)), 3.2)
    axes = []
    for i, p in enumerate(sizes):
        ax = fig.add_subplot(1, len(sizes), i + 1)
        sz = res["sizes"][p]
        for j, a in enumerate(_arms(res)):
            if a not in sz["arms"]:
                continue
            runs = list(sz["arms"][a]["seeds"].values())
            m = np.mean([r["score"] for r in runs], 0)
            ax.plot(runs[0]["steps"], m, color=_color(a, j), label=a, linewidth=1.4)
        ax.axvline(sz["gain_step"], color="black", linestyle=":", linewidth=1)
        ax.axhline(res["threshold"], color="#999999", linestyle="--", linewidth=0.8)
        ax.set_title(p, fontsize=10)
        ax.set_xlabel("step")
        if i == 0:
            ax.set_ylabel("best-head prefix matching")
        style_axes(ax)
        axes.append(ax)
    handles, labels = {}, []
    for ax in axes:  # one legend entry per arm over all panels (the largest size may have an extra arm)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[x] for x in labels], labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return to_png(fig)


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


def _pct(x: Optional[float]) -> str:
    return "—" if x is None else f"{100 * x:+.2f}%"


def _ms(s: Optional[Mapping], as_pct: bool = False, d: int = 3) -> str:
    """``mean ± std`` of a seed summary (``—`` when absent); percentages with two decimals."""
    if not s or s.get("mean") is None:
        return "—"
    std = s.get("std") or 0.0
    if as_pct:
        return f"{100 * s['mean']:+.2f}% ± {100 * std:.2f}"
    return f"{s['mean']:.{d}f} ± {std:.{d}f}"


_ARM_HEAD = (
    "size",
    "arm",
    "gain",
    "score at gain step",
    "emergence step",
    "area vs none",
    "ICL at gain step",
    "held-out loss",
    "Δ held-out loss",
)
_SIZE_HEAD = ("size", "base emergence", "window", "gain step", "trained to", "rows per arm", "tokens per arm")
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


def _beats(m: Mapping, c: Mapping) -> Optional[bool]:
    """Whether gain summary ``m`` beats ``c`` beyond the larger seed spread (None without both means)."""
    if not m or not c or m.get("mean") is None or c.get("mean") is None:
        return None
    return m["mean"] > c["mean"] + max(m.get("std") or 0.0, c.get("std") or 0.0)


def _gain(sz: Mapping, arm: str) -> Optional[Mapping]:
    return sz["arms"].get(arm, {}).get("summary", {}).get("gain")


def summary_cards_html(res: Mapping) -> str:
    """The summary cards: the setting, the mechanistic gain per size, how often it beat copy, the motifs, time."""
    sizes = list(res["sizes"])
    items: List[Tuple[str, str]] = [
        (str(len(sizes)), "model sizes: " + ", ".join(sizes)),
        (str(len(res.get("seeds", []))), "seeds per seeded arm"),
    ]
    first = res["sizes"][sizes[0]] if sizes else None
    if first is not None:
        items.append((f"{first['budget_tokens']:,}", f"inserted tokens per arm ({sizes[0]})"))
    for p in sizes:
        m, c = _gain(res["sizes"][p], "mechanistic"), _gain(res["sizes"][p], "copy")
        if m and m.get("mean") is not None:
            items.append((_ms(m, True), f"mechanistic gain on {p} (copy {_ms(c, True)})"))
    verdicts = [_beats(_gain(sz, "mechanistic"), _gain(sz, "copy")) for sz in res["sizes"].values()]
    known = [v for v in verdicts if v is not None]
    if known:
        items.append((f"{sum(known)} of {len(known)}", "sizes where mechanistic beat copy beyond seed spread"))
    mined = list(res.get("motifs", {}).values())
    if mined:
        n = sum(len(m["motifs"]) for m in mined)
        where = ", ".join(f"{len(m['motifs'])} on {m['mined_on']}" for m in mined)
        items.append((str(n), f"motifs mined ({where})"))
    if res.get("elapsed_s") is not None:
        items.append((f"{res['elapsed_s']:,.0f} s", "wall time of this call (runs read from the cache cost ~0)"))
    return cards(items)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def findings_by_size(res: Mapping) -> Tuple[List[str], Dict[str, List[str]]]:
    """The findings (``res['findings']``) split into general sentences and per-size sentences; a size's name is taken
    off the front of its sentences (``"tiny-2l (gain at step 30): ..."`` -> ``"Gain at step 30: ..."``)."""
    sizes = sorted(res["sizes"], key=len, reverse=True)  # the longest name first: tiny-2l-w before tiny-2l
    general: List[str] = []
    per: Dict[str, List[str]] = {p: [] for p in res["sizes"]}
    for t in res.get("findings", []):
        p = next((p for p in sizes if t.startswith(p + ":") or t.startswith(p + " (")), None)
        if p is None:
            general.append(t)
            continue
        rest = t[len(p) :]
        if rest.startswith(" (") and "): " in rest:
            inner, tail = rest[2:].split("): ", 1)
            per[p].append(f"{_sentence(inner)}: {tail}")
        else:
            per[p].append(_sentence(rest.lstrip(": ")))
    return general, per


def _findings_html(res: Mapping) -> str:
    general, per = findings_by_size(res)
    parts = [
        f"<p>Each arm adds the same number of rows to the base run's window and is trained from the window start "
        f"with seeds {esc(', '.join(map(str, res.get('seeds', []))))}; the seed-free arms (none, top) are trained "
        f"once (std 0). The gain is {esc(res.get('gain_definition', ''))}.</p>"
    ]
    if general:
        parts.append("<p>" + " ".join(esc(t) for t in general) + "</p>")
    for p, sentences in per.items():
        if sentences:
            parts.append(f"<h3>{esc(p)}</h3><p>" + " ".join(esc(t) for t in sentences) + "</p>")
    return '<div class="prose">' + "".join(parts) + "</div>"


def _arm_rows(res: Mapping) -> list:
    """One row per size and arm: the seed means ± std of the derived figures (pre-escaped cells)."""
    rows = []
    for p, sz in res["sizes"].items():
        for a, v in sz["arms"].items():
            s = v["summary"]
            em = s["emergence_step"]
            rows.append(
                [
                    esc(p),
                    f'<span style="color:{_color(a, 0)}">&#9632;</span> {esc(a)}',
                    esc(_ms(s["gain"], True)),
                    esc(_ms(s["score_at_gain_step"])),
                    esc(_ms(em, d=0) if em.get("n") else "never"),
                    esc(_ms(s.get("area_vs_none"), d=2)),
                    esc(_ms(s["icl_at_gain_step"])),
                    esc(_ms(s["heldout_loss_final"], d=4)),
                    esc(_ms(s["heldout_loss_change"], d=4)),
                ]
            )
    return rows


def _size_rows(res: Mapping) -> list:
    """One row per size: base emergence, window, gain step, trained-to step and the budget (pre-escaped cells)."""
    return [
        [
            esc(p),
            esc("not reached" if sz["emergence_step"] is None else f"{sz['emergence_step']:,}"),
            esc(f"{sz['window'][0]:,} – {sz['window'][1]:,}"),
            esc(f"{sz['gain_step']:,}"),
            esc(f"{sz['train_until']:,}"),
            esc(f"{sz['budget_rows']:,}"),
            esc(f"{sz['budget_tokens']:,}"),
        ]
        for p, sz in res["sizes"].items()
    ]


def _motif_html(mo: Mapping, texts: Dict[int, np.ndarray]) -> str:
    """One motif: heading, description, feature table against the bottom and random rows, highlighted examples."""
    f, c = mo["features"], mo["contrast"]
    others = list(next(iter(c.values()), {}))
    rows = [
        [esc(k), esc(f"{f[k]['mean']:.3f} ± {f[k]['std']:.3f}")] + [esc(f"{c[k][n]:.3f}") for n in others]
        for k in _MOTIF_KEYS
        if k in f and k in c
    ]
    feats = table(["feature", "motif mean ± std"] + others, rows, num_cols=range(1, 2 + len(others)))
    examples = [
        f'<p class="muted">sample {esc(ex["id"])}</p><pre class="snippet">'
        f"{highlight_spans(texts[ex['id']], ex['spans'])}</pre>"
        for ex in mo["examples"]
        if ex["id"] in texts
    ]
    if not examples:
        examples = ['<p class="muted">(no example text: the rows are not byte-level; their ids are below)</p>']
    ids = mo["support"]
    more = " …" if len(ids) > 40 else ""
    return (
        f'<div class="motif"><h4>{esc(mo["id"])}: {len(ids)} rows ({100 * mo["share"]:.0f}% of the top set)</h4>'
        f"<p>{esc(mo['description'])}</p>"
        f'<div class="row"><div>{feats}</div><div>{"".join(examples)}</div></div>'
        f'<p class="muted ids">supporting row ids: {esc(", ".join(map(str, ids[:40])))}{more}</p></div>'
    )


_COMPARE_LABELS = {
    "induction": "plain induction hit rate",
    "repeat_positions": "positions whose token occurred before",
    "copy_frac": "share of tokens in copies (>= 4)",
    "span_len": "copy length (mean)",
    "copy_dist": "copy distance (median)",
    "entropy": "token entropy (bits)",
    "frac_alpha": "letters",
    "frac_space": "whitespace",
    "frac_punct": "punctuation",
    "frac_digit": "digits",
    "bigram_ce": "bigram cross-entropy under the window's text (bits/token)",
}


def comparison_html(cmp: Mapping) -> str:
    """The top-versus-generated table (measure × set, mean ± std over rows), the token histograms' divergence from
    the top set's, and each motif generator's round trip."""
    names = list(cmp["sets"])
    head = ["measure"] + [f"{n} ({cmp['n'][n]})" for n in names]
    rows = [
        [esc(_COMPARE_LABELS.get(k, k))]
        + [esc(f"{cmp['sets'][n][k]['mean']:.3f} ± {cmp['sets'][n][k]['std']:.3f}") for n in names]
        for k in cmp["measures"]
    ]
    rows.append(
        [esc("token histogram: JS divergence from top (bits)")] + [esc(f"{cmp['token_js'][n]:.3f}") for n in names]
    )
    inf = cmp.get("influence") or {}
    for t in inf.get("targets", []):
        sets = inf["sets"]
        rows.append([esc(f"MDA score, {t}")] + [
            esc(f"{sets[n][t]['score']['mean']:.4g} ± {sets[n][t]['score']['std']:.3g}") if n in sets else "—"
            for n in names
        ])  # fmt: skip
        rows.append([esc(f"{t}: positive loss-token influence on induction positions / their share")] + [
            esc(f"{sets[n][t]['positive_share_on_induction']:.3f} / {sets[n][t]['induction_position_share']:.3f}")
            if n in sets else "—" for n in names
        ])  # fmt: skip
    intro = (
        "<p>Every row of each set measured on what predicts the score: plain induction (the next token is the one "
        "that followed this token's last earlier occurrence), the copy parse, the token distribution, and how much "
        f"the row reads like the corpus around it (an add-one bigram model of {cmp.get('reference_rows', 0)} other "
        f"rows of the window). The generated sets are the rows the arms insert with seed {cmp.get('seed', 0)}. The "
        "rows named MDA score: every row scored by MDA on the smallest size (its window's factors, per target: "
        "the head under each probe): what attribution predicts the rows do to the head before any arm is trained, "
        "and where inside the rows that influence sits (per-token, by loss token).</p>"
    )
    rt = cmp.get("roundtrip") or {}
    rt_html = ""
    if rt:
        items = [
            f"{esc(k)}: "
            + ("all features within tolerance" if v["ok"] else "off on " + esc(", ".join(v["failed"])))
            + f" (planned-copy scale {v['copy_scale']:.2f})"
            for k, v in rt.items()
        ]
        rt_html = "<h3>Generator round trip</h3><p>" + "; ".join(items) + ".</p>"
    return intro + table(head, rows, num_cols=range(1, len(head))) + rt_html


def _categories(c: Optional[Mapping]) -> str:
    if not c:
        return "—"
    return ", ".join(f"{k} {v}" for k, v in c.items()) if isinstance(c, Mapping) else str(c)


def _motifs_html(res: Mapping, texts: Dict[int, np.ndarray]) -> str:
    """Every mined motif set: where it was mined, the head, the top and bottom rows' categories, and each motif."""
    parts = [
        '<p class="legend">In the examples a <mark class="c">copied span</mark> is highlighted and its '
        '<mark class="c" style="opacity:.55">source</mark> faded; a second and third span use '
        '<mark class="c1">these</mark> <mark class="c2">colours</mark>.</p>'
    ]
    for m in res.get("motifs", {}).values():
        h = m["head"]
        parts.append(
            f"<h3>Mined on {esc(m['mined_on'])}: head L{h['layer']}H{h['head']} ({esc(h.get('role', ''))}), "
            f"top {m['n']['top']} rows</h3>"
            f'<p class="muted">top rows by category: {esc(_categories(m.get("top_categories")))}; bottom rows: '
            f"{esc(_categories(m.get('bottom_categories')))}</p>"
        )
        parts.extend(_motif_html(mo, texts) for mo in m["motifs"])
    return "".join(parts)


def augment_sections(res: Mapping, texts: Optional[Dict[int, np.ndarray]] = None) -> List[Tuple[str, str, str]]:
    """The report's sections as ``(anchor, label, html)`` (see the module docstring); anchors start ``aug-``."""
    texts = texts or {}
    out = [
        ("aug-findings", "Findings", _findings_html(res)),
        (
            "aug-gain",
            "Gain by size",
            img(gain_by_size_png(res), "gain by size", f"Bars: mean over seeds; error bars: std over seeds. "
                f"Gain: {res.get('gain_definition', '')}."),
        ),
        (
            "aug-curves",
            "Score curves",
            img(curves_png(res), "score curves", "Best-head prefix matching per arm (mean over seeds); dotted: the "
                f"gain step; dashed: the threshold {res['threshold']:g}."),
        ),
        ("aug-table", "Per size × arm", table(_ARM_HEAD, _arm_rows(res), num_cols=range(2, len(_ARM_HEAD)))),
        ("aug-sizes", "Sizes", table(_SIZE_HEAD, _size_rows(res), num_cols=range(1, len(_SIZE_HEAD)))),
    ]  # fmt: skip
    if res.get("comparison"):
        out.append(("aug-compare", "Top vs generated rows", comparison_html(res["comparison"])))
    if res.get("motifs"):
        out.append(("aug-motifs", "Motifs", _motifs_html(res, texts)))
    if res.get("llm"):
        out.append(("aug-llm", "LLM generators", "".join(f"<p>{esc(m.get('message', m))}</p>" for m in res["llm"])))
    timing = {"stage seconds": res.get("stage_seconds", {}), "elapsed s": res.get("elapsed_s")}
    timing.update({k: res[k] for k in ("torch_threads", "cpu_count") if k in res})  # augment.json before 0.1.x
    env = "<h3>Environment</h3>" + kv_table(res["environment"]) if res.get("environment") else ""
    out.append(("aug-settings", "Settings & timing", "<h3>Timing</h3>" + kv_table(timing) + env
                + "<h3>Settings</h3>" + kv_table(res.get("settings", {}))))  # fmt: skip
    return [(a, label, section(a, label, body)) for a, label, body in out]


def augment_section_html(res: Mapping, texts: Optional[Dict[int, np.ndarray]] = None) -> str:
    """The cards and every section as one block (for embedding in another page that has the shared style sheet)."""
    body = "".join(h for _, _, h in augment_sections(res, texts))
    return f'<div id="augment">{summary_cards_html(res)}{body}</div>'


def render_augment_report(res: Mapping, texts: Optional[Dict[int, np.ndarray]] = None) -> str:
    """The stand-alone page: title, navigation, cards and sections, in the main report's style."""
    secs = augment_sections(res, texts)
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sub = f"mda-fast augment report · {len(res['sizes'])} sizes × {len(_arms(res))} arms · generated {generated}"
    body = summary_cards_html(res) + "".join(h for _, _, h in secs)
    return page("Mechanistic data augmentation", sub, [(a, label) for a, label, _ in secs], body, extra_css=_CSS)


def write_augment_report(res: Mapping, path: str, texts: Optional[Dict[int, np.ndarray]] = None) -> str:
    """``render_augment_report`` written atomically at ``path``; ``path``."""
    from ..io import atomic_file

    with atomic_file(path) as fh:
        fh.write(render_augment_report(res, texts))
    return path

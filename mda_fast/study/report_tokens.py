"""The report's per-token section: the top rows of each target as text, each token shaded by its contribution.

Two panels per row: *by loss token* (the prediction of the shaded token: its loss term's share of the score) and
*by position* (the head's computation at the shaded token's position). Red is positive (the token builds the
head), blue negative; the opacity is the contribution over the row's largest absolute contribution in that panel,
and each token's title gives the value. Induction positions (inside a repeat) are underlined.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from .per_token import induction_positions
from .report_html import esc, fmt, pct, section

__all__ = ["CSS", "per_token_section", "token_spans"]

CSS = """
.tok { white-space:pre-wrap; border-radius:2px; }
.tok.ind { text-decoration:underline; text-decoration-color:#6b6b6b; text-underline-offset:2px; }
.toks { font:12.5px/1.6 "DejaVu Sans Mono", Menlo, Consolas, monospace; background:#fbfbfb;
  border:1px solid var(--line); border-radius:4px; padding:6px 8px; max-height:14em; overflow:auto;
  overflow-wrap:anywhere; }
.pt-panels { display:grid; grid-template-columns:1fr 1fr; gap:10px; }
.pt-legend span { display:inline-block; padding:0 6px; margin-right:6px; border-radius:2px; }
"""

_POS, _NEG = (214, 39, 40), (31, 95, 168)


def _colour(v: float, scale: float) -> str:
    a = 0.0 if scale <= 0 else min(1.0, abs(v) / scale)
    r, g, b = _POS if v >= 0 else _NEG
    return f"rgba({r},{g},{b},{a * 0.85:.3f})"


def token_spans(pieces: Sequence[str], values: Sequence[float], induction: Optional[Sequence[bool]] = None) -> str:
    """``<span>`` per token piece, background by value (red positive, blue negative, scaled to the row's max)."""
    vals = np.asarray(values, dtype=np.float64)
    scale = float(np.abs(vals).max()) if vals.size else 0.0
    out = []
    for i, (p, v) in enumerate(zip(pieces, vals)):
        cls = "tok ind" if induction is not None and induction[i] else "tok"
        out.append(f'<span class="{cls}" style="background:{_colour(v, scale)}" title="{v:+.4g}">{esc(p)}</span>')
    return "".join(out)


def _legend() -> str:
    return (
        '<p class="pt-legend">'
        f'<span style="background:{_colour(1, 1)};color:#fff">builds the head (+)</span>'
        f'<span style="background:{_colour(-1, 1)};color:#fff">works against it (−)</span>'
        f'<span style="background:{_colour(0.3, 1)}">weaker</span>'
        '<span class="tok ind">underlined</span>: induction position (the token follows a repeat of an earlier '
        "span). Opacity: the token's contribution over the row's largest |contribution| in that panel; hover for "
        "the value.</p>"
    )


def _row_html(entry: Mapping[str, Any], decode_token: Callable[[int], str], max_tokens: int) -> str:
    tokens = np.asarray(entry["tokens"])
    T = min(len(tokens) - 1, max_tokens)
    ind = induction_positions(tokens)[:T]
    # loss token t predicts tokens[t+1]: shade the predicted token; position t is the token at t
    lt_pieces = [decode_token(int(x)) for x in tokens[1 : T + 1]]
    pos_pieces = [decode_token(int(x)) for x in tokens[:T]]
    lt, pos = np.asarray(entry["loss_token"])[:T], np.asarray(entry["position"])[:T]
    cut = "" if T == len(tokens) - 1 else f" (first {T} of {len(tokens) - 1} tokens)"
    head = (
        f"<h4>#{int(entry['rank']) + 1} · row {int(entry['global_index'])} · score {fmt(entry['score'])}{esc(cut)}</h4>"
    )
    first = esc(decode_token(int(tokens[0])))
    return head + (
        '<div class="pt-panels">'
        f'<div><div class="muted">by loss token (Σ = {fmt(float(lt.sum()))}; first token '
        f"<code>{first}</code> is never predicted)</div>"
        f'<div class="toks">{token_spans(lt_pieces, lt, ind)}</div></div>'
        f'<div><div class="muted">by position of the head\'s use (Σ = {fmt(float(pos.sum()))})</div>'
        f'<div class="toks">{token_spans(pos_pieces, pos, ind)}</div></div>'
        "</div>"
    )


def per_token_section(
    targets: Mapping[str, Sequence[Mapping[str, Any]]],
    decode_token: Callable[[int], str],
    summary: Optional[Mapping[str, Any]] = None,
    max_tokens: int = 512,
) -> str:
    """The section: for each target its rows (``tokens [T+1]``, ``loss_token``/``position`` ``[T]``, ``score``,
    ``rank``, ``global_index``), and from ``summary`` (``out/per_token/summary.json``) the share of the top rows'
    positive loss-token influence on induction positions against the share of such positions."""
    body = [
        "<p>Where inside the top rows the score sits. Both decompositions sum exactly to the row's score: "
        "<b>by loss token</b> — the term of each prediction in the row's loss (the shaded token is the one "
        "predicted); <b>by position</b> — the head's computation at each position.</p>",
        _legend(),
    ]
    for name, rows in targets.items():
        body.append(f"<h3>{esc(name)}</h3>")
        s = (summary or {}).get("targets", {}).get(name)
        if s:
            lt = s["top_loss_token"]
            body.append(
                f'<p class="muted">Top {s["k"]} rows: {pct(lt["positive_share_on_induction"])} of the positive '
                f"loss-token influence sits on induction positions, which are "
                f"{pct(lt['induction_position_share'])} of the positions (×{fmt(lt['ratio'], 3)}).</p>"
            )
        body.extend(_row_html(r, decode_token, max_tokens) for r in rows)
    return section("per-token", "Per-token influence", "".join(body))

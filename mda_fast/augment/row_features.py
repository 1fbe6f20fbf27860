"""Row measures: the per-row features that ``motifs`` clusters into motifs.

Every measure works on one token row (``int`` ids) and, for the character measures, on its text (bytes). For the
byte-level demo tokenizer (byte ``b`` = id ``b + 4``, EOD = 0) the text is recovered from the ids; for a real
tokenizer pass ``decode``.

Per row (``measure_row``):

* **repeated spans**, from a greedy LZ77-style parse: at position ``i`` the longest earlier occurrence of
  ``tokens[i:i+m]`` with ``m >= min_span`` (ties: the nearest) is a *copy span* of length ``m`` and copy distance
  ``i - j`` (overlapping copies allowed, so a period-``d`` run is one span of distance ``d``); otherwise ``i`` is a
  fresh token. ``copy_frac`` = share of tokens inside copy spans; ``span_len`` / ``copy_dist`` = mean span length
  and median distance; ``n_spans``; ``max_repeats`` = the most copies of one source segment (its occurrences).
* **period**: the lag ``d`` in ``[1, n/2]`` maximising ``mean(x[t] == x[t-d])``, and that fraction
  (``period_strength``).
* **character classes** of the text: letters, digits, whitespace, punctuation, brackets ``()[]{}<>``, other.
* **nesting**: max depth of ``()[]{}`` and of XML-like tags ``<a>..</a>``; ``n_tags``.
* **token entropy** (unigram, bits) and **compressibility** (``zlib`` size / raw size of the row's bytes).
* ``n_docs``: documents in the row (EOD count, at least 1).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = [
    "EOD",
    "BYTE_OFFSET",
    "FEATURES",
    "RowMeasure",
    "byte_decode",
    "parse_copies",
    "measure_row",
    "measure_rows",
    "feature_matrix",
]

EOD = 0
BYTE_OFFSET = 4

#: the features clustered and compared (all scalars per row)
FEATURES = (
    "copy_frac",
    "span_len",
    "copy_dist",
    "n_spans",
    "max_repeats",
    "period",
    "period_strength",
    "frac_alpha",
    "frac_digit",
    "frac_space",
    "frac_punct",
    "frac_bracket",
    "bracket_depth",
    "tag_depth",
    "n_tags",
    "entropy",
    "compress",
    "n_docs",
)

_BRACKETS = {ord(c) for c in "()[]{}<>"}
_OPEN, _CLOSE = {ord("("): ord(")"), ord("["): ord("]"), ord("{"): ord("}")}, {ord(")"), ord("]"), ord("}")}
_TAG = re.compile(rb"<(/?)([A-Za-z][A-Za-z0-9_:-]*)[^<>]*?(/?)>")


def byte_decode(tokens: np.ndarray) -> bytes:
    """Bytes of a byte-tokenizer row (id ``b + 4``); EOD and other specials become ``\\n``."""
    t = np.asarray(tokens, np.int64)
    b = np.where((t >= BYTE_OFFSET) & (t < BYTE_OFFSET + 256), t - BYTE_OFFSET, 10)
    return b.astype(np.uint8).tobytes()


@dataclass
class RowMeasure:
    """One row's features (``FEATURES``) and the raw distributions behind them."""

    features: Dict[str, float]
    spans: List[tuple]  # (start, source_start, length)
    fresh_runs: List[int]
    doc_lens: List[int]


def parse_copies(tokens: Sequence[int], min_span: int = 4) -> List[tuple]:
    """Greedy LZ77 parse: ``[(start, source_start, length), ...]`` copy spans of at least ``min_span`` tokens."""
    x = [int(v) for v in tokens]
    n = len(x)
    where: Dict[tuple, List[int]] = {}
    spans = []
    i = 0
    pending = 0  # positions < pending are already indexed

    def index_upto(p):
        nonlocal pending
        while pending < p and pending + min_span <= n:
            where.setdefault(tuple(x[pending : pending + min_span]), []).append(pending)
            pending += 1

    while i + min_span <= n:
        index_upto(i)
        cands = where.get(tuple(x[i : i + min_span]))
        best_len, best_j = 0, -1
        if cands:
            for j in reversed(cands):  # nearest first: ties keep the nearest
                m = min_span
                while i + m < n and x[j + m] == x[i + m]:
                    m += 1
                if m > best_len:
                    best_len, best_j = m, j
        if best_len >= min_span:
            spans.append((i, best_j, best_len))
            index_upto(i + best_len)
            i += best_len
        else:
            i += 1
    return spans


def _period(x: np.ndarray) -> tuple:
    n = x.size
    best, bd = 0.0, 0
    for d in range(1, max(2, n // 2 + 1)):
        if d >= n:
            break
        f = float(np.mean(x[d:] == x[:-d]))
        if f > best + 1e-12:
            best, bd = f, d
    return bd, best


def _nesting(text: bytes) -> tuple:
    depth = mx = 0
    for c in text:
        if c in _OPEN:
            depth += 1
            mx = max(mx, depth)
        elif c in _CLOSE:
            depth = max(0, depth - 1)
    tdepth = tmx = ntags = 0
    for m in _TAG.finditer(text):
        ntags += 1
        if m.group(3):  # self-closing
            continue
        if m.group(1):
            tdepth = max(0, tdepth - 1)
        else:
            tdepth += 1
            tmx = max(tmx, tdepth)
    return mx, tmx, ntags


def _fresh_runs(covered: np.ndarray) -> List[int]:
    """Lengths of the runs of tokens outside every copy span (``covered`` False), in order."""
    fresh_runs, run = [], 0
    for c in covered:
        if c:
            if run:
                fresh_runs.append(run)
            run = 0
        else:
            run += 1
    if run:
        fresh_runs.append(run)
    return fresh_runs


def _max_repeats(x: np.ndarray, spans: List[tuple]) -> float:
    """The most occurrences of one source segment (the segment and its copies); 1 without spans."""
    groups: Dict[tuple, int] = {}
    for s, _, m in spans:
        key = tuple(x[s : s + m].tolist())
        groups[key] = groups.get(key, 1) + 1
    return float(max(groups.values())) if groups else 1.0


def _documents(x: np.ndarray, eod: int) -> tuple:
    """(lengths of the complete documents, document count) of a row; EOD ends a document."""
    n = int(x.size)
    ends = np.flatnonzero(x == eod)
    bounds = np.concatenate([[-1], ends, [n]])
    # complete documents (ended by an EOD); a row without any counts as one document of the whole row
    doc_lens = [int(b - a - 1) for a, b in zip(bounds[:-2], bounds[1:-1]) if b - a - 1 > 0] or [n]
    n_docs = int(np.sum(np.diff(bounds) > 1))
    return doc_lens, n_docs


def _text_features(text: bytes) -> Dict[str, float]:
    """Character-class shares, nesting depths, tag count and zlib ratio of a row's text."""
    tb = np.frombuffer(text, np.uint8) if text else np.zeros(0, np.uint8)
    L = max(1, tb.size)
    alpha = np.sum(((tb >= 65) & (tb <= 90)) | ((tb >= 97) & (tb <= 122)))
    digit = np.sum((tb >= 48) & (tb <= 57))
    space = np.sum((tb == 32) | (tb == 9) | (tb == 10) | (tb == 13))
    bracket = np.sum(np.isin(tb, list(_BRACKETS)))
    punct = np.sum((tb >= 33) & (tb <= 126)) - alpha - digit - bracket
    bd, td, ntags = _nesting(text)
    return {
        "frac_alpha": float(alpha / L),
        "frac_digit": float(digit / L),
        "frac_space": float(space / L),
        "frac_punct": float(punct / L),
        "frac_bracket": float(bracket / L),
        "bracket_depth": float(bd),
        "tag_depth": float(td),
        "n_tags": float(ntags),
        "compress": float(len(zlib.compress(text, 9)) / max(1, len(text))) if text else 1.0,
    }


def measure_row(tokens, text: Optional[bytes] = None, min_span: int = 4, eod: int = EOD) -> RowMeasure:
    """The features of one token row (see the module docstring); ``text`` defaults to ``byte_decode(tokens)``."""
    x = np.asarray(tokens, np.int64)
    n = int(x.size)
    if n == 0:
        raise ValueError("measure_row: empty row")
    text = byte_decode(x) if text is None else text
    spans = parse_copies(x, min_span)
    covered = np.zeros(n, bool)
    for s, _, m in spans:
        covered[s : s + m] = True
    doc_lens, n_docs = _documents(x, eod)
    period, pstrength = _period(x)
    tf = _text_features(text)
    _, counts = np.unique(x, return_counts=True)
    p = counts / n
    feats = {
        "copy_frac": float(covered.mean()),
        "span_len": float(np.mean([m for _, _, m in spans])) if spans else 0.0,
        "copy_dist": float(np.median([s - j for s, j, _ in spans])) if spans else 0.0,
        "n_spans": float(len(spans)),
        "max_repeats": _max_repeats(x, spans),
        "period": float(period),
        "period_strength": float(pstrength),
        **{k: v for k, v in tf.items() if k != "compress"},
        "entropy": float(-(p * np.log2(p)).sum()),
        "compress": tf["compress"],
        "n_docs": float(max(1, n_docs)),
    }
    return RowMeasure(feats, spans, _fresh_runs(covered), doc_lens)


def measure_rows(rows, decode: Optional[Callable] = None, min_span: int = 4, eod: int = EOD) -> List[RowMeasure]:
    """``measure_row`` of every row of ``rows`` (``[n, seq_len]``); ``decode(tokens) -> bytes`` for the text."""
    return [measure_row(r, None if decode is None else decode(r), min_span, eod) for r in np.asarray(rows)]


def feature_matrix(measures: Sequence[RowMeasure]) -> np.ndarray:
    """``[n, len(FEATURES)]`` float64."""
    return np.array([[m.features[f] for f in FEATURES] for m in measures], np.float64).reshape(-1, len(FEATURES))

"""Motifs: the measured structure of the top-scored samples, clustered into a few parameterised families.

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

``mine_motifs`` standardises the features over the top, bottom and random sets together and clusters the top set
with a seeded k-means (k-means++ init, fixed iterations): each ``Motif`` holds its supporting sample ids, the mean
and spread of every feature, the empirical distributions a generator draws from (span lengths, copy distances,
fresh-run lengths, document lengths, token frequencies) and its contrast with the bottom and random sets.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = [
    "FEATURES",
    "RowMeasure",
    "Motif",
    "byte_decode",
    "parse_copies",
    "measure_row",
    "measure_rows",
    "feature_matrix",
    "kmeans",
    "mine_motifs",
    "summarize",
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
    # repeats: occurrences of one source segment (the segment and its copies)
    groups: Dict[tuple, int] = {}
    for s, _, m in spans:
        key = tuple(x[s : s + m].tolist())
        groups[key] = groups.get(key, 1) + 1
    ends = np.flatnonzero(x == eod)
    bounds = np.concatenate([[-1], ends, [n]])
    # complete documents (ended by an EOD); a row without any counts as one document of the whole row
    doc_lens = [int(b - a - 1) for a, b in zip(bounds[:-2], bounds[1:-1]) if b - a - 1 > 0] or [n]
    n_docs = int(np.sum(np.diff(bounds) > 1))
    period, pstrength = _period(x)
    tb = np.frombuffer(text, np.uint8) if text else np.zeros(0, np.uint8)
    L = max(1, tb.size)
    alpha = np.sum(((tb >= 65) & (tb <= 90)) | ((tb >= 97) & (tb <= 122)))
    digit = np.sum((tb >= 48) & (tb <= 57))
    space = np.sum((tb == 32) | (tb == 9) | (tb == 10) | (tb == 13))
    bracket = np.sum(np.isin(tb, list(_BRACKETS)))
    punct = np.sum((tb >= 33) & (tb <= 126)) - alpha - digit - bracket
    bd, td, ntags = _nesting(text)
    _, counts = np.unique(x, return_counts=True)
    p = counts / n
    feats = {
        "copy_frac": float(covered.mean()),
        "span_len": float(np.mean([m for _, _, m in spans])) if spans else 0.0,
        "copy_dist": float(np.median([s - j for s, j, _ in spans])) if spans else 0.0,
        "n_spans": float(len(spans)),
        "max_repeats": float(max(groups.values())) if groups else 1.0,
        "period": float(period),
        "period_strength": float(pstrength),
        "frac_alpha": float(alpha / L),
        "frac_digit": float(digit / L),
        "frac_space": float(space / L),
        "frac_punct": float(punct / L),
        "frac_bracket": float(bracket / L),
        "bracket_depth": float(bd),
        "tag_depth": float(td),
        "n_tags": float(ntags),
        "entropy": float(-(p * np.log2(p)).sum()),
        "compress": float(len(zlib.compress(text, 9)) / max(1, len(text))) if text else 1.0,
        "n_docs": float(max(1, n_docs)),
    }
    return RowMeasure(feats, spans, fresh_runs, doc_lens)


def measure_rows(rows, decode: Optional[Callable] = None, min_span: int = 4, eod: int = EOD) -> List[RowMeasure]:
    """``measure_row`` of every row of ``rows`` (``[n, seq_len]``); ``decode(tokens) -> bytes`` for the text."""
    return [measure_row(r, None if decode is None else decode(r), min_span, eod) for r in np.asarray(rows)]


def feature_matrix(measures: Sequence[RowMeasure]) -> np.ndarray:
    """``[n, len(FEATURES)]`` float64."""
    return np.array([[m.features[f] for f in FEATURES] for m in measures], np.float64).reshape(-1, len(FEATURES))


def kmeans(X: np.ndarray, k: int, seed: int = 0, iters: int = 50) -> np.ndarray:
    """Seeded k-means (k-means++ init, ``iters`` Lloyd steps): cluster label of every row of ``X``, relabelled so
    that cluster 0 is the largest (ties: lowest first member)."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    k = max(1, min(int(k), n))
    rng = np.random.default_rng([int(seed), 0xC1])
    centers = [X[int(rng.integers(n))]]
    for _ in range(1, k):
        d2 = np.min(((X[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
        if d2.sum() <= 0:
            break
        centers.append(X[int(rng.choice(n, p=d2 / d2.sum()))])
    C = np.array(centers)
    lab = np.zeros(n, np.int64)
    for _ in range(iters):
        lab_new = np.argmin(((X[:, None, :] - C[None]) ** 2).sum(-1), axis=1)
        if _ > 0 and np.array_equal(lab_new, lab):
            break
        lab = lab_new
        for c in range(C.shape[0]):
            if np.any(lab == c):
                C[c] = X[lab == c].mean(0)
    return kmeans_relabel(lab)


@dataclass
class Motif:
    """One family of top samples: what it looks like, what a generator draws from, and who supports it.

    Attributes:
        id: ``motif<k>`` (0 = the largest cluster).
        support: global sample ids of the top samples in this cluster (by descending score).
        share: its share of the top set.
        features: feature -> ``{"mean", "std", "q10", "q90"}`` over the supporting samples.
        contrast: feature -> ``{"bottom", "random"}`` mean of the contrast sets (the same for every motif).
        dist: the empirical distributions a generator samples from: ``span_len``, ``copy_dist``, ``fresh_run``,
            ``doc_len`` (lists of ints; complete documents only), ``copy_frac`` (per-sample), ``fresh_tokens``
            (token -> count over the supporting rows, EOD excluded: copies replicate fresh tokens, so fresh tokens
            drawn from the whole rows' frequencies reproduce their character classes), ``seq_len``.
        description: a one-line plain summary.
        examples: up to 3 ``{"id", "spans"}`` of the highest-scored supporters (spans for highlighting).
    """

    id: str
    support: List[int]
    share: float
    features: Dict[str, Dict[str, float]]
    contrast: Dict[str, Dict[str, float]]
    dist: Dict[str, object]
    description: str = ""
    examples: List[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Motif:
        return cls(
            **{
                k: d[k]
                for k in ("id", "support", "share", "features", "contrast", "dist", "description", "examples")
                if k in d
            }
        )

    def summary(self) -> dict:
        """The compact summary given to an LLM (no raw distributions, no token ids)."""
        f = self.features
        return {
            "id": self.id,
            "share_of_top_set": round(self.share, 3),
            "description": self.description,
            "features": {k: {s: round(v, 3) for s, v in f[k].items()} for k in FEATURES},
        }


def _stats(v: np.ndarray) -> Dict[str, float]:
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "q10": float(np.quantile(v, 0.1)),
        "q90": float(np.quantile(v, 0.9)),
    }


def _describe(f: Dict[str, Dict[str, float]]) -> str:
    m = {k: v["mean"] for k, v in f.items()}
    parts = [
        f"{100 * m['copy_frac']:.0f}% of tokens copied in {m['n_spans']:.1f} spans of ~{m['span_len']:.0f} "
        f"tokens at distance ~{m['copy_dist']:.0f}, up to {m['max_repeats']:.1f} occurrences of a segment"
    ]
    cls = max(
        ("letters", m["frac_alpha"]),
        ("digits", m["frac_digit"]),
        ("punctuation", m["frac_punct"]),
        ("brackets", m["frac_bracket"]),
        key=lambda t: t[1],
    )
    parts.append(f"mostly {cls[0]} ({100 * cls[1]:.0f}%), {100 * m['frac_space']:.0f}% whitespace")
    if m["tag_depth"] >= 1:
        parts.append(f"tag nesting ~{m['tag_depth']:.1f}")
    if m["bracket_depth"] >= 1:
        parts.append(f"bracket nesting ~{m['bracket_depth']:.1f}")
    parts.append(f"entropy {m['entropy']:.2f} bits, zlib ratio {m['compress']:.2f}, {m['n_docs']:.1f} docs/row")
    return "; ".join(parts)


def mine_motifs(
    top_rows,
    top_ids,
    bottom_rows=None,
    random_rows=None,
    n_motifs: int = 3,
    seed: int = 0,
    decode: Optional[Callable] = None,
    min_span: int = 4,
    eod: int = EOD,
    min_support: int = 2,
) -> Dict[str, object]:
    """Cluster the top set into at most ``n_motifs`` motifs (see the module docstring).

    ``top_rows`` ``[k, seq_len]`` in descending score order with their global ids ``top_ids``; ``bottom_rows`` and
    ``random_rows`` the contrast sets. Clusters with fewer than ``min_support`` samples are merged into the nearest
    larger one. Returns ``{"motifs": [Motif], "sets": {name: feature means}, "labels": [...], "features"}``.
    """
    top_rows = np.asarray(top_rows)
    top_ids = [int(i) for i in top_ids]
    if top_rows.ndim != 2 or top_rows.shape[0] != len(top_ids) or not len(top_ids):
        raise ValueError(
            f"top_rows: expected [k, seq_len] with k = len(top_ids) >= 1, got {top_rows.shape} and {len(top_ids)} ids"
        )
    mt = measure_rows(top_rows, decode, min_span, eod)
    Xt = feature_matrix(mt)
    contrast_sets = {
        name: r for name, r in (("bottom", bottom_rows), ("random", random_rows)) if r is not None and len(r)
    }
    Xc = {name: feature_matrix(measure_rows(r, decode, min_span, eod)) for name, r in contrast_sets.items()}
    pool = np.concatenate([Xt, *Xc.values()], 0)
    mu, sd = pool.mean(0), pool.std(0)
    sd[sd < 1e-9] = 1.0
    Z = (Xt - mu) / sd
    lab = kmeans(Z, n_motifs, seed)
    # merge tiny clusters into the nearest larger one
    for c in sorted(set(lab.tolist()), reverse=True):
        members = lab == c
        if members.sum() < min_support and len(set(lab.tolist())) > 1:
            others = [o for o in set(lab.tolist()) if o != c]
            cen = {o: Z[lab == o].mean(0) for o in others}
            tgt = min(others, key=lambda o: float(((Z[members].mean(0) - cen[o]) ** 2).sum()))
            lab[members] = tgt
    lab = kmeans_relabel(lab)
    set_means = {"top": dict(zip(FEATURES, Xt.mean(0).tolist()))}
    for name, X in Xc.items():
        set_means[name] = dict(zip(FEATURES, X.mean(0).tolist()))
    contrast = {f: {name: set_means[name][f] for name in Xc} for f in FEATURES}
    motifs = []
    for c in range(int(lab.max()) + 1):
        idx = np.flatnonzero(lab == c)
        ms = [mt[i] for i in idx]
        feats = {f: _stats(Xt[idx, j]) for j, f in enumerate(FEATURES)}
        toks, counts = np.unique(top_rows[idx][top_rows[idx] != eod], return_counts=True)
        fresh = dict(zip(toks.tolist(), counts.tolist()))
        dist = {
            "span_len": [int(m) for r in ms for _, _, m in r.spans],
            "copy_dist": [int(s - j) for r in ms for s, j, _ in r.spans],
            "fresh_run": [int(v) for r in ms for v in r.fresh_runs],
            "doc_len": [int(v) for r in ms for v in r.doc_lens],
            "copy_frac": [float(r.features["copy_frac"]) for r in ms],
            "fresh_tokens": {str(k): v for k, v in sorted(fresh.items())},
            "seq_len": int(top_rows.shape[1]),
            "eod": int(eod),
            "min_span": int(min_span),
        }
        ex = [{"id": top_ids[i], "spans": [list(s) for s in mt[i].spans]} for i in idx[:3]]
        motifs.append(
            Motif(
                f"motif{c}",
                [top_ids[i] for i in idx],
                float(idx.size / len(top_ids)),
                feats,
                contrast,
                dist,
                _describe(feats),
                ex,
            )
        )
    return {
        "motifs": motifs,
        "sets": set_means,
        "labels": lab.tolist(),
        "features": list(FEATURES),
        "n": {"top": len(top_ids), **{k: int(len(v)) for k, v in contrast_sets.items()}},
    }


def kmeans_relabel(lab: np.ndarray) -> np.ndarray:
    """Labels renumbered 0.. by descending cluster size (ties: first member)."""
    used = sorted(set(lab.tolist()), key=lambda c: (-int(np.sum(lab == c)), int(np.flatnonzero(lab == c)[0])))
    remap = {c: i for i, c in enumerate(used)}
    return np.array([remap[c] for c in lab], np.int64)


def summarize(measures: Sequence[RowMeasure]) -> Dict[str, Dict[str, float]]:
    """feature -> ``{"mean", "std", "q10", "q90"}`` over ``measures`` (for round-trip comparisons)."""
    X = feature_matrix(measures)
    return {f: _stats(X[:, j]) for j, f in enumerate(FEATURES)}

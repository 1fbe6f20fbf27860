"""Motifs: the measured structure of the top-scored samples, clustered into a few parameterised families.

The per-row measures (``measure_row`` and its features ``FEATURES``) live in ``row_features`` and are
re-exported here.

``mine_motifs`` standardises the features over the top, bottom and random sets together and clusters the top set
with a seeded k-means (k-means++ init, fixed iterations): each ``Motif`` holds its supporting sample ids, the mean
and spread of every feature, the empirical distributions a generator draws from (span lengths, copy distances,
fresh-run lengths, document lengths, token frequencies) and its contrast with the bottom and random sets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .row_features import (
    EOD,
    FEATURES,
    RowMeasure,
    byte_decode,
    feature_matrix,
    measure_row,
    measure_rows,
    parse_copies,
)

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
    "transitions",
    "summarize",
]


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
            drawn from the whole rows' frequencies reproduce their character classes), ``transitions`` (token ->
            next token -> count over the supporting rows: the fresh text's order-1 chain), ``seq_len``.
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
    """Mean, std and 10% / 90% quantiles of ``v``."""
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "q10": float(np.quantile(v, 0.1)),
        "q90": float(np.quantile(v, 0.9)),
    }


def _describe(f: Dict[str, Dict[str, float]]) -> str:
    """The one-line plain summary of a motif's features."""
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


def _standardized(Xt: np.ndarray, Xc: Dict[str, np.ndarray]) -> np.ndarray:
    """``Xt`` standardised by the mean and std of the top and contrast sets together (constant features: std 1)."""
    pool = np.concatenate([Xt, *Xc.values()], 0)
    mu, sd = pool.mean(0), pool.std(0)
    sd[sd < 1e-9] = 1.0
    return (Xt - mu) / sd


def _merge_small(lab: np.ndarray, Z: np.ndarray, min_support: int) -> np.ndarray:
    """Clusters with fewer than ``min_support`` members merged into the nearest other one (in place), relabelled."""
    for c in sorted(set(lab.tolist()), reverse=True):
        members = lab == c
        if members.sum() < min_support and len(set(lab.tolist())) > 1:
            others = [o for o in set(lab.tolist()) if o != c]
            cen = {o: Z[lab == o].mean(0) for o in others}
            tgt = min(others, key=lambda o: float(((Z[members].mean(0) - cen[o]) ** 2).sum()))
            lab[members] = tgt
    return kmeans_relabel(lab)


def _motif_dist(ms: Sequence[RowMeasure], rows: np.ndarray, eod: int, min_span: int) -> Dict[str, object]:
    """``Motif.dist``: the empirical distributions of a cluster's rows ``rows`` and measures ``ms``."""
    toks, counts = np.unique(rows[rows != eod], return_counts=True)
    fresh = dict(zip(toks.tolist(), counts.tolist()))
    return {
        "transitions": transitions(rows, eod),
        "span_len": [int(m) for r in ms for _, _, m in r.spans],
        "copy_dist": [int(s - j) for r in ms for s, j, _ in r.spans],
        "fresh_run": [int(v) for r in ms for v in r.fresh_runs],
        "doc_len": [int(v) for r in ms for v in r.doc_lens],
        "copy_frac": [float(r.features["copy_frac"]) for r in ms],
        "fresh_tokens": {str(k): v for k, v in sorted(fresh.items())},
        "seq_len": int(rows.shape[1]),
        "eod": int(eod),
        "min_span": int(min_span),
    }


def transitions(rows: np.ndarray, eod: int = EOD) -> Dict[str, Dict[str, int]]:
    """Next-token counts after each token of ``rows`` (``{str(token): {str(next): count}}``, sorted; pairs with
    EOD on either side left out): the order-1 Markov chain a generator draws its fresh text from, so that the text
    between the copies has the rows' bigram statistics (what plain induction on natural text feeds on)."""
    r = np.asarray(rows, np.int64)
    a, b = r[:, :-1].ravel(), r[:, 1:].ravel()
    keep = (a != eod) & (b != eod)
    pairs, counts = np.unique(np.stack([a[keep], b[keep]], 1), axis=0, return_counts=True)
    out: Dict[str, Dict[str, int]] = {}
    for (x, y), c in zip(pairs.tolist(), counts.tolist()):
        out.setdefault(str(x), {})[str(y)] = int(c)
    return out


def _motif(c: int, idx: np.ndarray, mt, Xt, top_rows, top_ids, contrast, eod: int, min_span: int) -> Motif:
    """Motif ``c`` of the top-set rows ``idx`` (their measures ``mt``, features ``Xt``)."""
    feats = {f: _stats(Xt[idx, j]) for j, f in enumerate(FEATURES)}
    dist = _motif_dist([mt[i] for i in idx], top_rows[idx], eod, min_span)
    ex = [{"id": top_ids[i], "spans": [list(s) for s in mt[i].spans]} for i in idx[:3]]
    support = [top_ids[i] for i in idx]
    return Motif(f"motif{c}", support, float(idx.size / len(top_ids)), feats, contrast, dist, _describe(feats), ex)


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
    Z = _standardized(Xt, Xc)
    lab = _merge_small(kmeans(Z, n_motifs, seed), Z, min_support)
    set_means = {"top": dict(zip(FEATURES, Xt.mean(0).tolist()))}
    for name, X in Xc.items():
        set_means[name] = dict(zip(FEATURES, X.mean(0).tolist()))
    contrast = {f: {name: set_means[name][f] for name in Xc} for f in FEATURES}
    motifs = [
        _motif(c, np.flatnonzero(lab == c), mt, Xt, top_rows, top_ids, contrast, eod, min_span)
        for c in range(int(lab.max()) + 1)
    ]
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

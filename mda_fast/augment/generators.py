"""Generators: seeded, offline sources of synthetic training rows.

* ``MotifGenerator``: the built-in generator of one motif. A row is filled with documents (lengths drawn from the
  motif's ``doc_len``), each followed by EOD. A document alternates *fresh runs* (lengths from ``fresh_run``, tokens
  from the motif's order-1 chain ``transitions``, else its token frequencies; the planned copy share calibrated
  for the copies such text holds by itself) and *copy spans* (length from ``span_len``, distance
  from ``copy_dist``, clipped to what is already written; a distance below the length makes a periodic run). After
  each segment it copies when the document's copied share is below a target drawn from ``copy_frac``; a copy's distance
  is drawn once and the copy made as soon as that much is written (just enough fresh tokens until then), so the distances keep
  their distribution. So the
  re-measured statistics of its rows match the motif's (``roundtrip``).
* ``MixtureGenerator``: several motifs, each chosen with its share of the top set.
* ``copy_baseline_rows``: the generic copy baseline ("Bi-Induct"): documents ``S ‖ S`` of a uniformly random span
  ``S`` of random tokens, no motif.
* ``pack_texts``: text documents (e.g. from an LLM-written generator) tokenized and packed one row at a time.

Everything is a pure function of its seed (``numpy.random.default_rng``).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .motifs import FEATURES, Motif, measure_rows, summarize

__all__ = [
    "MotifGenerator",
    "MixtureGenerator",
    "copy_baseline_rows",
    "pack_texts",
    "byte_encode",
    "roundtrip",
    "compare_stats",
    "ROUNDTRIP_FEATURES",
]

#: the features a generator must reproduce (the round-trip test and the LLM-output validation)
ROUNDTRIP_FEATURES = (
    "copy_frac",
    "span_len",
    "copy_dist",
    "frac_alpha",
    "frac_space",
    "frac_punct",
    "entropy",
    "n_docs",
)


def byte_encode(text: str | bytes) -> np.ndarray:
    """Byte-tokenizer ids (byte ``b`` -> ``b + 4``) of ``text``."""
    b = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(b, np.uint8).astype(np.int64) + 4


class MotifGenerator:
    """The built-in generator of ``motif`` (see the module docstring). ``seq_len`` defaults to the motif's.

    Fresh text follows the motif's order-1 chain (``dist["transitions"]``, next-token counts of the supporting rows)
    from the previous token, falling back to the token frequencies where a token has no recorded successor (and
    everywhere for a motif without transitions). Text drawn that way repeats short n-grams by itself, as the rows
    did, and so holds copies nobody planned; ``calibrate`` scales the planned copy share (``copy_scale``, by
    bisection on rows of a fixed seed) so that the re-measured copy share matches the motif's. ``chain=False,
    calibrate=False``: fresh tokens from the frequencies alone, the planned share as drawn (the generator before
    the real-text study, kept for the comparison)."""

    def __init__(
        self,
        motif: Motif | dict,
        seq_len: Optional[int] = None,
        fallback_tokens=(36, 131),
        calibrate: bool = True,
        chain: bool = True,
    ):
        self.motif = motif if isinstance(motif, Motif) else Motif.from_dict(motif)
        d = self.motif.dist
        self.seq_len = int(seq_len or d["seq_len"])
        self.eod = int(d.get("eod", 0))
        self.min_span = int(d.get("min_span", 4))
        self.span_len = np.asarray(d["span_len"] or [8], np.int64)
        self.copy_dist = np.asarray(d["copy_dist"] or [16], np.int64)
        self.fresh_run = np.asarray(d["fresh_run"] or [16], np.int64)
        self.doc_len = np.asarray(d["doc_len"] or [self.seq_len], np.int64)
        self.copy_frac = np.asarray(d["copy_frac"] or [0.0], np.float64)
        ft = d.get("fresh_tokens") or {}
        if ft:
            self.tokens = np.array([int(k) for k in ft], np.int64)
            w = np.array(list(ft.values()), np.float64)
        else:
            self.tokens = np.arange(*fallback_tokens, dtype=np.int64)
            w = np.ones(self.tokens.size)
        self.p = w / w.sum()
        self._cum = np.cumsum(self.p)
        self.chain = {
            int(a): (np.array([int(k) for k in nxt], np.int64), np.cumsum(np.array(list(nxt.values()), np.float64)))
            for a, nxt in ((d.get("transitions") or {}) if chain else {}).items()
            if nxt
        }
        self.copy_scale = 1.0
        if calibrate and float(self.copy_frac.max()) > 0:
            self.copy_scale = self._calibrate()

    def _draw(self, toks: np.ndarray, cum: np.ndarray, u: float) -> int:
        return int(toks[min(int(np.searchsorted(cum, u * cum[-1], side="right")), toks.size - 1)])

    def _fresh(self, rng, n: int, prev: Optional[int] = None) -> List[int]:
        """``n`` fresh tokens continuing from ``prev`` (the document's last token; None at its start)."""
        out: List[int] = []
        for u in rng.random(int(n)):
            c = self.chain.get(prev) if prev is not None else None
            prev = self._draw(*c, u) if c is not None else self._draw(self.tokens, self._cum, u)
            out.append(prev)
        return out

    def document(self, rng: np.random.Generator, length: int) -> List[int]:
        """One document of exactly ``length`` tokens (no EOD)."""
        target = self.copy_scale * float(rng.choice(self.copy_frac))
        out: List[int] = []
        copied = 0
        D = None  # the next copy's distance: drawn once, used as soon as that much is written
        while len(out) < length:
            left = length - len(out)
            prev = out[-1] if out else None
            want = len(out) >= self.min_span and copied < target * max(1, len(out))
            if want and D is None:
                D = int(max(1, rng.choice(self.copy_dist)))
            if want and D <= len(out):
                L = int(min(left, max(self.min_span, rng.choice(self.span_len))))
                start = len(out) - D
                for i in range(L):
                    out.append(out[start + i])
                copied += L
                D = None
            elif want:  # wait for the copy's source: just enough fresh tokens
                out += self._fresh(rng, int(min(left, D - len(out))), prev)
            else:
                out += self._fresh(rng, int(min(left, max(1, rng.choice(self.fresh_run)))), prev)
        return out[:length]

    def row(self, rng: np.random.Generator) -> np.ndarray:
        """One row of ``seq_len`` tokens: documents, each followed by EOD, the last one cut at the row's end."""
        row: List[int] = []
        while len(row) < self.seq_len:
            n = int(max(self.min_span, rng.choice(self.doc_len)))
            row += self.document(rng, min(n, self.seq_len - len(row)))
            row.append(self.eod)
        return np.asarray(row[: self.seq_len], np.int64)

    def rows(self, n: int, seed: int = 0) -> np.ndarray:
        """``[n, seq_len]`` int64 rows, a pure function of ``seed``."""
        rng = np.random.default_rng([int(seed), 0xA06])
        return np.stack([self.row(rng) for _ in range(int(n))]) if n else np.zeros((0, self.seq_len), np.int64)

    def _calibrate(self, n: int = 48, iters: int = 7) -> float:
        """The planned-copy scale in ``[0, 2]`` whose rows (seed fixed) re-measure closest to the motif's mean copy
        share (bisection: the measured share grows with the scale)."""
        target = float(self.motif.features["copy_frac"]["mean"])

        def measured(scale: float) -> float:
            self.copy_scale = scale
            ms = measure_rows(self.rows(n, seed=0x0CA1), None, self.min_span, self.eod)
            return float(np.mean([m.features["copy_frac"] for m in ms]))

        lo, hi = 0.0, 2.0
        best = (abs(measured(1.0) - target), 1.0)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            got = measured(mid)
            best = min(best, (abs(got - target), mid))
            lo, hi = (mid, hi) if got < target else (lo, mid)
        return float(best[1])


class MixtureGenerator:
    """Rows from several motifs: each row's motif drawn with the motifs' shares (of the top set); ``kw`` go to every
    ``MotifGenerator``."""

    def __init__(self, motifs: Sequence[Motif | dict], seq_len: Optional[int] = None, **kw):
        if not motifs:
            raise ValueError("MixtureGenerator: expected at least one motif")
        self.gens = [MotifGenerator(m, seq_len, **kw) for m in motifs]
        w = np.array([g.motif.share for g in self.gens], np.float64)
        self.p = w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))
        self.seq_len = self.gens[0].seq_len

    def rows(self, n: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng([int(seed), 0xA07])
        which = rng.choice(len(self.gens), size=int(n), p=self.p)
        out = np.zeros((int(n), self.seq_len), np.int64)
        for g in range(len(self.gens)):
            idx = np.flatnonzero(which == g)
            if idx.size:
                out[idx] = self.gens[g].rows(idx.size, seed=int(seed) * 1000 + g)
        return out


def copy_baseline_rows(
    n: int, seq_len: int, seed: int = 0, low: int = 36, high: int = 131, span=(8, 32), eod: int = 0
) -> np.ndarray:
    """The generic copy baseline: rows of documents ``S ‖ S`` (``S`` uniform random tokens in ``[low, high)``,
    ``len(S)`` uniform in ``span``), each followed by EOD."""
    rng = np.random.default_rng([int(seed), 0xB1])
    out = np.zeros((int(n), int(seq_len)), np.int64)
    for i in range(int(n)):
        row: List[int] = []
        while len(row) < seq_len:
            s = rng.integers(low, high, size=int(rng.integers(span[0], span[1] + 1))).tolist()
            row += s + s + [eod]
        out[i] = row[:seq_len]
    return out


def pack_texts(
    texts: Sequence[str], seq_len: int, n_rows: int, encode: Callable = byte_encode, eod: int = 0
) -> np.ndarray:
    """Pack text documents into ``n_rows`` rows of ``seq_len`` (each document then EOD; a row ends mid-document;
    the documents are cycled if they run out). Raises ValueError when no document has a token."""
    docs = [np.asarray(encode(t), np.int64) for t in texts]
    docs = [d for d in docs if d.size]
    if not docs:
        raise ValueError("pack_texts: no non-empty document")
    out = np.zeros((int(n_rows), int(seq_len)), np.int64)
    j = 0
    for i in range(int(n_rows)):
        row: List[int] = []
        while len(row) < seq_len:
            row += docs[j % len(docs)].tolist() + [eod]
            j += 1
        out[i] = row[:seq_len]
    return out


def compare_stats(
    target: Dict[str, Dict[str, float]],
    got: Dict[str, Dict[str, float]],
    features: Sequence[str] = ROUNDTRIP_FEATURES,
    tol_sd: float = 0.5,
    tol_rel: float = 0.25,
    tol_abs: float = 0.05,
) -> Dict[str, object]:
    """Per feature: the target and generated means and whether they agree, i.e.
    ``|got - target| <= max(tol_sd * target_std, tol_rel * |target|, tol_abs)``; ``ok`` when all agree."""
    rows, ok = {}, True
    for f in features:
        t, g = target[f]["mean"], got[f]["mean"]
        lim = max(tol_sd * target[f]["std"], tol_rel * abs(t), tol_abs)
        good = abs(g - t) <= lim
        ok &= bool(good)
        rows[f] = {"target": t, "generated": g, "limit": lim, "ok": bool(good)}
    return {"ok": bool(ok), "features": rows, "failed": [f for f, r in rows.items() if not r["ok"]]}


def roundtrip(motif: Motif, rows: np.ndarray, decode=None, **tol) -> Dict[str, object]:
    """Re-measure generated ``rows`` and compare with ``motif``'s statistics (``compare_stats``)."""
    d = motif.dist
    got = summarize(measure_rows(rows, decode, int(d.get("min_span", 4)), int(d.get("eod", 0))))
    return compare_stats(motif.features, got, **tol)


assert set(ROUNDTRIP_FEATURES) <= set(FEATURES)

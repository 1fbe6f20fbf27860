"""What separates the top rows from generated ones: the measures that predict the score, per set of rows.

``compare_sets`` measures every row of each set (the top, bottom and random window rows of the smallest size, the
rows the ``mechanistic`` and ``copy`` arms insert, ...) and gives each measure's mean and std per set:

* ``induction``: plain induction's hit rate (:func:`mda_fast.core.text_probes.induction_hits`: the share of the
  positions whose token occurred before at which the next token is the one that followed its last earlier
  occurrence; what an induction head predicts; the real-text study's ``induction_structure``);
* ``repeat_positions``: the share of positions whose token occurred earlier in the row (where induction applies);
* ``copy_frac``, ``span_len``, ``copy_dist``: the greedy copy parse of ``row_features`` (spans of >= 4 tokens);
* ``entropy`` and the character classes ``frac_alpha``, ``frac_space``, ``frac_punct``, ``frac_digit``: the
  token distribution;
* ``bigram_ce``: the row's cross-entropy (bits per token) under an add-one bigram model of ``reference`` rows of
  the corpus: how much the row reads like the text around it (a row of random bytes scores ~8 bits, the corpus's
  own rows ~4);

and, per set, ``token_js``: the Jensen-Shannon divergence (bits) of its token histogram from the top set's.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np

from .row_features import EOD, measure_rows

__all__ = ["MEASURES", "row_measures", "bigram_model", "compare_sets", "js_divergence", "comparison_findings"]

#: the measures per row, in the report's order
MEASURES = (
    "induction",
    "repeat_positions",
    "copy_frac",
    "span_len",
    "copy_dist",
    "entropy",
    "frac_alpha",
    "frac_space",
    "frac_punct",
    "frac_digit",
    "bigram_ce",
)


def bigram_model(reference: np.ndarray, vocab: int) -> np.ndarray:
    """``log2 p(next | token)`` ``[vocab, vocab]`` of the add-one bigram model of ``reference`` rows."""
    r = np.asarray(reference, np.int64)
    c = np.ones((vocab, vocab), np.float64)
    if r.size:
        np.add.at(c, (r[:, :-1].ravel(), r[:, 1:].ravel()), 1.0)
    return np.log2(c / c.sum(1, keepdims=True))


def row_measures(rows: np.ndarray, logp: np.ndarray, eod: int = EOD) -> Dict[str, np.ndarray]:
    """Every measure of ``MEASURES`` for each of ``rows`` ``[n, T]`` (``logp``: ``bigram_model``)."""
    from ..core.text_probes import induction_hits

    rows = np.asarray(rows, np.int64)
    n, T = rows.shape
    hits = np.array([induction_hits(r) for r in rows], np.float64).reshape(-1, 2)
    feats = [m.features for m in measure_rows(rows, None, 4, eod)]
    out = {
        "induction": hits[:, 0] / np.maximum(hits[:, 1], 1.0),
        "repeat_positions": hits[:, 1] / max(1, T - 1),
        "bigram_ce": -logp[rows[:, :-1], rows[:, 1:]].mean(1) if n else np.zeros(0),
    }
    for k in MEASURES:
        if k not in out:
            out[k] = np.array([f[k] for f in feats], np.float64)
    return out


def js_divergence(a: np.ndarray, b: np.ndarray, vocab: int) -> float:
    """Jensen-Shannon divergence (bits, in [0, 1]) of the token histograms of ``a`` and ``b``."""
    p = np.bincount(np.asarray(a, np.int64).ravel(), minlength=vocab).astype(np.float64)
    q = np.bincount(np.asarray(b, np.int64).ravel(), minlength=vocab).astype(np.float64)
    p, q = p / max(p.sum(), 1.0), q / max(q.sum(), 1.0)
    m = 0.5 * (p + q)

    def kl(x):
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def compare_sets(
    sets: Mapping[str, np.ndarray], reference: np.ndarray, vocab: Optional[int] = None, eod: int = EOD
) -> dict:
    """Per set of ``sets`` (name -> ``[n, T]`` token rows; ``top`` among them): each measure's mean and std, its
    row count and the token histogram's JS divergence from the top set's; ``reference`` rows give the bigram model.
    Returns ``{"measures", "sets": {name: {measure: {"mean", "std"}}}, "n", "token_js"}``."""
    if "top" not in sets:
        raise ValueError(f"compare_sets: expected a 'top' set among {list(sets)}")
    arrays = {k: np.asarray(v, np.int64) for k, v in sets.items()}
    vocab = int(vocab or 1 + max(int(a.max()) for a in [*arrays.values(), np.asarray(reference)] if a.size))
    logp = bigram_model(reference, vocab)
    res: dict = {"measures": list(MEASURES), "sets": {}, "n": {}, "token_js": {}}
    for name, rows in arrays.items():
        m = row_measures(rows, logp, eod)
        res["sets"][name] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in m.items()}
        res["n"][name] = int(rows.shape[0])
        res["token_js"][name] = js_divergence(rows, arrays["top"], vocab)
    return res


def comparison_findings(cmp: Mapping) -> list:
    """Plain sentences: how far each generated set is from the top rows on the measures, in the top set's stds."""
    top = cmp["sets"]["top"]
    out = []
    for name in (n for n in cmp["sets"] if n not in ("top", "bottom", "random")):
        g = cmp["sets"][name]
        far = [
            (k, g[k]["mean"], top[k]["mean"], (g[k]["mean"] - top[k]["mean"]) / max(top[k]["std"], 1e-9))
            for k in ("induction", "copy_frac", "span_len", "copy_dist", "entropy", "bigram_ce")
        ]
        off = [f"{k} {v:.3g} vs {t:.3g}" for k, v, t, z in far if abs(z) > 0.5]
        inf = cmp.get("influence") or {}
        score = "".join(
            f" MDA score ({t}) {inf['sets'][name][t]['score']['mean']:.4g} vs {inf['sets']['top'][t]['score']['mean']:.4g}"
            " for the top rows."
            for t in inf.get("targets", [])
            if name in inf["sets"] and "top" in inf["sets"]
        )
        out.append(
            f"Top vs {name} rows: plain induction {g['induction']['mean']:.3f} vs {top['induction']['mean']:.3f}, "
            f"bigram cross-entropy {g['bigram_ce']['mean']:.2f} vs {top['bigram_ce']['mean']:.2f} bits, token JS "
            f"divergence {cmp['token_js'][name]:.3f} bits; more than half a top-set std apart: "
            + (", ".join(off) if off else "none")
            + "."
            + score
        )
    return out

"""Deterministic synthetic corpus for the CPU demo, with per-row category labels.

Documents come from eight labelled generators (``CATEGORIES``). They are byte-tokenized
(:class:`~mda_fast.data.tokenizer.ByteTokenizer`), concatenated with an EOD (0) after each document, and the stream
is cut into ``seq_len``-token rows, the way Pythia packs the Pile (a document may span rows). Rows are written as a
Megatron dataset (uint16, one entry per row), so :class:`~mda_fast.data.PythiaBatches` reads them in step order.

Sidecar: the corpus carries a category sidecar (format: :mod:`mda_fast.data.categories`), the fraction of each
row's tokens that come from each category (an EOD counts toward the document it ends), with metadata
``{"categories", "seq_len", "n_rows", "config", "token_share", "n_documents", "eod_id", "tokenizer"}``.

Two packings (``SyntheticConfig.packing``):

* ``"stream"`` (Pythia's): documents of every category, shuffled, concatenated and cut into rows, so a row usually
  starts inside a document and mixes categories. Mixing weights are token shares: category ``c`` receives
  ``w_c / sum(w)`` of the corpus tokens (up to one document).
* ``"rows"``: every row holds one category. It starts at a document boundary and is filled with that category's
  documents, each followed by EOD, and cut at the row's end. Category ``c`` gets ``round(w_c / sum(w) * n_rows)``
  rows (largest remainders), in a seeded random order. A tiny model forms an induction head on row-aligned
  repeated text far sooner than on the same text stream-packed (see the note in ``mda_fast/configs/demo.toml``),
  so the CPU demo uses ``"rows"``.

Each category draws from its own seeded stream, and a further stream shuffles the document (or row) order.
The generators: :mod:`mda_fast.data.synthetic_docs`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Tuple

import numpy as np

from .categories import load_category_sidecar, write_category_sidecar
from .megatron import write_megatron
from .synthetic_docs import GENERATORS

__all__ = [
    "CATEGORIES",
    "DEFAULT_MIX",
    "SyntheticConfig",
    "generate_documents",
    "pack_documents",
    "generate_corpus",
    "load_category_sidecar",
    "GENERATORS",
]

CATEGORIES = ["prose", "xml", "latex", "code", "hexlog", "base64", "csv", "repeat"]

# Calibration (measured on the CPU demo): ~60% repeated structure forms a head in ~1600-1800 steps.
DEFAULT_MIX = {
    "prose": 0.20,
    "xml": 0.15,
    "latex": 0.05,
    "code": 0.05,
    "hexlog": 0.05,
    "base64": 0.05,
    "csv": 0.05,
    "repeat": 0.40,
}

_EOD = 0
_OFFSET = 4


@dataclasses.dataclass
class SyntheticConfig:
    """What to generate.

    Args:
        n_sequences: rows of the corpus.
        seq_len: tokens per row (129 = 128 inputs + 1 shifted label for the CPU demo).
        mix: category -> non-negative weight; weights are token shares after normalisation, missing categories get 0.
        seed: seed of every random stream.
        repeat_len: inclusive byte-length range of the random chunk in a ``repeat`` document.
        repeat_copies: inclusive range of how often that chunk occurs in one document.
        packing: ``"stream"`` (Pythia: documents concatenated and cut into rows) or ``"rows"`` (one category per
            row, each row starting at a document boundary); see the module docstring.
    """

    n_sequences: int
    seq_len: int = 129
    mix: Dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int = 0
    repeat_len: Tuple[int, int] = (8, 30)
    repeat_copies: Tuple[int, int] = (3, 8)
    packing: str = "stream"

    def __post_init__(self):
        if self.packing not in ("stream", "rows"):
            raise ValueError(f"packing must be 'stream' or 'rows', got {self.packing!r}")
        if not isinstance(self.n_sequences, (int, np.integer)) or self.n_sequences < 1:
            raise ValueError(f"n_sequences must be a positive int, got {self.n_sequences!r}")
        if not isinstance(self.seq_len, (int, np.integer)) or self.seq_len < 2:
            raise ValueError(f"seq_len must be an int >= 2, got {self.seq_len!r}")
        unknown = sorted(set(self.mix) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories in mix: {unknown}; expected a subset of {CATEGORIES}")
        bad = {k: v for k, v in self.mix.items() if not (np.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"mix weights must be finite and >= 0, got {bad}")
        if sum(self.mix.values()) <= 0:
            raise ValueError(f"mix weights must not all be zero, got {self.mix}")
        for name in ("repeat_len", "repeat_copies"):
            lo, hi = getattr(self, name)
            if not (1 <= lo <= hi):
                raise ValueError(f"{name} must be a range (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}")
        self.repeat_len, self.repeat_copies = tuple(self.repeat_len), tuple(self.repeat_copies)

    def weights(self) -> np.ndarray:
        """Normalised token share of each category, in ``CATEGORIES`` order."""
        w = np.array([float(self.mix.get(c, 0.0)) for c in CATEGORIES])
        return w / w.sum()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mix"] = {c: float(self.mix.get(c, 0.0)) for c in CATEGORIES}
        d["repeat_len"], d["repeat_copies"] = list(self.repeat_len), list(self.repeat_copies)
        return d


def generate_documents(config: SyntheticConfig, progress: bool = False) -> List[Tuple[int, bytes]]:
    """The corpus's documents ``(category_index, utf-8 bytes)`` in packing order (without EOD)."""
    total = config.n_sequences * config.seq_len
    budgets = np.ceil(config.weights() * total).astype(np.int64)
    docs: List[Tuple[int, bytes]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(budgets.sum()), unit="tok", unit_scale=True, desc="synthetic corpus")
    for c, name in enumerate(CATEGORIES):
        if budgets[c] == 0:
            continue
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, c]))
        gen = GENERATORS[name]
        made = 0
        while made < budgets[c]:
            b = gen(rng, config).encode("utf-8")
            docs.append((c, b))
            made += len(b) + 1  # + EOD
            if bar is not None:
                bar.update(len(b) + 1)
    if bar is not None:
        bar.close()
    order = np.random.default_rng(np.random.SeedSequence([config.seed, len(CATEGORIES)])).permutation(len(docs))
    return [docs[i] for i in order]


def pack_documents(docs: List[Tuple[int, bytes]], seq_len: int, n_rows: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pythia packing: each document's byte tokens then EOD, concatenated, cut into ``n_rows`` rows.

    Returns ``tokens`` uint16 ``[n_rows, seq_len]`` and ``labels`` uint8 ``[n_rows, seq_len]`` (category index of
    every token; an EOD carries its document's category). The stream must hold at least ``n_rows * seq_len`` tokens.
    """
    cats = np.fromiter((c for c, _ in docs), dtype=np.uint8, count=len(docs))
    lens = np.fromiter((len(b) + 1 for _, b in docs), dtype=np.int64, count=len(docs))
    need = n_rows * seq_len
    if lens.sum() < need:
        raise ValueError(f"documents hold {int(lens.sum())} tokens, need {need} for {n_rows} rows of {seq_len}")
    # only the documents that reach into the first `need` tokens
    n_docs = int(np.searchsorted(np.cumsum(lens), need)) + 1
    cats, lens = cats[:n_docs], lens[:n_docs]
    stream = np.zeros(int(lens.sum()), dtype=np.uint16)
    is_text = np.ones(stream.size, dtype=bool)
    is_text[np.cumsum(lens) - 1] = False
    stream[is_text] = np.frombuffer(b"".join(b for _, b in docs[:n_docs]), dtype=np.uint8).astype(np.uint16) + _OFFSET
    labels = np.repeat(cats, lens)
    return stream[:need].reshape(n_rows, seq_len), labels[:need].reshape(n_rows, seq_len)


def row_categories(config: SyntheticConfig) -> np.ndarray:
    """``"rows"`` packing: the category index of every row (exact largest-remainder counts, seeded order)."""
    w = config.weights() * config.n_sequences
    counts = np.floor(w).astype(np.int64)
    rest = config.n_sequences - int(counts.sum())
    counts[np.argsort(-(w - counts), kind="stable")[:rest]] += 1
    cats = np.repeat(np.arange(len(CATEGORIES), dtype=np.uint8), counts)
    return np.random.default_rng(np.random.SeedSequence([config.seed, len(CATEGORIES)])).permutation(cats)


def pack_rows(config: SyntheticConfig, progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """``"rows"`` packing: ``tokens`` uint16 and ``labels`` uint8, both ``[n_rows, seq_len]``.

    Row ``i`` of category ``c`` = the next documents of ``c``'s stream, each followed by EOD, cut at ``seq_len``
    (the rest of the last document is dropped). Rows of one category are filled in row order.
    """
    cats = row_categories(config)
    n, T = config.n_sequences, config.seq_len
    tokens = np.zeros((n, T), dtype=np.uint16)
    rngs = [np.random.default_rng(np.random.SeedSequence([config.seed, c])) for c in range(len(CATEGORIES))]
    it = range(n)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, unit="row", unit_scale=True, desc="synthetic corpus")
    for i in it:
        c = int(cats[i])
        gen, row = GENERATORS[CATEGORIES[c]], bytearray()
        while len(row) < T:
            row += gen(rngs[c], config).encode("utf-8")
            row.append(0xFF)  # EOD marker: 0xFF never occurs in UTF-8 text
        r = np.frombuffer(bytes(row[:T]), dtype=np.uint8).astype(np.uint16)
        tokens[i] = np.where(r == 0xFF, _EOD, r + _OFFSET)
    labels = np.repeat(cats[:, None], T, axis=1)
    return tokens, labels


def category_fractions(labels: np.ndarray) -> np.ndarray:
    """float32 ``[n_rows, n_categories]``: share of each row's tokens per category."""
    n_rows, L = labels.shape
    counts = np.zeros((n_rows, len(CATEGORIES)), dtype=np.int64)
    for c in range(len(CATEGORIES)):
        counts[:, c] = (labels == c).sum(axis=1)
    return (counts / L).astype(np.float32)


def generate_corpus(out_prefix, config: SyntheticConfig, n_shards: int = 1, progress: bool = True) -> dict:
    """Generate, pack and write the corpus and its category sidecar; return a summary dict."""
    out_prefix = os.fspath(out_prefix)
    if config.packing == "rows":
        tokens, labels = pack_rows(config, progress=progress)
    else:
        docs = generate_documents(config, progress=progress)
        tokens, labels = pack_documents(docs, config.seq_len, config.n_sequences)
    paths = write_megatron(out_prefix, tokens, dtype=np.uint16, n_shards=n_shards)
    fractions = category_fractions(labels)
    counts = np.bincount(labels.reshape(-1), minlength=len(CATEGORIES))
    n_docs_used = int((tokens == _EOD).sum()) + (0 if tokens.reshape(-1)[-1] == _EOD else 1)
    if config.packing == "rows":  # every row not ending in EOD holds the start of a truncated document
        n_docs_used = int((tokens == _EOD).sum()) + int((tokens[:, -1] != _EOD).sum())
    meta = {
        "categories": list(CATEGORIES),
        "seq_len": int(config.seq_len),
        "n_rows": int(config.n_sequences),
        "config": config.to_dict(),
        "token_share": {c: float(counts[i] / labels.size) for i, c in enumerate(CATEGORIES)},
        "n_documents": n_docs_used,
        "eod_id": _EOD,
        "tokenizer": "bytes",
    }
    side = write_category_sidecar(
        out_prefix, fractions, CATEGORIES, **{k: v for k, v in meta.items() if k != "categories"}
    )
    return {**meta, "paths": paths + side}

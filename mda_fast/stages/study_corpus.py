"""The study's corpus: the real-text sources snapshotted into ``OUT/data/sources/``, built into a byte-level
corpus (:func:`mda_fast.data.corpus.build_corpus`, a category per file) and its rows shuffled with
``study.shuffle_seed``; the manifest records every file's hash, each source's version and the permutation."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil

import numpy as np

from ..config import Config
from ..data.corpus import corpus_fingerprint
from ..errors import DataError
from ..io import read_json

logger = logging.getLogger(__name__)

#: the files of a finished corpus in ``OUT/data``, in the order they are moved in (the manifest last: it marks one)
CORPUS_FILES = (
    "corpus.bin",
    "corpus.categories.npy",
    "corpus.categories.json",
    "corpus.order.npy",
    "corpus.idx",
    "corpus.manifest.json",
)


def prepare_real_corpus(cfg: Config, out: str, progress: bool = True) -> dict:
    """Snapshot the sources, build and shuffle the corpus at ``OUT/data/corpus`` (skipped when its manifest exists);
    sets ``data.path``/``data.seq_len`` and caps ``train.total_steps`` to the rows before the held-out tail.
    Returns the manifest."""
    data_dir = os.path.join(out, "data")
    prefix = os.path.join(data_dir, "corpus")
    man_path = prefix + ".manifest.json"
    if not os.path.exists(man_path):
        build_shuffled_corpus(cfg, data_dir, progress)
    m = read_json(man_path)
    c = cfg.corpus
    cfg.data.path, cfg.data.seq_len, cfg.data.tokenizer = prefix, c.seq_len, "bytes"
    B = cfg.data.batch_size
    usable = (m["n_rows"] - c.heldout_sequences) // B
    if usable < cfg.train.window_steps + 1:
        raise DataError(
            f"the corpus holds {m['n_rows']} rows: {usable} steps of {B} before the "
            f"{c.heldout_sequences} held-out rows, fewer than a window of {cfg.train.window_steps}; "
            f"raise study.sources' caps or lower data.batch_size"
        )
    if cfg.train.total_steps > usable:
        logger.info(
            f"[study] the corpus holds {usable} training steps: train.total_steps {cfg.train.total_steps} -> {usable}"
        )
        cfg.train.total_steps = usable
    shares = ", ".join(f"{k} {v['share']:.1%}" for k, v in m["totals"].items() if v["share"] > 0)
    logger.info(
        f"[study] corpus: {m['n_files']} files from {len(m['sources'])} sources -> {m['n_rows']} rows of "
        f"{m['seq_len']} bytes; {shares}"
    )
    return m


def build_shuffled_corpus(cfg: Config, data_dir: str, progress: bool = True) -> None:
    """Build the corpus in ``data_dir/tmp`` and move it into ``data_dir`` (the manifest last)."""
    from ..data.corpus import CorpusConfig, build_corpus
    from ..data.sources import snapshot_sources

    c, st = cfg.corpus, cfg.study
    tmp = os.path.join(data_dir, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    src_dir = os.path.join(tmp, "sources")
    os.makedirs(src_dir)
    records = snapshot_sources(dict(st.sources), src_dir, st.max_file_bytes)
    roots = [os.path.join(src_dir, r["name"]) for r in records]
    staged = os.path.join(tmp, "packed")
    corpus_cfg = CorpusConfig(tokenizer="bytes", seq_len=c.seq_len, packing=c.packing, max_file_bytes=st.max_file_bytes)
    m = build_corpus(roots, staged, corpus_cfg, progress=progress)
    order = shuffle_rows(staged, os.path.join(tmp, "corpus"), c.seq_len, st.shuffle_seed)
    np.save(os.path.join(tmp, "corpus.order.npy"), order)
    m.update(provenance(records, order, st.shuffle_seed))
    m["fingerprint"] = corpus_fingerprint(os.path.join(tmp, "corpus"))
    with open(os.path.join(tmp, "corpus.manifest.json"), "w") as fh:
        json.dump(m, fh, indent=1)
    for name in CORPUS_FILES:
        os.replace(os.path.join(tmp, name), os.path.join(data_dir, name))
    shutil.rmtree(os.path.join(data_dir, "sources"), ignore_errors=True)
    os.replace(src_dir, os.path.join(data_dir, "sources"))
    shutil.rmtree(tmp, ignore_errors=True)


def shuffle_rows(src: str, dest: str, seq_len: int, seed: int) -> np.ndarray:
    """Write the rows of the corpus ``src`` permuted by ``default_rng(seed)`` as ``dest`` (with its category
    sidecar; Pythia shuffles its packed rows too); returns the permutation (row i of dest is row order[i])."""
    from ..data.categories import load_category_sidecar, write_category_sidecar
    from ..data.megatron import write_megatron
    from ..data.pythia import PythiaBatches

    b = PythiaBatches(src, batch_size=1, seq_len=seq_len)
    rows = np.asarray(b.rows(np.arange(b.n_rows)))
    order = np.random.default_rng(seed).permutation(b.n_rows)
    fr, names = load_category_sidecar(src)
    side = read_json(src + ".categories.json")
    write_megatron(dest, rows[order], dtype=rows.dtype)
    extra = {k: v for k, v in side.items() if k not in ("categories", "n_rows")}
    write_category_sidecar(dest, fr[order], names, **extra)
    return order


def provenance(records: list, order: np.ndarray, seed: int) -> dict:
    """The manifest's record of where the corpus came from: the roots (relative to ``OUT/data``), the sources
    (their files' hashes stay in the manifest's ``files``), the versions of the environment, the shuffle."""
    from ..data.sources import environment_versions

    roots = [f"sources/{r['name']}" for r in records]  # relative to OUT/data (machine-independent)
    sources = [{k: v for k, v in r.items() if k != "files"} for r in records]
    env = environment_versions(
        [r["distribution"] for r in records if r["distribution"] != "python"] + ["torch", "transformers", "numpy"]
    )
    env.pop("stdlib", None)
    shuffle = {
        "seed": seed,
        "order": "corpus.order.npy",
        "order_sha256": hashlib.sha256(order.astype(np.int64).tobytes()).hexdigest(),
        "note": "row i of the corpus is row order[i] of the packed files (files[].rows count packed rows)",
    }
    return {"roots": roots, "sources": sources, "environment": env, "shuffle": shuffle}

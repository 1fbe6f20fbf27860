"""``mda-fast corpus``: a Megatron corpus with its category sidecar and manifest from directories of files
(:mod:`mda_fast.data.corpus`). Every input is checked before any file is read; a failed build writes nothing."""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from ..data.corpus import CorpusConfig, build_corpus, load_overrides, manifest_path, resolve_tokenizer
from ..errors import ConfigError

logger = logging.getLogger(__name__)


def run_corpus(dirs: Sequence[str], out: str, map_path: Optional[str] = None, progress: bool = True, **options) -> dict:
    """Build the corpus of ``dirs`` at prefix ``out``; returns the manifest (also at ``out.manifest.json``).
    ``options``: the fields of :class:`~mda_fast.data.corpus.CorpusConfig` (tokenizer, seq_len, packing, ...);
    ``map_path``: a file of path-pattern → category overrides."""
    seq_len = options.get("seq_len", 2049)
    if not isinstance(seq_len, int) or seq_len < 2:
        raise ConfigError(f"--seq-len {seq_len}: expected an int >= 2 (2049 in Pythia: 2048 inputs + 1 label)")
    config = CorpusConfig(overrides=load_overrides(map_path) if map_path else {}, **options)
    tok = resolve_tokenizer(config.tokenizer)
    m = build_corpus(dirs, out, config, progress=progress, tokenizer=tok)
    shares = ", ".join(f"{c} {t['share']:.1%}" for c, t in m["totals"].items() if t["share"] > 0)
    what = f"{m['n_files']} files"
    if m.get("input") == "documents":
        what = f"{m['n_documents']} documents from {m['n_files']} files ({m['n_skipped_records']} records skipped)"
    logger.info(
        f"[corpus] {what} -> {m['n_rows']} rows of {m['seq_len']} tokens ({m['packing']}; "
        f"{m['dropped_tokens']} dropped, {m['pad_tokens']} padding); {m['n_skipped']} skipped; {shares}"
    )
    logger.info(f"[corpus] wrote {out}.bin/.idx, the category sidecar and {manifest_path(out)}")
    return m

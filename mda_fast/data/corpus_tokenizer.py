"""The tokenizer of a corpus build: ``bytes``, ``neox`` (the GPT-NeoX-20B ``tokenizer.json`` from the local HF
cache) or a ``tokenizer.json`` path, with the record the manifest keeps (name, path, sha256, vocab size, EOD id)."""

from __future__ import annotations

import hashlib
import os
from typing import List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from .tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

NEOX_REPOS = (
    "EleutherAI/gpt-neox-20b",
    "EleutherAI/pythia-14m",
    "EleutherAI/pythia-70m",
    "EleutherAI/pythia-160m",
    "EleutherAI/pythia-410m",
    "EleutherAI/pythia-1b",
    "EleutherAI/pythia-1.4b",
    "EleutherAI/pythia-2.8b",
    "EleutherAI/pythia-6.9b",
    "EleutherAI/pythia-12b",
)


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_neox_tokenizer() -> Optional[str]:
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    # the environment as it is now (huggingface_hub reads it once, at import)
    cache = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else constants.HF_HUB_CACHE
    )
    for repo in NEOX_REPOS:
        try:
            p = try_to_load_from_cache(repo, "tokenizer.json", cache_dir=cache)
        except Exception:  # noqa: BLE001 - a damaged cache entry is just not a hit
            p = None
        if isinstance(p, str) and os.path.isfile(p):
            return p
    return None


def resolve_tokenizer(spec: str) -> Tuple[object, dict]:
    """(tokenizer, its manifest record ``{"name", "path", "sha256", "vocab_size", "eod_id"}``) for ``"bytes"``,
    ``"neox"`` or a ``tokenizer.json`` path; a missing or unreadable one is a :class:`ConfigError`."""
    if spec == "bytes":
        tok = ByteTokenizer()
        return tok, {"name": "bytes", "path": None, "sha256": None, "vocab_size": tok.vocab_size, "eod_id": tok.eod_id}
    if spec == "neox":
        path = cached_neox_tokenizer()
        if path is None:
            raise ConfigError(
                "--tokenizer neox: no GPT-NeoX-20B tokenizer.json in the local Hugging Face cache "
                f"({NEOX_REPOS[0]} or a Pythia model); expected the path of a tokenizer.json instead"
            )
    else:
        path = os.fspath(spec)
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(path):
            raise ConfigError(f"--tokenizer {spec}: no such file; expected bytes, neox or the path of a tokenizer.json")
    try:
        tok = load_tokenizer(path)
    except (OSError, ValueError) as e:
        why = " ".join(str(e.__cause__ or e).split())[:160]
        where = "" if path == spec else f" ({path})"
        raise ConfigError(
            f"--tokenizer {spec}{where}: not a readable tokenizer.json ({why}); expected a Hugging Face tokenizers file"
        ) from None
    return tok, {
        "name": spec if spec == "neox" else os.path.basename(path),
        "path": os.path.abspath(path),
        "sha256": file_sha256(path),
        "vocab_size": int(tok.vocab_size),
        "eod_id": int(tok.eod_id),
    }


def encode_texts(tok, texts: List[str]) -> List[np.ndarray]:
    """The token ids of each text (no special tokens added): a ``tokenizer.json`` encodes the batch in parallel."""
    if isinstance(tok, HFTokenizer):
        return [np.asarray(e.ids, dtype=np.int64) for e in tok.tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [tok.encode(t) for t in texts]

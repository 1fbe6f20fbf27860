"""The learned half of the content classifier (:mod:`mda_fast.data.content`): a linear model (multinomial logistic
regression) over hashed byte n-grams and the rules' features, its weights shipped in the package.

Inputs of a text (:func:`inputs`), a sparse vector of :data:`DIM` entries:

* byte n-grams (n = 1 … 4) of the UTF-8 of the text's first :data:`MAX_CHARS` characters (at most
  :data:`MAX_BYTES` bytes), each hashed (multiplicative hashing of the packed bytes and n) into one of
  :data:`N_BUCKETS` buckets; a bucket's value is ``1 + log(count)``, the block scaled to unit length;
* each number of :func:`mda_fast.data.content_rules.features` (:data:`RULE_KEYS`) as one of :data:`EDGES`' bins,
  the rules' decision (:func:`mda_fast.data.content_rules.decide`) and the dominant blob kind, each an indicator of
  value :data:`RULE_VALUE`.

Scores are ``bias + Σ value · W[entry]`` per category of :data:`MODEL_CATEGORIES` (the categories the labelled set
represents; ``code`` and ``other`` come from the rules only). The weights (``content_model.npz``: ``W`` float16
``[DIM, len(MODEL_CATEGORIES)]``, ``b`` float32) are written by ``scripts/train_content_model.py``
(:mod:`mda_fast.data.content_train`) from the training half of the labelled set; ``content_model.json`` records their
SHA-256 (:func:`weights_sha256`, of the numbers), the training documents' hashes and the settings. They load once, on first use, and are checked against the
recorded hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Dict, Optional, Tuple

import numpy as np

from .content_rules import CATEGORIES, MAX_CHARS, decide, features

__all__ = [
    "BITS",
    "N_BUCKETS",
    "DIM",
    "EDGES",
    "RULE_KEYS",
    "RULE_VALUE",
    "MODEL_CATEGORIES",
    "MAX_BYTES",
    "WEIGHTS_PATH",
    "MANIFEST_PATH",
    "inputs",
    "scores",
    "predict",
    "load_weights",
    "weights_sha256",
    "model_settings",
]

BITS = 16
N_BUCKETS = 1 << BITS
NGRAMS = (1, 2, 3, 4)
MAX_BYTES = 1 << 13
#: the numbers of content_rules.features the model reads (each as a bin of EDGES)
RULE_KEYS = ("n", "nonspace", "lines", "blob", "pem", "digits", "table", "json_key", "json_line", "json_parse", "cfg",
             "tags", "n_tags", "markup_start", "latex", "punct", "md_inline", "js_sym", "c_sym", "letters",
             "non_latin", "en", "foreign", "accented", "ts", "mean_word", "n_words", "py", "c", "js", "code_other",
             "md", "log", "semi", "hash_comments", "ini_sections", "ini_assign", "yaml_block",
             "path_lines")  # fmt: skip
#: bin edges for every rule number (bin k: EDGES[k-1] <= v < EDGES[k]; bin 0: v < 1e-9)
EDGES = np.array([1e-9, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5, 2, 3, 5, 10, 30, 100,
                  300, 1000, 3000])  # fmt: skip
N_BINS = len(EDGES) + 1
BLOB_KINDS = ("", "base64", "hex", "uuid", "hash")
_RULE0 = N_BUCKETS
_DECIDED0 = _RULE0 + len(RULE_KEYS) * N_BINS
_KIND0 = _DECIDED0 + len(CATEGORIES)
DIM = _KIND0 + len(BLOB_KINDS)
#: the value of each rule indicator (the n-gram block has unit length)
RULE_VALUE = 0.25
MODEL_CATEGORIES = [c for c in CATEGORIES if c not in ("code", "other")]
_CAT = {c: i for i, c in enumerate(CATEGORIES)}
_KIND = {k: i for i, k in enumerate(BLOB_KINDS)}
_MULT = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(64 - BITS)

_HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS_PATH = os.path.join(_HERE, "content_model.npz")
MANIFEST_PATH = os.path.join(_HERE, "content_model.json")


def model_settings() -> dict:
    """What decides the inputs (recorded with the weights; a change needs new weights)."""
    return {
        "bits": BITS,
        "ngrams": list(NGRAMS),
        "max_chars": MAX_CHARS,
        "max_bytes": MAX_BYTES,
        "rule_keys": list(RULE_KEYS),
        "edges": EDGES.tolist(),
        "rule_value": RULE_VALUE,
        "categories": MODEL_CATEGORIES,
    }


def _ngram_buckets(data: bytes) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    out = []
    g = np.zeros(0, dtype=np.uint64)
    for n in NGRAMS:
        if b.size < n:
            break
        g = b.copy() if n == 1 else (g[:-1] << np.uint64(8)) | b[n - 1 :]
        out.append(((g * np.uint64(8) + np.uint64(n)) * _MULT) >> _SHIFT)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


def inputs(
    text: str, f: Optional[Dict[str, float]] = None, decided: Optional[str] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """(entries int64, values float32) of the model's sparse input for ``text`` (see the module docstring);
    ``f`` and ``decided`` are the rules' features and decision when the caller has them."""
    s = text[:MAX_CHARS].lstrip("\ufeff")
    if f is None:
        f = features(s)
    if decided is None:
        decided = decide(f)[0]
    buckets = _ngram_buckets(s.encode("utf-8", errors="replace")[:MAX_BYTES])
    if buckets.size:
        idx, counts = np.unique(buckets, return_counts=True)
        val = 1.0 + np.log(counts.astype(np.float64))
        val /= math.sqrt(float(val @ val))
    else:
        idx, val = np.zeros(0, dtype=np.uint64), np.zeros(0)
    nums = np.array([float(f[k]) for k in RULE_KEYS])
    bins = np.searchsorted(EDGES, nums, side="right")
    rule_idx = _RULE0 + np.arange(len(RULE_KEYS)) * N_BINS + bins
    extra = np.array([_DECIDED0 + _CAT[decided], _KIND0 + _KIND.get(f["blob_kind"], 0)])
    entries = np.concatenate([idx.astype(np.int64), rule_idx.astype(np.int64), extra.astype(np.int64)])
    values = np.concatenate([val, np.full(rule_idx.size + extra.size, RULE_VALUE)]).astype(np.float32)
    return entries, values


_LOADED: Dict[str, object] = {}


def weights_sha256(W: np.ndarray, b: np.ndarray) -> str:
    """The SHA-256 of the weights as stored (``W`` little-endian float16, ``b`` float32): a hash of the numbers, not of
    the ``.npz`` file (whose zip entries carry the time they were written)."""
    h = hashlib.sha256()
    for name, a, dt in (("W", W, "<f2"), ("b", b, "<f4")):
        a = np.ascontiguousarray(a, dtype=dt)
        h.update(f"{name}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_weights() -> Tuple[np.ndarray, np.ndarray]:
    """(W float32 [DIM, C], b float32 [C]) of the shipped model, loaded once and checked against its manifest."""
    if "W" not in _LOADED:
        with open(MANIFEST_PATH) as fh:
            manifest = json.load(fh)
        if manifest["settings"] != model_settings():
            raise RuntimeError(f"{MANIFEST_PATH}: the weights were trained for other input settings; retrain")
        with np.load(WEIGHTS_PATH, allow_pickle=False) as z:
            W16, b = z["W"], z["b"]
        digest = weights_sha256(W16, b)
        if digest != manifest["weights_sha256"]:
            raise RuntimeError(
                f"{WEIGHTS_PATH}: SHA-256 {digest} differs from the {manifest['weights_sha256']} recorded in "
                f"{MANIFEST_PATH}; rerun scripts/train_content_model.py"
            )
        W, b = W16.astype(np.float32), b.astype(np.float32)
        if W.shape != (DIM, len(MODEL_CATEGORIES)) or b.shape != (len(MODEL_CATEGORIES),):
            raise RuntimeError(f"{WEIGHTS_PATH}: weights of shape {W.shape}, expected {(DIM, len(MODEL_CATEGORIES))}")
        _LOADED.update(W=W, b=b, sha256=digest)
    return _LOADED["W"], _LOADED["b"]  # type: ignore[return-value]


def scores(entries: np.ndarray, values: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The categories' scores (logits) of one input."""
    return b + values @ W[entries]


def predict(text: str, f: Optional[Dict[str, float]] = None, decided: Optional[str] = None) -> Tuple[str, float]:
    """(category, its probability) by the shipped model."""
    W, b = load_weights()
    z = scores(*inputs(text, f, decided), W, b)
    k = int(np.argmax(z))
    p = 1.0 / float(np.exp(z - z[k]).sum())
    return MODEL_CATEGORIES[k], p

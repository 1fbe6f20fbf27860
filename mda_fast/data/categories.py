"""The category sidecar of a training corpus: which kinds of text each row holds.

Format, beside a Megatron dataset ``<prefix>.bin/.idx``:

* ``<prefix>.categories.npy``: float32 ``[n_rows, n_categories]``; entry ``[i, c]`` is the fraction of row ``i``'s
  tokens that belong to category ``c`` (each row sums to 1 when every token is labelled).
* ``<prefix>.categories.json``: a JSON object with at least ``"categories"`` (the ``n_categories`` names, in column
  order, distinct) and ``"n_rows"``; any other keys (the generator's config, token shares, ...) are free metadata.

Attribution never reads the sidecar; the analysis (category enrichment) and the matched intervention arms do.
Any corpus can carry one: write it with :func:`write_category_sidecar`.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "SIDECAR_NPY",
    "SIDECAR_JSON",
    "sidecar_paths",
    "write_category_sidecar",
    "write_sidecar_meta",
    "load_category_sidecar",
]

SIDECAR_NPY = ".categories.npy"
SIDECAR_JSON = ".categories.json"


def sidecar_paths(prefix) -> Tuple[str, str]:
    """``(<prefix>.categories.npy, <prefix>.categories.json)``; a ``.bin``/``.idx`` suffix on ``prefix`` is dropped."""
    prefix = os.fspath(prefix)
    for ext in (".idx", ".bin"):
        if prefix.endswith(ext):
            prefix = prefix[: -len(ext)]
    return prefix + SIDECAR_NPY, prefix + SIDECAR_JSON


def write_category_sidecar(prefix, fractions: np.ndarray, categories: Sequence[str], **meta: Any) -> List[str]:
    """Write the sidecar of ``prefix`` (see the module docstring); ``meta`` goes into the JSON beside
    ``categories`` and ``n_rows``. Returns the two paths."""
    fr = np.asarray(fractions, dtype=np.float32)
    names = [str(c) for c in categories]
    if fr.ndim != 2 or fr.shape[1] != len(names):
        raise ValueError(f"category fractions must be [n_rows, {len(names)}], got shape {fr.shape}")
    if len(set(names)) != len(names):
        raise ValueError(f"category names must be distinct, got {names}")
    if "n_rows" in meta and int(meta["n_rows"]) != fr.shape[0]:
        raise ValueError(f"n_rows={meta['n_rows']} disagrees with the fractions' {fr.shape[0]} rows")
    npy, js = sidecar_paths(prefix)
    np.save(npy, fr)
    write_sidecar_meta(prefix, names, **{**meta, "n_rows": fr.shape[0]})
    return [npy, js]


def write_sidecar_meta(prefix, categories: Sequence[str], **meta: Any) -> str:
    """The sidecar's JSON alone (for a ``.npy`` written in pieces, e.g. by a streaming corpus build); ``meta`` must
    hold ``n_rows``."""
    names = [str(c) for c in categories]
    if len(set(names)) != len(names):
        raise ValueError(f"category names must be distinct, got {names}")
    doc = {"categories": names, **meta}
    doc["n_rows"] = int(meta["n_rows"])
    js = sidecar_paths(prefix)[1]
    with open(js, "w") as f:
        json.dump(doc, f, indent=1)
    return js


def load_category_sidecar(prefix) -> Optional[Tuple[np.ndarray, List[str]]]:
    """``(fractions [n_rows, n_categories] float32, category names)``, or ``None`` when there is no sidecar."""
    npy, js = sidecar_paths(prefix)
    if not os.path.isfile(npy):
        return None
    if not os.path.isfile(js):
        raise FileNotFoundError(f"{npy!r} exists but its metadata {js!r} does not")
    with open(js) as f:
        meta = json.load(f)
    fr = np.load(npy)
    names = list(meta["categories"])
    if fr.shape != (meta["n_rows"], len(names)):
        raise ValueError(
            f"{npy!r}: shape {fr.shape} disagrees with {js!r} (n_rows={meta['n_rows']}, {len(names)} categories)"
        )
    return fr, names

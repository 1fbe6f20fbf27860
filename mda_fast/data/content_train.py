"""Training the content classifier's model (:mod:`mda_fast.data.content_model`) on the training half of the labelled
set (:mod:`mda_fast.data.labelled_set`), deterministically: seeded pieces, seeded batches, one thread.

Pieces of each training document at seeded offsets (:data:`PIECE_SIZES`: 64, 129, 300 and 1,024 bytes, decoded as the
byte tokenizer decodes, and 4,096 characters, the classifier's reading length; a document shorter than a piece gives
itself once), each labelled by its content (:func:`mda_fast.data.labelled_set.content_label`): a piece that lies in a
natural-language region of its document (a docstring, a comment, a paragraph, a page's text: :mod:`prose_regions
<mda_fast.data.prose_regions>`) and reads as prose is prose, whatever its file; every other piece carries its document's
category (a licence header with its ``#`` markers stays config or Python). The held-out measure labels the same way.
Each category weighs the same
in the loss (weights inverse to its piece count). The model: multinomial
logistic regression, Adam on mini-batches, an L2 penalty on the weights. ``scripts/train_content_model.py`` runs
:func:`train_and_save`.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .content_model import DIM, MANIFEST_PATH, MODEL_CATEGORIES, WEIGHTS_PATH, inputs, model_settings, weights_sha256
from .content_rules import decide, features
from .labelled_set import Document, content_label, set_digest
from .prose_regions import regions

__all__ = ["PIECE_SIZES", "HYPER", "training_pieces", "featurize", "fit", "train_and_save"]

#: (unit, size, pieces per document)
PIECE_SIZES = (("bytes", 64, 8), ("bytes", 129, 24), ("bytes", 300, 6), ("bytes", 1024, 4), ("chars", 4096, 4))
HYPER = {"epochs": 8, "batch": 256, "lr": 0.02, "l2": 1e-6, "seed": 0}


def training_pieces(docs: Sequence[Document], seed: int = 0) -> List[Tuple[str, str]]:
    """``[(label, piece)]`` of the documents, each labelled by its content (:func:`content_label`; see the module
    docstring)."""
    out = []
    for j, d in enumerate(docs):
        rng = np.random.default_rng([seed, j, 7])
        data = d.text.encode("utf-8")
        mask = regions(d.category, d.text)
        for unit, size, k in PIECE_SIZES:
            seq = data if unit == "bytes" else d.text
            if len(seq) <= size:
                if unit == "chars":
                    out.append((content_label(d.category, mask, 0, d.text), d.text))
                continue
            for _ in range(k):
                o = int(rng.integers(0, len(seq) - size + 1))
                if unit == "bytes":
                    piece, start = seq[o : o + size].decode("utf-8", errors="replace"), o
                else:
                    piece, start = seq[o : o + size], len(seq[:o].encode("utf-8"))
                out.append((content_label(d.category, mask, start, piece), piece))
    return out


def featurize(pieces: Sequence[Tuple[str, str]], progress: bool = False):
    """(entries int64, values float32, offsets int64 [n+1], labels int64 [n]) of the pieces' model inputs."""
    from tqdm import tqdm

    cat = {c: i for i, c in enumerate(MODEL_CATEGORIES)}
    ent, val, offs, labels = [], [], [0], []
    for c, text in tqdm(pieces, desc="features", disable=not progress):
        f = features(text)
        e, v = inputs(text, f, decide(f)[0])
        ent.append(e)
        val.append(v)
        offs.append(offs[-1] + e.size)
        labels.append(cat[c])
    return (np.concatenate(ent), np.concatenate(val), np.array(offs, dtype=np.int64), np.array(labels, dtype=np.int64))


def fit(entries, values, offsets, labels, hyper: Dict = HYPER, progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """(W float32 [DIM, C], b float32 [C]): logistic regression on the featurized pieces (see the module docstring)."""
    import torch
    from tqdm import tqdm

    n, C = labels.size, len(MODEL_CATEGORIES)
    counts = np.bincount(labels, minlength=C).astype(np.float64)
    cw = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(int((counts > 0).sum()), 1), 0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(hyper["seed"])
        W = torch.zeros(DIM, C, dtype=torch.float32, requires_grad=True)
        b = torch.zeros(C, dtype=torch.float32, requires_grad=True)
        opt = torch.optim.Adam([W, b], lr=hyper["lr"])
        class_w = torch.tensor(cw, dtype=torch.float32)
        E, V = torch.from_numpy(entries), torch.from_numpy(values)
        rng = np.random.default_rng(hyper["seed"])
        steps = range(hyper["epochs"])
        for _ in tqdm(steps, desc="epochs", disable=not progress):
            order = rng.permutation(n)
            for s in range(0, n, hyper["batch"]):
                ids = order[s : s + hyper["batch"]]
                starts, ends = offsets[ids], offsets[ids + 1]
                sel = np.concatenate([np.arange(a, e) for a, e in zip(starts, ends)])
                off = torch.from_numpy(np.concatenate([[0], np.cumsum(ends - starts)[:-1]]))
                z = torch.nn.functional.embedding_bag(E[sel], W, off, mode="sum", per_sample_weights=V[sel]) + b
                y = torch.from_numpy(labels[ids])
                loss = torch.nn.functional.cross_entropy(z, y, weight=class_w) + hyper["l2"] * (W * W).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return W.detach().numpy().copy(), b.detach().numpy().copy()
    finally:
        torch.set_num_threads(threads)


def train_and_save(docs: Sequence[Document], weights_path: str = WEIGHTS_PATH, manifest_path: str = MANIFEST_PATH,
                   hyper: Dict = HYPER, progress: bool = True) -> dict:  # fmt: skip
    """Train on ``docs`` (the training half), write the weights (float16) and the manifest; the manifest."""
    import torch

    ps = training_pieces(docs, seed=hyper["seed"])
    X = featurize(ps, progress=progress)
    W, b = fit(*X, hyper=hyper, progress=progress)
    W16, b32 = W.astype(np.float16), b.astype(np.float32)
    os.makedirs(os.path.dirname(os.path.abspath(weights_path)), exist_ok=True)
    np.savez_compressed(weights_path, W=W16, b=b32)
    manifest = {
        "weights_sha256": weights_sha256(W16, b32),
        "settings": model_settings(),
        "hyper": dict(hyper),
        "piece_sizes": [list(p) for p in PIECE_SIZES],
        "n_pieces": len(ps),
        "n_pieces_trained": int(X[3].size),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "training_set_sha256": set_digest(docs),
        "training_documents": [{"category": d.category, "key": d.key, "sha256": d.sha256} for d in docs],
    }
    with open(manifest_path, "w") as fh:
        json.dump(manifest, fh, indent=0)
        fh.write("\n")
    return manifest

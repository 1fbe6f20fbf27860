"""A seeded shuffle of tokenized documents too many to hold: an external (bucket) shuffle on disk.

Every document goes to one of ``n_buckets`` temporary files chosen at random; then each bucket is read back whole
and its documents given in a random order. With independent uniform buckets and a uniform order within each,
every permutation of the documents is equally likely (for any number of buckets), and memory holds one bucket.
The same documents, seed and number of buckets give the same order.
"""

from __future__ import annotations

import os
import shutil
from typing import Iterator, Optional, Tuple

import numpy as np

__all__ = ["BucketShuffle", "bucket_count"]

BUCKET_BYTES = 256 << 20  # the target size of one bucket
MAX_BUCKETS = 256


def bucket_count(estimated_bytes: int, bucket_bytes: Optional[int] = None) -> int:
    """Buckets for about ``estimated_bytes`` of token data: ``ceil(estimate / bucket_bytes)`` in ``[1, 256]``
    (default :data:`BUCKET_BYTES`)."""
    bucket_bytes = bucket_bytes or BUCKET_BYTES
    return int(min(MAX_BUCKETS, max(1, -(-int(estimated_bytes) // int(bucket_bytes)))))


class BucketShuffle:
    """``add(tokens, meta)`` every document, then iterate ``(tokens, meta)`` in the shuffled order.

    ``meta``: a 1-D int64 array of ``width`` values carried with the document (its input, record, labels).
    """

    def __init__(self, directory: str, seed: int, n_buckets: int, dtype, width: int):
        self.dir, self.dtype, self.width = directory, np.dtype(dtype), int(width)
        self.rng = np.random.default_rng(seed)
        self.n = int(n_buckets)
        os.makedirs(directory, exist_ok=True)
        self.files = [open(os.path.join(directory, f"bucket-{b:03d}"), "wb", buffering=1 << 16) for b in range(self.n)]
        self._draws = np.zeros(0, dtype=np.int64)
        self.n_docs = 0

    def _bucket(self) -> int:
        if not self._draws.size:
            self._draws = self.rng.integers(0, self.n, size=1 << 14)
        b, self._draws = int(self._draws[0]), self._draws[1:]
        return b

    def add(self, tokens: np.ndarray, meta: np.ndarray) -> None:
        f = self.files[self._bucket()]
        head = np.empty(1 + self.width, dtype="<i8")
        head[0] = tokens.size
        head[1:] = meta
        f.write(head.tobytes())
        f.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self.n_docs += 1

    def __iter__(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        for f in self.files:
            f.close()
        hb, it = 8 * (1 + self.width), self.dtype.itemsize
        for b in range(self.n):
            path = os.path.join(self.dir, f"bucket-{b:03d}")
            with open(path, "rb") as fh:
                data = fh.read()
            os.remove(path)
            heads, offs, pos = [], [], 0
            while pos < len(data):
                h = np.frombuffer(data, dtype="<i8", count=1 + self.width, offset=pos)
                heads.append(h)
                offs.append(pos + hb)
                pos += hb + int(h[0]) * it
            for i in self.rng.permutation(len(heads)).tolist():
                h = heads[i]
                yield np.frombuffer(data, dtype=self.dtype, count=int(h[0]), offset=offs[i]), h[1:]
            del data

    def close(self) -> None:
        for f in self.files:
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)

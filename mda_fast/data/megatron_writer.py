"""Writing a Megatron ``MMapIndexedDataset`` (``.idx`` + one ``.bin`` or Pythia-style shards)."""

from __future__ import annotations

import os
from typing import Iterable, List, Sequence, Union

import numpy as np

from ..errors import DataError
from .megatron_format import HEADER, MAGIC, VERSION, dtype_code
from .megatron_shards import shard_files, strip_prefix


def write_megatron(
    path_prefix: Union[str, os.PathLike],
    sequences: Union[np.ndarray, Sequence[Iterable[int]]],
    dtype=np.uint16,
    n_shards: int = 1,
    doc_idx=None,
) -> List[str]:
    """Write ``sequences`` (a 2-D array or a list of 1-D token arrays) as a Megatron dataset.

    Writes ``<prefix>.idx`` and, for ``n_shards == 1``, ``<prefix>.bin``; otherwise ``n_shards`` files
    ``<prefix>-IIIII-of-LLLLL.bin`` with ``LLLLL = n_shards - 1``, the last index (Pythia's convention, 5 digits:
    ``n_shards=21`` writes ``-00000-of-00020`` .. ``-00020-of-00020``). The shards split the byte stream into
    near-equal parts at arbitrary byte positions (a sequence or a token may straddle two shards).
    ``doc_idx`` defaults to ``0..len`` (every sequence is one document, as in Pythia's preshuffled files).
    Integer values outside ``dtype``'s range raise :class:`DataError`, and so does a directory already holding a
    different token stream of the same prefix (another shard set, or ``<prefix>.bin`` beside new shards).
    Returns the paths written.
    """
    prefix = strip_prefix(path_prefix)
    dt = np.dtype(dtype).newbyteorder("<")
    code = dtype_code(dt)
    if not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
        raise DataError(f"n_shards must be a positive int, got {n_shards!r}")
    seqs = _checked_sequences(sequences, dt)
    sizes = np.array([s.size for s in seqs], dtype=np.int64)
    if sizes.size and sizes.max() > np.iinfo(np.int32).max:
        raise DataError(f"a sequence of {int(sizes.max())} tokens exceeds the i32 size field")
    pointers = (
        np.concatenate([[0], np.cumsum(sizes * dt.itemsize)[:-1]]).astype("<i8") if len(seqs) else np.zeros(0, "<i8")
    )
    doc_idx = np.asarray(np.arange(len(seqs) + 1) if doc_idx is None else doc_idx, dtype="<i8")
    paths, bounds = _stream_files(prefix, int(sizes.sum()) * dt.itemsize, n_shards)
    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
    _write_stream(seqs, dt, paths, bounds)
    with open(prefix + ".idx", "wb") as f:
        f.write(HEADER.pack(MAGIC, VERSION, code, len(seqs), len(doc_idx)))
        f.write(sizes.astype("<i4").tobytes())
        f.write(pointers.tobytes())
        f.write(doc_idx.tobytes())
    return [prefix + ".idx"] + paths


def _checked_sequences(sequences, dt: np.dtype) -> list:
    """The sequences as 1-D arrays, each within ``dt``'s integer range."""
    if isinstance(sequences, np.ndarray) and sequences.ndim == 2:
        seqs = [sequences[i] for i in range(sequences.shape[0])]
    else:
        seqs = [np.asarray(s) for s in sequences]
    for i, s in enumerate(seqs):
        if s.ndim != 1:
            raise DataError(f"sequence {i} must be 1-D, got shape {s.shape}")
        if s.size and dt.kind in "iu":
            if s.dtype.kind not in "iub":
                raise TypeError(f"sequence {i} has dtype {s.dtype}; expected integers for a {dt} file")
            info = np.iinfo(dt)
            lo, hi = int(s.min()), int(s.max())
            if lo < info.min or hi > info.max:
                raise DataError(f"sequence {i} holds values in [{lo}, {hi}], outside {dt}'s [{info.min}, {info.max}]")
    return seqs


def _stream_files(prefix: str, total: int, n_shards: int) -> tuple[list, list]:
    """(paths, byte bounds) of the token stream; refuses a directory holding another stream of ``prefix``."""
    single = prefix + ".bin"
    if n_shards == 1:
        paths, bounds = [single], [0, total]
    else:
        paths = [f"{prefix}-{i:05d}-of-{n_shards - 1:05d}.bin" for i in range(n_shards)]
        per = -(-total // n_shards)
        bounds = [min(total, i * per) for i in range(n_shards + 1)]
    directory = os.path.dirname(prefix) or "."
    stale = sorted({name for _, _, name in shard_files(prefix)} - {os.path.basename(q) for q in paths})
    if os.path.exists(single) and n_shards > 1:
        stale.insert(0, os.path.basename(single))
    if stale:
        raise DataError(
            f"{directory!r} already holds other token-stream files of {prefix!r} ({stale[:3]}"
            f"{'...' if len(stale) > 3 else ''}); delete them before writing {os.path.basename(paths[0])!r}"
        )
    return paths, bounds


def _write_stream(seqs: list, dt: np.dtype, paths: list, bounds: list) -> None:
    """The sequences' bytes, split across ``paths`` at ``bounds``."""
    files = [open(p, "wb") for p in paths]
    try:
        pos, shard = 0, 0
        for s in seqs:
            buf = memoryview(np.ascontiguousarray(s, dtype=dt).tobytes())
            while len(buf):
                while pos >= bounds[shard + 1] and shard < len(paths) - 1:
                    shard += 1
                take = min(len(buf), bounds[shard + 1] - pos)
                files[shard].write(buf[:take])
                buf = buf[take:]
                pos += take
    finally:
        for f in files:
            f.close()

"""Pythia's training order: step ``k`` sees rows ``k*batch_size ... k*batch_size + batch_size - 1``.

``PythiaBatches`` reads either a Megatron dataset or the authors' ``.npy`` of rows ``(N, seq_len)``. Rows come back
in the file's native dtype (``uint16`` for Pythia) as fresh, writable, C-contiguous arrays; cast to int64 before
embedding lookup. Inputs are ``row[:-1]``, labels ``row[1:]``.

The Megatron layouts Pythia publishes open as downloaded: the preshuffled Pile
(``EleutherAI/pile-standard-pythia-preshuffled`` and the deduped ``EleutherAI/pile-deduped-pythia-preshuffled``)
is ``document.idx`` plus the 21 byte-split shards ``document-00000-of-00020.bin`` .. ``document-00020-of-00020.bin``
(the number after ``of`` is the last index), or the single ``document.bin`` that Pythia's
``utils/unshard_memmap.py --num_shards 21`` writes (with ``document.idx`` copied beside it). See
:mod:`mda_fast.data.megatron` for the checks.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np

from ..errors import DataError
from .batches import StepBatches
from .megatron import MMapIndexedDataset

__all__ = ["PythiaBatches"]


class PythiaBatches(StepBatches):
    """Batches of a pre-shuffled token file in Pythia's step order.

    Args:
        path: a ``.npy`` file of shape ``(N, seq_len)``, or a Megatron dataset named by its prefix (e.g.
            ``.../pile-deduped-pythia-preshuffled/document``), its ``.idx``, its ``.bin``, shard 0's path, or
            the directory holding its one ``.idx``. The token stream is ``<prefix>.bin`` or the shards
            ``<prefix>-IIIII-of-LLLLL.bin``, ``IIIII = 00000..LLLLL`` (``LLLLL`` is the last index, Pythia's
            convention); a missing, duplicated or short shard raises :class:`~mda_fast.errors.DataError`.
        batch_size: rows per step (1024 in Pythia).
        seq_len: tokens per row (2049 in Pythia: 2048 inputs + 1 shifted label).
        packing: how Megatron entries become rows. ``"rows"`` (default): every entry must be exactly
            ``seq_len`` tokens (Pythia's preshuffled files) and entry ``i`` is row ``i``; anything else raises.
            ``"stream"``: the entries are concatenated into one token stream and cut into ``seq_len`` rows; a
            trailing partial row is dropped. Ignored for ``.npy``.

    ``n_rows`` rows make ``n_steps = n_rows // batch_size`` full steps; rows of a trailing partial batch are
    reachable through :meth:`rows` but belong to no step.
    """

    def __init__(
        self, path: Union[str, os.PathLike], batch_size: int = 1024, seq_len: int = 2049, packing: str = "rows"
    ):
        for name, v in (("batch_size", batch_size), ("seq_len", seq_len)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if packing not in ("rows", "stream"):
            raise ValueError(f"packing must be 'rows' or 'stream', got {packing!r}")
        self.path = os.fspath(path)
        self.batch_size = int(batch_size)
        self.seq_len = int(seq_len)
        self.packing = packing
        self._npy: Optional[np.ndarray] = None
        self._ds: Optional[MMapIndexedDataset] = None
        if self.path.endswith(".npy"):
            arr = np.load(self.path, mmap_mode="r")
            if arr.ndim != 2 or arr.shape[1] != self.seq_len:
                raise DataError(f"{self.path!r}: expected rows of shape (N, {self.seq_len}), got {arr.shape}")
            if arr.dtype.kind not in "iu":
                raise DataError(f"{self.path!r}: expected integer token ids, got dtype {arr.dtype}")
            self._npy = arr
            self.n_rows = int(arr.shape[0])
            self.dtype = arr.dtype
        else:
            ds = MMapIndexedDataset(self.path)
            self._ds = ds
            self.dtype = ds.dtype
            if ds.dtype.kind not in "iu":
                raise DataError(f"{ds.idx_path!r}: expected integer token ids, got dtype {ds.dtype}")
            if packing == "rows":
                if len(ds) and ds.uniform_size != self.seq_len:
                    bad = int(np.argmax(ds.sizes != self.seq_len))
                    raise DataError(
                        f"{ds.idx_path!r}: entry {bad} has {int(ds.sizes[bad])} tokens but seq_len={self.seq_len}; "
                        f"Pythia's files hold one seq_len-token row per entry. Pass the right seq_len, or "
                        f"packing='stream' to cut the concatenated tokens into rows"
                    )
                self.n_rows = len(ds)
            else:
                self.n_rows = ds.nbytes // ds.dtype.itemsize // self.seq_len
        self.n_steps = self.n_rows // self.batch_size
        self._blocks = self._row_blocks() if self._ds is not None else []

    def _row_blocks(self):
        """Per shard ``(r0, r1, rows[r1 - r0, seq_len])``: the rows lying wholly inside it, as a 2-D memmap view.

        Row ``i`` starts at token ``i * seq_len`` in both packings (pointers are validated contiguous).
        """
        ds, L = self._ds, self.seq_len
        rb = L * ds.dtype.itemsize
        blocks = []
        for a, buf in ds.segments():
            b = a + buf.size
            r0, r1 = -(-a // rb), min(b // rb, self.n_rows)
            if r1 > r0:
                blocks.append((r0, r1, buf[r0 * rb - a : r1 * rb - a].view(ds.dtype).reshape(r1 - r0, L)))
        return blocks

    # -- reading ---------------------------------------------------------------------------------------------
    def _range(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` as a fresh ``[hi - lo, seq_len]`` array."""
        L = self.seq_len
        if self._npy is not None:
            return np.array(self._npy[lo:hi], copy=True)
        ds = self._ds
        if hi == lo:
            return np.empty((0, L), dtype=self.dtype)
        if self.packing == "rows":
            start = int(ds.pointers[lo]) // ds.dtype.itemsize  # pointers are contiguous (validated)
        else:
            start = lo * L
        toks = ds.read_tokens(start, (hi - lo) * L)
        if not toks.flags.writeable:  # a read-only memmap view: copy; a shard-straddling read is already a copy
            toks = toks.copy()
        return toks.astype(self.dtype.newbyteorder("="), copy=False).reshape(hi - lo, L)

    def rows(self, global_indices) -> np.ndarray:
        """Rows at arbitrary global indices ``[len, seq_len]`` (any order, repeats allowed)."""
        g = self.checked_indices(global_indices)
        out = np.empty((g.size, self.seq_len), dtype=self.dtype.newbyteorder("="))
        if self._npy is not None:
            out[:] = self._npy[g]
            return out
        done = np.zeros(g.size, dtype=bool)
        for r0, r1, view in self._blocks:
            m = (g >= r0) & (g < r1)
            if m.any():
                out[m] = view[g[m] - r0]
                done |= m
        for j in np.flatnonzero(~done).tolist():  # rows straddling a shard boundary
            out[j] = self._range_view(int(g[j]))
        return out

    def _range_view(self, i: int) -> np.ndarray:
        ds = self._ds
        start = int(ds.pointers[i]) // ds.dtype.itemsize if self.packing == "rows" else i * self.seq_len
        return ds.read_tokens(start, self.seq_len)

    def __repr__(self) -> str:
        return (
            f"PythiaBatches({self.path!r}, batch_size={self.batch_size}, seq_len={self.seq_len}, "
            f"n_rows={self.n_rows}, n_steps={self.n_steps})"
        )

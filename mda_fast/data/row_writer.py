"""Packing tokenized documents into rows as they come, in constant memory: the Megatron ``.bin`` / ``.idx`` and the
per-row category counts of one or more labellings, written without ever holding the corpus.

The rows are those of :func:`mda_fast.data.packing.pack_documents` for the same documents (``stream``: every
document followed by EOD, all cut into rows of ``seq_len``, the partial last row dropped; ``rows``: every document
starts a row, its last row padded with EOD), and the fractions those of :func:`~mda_fast.data.packing.row_fractions`
(an EOD and the padding after it count toward the document they end).
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np

from .megatron_format import HEADER, MAGIC, VERSION, dtype_code

__all__ = ["RowWriter", "NpyAppender", "MAX_COLUMNS"]

#: labels one labelling may have (a column each in the sidecar)
MAX_COLUMNS = 4096


class _Spool:
    """A temporary file written as the build streams (``path``, open as ``fh``), turned into its ``.npy`` at the end."""

    path: str

    def close(self) -> None:
        self.fh.close()


class NpyAppender(_Spool):
    """Rows of a fixed width and dtype appended to a raw file, turned into a ``.npy`` at :meth:`save`."""

    def __init__(self, path: str, dtype, width: int):
        self.path, self.dtype, self.width, self.n = path, np.dtype(dtype), width, 0
        self.fh = open(path, "wb")

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype).reshape(-1, self.width)
        self.fh.write(rows.tobytes())
        self.n += rows.shape[0]

    def save(self, dest: str, chunk_rows: int = 1 << 16) -> None:
        """Write the rows as ``dest`` (an ``.npy``) and delete the raw file."""
        self.fh.close()
        out = np.lib.format.open_memmap(dest, mode="w+", dtype=self.dtype, shape=(self.n, self.width))
        for r0 in range(0, self.n, chunk_rows):
            k = min(chunk_rows, self.n - r0)
            out[r0 : r0 + k] = np.fromfile(
                self.path, dtype=self.dtype, count=k * self.width, offset=r0 * self.width * self.dtype.itemsize
            ).reshape(k, self.width)
        out.flush()
        del out
        os.remove(self.path)


class _Counts(_Spool):
    """Per-row token counts of one labelling, for the rows in the buffer; flushed as chunks of the columns seen."""

    def __init__(self, path: str, rows: int):
        self.counts = np.zeros((rows, 64), dtype=np.int64)
        self.n_cols = 0
        self.totals = np.zeros(64, dtype=np.int64)
        self.fh = open(path, "wb")
        self.path = path

    def add(self, col: int, r0: int, r1: int, first: int, last: int, S: int) -> None:
        """A piece of one document over buffer rows ``r0..r1``: ``first`` tokens in row ``r0``, whole rows between,
        ``last`` tokens in row ``r1`` (``r0 == r1``: ``first`` tokens in that row)."""
        if col >= self.counts.shape[1]:
            w = max(col + 1, 2 * self.counts.shape[1])
            self.counts = np.pad(self.counts, ((0, 0), (0, w - self.counts.shape[1])))
            self.totals = np.pad(self.totals, (0, w - self.totals.size))
        self.n_cols = max(self.n_cols, col + 1)
        c = self.counts
        c[r0, col] += first
        if r1 != r0:
            c[r0 + 1 : r1, col] += S
            c[r1, col] += last

    def flush(self, n_rows: int, S: int) -> None:
        """Write the first ``n_rows`` rows (the columns seen so far) and shift the partial row to row 0."""
        if n_rows:
            block = self.counts[:n_rows, : self.n_cols]
            self.totals[: self.n_cols] += block.sum(axis=0)
            np.array([n_rows, self.n_cols], dtype=np.int64).tofile(self.fh)
            block.astype(np.int32).tofile(self.fh)
        self.counts[0] = self.counts[n_rows] if n_rows < self.counts.shape[0] else 0
        self.counts[1:] = 0

    def save(self, dest_npy: str, n_rows: int, S: int, order: Sequence[int]) -> None:
        """The fractions ``[n_rows, len(order)]`` float32 (column ``j`` = seen column ``order[j]``) as ``dest``."""
        self.fh.close()
        out = np.lib.format.open_memmap(dest_npy, mode="w+", dtype=np.float32, shape=(n_rows, len(order)))
        order = np.asarray(order, dtype=np.int64)
        with open(self.path, "rb") as fh:
            r = 0
            while r < n_rows:
                k, w = np.fromfile(fh, dtype=np.int64, count=2).tolist()
                block = np.fromfile(fh, dtype=np.int32, count=k * w).reshape(k, w)
                wide = np.zeros((k, max(w, int(order.max(initial=-1)) + 1)), dtype=np.float64)
                wide[:, :w] = block
                out[r : r + k] = (wide[:, order] / S).astype(np.float32)
                r += k
        out.flush()
        del out
        os.remove(self.path)


class RowWriter:
    """``add(tokens, cols)`` documents in order; :meth:`finish` writes ``PREFIX.idx`` and the fractions.

    ``cols``: the document's column in each labelling (``n_views`` of them). The token stream goes to
    ``PREFIX.bin`` as rows fill; memory holds one buffer of rows (about 4 Mi tokens) and its counts.
    """

    def __init__(
        self, prefix: str, seq_len: int, packing: str, eod: int, dtype, n_views: int, buffer_rows: Optional[int] = None
    ):
        self.prefix, self.S, self.packing, self.eod = prefix, int(seq_len), packing, int(eod)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.B = int(buffer_rows or max(2, (1 << 22) // self.S))  # rows in the buffer
        self.buf = np.empty(self.B * self.S, dtype=self.dtype)
        self.fill = 0  # tokens in the buffer
        self.base = 0  # global index of the buffer's first token
        self.n_rows = 0
        self.pad = 0
        self.bin = open(prefix + ".bin", "wb")
        self.views = [_Counts(f"{prefix}.counts{v}.tmp", self.B) for v in range(n_views)]

    def add(self, tokens: np.ndarray, cols: Sequence[int]) -> int:
        """Append one document (its EOD, and with ``rows`` packing its padding); returns its first token's index in
        the flattened rows."""
        start = self.base + self.fill
        n = int(tokens.size) + 1
        pad = (-n) % self.S if self.packing == "rows" else 0
        self.pad += pad
        self._put(np.asarray(tokens), cols, tail=1 + pad)
        return start

    def _put(self, tokens: np.ndarray, cols: Sequence[int], tail: int) -> None:
        """``tokens`` then ``tail`` EOD tokens into the buffer, flushing whole buffers."""
        total, done = int(tokens.size) + tail, 0
        while done < total:
            take = min(total - done, self.buf.size - self.fill)
            lo, hi = done, done + take
            dst = self.buf[self.fill : self.fill + take]
            k = max(0, min(hi, tokens.size) - lo)  # document tokens in this piece
            if k:
                dst[:k] = tokens[lo : lo + k]
            dst[k:] = self.eod
            a, b = self.fill, self.fill + take  # [a, b) in the buffer
            r0, r1 = a // self.S, (b - 1) // self.S
            first = (min(b, (r0 + 1) * self.S) - a) if r0 != r1 else take
            last = b - r1 * self.S
            for v, col in zip(self.views, cols):
                v.add(int(col), r0, r1, first, last, self.S)
            self.fill += take
            done = hi
            if self.fill == self.buf.size:
                self._flush()

    def _flush(self) -> None:
        full = self.fill // self.S
        if full:
            self.buf[: full * self.S].tofile(self.bin)
            for v in self.views:
                v.flush(full, self.S)
            rest = self.fill - full * self.S
            self.buf[:rest] = self.buf[full * self.S : self.fill]
            self.fill = rest
            self.base += full * self.S
            self.n_rows += full

    def finish(self, orders: List[Sequence[int]], dests: List[str]) -> dict:
        """Flush the whole rows (with ``stream`` the partial last row is dropped), write ``PREFIX.idx`` and each
        labelling's fractions to ``dests[v]`` with its columns in ``orders[v]``; returns ``{"n_rows",
        "dropped_tokens", "pad_tokens", "tokens_by_column" (per labelling: row tokens of each seen column)}``."""
        self._flush()
        dropped = self.fill  # < S: the partial last row
        self.bin.close()
        self._write_idx()
        totals = []
        for v, order, dest in zip(self.views, orders, dests):
            totals.append(v.totals[: v.n_cols].tolist())
            v.save(dest, self.n_rows, self.S, order)
        return {"n_rows": self.n_rows, "dropped_tokens": int(dropped), "pad_tokens": int(self.pad), "tokens": totals}

    def _write_idx(self, chunk: int = 1 << 20) -> None:
        n = self.n_rows
        with open(self.prefix + ".idx", "wb") as f:
            f.write(HEADER.pack(MAGIC, VERSION, dtype_code(self.dtype), n, n + 1))
            for r0 in range(0, n, chunk):
                np.full(min(chunk, n - r0), self.S, dtype="<i4").tofile(f)
            step = self.S * self.dtype.itemsize
            for r0 in range(0, n, chunk):
                (np.arange(r0, min(n, r0 + chunk), dtype="<i8") * step).tofile(f)
            for r0 in range(0, n + 1, chunk):
                np.arange(r0, min(n + 1, r0 + chunk), dtype="<i8").tofile(f)

    def close(self) -> None:
        """Close the open files (after a failure; the caller removes them)."""
        self.bin.close()
        for v in self.views:
            v.close()

    def temp_files(self) -> List[str]:
        return [self.prefix + ".bin", self.prefix + ".idx"] + [v.path for v in self.views]


def sidecar_order(labels: List[str], fixed: Optional[Sequence[str]] = None) -> List[str]:
    """The sidecar's column names: ``fixed`` (all of them, in order) then the other ``labels`` sorted."""
    fixed = list(fixed or [])
    return fixed + sorted(set(labels) - set(fixed))

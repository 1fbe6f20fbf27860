"""Megatron ``MMapIndexedDataset`` files: a validating zero-copy reader and a matching writer.

The ``.idx`` layout is in :mod:`mda_fast.data.megatron_format`. The token stream is raw tokens with no header. One ``<prefix>.idx`` describes the whole stream, which is either
one file ``<prefix>.bin`` or a plain byte split of that file into shards, following Pythia's convention:
``<prefix>-IIIII-of-LLLLL.bin`` for ``IIIII = 00000 .. LLLLL``, where the number after ``of`` is the **last
index**, not the count. Pythia's preshuffled Pile (standard and deduped) is ``document-00000-of-00020.bin`` ...
``document-00020-of-00020.bin``, 21 shards, plus ``document.idx``; Pythia's ``utils/unshard_memmap.py`` is run
with ``--num_shards 21`` on them and writes the unsharded ``document.bin``. Both layouts are read. Shards split
the stream at arbitrary byte positions, so a sequence (and, for an odd split, a token) may straddle two shards;
such a read is reassembled (a copy). Any zero-padded index width is accepted; every shard must carry the same
last index. A missing, duplicated or out-of-range shard, two token streams for one prefix, or shard sizes that do
not sum to the byte count the ``.idx`` implies raise :class:`~mda_fast.errors.DataError` naming the convention.
A set whose indices run ``0 .. N-1`` under ``-of-N`` (``of`` read as a count) is refused, never read short.

Codes 6/7 follow this project's spec (6 = f32, 7 = f64); Megatron-core swaps them. Token files are never float,
and a swapped float file fails the pointer/size check instead of being misread.
"""

from __future__ import annotations

import os
from typing import List, Tuple, Union

import numpy as np

from ..errors import DataError, MissingDataError
from .megatron_format import CODE_OF, DTYPE_CODES, HEADER, MAGIC, VERSION, dtype_code  # noqa: F401
from .megatron_shards import SHARD_CONVENTION, resolve_prefix, shard_bin_paths, shard_files
from .megatron_writer import write_megatron

__all__ = [
    "MMapIndexedDataset",
    "MissingDataError",
    "write_megatron",
    "DTYPE_CODES",
    "shard_bin_paths",
    "resolve_prefix",
    "SHARD_CONVENTION",
]

_CHECK_CHUNK = 1 << 22  # entries per chunk when validating pointers (bounded memory on Pythia's 146M entries)


def _starts_with(path: str, head: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(head)) == head


def _map(path: str, nbytes: int) -> np.ndarray:
    if nbytes == 0:  # mmap cannot map an empty file
        return np.empty(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)


_LFS_POINTER = b"version https://git-lfs"


class MMapIndexedDataset:
    """Read-only, validated, zero-copy view of a Megatron dataset.

    ``path_prefix`` names ``<prefix>.idx`` plus either ``<prefix>.bin`` or the shards
    ``<prefix>-IIIII-of-LLLLL.bin``, ``IIIII = 00000..LLLLL`` (Pythia's convention: ``LLLLL`` is the last index).
    It may be written as ``<prefix>``, ``<prefix>.idx``, ``<prefix>.bin``, shard 0's path, or a directory holding
    one ``.idx`` (see :func:`resolve_prefix`). ``ds[i]`` is the i-th sequence as a read-only array view of the
    memory map (a copy only when it straddles a shard boundary). An inconsistency raises :class:`DataError`
    naming the file; an absent ``.idx`` or token stream raises :class:`MissingDataError`.
    """

    def __init__(self, path_prefix: Union[str, os.PathLike]):
        self.path_prefix = resolve_prefix(path_prefix)
        self.idx_path = self.path_prefix + ".idx"
        self._read_index()
        self._open_bin()
        self._validate_pointers()
        self._uniform = None
        if self._n and all(
            bool((self.sizes[lo : lo + _CHECK_CHUNK] == self.sizes[0]).all()) for lo in range(0, self._n, _CHECK_CHUNK)
        ):
            self._uniform = int(self.sizes[0])

    # -- index -----------------------------------------------------------------------------------------------
    def _read_index(self) -> None:
        path = self.idx_path
        if not os.path.isfile(path):
            raise MissingDataError(
                f"Megatron index not found: {path!r}; one .idx describes the whole token stream and must sit "
                f"beside {os.path.basename(self.path_prefix) + '.bin'!r} or its shards (Pythia ships document.idx; "
                f"copy it next to the document.bin that unshard_memmap.py writes)"
            )
        fsize = os.path.getsize(path)
        if fsize < HEADER.size:
            raise DataError(f"{path!r}: truncated index: {fsize} bytes, header alone needs {HEADER.size}")
        with open(path, "rb") as f:
            magic, version, code, n, doc_count = HEADER.unpack(f.read(HEADER.size))
        if magic != MAGIC:
            raise DataError(f"{path!r}: bad magic {magic!r}, expected {MAGIC!r} (not a Megatron .idx file)")
        if version != VERSION:
            raise DataError(f"{path!r}: unsupported index version {version}, expected {VERSION}")
        if code not in DTYPE_CODES:
            raise DataError(f"{path!r}: unknown dtype code {code}, expected one of {sorted(DTYPE_CODES)}")
        expected = HEADER.size + 4 * n + 8 * n + 8 * doc_count
        if fsize != expected:
            kind = "truncated" if fsize < expected else "oversized"
            raise DataError(
                f"{path!r}: {kind} index: {fsize} bytes, but the header (len={n}, doc_count={doc_count}) "
                f"implies {expected}"
            )
        self.dtype = DTYPE_CODES[code]
        self._itemsize = self.dtype.itemsize
        mm = _map(path, fsize)
        off = HEADER.size
        self.sizes = mm[off : off + 4 * n].view("<i4")
        off += 4 * n
        self.pointers = mm[off : off + 8 * n].view("<i8")
        off += 8 * n
        self.doc_idx = mm[off : off + 8 * doc_count].view("<i8")
        self._n = int(n)
        if doc_count == 0:
            raise DataError(f"{path!r}: doc_count is 0; a Megatron index always holds doc_idx[0] = 0")
        d = self.doc_idx
        decreasing = any(
            bool((np.diff(d[lo : lo + _CHECK_CHUNK + 1]) < 0).any())
            for lo in range(0, max(doc_count - 1, 0), _CHECK_CHUNK)
        )
        if d[0] != 0 or d[-1] != n or decreasing:
            raise DataError(
                f"{path!r}: inconsistent doc_idx: expected non-decreasing from 0 to len={n}, "
                f"got first {int(d[0])}, last {int(d[-1])}"
            )

    # -- token stream ----------------------------------------------------------------------------------------
    def _open_bin(self) -> None:
        single = self.path_prefix + ".bin"
        names = [name for _, _, name in shard_files(self.path_prefix)]
        if os.path.isfile(single) and names:
            raise DataError(
                f"two token streams for {self.path_prefix!r}: the unsharded {single!r} and {len(names)} shard "
                f"file(s) {names[0]!r}..{names[-1]!r}; keep one of them (unshard_memmap.py's document.bin replaces "
                f"the shards: delete them, or give document.bin and a copy of document.idx their own directory). "
                f"{SHARD_CONVENTION}"
            )
        if os.path.isfile(single):
            paths = [single]
        else:
            paths = shard_bin_paths(self.path_prefix)
            if not paths:
                raise MissingDataError(
                    f"no token stream for {self.idx_path!r}: expected {single!r} or the shards "
                    f"'{self.path_prefix}-00000-of-LLLLL.bin'..'-LLLLL-of-LLLLL.bin'; {SHARD_CONVENTION}"
                )
        self.bin_paths = paths
        sizes = [os.path.getsize(p) for p in paths]
        self._shard_start = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._shards = [_map(p, s) for p, s in zip(paths, sizes)]
        self.nbytes = int(self._shard_start[-1])

    def _stream_hint(self) -> str:
        """For a size mismatch of a shard set: the convention plus the shards that look truncated or are LFS stubs."""
        if len(self.bin_paths) == 1:
            return ""
        sizes = np.diff(self._shard_start)
        hints = []
        lfs = [os.path.basename(p) for p, n in zip(self.bin_paths, sizes) if n < 1024 and _starts_with(p, _LFS_POINTER)]
        if lfs:
            hints.append(f"Git LFS pointer files, not data (run git lfs pull): {lfs[:5]}")
        odd = [os.path.basename(p) for p, n in zip(self.bin_paths[1:-1], sizes[1:-1]) if n != sizes[0]]
        if odd:
            hints.append(f"shards whose size differs from shard 0's {int(sizes[0])} bytes: {odd[:5]}")
        return "; ".join(hints + [f"the shards are a byte split of one stream. {SHARD_CONVENTION}"])

    def _bin_name(self) -> str:
        if len(self.bin_paths) == 1:
            return repr(self.bin_paths[0])
        return f"{len(self.bin_paths)} shards {self.bin_paths[0]!r}..{os.path.basename(self.bin_paths[-1])!r}"

    def _validate_pointers(self) -> None:
        n, isz = self._n, self._itemsize
        expected_end = 0
        for lo in range(0, n, _CHECK_CHUNK):
            hi = min(n, lo + _CHECK_CHUNK)
            s = self.sizes[lo:hi].astype(np.int64)
            p = self.pointers[lo:hi]
            if bool((s < 0).any()):
                i = lo + int(np.argmax(s < 0))
                raise DataError(f"{self.idx_path!r}: negative size {int(self.sizes[i])} for sequence {i}")
            starts = expected_end + np.concatenate([[0], np.cumsum(s[:-1] * isz)])
            bad = p != starts
            if bool(bad.any()):
                i = int(np.argmax(bad))
                raise DataError(
                    f"{self.idx_path!r}: inconsistent pointers/sizes: pointer[{lo + i}] = {int(p[i])} but the "
                    f"sizes before it imply byte offset {int(starts[i])} ({self.dtype}, {isz} bytes/token)"
                )
            expected_end = int(starts[-1] + s[-1] * isz)
        if expected_end != self.nbytes:
            kind = "truncated" if self.nbytes < expected_end else "oversized"
            hint = self._stream_hint()
            raise DataError(
                f"{kind} token stream {self._bin_name()}: {self.nbytes} bytes, but {self.idx_path!r} "
                f"describes {expected_end} bytes ({n} sequences of {self.dtype})" + (f"; {hint}" if hint else "")
            )

    # -- access ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def uniform_size(self):
        """The common sequence length when every sequence has the same size, else ``None``."""
        return self._uniform

    def segments(self) -> List[Tuple[int, np.ndarray]]:
        """``(first byte, uint8 memmap view)`` of each token-stream file in order (one for ``<prefix>.bin``)."""
        return [(int(start), buf) for start, buf in zip(self._shard_start[:-1], self._shards)]

    def read_bytes(self, lo: int, hi: int) -> np.ndarray:
        """Bytes ``[lo, hi)`` of the token stream (uint8): a view inside one shard, a copy across shards."""
        if not 0 <= lo <= hi <= self.nbytes:
            raise IndexError(f"byte range [{lo}, {hi}) outside the token stream of {self.nbytes} bytes")
        starts = self._shard_start
        if len(self._shards) == 1:
            return self._shards[0][lo:hi]
        s = int(np.searchsorted(starts, lo, side="right")) - 1
        s = min(s, len(self._shards) - 1)
        if hi <= starts[s + 1]:
            return self._shards[s][lo - starts[s] : hi - starts[s]]
        parts = []
        pos = lo
        while pos < hi:
            while starts[s + 1] <= pos:
                s += 1
            end = min(hi, int(starts[s + 1]))
            parts.append(self._shards[s][pos - starts[s] : end - starts[s]])
            pos = end
        return np.concatenate(parts)

    def read_tokens(self, start: int, count: int) -> np.ndarray:
        """``count`` tokens of the concatenated stream starting at token ``start``."""
        b = self.read_bytes(start * self._itemsize, (start + count) * self._itemsize)
        return b.view(self.dtype)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int or a slice, got {type(i).__name__}")
        n = self._n
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sequence index {i} out of range for {n} sequences")
        lo = int(self.pointers[i])
        return self.read_bytes(lo, lo + int(self.sizes[i]) * self._itemsize).view(self.dtype)

    def __repr__(self) -> str:
        return (
            f"MMapIndexedDataset({self.path_prefix!r}, len={self._n}, dtype={self.dtype}, shards={len(self.bin_paths)})"
        )

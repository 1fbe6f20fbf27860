"""Megatron ``MMapIndexedDataset`` files: a validating zero-copy reader and a matching writer.

``.idx`` layout (little-endian)::

    9 bytes  b"MMIDIDX\\x00\\x00"
    u64      version (1)
    u8       dtype code: 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f32, 7 f64, 8 u16
    u64      len        (number of sequences)
    u64      doc_count
    i32      sizes[len]        tokens per sequence
    i64      pointers[len]     byte offset of each sequence in the token stream
    i64      doc_idx[doc_count]

The token stream is raw tokens with no header, either in one file ``<prefix>.bin`` or split at arbitrary byte
positions into shards ``<prefix>-00000-of-00020.bin`` ... ``<prefix>-00019-of-00020.bin`` (Pythia's published
layout: a plain byte-concatenation; any zero-padded width is accepted, the count must agree across shards).

Codes 6/7 follow this project's spec (6 = f32, 7 = f64); Megatron-core swaps them. Token files are never float,
and a swapped float file fails the pointer/size check instead of being misread.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Iterable, List, Sequence, Union

import numpy as np

__all__ = ["MMapIndexedDataset", "write_megatron", "DTYPE_CODES", "shard_bin_paths"]

_MAGIC = b"MMIDIDX\x00\x00"
_VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, len, doc_count -> 34 bytes

DTYPE_CODES = {
    1: np.dtype("<u1"),
    2: np.dtype("<i1"),
    3: np.dtype("<i2"),
    4: np.dtype("<i4"),
    5: np.dtype("<i8"),
    6: np.dtype("<f4"),
    7: np.dtype("<f8"),
    8: np.dtype("<u2"),
}
_CODE_OF = {dt: code for code, dt in DTYPE_CODES.items()}
_CHECK_CHUNK = 1 << 22  # entries per chunk when validating pointers (bounded memory on Pythia's 146M entries)


def _strip_prefix(path_prefix: Union[str, os.PathLike]) -> str:
    p = os.fspath(path_prefix)
    for ext in (".idx", ".bin"):
        if p.endswith(ext):
            return p[: -len(ext)]
    return p


def _dtype_code(dtype) -> int:
    dt = np.dtype(dtype).newbyteorder("<")
    if dt not in _CODE_OF:
        raise TypeError(
            f"dtype {np.dtype(dtype)} has no Megatron dtype code; expected one of "
            f"{sorted(str(d) for d in _CODE_OF)}"
        )
    return _CODE_OF[dt]


def shard_bin_paths(path_prefix: str) -> List[str]:
    """Paths of the sharded token stream ``<prefix>-IIIII-of-NNNNN.bin`` in order; ``[]`` when there is none.

    Raises ``ValueError`` when shards are missing, duplicated or disagree on the shard count.
    """
    prefix = _strip_prefix(path_prefix)
    directory = os.path.dirname(prefix) or "."
    base = os.path.basename(prefix)
    pattern = re.compile(re.escape(base) + r"-(\d+)-of-(\d+)\.bin$")
    found = {}
    totals = set()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        i, n = int(m.group(1)), int(m.group(2))
        totals.add(n)
        if i in found:
            raise ValueError(f"duplicate shard index {i} for {prefix!r}: {found[i]!r} and {name!r}")
        found[i] = name
    if not found:
        return []
    if len(totals) != 1:
        raise ValueError(f"shards of {prefix!r} disagree on the shard count: saw -of-{sorted(totals)}")
    (n,) = totals
    missing = sorted(set(range(n)) - set(found))
    extra = sorted(set(found) - set(range(n)))
    if missing or extra:
        raise ValueError(
            f"incomplete shard set for {prefix!r}: expected indices 0..{n - 1} of {n}, "
            f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}, out of range {extra[:10]}"
        )
    return [os.path.join(directory, found[i]) for i in range(n)]


def _map(path: str, nbytes: int) -> np.ndarray:
    if nbytes == 0:  # mmap cannot map an empty file
        return np.empty(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)


class MMapIndexedDataset:
    """Read-only, validated, zero-copy view of a Megatron dataset.

    ``path_prefix`` names ``<prefix>.idx`` plus either ``<prefix>.bin`` or the shards
    ``<prefix>-IIIII-of-NNNNN.bin`` (a trailing ``.idx``/``.bin`` is stripped). ``ds[i]`` is the i-th sequence
    as a read-only array view of the memory map (a copy only when it straddles a shard boundary).
    Any inconsistency raises ``ValueError`` naming the file.
    """

    def __init__(self, path_prefix: Union[str, os.PathLike]):
        self.path_prefix = _strip_prefix(path_prefix)
        self.idx_path = self.path_prefix + ".idx"
        self._read_index()
        self._open_bin()
        self._validate_pointers()
        self._uniform = None
        if self._n and all(bool((self.sizes[lo: lo + _CHECK_CHUNK] == self.sizes[0]).all())
                           for lo in range(0, self._n, _CHECK_CHUNK)):
            self._uniform = int(self.sizes[0])

    # -- index -----------------------------------------------------------------------------------------------
    def _read_index(self) -> None:
        path = self.idx_path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Megatron index not found: {path!r}")
        fsize = os.path.getsize(path)
        if fsize < _HEADER.size:
            raise ValueError(f"{path!r}: truncated index: {fsize} bytes, header alone needs {_HEADER.size}")
        with open(path, "rb") as f:
            magic, version, code, n, doc_count = _HEADER.unpack(f.read(_HEADER.size))
        if magic != _MAGIC:
            raise ValueError(f"{path!r}: bad magic {magic!r}, expected {_MAGIC!r} (not a Megatron .idx file)")
        if version != _VERSION:
            raise ValueError(f"{path!r}: unsupported index version {version}, expected {_VERSION}")
        if code not in DTYPE_CODES:
            raise ValueError(f"{path!r}: unknown dtype code {code}, expected one of {sorted(DTYPE_CODES)}")
        expected = _HEADER.size + 4 * n + 8 * n + 8 * doc_count
        if fsize != expected:
            kind = "truncated" if fsize < expected else "oversized"
            raise ValueError(
                f"{path!r}: {kind} index: {fsize} bytes, but the header (len={n}, doc_count={doc_count}) "
                f"implies {expected}"
            )
        self.dtype = DTYPE_CODES[code]
        self._itemsize = self.dtype.itemsize
        mm = _map(path, fsize)
        off = _HEADER.size
        self.sizes = mm[off : off + 4 * n].view("<i4")
        off += 4 * n
        self.pointers = mm[off : off + 8 * n].view("<i8")
        off += 8 * n
        self.doc_idx = mm[off : off + 8 * doc_count].view("<i8")
        self._n = int(n)
        if doc_count == 0:
            raise ValueError(f"{path!r}: doc_count is 0; a Megatron index always holds doc_idx[0] = 0")
        d = self.doc_idx
        decreasing = any(bool((np.diff(d[lo: lo + _CHECK_CHUNK + 1]) < 0).any())
                         for lo in range(0, max(doc_count - 1, 0), _CHECK_CHUNK))
        if d[0] != 0 or d[-1] != n or decreasing:
            raise ValueError(
                f"{path!r}: inconsistent doc_idx: expected non-decreasing from 0 to len={n}, "
                f"got first {int(d[0])}, last {int(d[-1])}"
            )

    # -- token stream ----------------------------------------------------------------------------------------
    def _open_bin(self) -> None:
        single = self.path_prefix + ".bin"
        shards = shard_bin_paths(self.path_prefix)
        if os.path.isfile(single) and shards:
            raise ValueError(
                f"ambiguous token stream for {self.path_prefix!r}: both {single!r} and {len(shards)} shards exist"
            )
        if os.path.isfile(single):
            paths = [single]
        elif shards:
            paths = shards
        else:
            raise FileNotFoundError(
                f"no token stream for {self.idx_path!r}: expected {single!r} or shards "
                f"'{self.path_prefix}-00000-of-NNNNN.bin'"
            )
        self.bin_paths = paths
        sizes = [os.path.getsize(p) for p in paths]
        self._shard_start = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._shards = [_map(p, s) for p, s in zip(paths, sizes)]
        self.nbytes = int(self._shard_start[-1])

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
                raise ValueError(f"{self.idx_path!r}: negative size {int(self.sizes[i])} for sequence {i}")
            starts = expected_end + np.concatenate([[0], np.cumsum(s[:-1] * isz)])
            bad = p != starts
            if bool(bad.any()):
                i = int(np.argmax(bad))
                raise ValueError(
                    f"{self.idx_path!r}: inconsistent pointers/sizes: pointer[{lo + i}] = {int(p[i])} but the "
                    f"sizes before it imply byte offset {int(starts[i])} ({self.dtype}, {isz} bytes/token)"
                )
            expected_end = int(starts[-1] + s[-1] * isz)
        if expected_end != self.nbytes:
            kind = "truncated" if self.nbytes < expected_end else "oversized"
            raise ValueError(
                f"{kind} token stream {self._bin_name()}: {self.nbytes} bytes, but {self.idx_path!r} "
                f"describes {expected_end} bytes ({n} sequences of {self.dtype})"
            )

    # -- access ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def uniform_size(self):
        """The common sequence length when every sequence has the same size, else ``None``."""
        return self._uniform

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
            f"MMapIndexedDataset({self.path_prefix!r}, len={self._n}, dtype={self.dtype}, "
            f"shards={len(self.bin_paths)})"
        )


def write_megatron(
    path_prefix: Union[str, os.PathLike],
    sequences: Union[np.ndarray, Sequence[Iterable[int]]],
    dtype=np.uint16,
    n_shards: int = 1,
    doc_idx=None,
) -> List[str]:
    """Write ``sequences`` (a 2-D array or a list of 1-D token arrays) as a Megatron dataset.

    Writes ``<prefix>.idx`` and, for ``n_shards == 1``, ``<prefix>.bin``; otherwise ``n_shards`` files
    ``<prefix>-IIIII-of-NNNNN.bin`` (5-digit, Pythia's naming) that split the byte stream into near-equal parts
    at arbitrary byte positions (a token may straddle two shards), as Pythia's published shards do.
    ``doc_idx`` defaults to ``0..len`` (every sequence is one document, as in Pythia's preshuffled files).
    Integer values outside ``dtype``'s range raise ``ValueError``. Returns the paths written.
    """
    prefix = _strip_prefix(path_prefix)
    dt = np.dtype(dtype).newbyteorder("<")
    code = _dtype_code(dt)
    if not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
        raise ValueError(f"n_shards must be a positive int, got {n_shards!r}")
    if isinstance(sequences, np.ndarray) and sequences.ndim == 2:
        seqs = [sequences[i] for i in range(sequences.shape[0])]
    else:
        seqs = [np.asarray(s) for s in sequences]
    for i, s in enumerate(seqs):
        if s.ndim != 1:
            raise ValueError(f"sequence {i} must be 1-D, got shape {s.shape}")
        if s.size and dt.kind in "iu":
            if s.dtype.kind not in "iub":
                raise TypeError(f"sequence {i} has dtype {s.dtype}; expected integers for a {dt} file")
            info = np.iinfo(dt)
            lo, hi = int(s.min()), int(s.max())
            if lo < info.min or hi > info.max:
                raise ValueError(f"sequence {i} holds values in [{lo}, {hi}], outside {dt}'s [{info.min}, {info.max}]")
    sizes = np.array([s.size for s in seqs], dtype=np.int64)
    if sizes.size and sizes.max() > np.iinfo(np.int32).max:
        raise ValueError(f"a sequence of {int(sizes.max())} tokens exceeds the i32 size field")
    pointers = np.concatenate([[0], np.cumsum(sizes * dt.itemsize)[:-1]]).astype("<i8") if len(seqs) else np.zeros(0, "<i8")
    if doc_idx is None:
        doc_idx = np.arange(len(seqs) + 1, dtype="<i8")
    doc_idx = np.asarray(doc_idx, dtype="<i8")

    single = prefix + ".bin"
    existing = shard_bin_paths(prefix) if os.path.dirname(prefix) == "" or os.path.isdir(os.path.dirname(prefix)) else []
    if n_shards == 1 and existing:
        raise ValueError(f"{prefix!r} already has {len(existing)} .bin shards; delete them before writing {single!r}")
    if n_shards > 1 and os.path.exists(single):
        raise ValueError(f"{single!r} exists; delete it before writing {prefix!r} as {n_shards} shards")
    if n_shards > 1 and existing and len(existing) != n_shards:
        raise ValueError(f"{prefix!r} already has {len(existing)} shards; delete them before writing {n_shards}")

    total = int(sizes.sum()) * dt.itemsize
    if n_shards == 1:
        paths = [single]
        bounds = [0, total]
    else:
        paths = [f"{prefix}-{i:05d}-of-{n_shards:05d}.bin" for i in range(n_shards)]
        per = -(-total // n_shards)
        bounds = [min(total, i * per) for i in range(n_shards + 1)]

    os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
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
    with open(prefix + ".idx", "wb") as f:
        f.write(_HEADER.pack(_MAGIC, _VERSION, code, len(seqs), len(doc_idx)))
        f.write(sizes.astype("<i4").tobytes())
        f.write(pointers.tobytes())
        f.write(doc_idx.tobytes())
    return [prefix + ".idx"] + paths

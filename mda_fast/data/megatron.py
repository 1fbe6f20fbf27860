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

The token stream is raw tokens with no header. One ``<prefix>.idx`` describes the whole stream, which is either
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
import re
import struct
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError

__all__ = ["MMapIndexedDataset", "MissingDataError", "write_megatron", "DTYPE_CODES", "shard_bin_paths",
           "resolve_prefix", "SHARD_CONVENTION"]

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

SHARD_CONVENTION = (
    "Pythia's shard convention: <prefix>-IIIII-of-LLLLL.bin for IIIII = 00000..LLLLL, where LLLLL is the LAST "
    "index, not the count: document-00000-of-00020.bin .. document-00020-of-00020.bin are 21 shards"
)
_SHARD_NAME = re.compile(r"(.+)-\d+-of-\d+")
_LFS_POINTER = b"version https://git-lfs"


class MissingDataError(DataError, FileNotFoundError):
    """A Megatron ``.idx`` or its token stream is absent (a :class:`DataError` and a ``FileNotFoundError``)."""


def _strip_prefix(path_prefix: Union[str, os.PathLike]) -> str:
    p = os.fspath(path_prefix)
    for ext in (".idx", ".bin"):
        if p.endswith(ext):
            return p[: -len(ext)]
    return p


def resolve_prefix(path: Union[str, os.PathLike]) -> str:
    """The dataset prefix ``path`` names: ``<prefix>``, ``<prefix>.idx``, ``<prefix>.bin``, a shard
    ``<prefix>-00000-of-00020.bin`` (what Pythia's ``unshard_memmap.py --input_file`` takes), or a directory
    holding exactly one ``.idx`` (e.g. a download of ``pile-deduped-pythia-preshuffled/``).

    Raises :class:`MissingDataError` for a directory without a ``.idx``, :class:`DataError` for one with several.
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        idx = sorted(n for n in os.listdir(p) if n.endswith(".idx"))
        if not idx:
            raise MissingDataError(
                f"directory {p!r} holds no Megatron .idx: expected Pythia's document.idx beside document.bin or "
                f"the shards document-IIIII-of-LLLLL.bin"
            )
        if len(idx) > 1:
            raise DataError(f"directory {p!r} holds several Megatron indexes {idx}; name one prefix, e.g. "
                            f"{os.path.join(p, idx[0][:-4])!r}")
        return os.path.join(p, idx[0][:-4])
    prefix = _strip_prefix(p)
    m = _SHARD_NAME.fullmatch(os.path.basename(prefix))
    if p.endswith(".bin") and m is not None and not os.path.isfile(prefix + ".idx"):
        return os.path.join(os.path.dirname(prefix), m.group(1))
    return prefix


def _dtype_code(dtype) -> int:
    dt = np.dtype(dtype).newbyteorder("<")
    if dt not in _CODE_OF:
        raise TypeError(
            f"dtype {np.dtype(dtype)} has no Megatron dtype code; expected one of "
            f"{sorted(str(d) for d in _CODE_OF)}"
        )
    return _CODE_OF[dt]


def _shard_files(prefix: str) -> List[Tuple[int, int, str]]:
    """``(index, last_index, file name)`` of every file in ``prefix``'s directory named like one of its shards."""
    directory = os.path.dirname(prefix) or "."
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"-(\d+)-of-(\d+)\.bin")
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        m = pattern.fullmatch(name)
        if m is not None:
            out.append((int(m.group(1)), int(m.group(2)), name))
    return out


def _fmt_indices(ix: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(f"{i:05d}" for i in ix[:limit])
    return f"{len(ix)} shard{'s' if len(ix) != 1 else ''} [{shown}{', ...' if len(ix) > limit else ''}]"


def shard_bin_paths(path_prefix: Union[str, os.PathLike]) -> List[str]:
    """Paths of the sharded token stream ``<prefix>-IIIII-of-LLLLL.bin`` in index order; ``[]`` when there is none.

    Follows Pythia's convention: ``LLLLL`` is the last index, so ``-of-00020`` means the 21 shards 00000..00020.
    Raises :class:`DataError` (its message names the convention) when the shards disagree on ``LLLLL``, an index
    appears twice (e.g. ``-7-`` and ``-00007-``), lies above ``LLLLL`` or is missing, including a set whose
    indices stop at ``LLLLL - 1`` (``of`` read as a count): such a set is refused, not read one shard short.
    """
    prefix = _strip_prefix(path_prefix)
    entries = _shard_files(prefix)
    if not entries:
        return []
    lasts = sorted({last for _, last, _ in entries})
    if len(lasts) != 1:
        raise DataError(
            f"shards of {prefix!r} mix several -of- totals {['-of-%05d' % x for x in lasts]}; one set carries one "
            f"last index, remove the stray files; {SHARD_CONVENTION}"
        )
    last = lasts[0]
    found: Dict[int, str] = {}
    for i, _, name in entries:
        if i in found:
            raise DataError(f"duplicate shard {i:05d} of {prefix!r}: {found[i]!r} and {name!r}; {SHARD_CONVENTION}")
        found[i] = name
    above = sorted(i for i in found if i > last)
    if above:
        raise DataError(
            f"shards of {prefix!r} with an index above the last index {last:05d}: {_fmt_indices(above)}; "
            f"{SHARD_CONVENTION}"
        )
    missing = sorted(set(range(last + 1)) - set(found))
    if missing == [last]:
        raise DataError(
            f"shard set of {prefix!r} stops at -{last - 1:05d}-of-{last:05d}: the final shard "
            f"-{last:05d}-of-{last:05d}.bin is missing, or the set was named with -of- as the shard count "
            f"(rename a complete set of {last} shards to -of-{last - 1:05d}); {SHARD_CONVENTION}"
        )
    if missing:
        raise DataError(
            f"incomplete shard set for {prefix!r}: -of-{last:05d} means {last + 1} shards 00000..{last:05d}, "
            f"missing {_fmt_indices(missing)}; {SHARD_CONVENTION}"
        )
    directory = os.path.dirname(prefix) or "."
    return [os.path.join(directory, found[i]) for i in range(last + 1)]


def _starts_with(path: str, head: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(head)) == head


def _map(path: str, nbytes: int) -> np.ndarray:
    if nbytes == 0:  # mmap cannot map an empty file
        return np.empty(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)


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
        if self._n and all(bool((self.sizes[lo: lo + _CHECK_CHUNK] == self.sizes[0]).all())
                           for lo in range(0, self._n, _CHECK_CHUNK)):
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
        if fsize < _HEADER.size:
            raise DataError(f"{path!r}: truncated index: {fsize} bytes, header alone needs {_HEADER.size}")
        with open(path, "rb") as f:
            magic, version, code, n, doc_count = _HEADER.unpack(f.read(_HEADER.size))
        if magic != _MAGIC:
            raise DataError(f"{path!r}: bad magic {magic!r}, expected {_MAGIC!r} (not a Megatron .idx file)")
        if version != _VERSION:
            raise DataError(f"{path!r}: unsupported index version {version}, expected {_VERSION}")
        if code not in DTYPE_CODES:
            raise DataError(f"{path!r}: unknown dtype code {code}, expected one of {sorted(DTYPE_CODES)}")
        expected = _HEADER.size + 4 * n + 8 * n + 8 * doc_count
        if fsize != expected:
            kind = "truncated" if fsize < expected else "oversized"
            raise DataError(
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
            raise DataError(f"{path!r}: doc_count is 0; a Megatron index always holds doc_idx[0] = 0")
        d = self.doc_idx
        decreasing = any(bool((np.diff(d[lo: lo + _CHECK_CHUNK + 1]) < 0).any())
                         for lo in range(0, max(doc_count - 1, 0), _CHECK_CHUNK))
        if d[0] != 0 or d[-1] != n or decreasing:
            raise DataError(
                f"{path!r}: inconsistent doc_idx: expected non-decreasing from 0 to len={n}, "
                f"got first {int(d[0])}, last {int(d[-1])}"
            )

    # -- token stream ----------------------------------------------------------------------------------------
    def _open_bin(self) -> None:
        single = self.path_prefix + ".bin"
        names = [name for _, _, name in _shard_files(self.path_prefix)]
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
    ``<prefix>-IIIII-of-LLLLL.bin`` with ``LLLLL = n_shards - 1``, the last index (Pythia's convention, 5 digits:
    ``n_shards=21`` writes ``-00000-of-00020`` .. ``-00020-of-00020``). The shards split the byte stream into
    near-equal parts at arbitrary byte positions (a sequence or a token may straddle two shards).
    ``doc_idx`` defaults to ``0..len`` (every sequence is one document, as in Pythia's preshuffled files).
    Integer values outside ``dtype``'s range raise :class:`DataError`, and so does a directory already holding a
    different token stream of the same prefix (another shard set, or ``<prefix>.bin`` beside new shards).
    Returns the paths written.
    """
    prefix = _strip_prefix(path_prefix)
    dt = np.dtype(dtype).newbyteorder("<")
    code = _dtype_code(dt)
    if not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
        raise DataError(f"n_shards must be a positive int, got {n_shards!r}")
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
    sizes = np.array([s.size for s in seqs], dtype=np.int64)
    if sizes.size and sizes.max() > np.iinfo(np.int32).max:
        raise DataError(f"a sequence of {int(sizes.max())} tokens exceeds the i32 size field")
    pointers = np.concatenate([[0], np.cumsum(sizes * dt.itemsize)[:-1]]).astype("<i8") if len(seqs) else np.zeros(0, "<i8")
    if doc_idx is None:
        doc_idx = np.arange(len(seqs) + 1, dtype="<i8")
    doc_idx = np.asarray(doc_idx, dtype="<i8")

    single = prefix + ".bin"
    total = int(sizes.sum()) * dt.itemsize
    if n_shards == 1:
        paths = [single]
        bounds = [0, total]
    else:
        paths = [f"{prefix}-{i:05d}-of-{n_shards - 1:05d}.bin" for i in range(n_shards)]
        per = -(-total // n_shards)
        bounds = [min(total, i * per) for i in range(n_shards + 1)]
    directory = os.path.dirname(prefix) or "."
    stale = sorted({name for _, _, name in _shard_files(prefix)} - {os.path.basename(q) for q in paths})
    if os.path.exists(single) and n_shards > 1:
        stale.insert(0, os.path.basename(single))
    if stale:
        raise DataError(
            f"{directory!r} already holds other token-stream files of {prefix!r} ({stale[:3]}"
            f"{'...' if len(stale) > 3 else ''}); delete them before writing {os.path.basename(paths[0])!r}"
        )

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

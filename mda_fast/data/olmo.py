"""OLMo's training order: the batches an OLMo / OLMo-2 run (the ``allenai/OLMo`` trainer) really saw at each step.

The rules, from OLMo's ``olmo/data/memmap_dataset.py``, ``olmo/data/iterable_dataset.py``,
``olmo/data/__init__.py`` (``build_memmap_dataset``, ``build_train_dataloader``) and the README's data-order
snippet (see ``docs/olmo.md`` for what could not be pinned down):

* **Token files.** ``data.paths`` lists flat token arrays: raw ``np.memmap`` files of ``memmap_dtype``
  (``uint32`` for OLMo-2's dolma2 tokenizer, ``uint16`` for OLMo-1), no ``np.save`` header, whatever their
  ``.npy`` suffix says. File ``i`` holds ``n_i = file_bytes // (itemsize * seq_len)`` sequences; its last
  ``file_bytes mod (itemsize * seq_len)`` bytes belong to none. Sequences never span two files.
* **Sequence ids.** The files are concatenated in the listed order: sequence id ``g`` is local sequence
  ``g - offset_i`` of the file ``i`` with ``offset_i <= g < offset_i + n_i``, tokens
  ``[local * seq_len, (local + 1) * seq_len)`` of that file. ``N = sum(n_i)`` (OLMo asserts ``N < 2**32``).
* **Order.** ``order = arange(N, dtype=uint32)`` shuffled in place by ``np.random.Generator(PCG64(seed + epoch))``
  (``seed`` is ``data.seed`` when the run sets it, else the run's ``seed``: 6198 for OLMo-2 1B).
* **Steps.** Step ``b`` of the epoch (0-based; OLMo logs it as step ``b + 1``, and the checkpoint
  ``stepK`` has trained steps ``0 .. K-1``) trains the sequences ``order[b * B : (b + 1) * B]`` for the global
  batch ``B``. The ranks interleave them (rank ``r`` takes ``order[r::world_size]``), so the *set* of a step does
  not depend on the world size, its order within the batch does. ``N // B`` full steps make an epoch; the tail
  (fewer than ``B`` sequences) is dropped with ``drop_last`` and is reachable here through :meth:`rows` only.

``OLMoBatches`` serves that order with the interface of :class:`~mda_fast.data.PythiaBatches`: a *global index*
is a position in the epoch's training order (``step * batch_size + position``), ``rows``/``step``/``window``
return tokens as ``[*, seq_len]`` arrays (inputs ``row[:-1]``, labels ``row[1:]``, as OLMo trains them), and
:meth:`sequence_ids` / :meth:`source` name the OLMo instance and the file each position came from.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError, MissingDataError
from .batches import StepBatches

__all__ = ["OLMO_DTYPES", "OLMoBatches", "olmo_order", "read_path_list"]

#: OLMo's ``memmap_dtype`` choices (``effective_memmap_dtype``), stored little-endian
OLMO_DTYPES = {"uint8": "<u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8"}

_NPY_MAGIC = b"\x93NUMPY"


def olmo_order(n_sequences: int, seed: int, epoch: int = 0) -> np.ndarray:
    """The epoch's order of sequence ids: ``arange(n_sequences)`` as ``uint32`` shuffled by
    ``Generator(PCG64(seed + epoch))`` (OLMo's ``IterableDataset._build_global_indices`` with ``shuffle=True``,
    before its world-size truncation or padding, which only touches the tail)."""
    if not 0 <= n_sequences < np.iinfo(np.uint32).max:
        raise DataError(f"{n_sequences} sequences: OLMo's order holds uint32 ids, expected fewer than 2**32 - 1")
    if seed + epoch < 0:
        raise ValueError(f"seed + epoch must be >= 0 (PCG64's seed), got {seed} + {epoch}")
    order = np.arange(n_sequences, dtype=np.uint32)
    np.random.Generator(np.random.PCG64(seed + epoch)).shuffle(order)
    return order


def read_path_list(path: Union[str, os.PathLike], root: Optional[str] = None) -> List[str]:
    """The token files named by a list file, in its order: one path per line; blank lines, ``#`` comments and a
    YAML list item's ``- `` are skipped, so the ``data.paths`` block of an OLMo training config can be pasted as
    is. A URL (``gs://bucket/a/b.npy``, ``s3://...``, ``https://host/...``) becomes ``a/b.npy`` under ``root``; a
    relative path is taken under ``root`` too. ``root`` defaults to the list file's directory."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingDataError(f"{path!r}: no such file (expected a list of OLMo token files, one per line)")
    root = os.path.dirname(os.path.abspath(path)) if not root else root
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            s = line.split("#", 1)[0].strip()
            if s.startswith("- "):
                s = s[2:].strip()
            s = s.strip("'\"")
            if not s:
                continue
            if "://" in s:
                _host, _, s = s.split("://", 1)[1].partition("/")
                if not s:
                    raise DataError(f"{path!r}: {line.strip()!r} names a bucket or host, not a file")
            out.append(s if os.path.isabs(s) else os.path.join(root, s))
    if not out:
        raise DataError(f"{path!r} lists no token files (expected one path per line)")
    return out


class OLMoBatches(StepBatches):
    """Batches of OLMo token files in OLMo's shuffled step order.

    Args:
        paths: the token files in ``data.paths`` order (for a config with ``data.datasets``: the labels sorted
            alphabetically, each label's paths in order, as ``build_memmap_dataset`` concatenates them); or one
            list file (see :func:`read_path_list`).
        batch_size: the global batch ``B`` (``global_train_batch_size``; 512 for OLMo-2 1B).
        seq_len: tokens per sequence (``model.max_sequence_length``; 4096 for OLMo-2).
        seed: the order's seed (``data.seed``, else the run's ``seed``; 6198 for OLMo-2 1B).
        epoch: the epoch whose order is served (steps are numbered from that epoch's start).
        dtype: OLMo's ``memmap_dtype`` (``"uint32"`` for OLMo-2, ``"uint16"`` for OLMo-1).
        order_file: OLMo's own ``global_indices.npy`` for this epoch (a raw ``uint32`` memmap, as the trainer
            writes it under ``train_data/``); read instead of recomputing the shuffle, after checking that it
            fits the files.
        root: where the list file's URLs and relative paths are resolved (default: the list file's directory).
    """

    def __init__(
        self,
        paths: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
        batch_size: int = 512,
        seq_len: int = 4096,
        seed: int = 6198,
        epoch: int = 0,
        dtype: str = "uint32",
        order_file: Optional[Union[str, os.PathLike]] = None,
        root: Optional[str] = None,
    ):
        for name, v in (("batch_size", batch_size), ("seq_len", seq_len)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name, v in (("seed", seed), ("epoch", epoch)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if dtype not in OLMO_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(OLMO_DTYPES)} (OLMo's memmap_dtype), got {dtype!r}")
        if isinstance(paths, (str, os.PathLike)):
            self.path = os.fspath(paths)
            files = read_path_list(self.path, root)
        else:
            files = [os.fspath(p) for p in paths]
            self.path = files[0] if files else ""
            if not files:
                raise DataError("no OLMo token files given (expected at least one path)")
        self.files = files
        self.batch_size, self.seq_len = int(batch_size), int(seq_len)
        self.seed, self.epoch = int(seed), int(epoch)
        self.dtype = np.dtype(OLMO_DTYPES[dtype])
        self.file_sequences = np.array([self._count(p) for p in files], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.file_sequences)])
        self.n_sequences = int(self.offsets[-1])
        if self.n_sequences >= np.iinfo(np.uint32).max:
            raise DataError(
                f"{self.n_sequences} sequences: OLMo's order holds uint32 ids, expected fewer than 2**32 - 1"
            )
        self.n_steps = self.n_sequences // self.batch_size
        self.n_rows = self.n_sequences  # training-order positions reachable through rows()
        self.order_file = None if order_file in (None, "") else os.fspath(order_file)
        self._order: Optional[np.ndarray] = None
        self._maps: Dict[int, Optional[np.ndarray]] = {}
        if self.order_file is not None:
            self._order = self._read_order(self.order_file)
            self.n_rows = min(self.n_sequences, int(self._order.size))

    # -- files -----------------------------------------------------------------------------------------------
    def _count(self, p: str) -> int:
        try:
            size = os.path.getsize(p)
            with open(p, "rb") as fh:
                head = fh.read(len(_NPY_MAGIC))
        except FileNotFoundError:
            raise MissingDataError(f"OLMo token file {p!r} does not exist") from None
        except OSError as e:
            raise DataError(f"OLMo token file {p!r} cannot be read ({e.strerror or e})") from None
        if head == _NPY_MAGIC:
            raise DataError(
                f"{p!r} starts with an np.save header; OLMo's token files are raw memmaps of token ids "
                f"(np.memmap, no header): expected one of those"
            )
        return size // (self.dtype.itemsize * self.seq_len)

    def _tokens(self, i: int) -> Optional[np.ndarray]:
        """File ``i`` as a read-only ``[n_i, seq_len]`` memmap (opened on first use)."""
        m = self._maps.get(i)
        if m is None:
            n = int(self.file_sequences[i])
            m = np.memmap(self.files[i], dtype=self.dtype, mode="r", shape=(n, self.seq_len)) if n else None
            self._maps[i] = m
        return m

    # -- the order -------------------------------------------------------------------------------------------
    def _read_order(self, path: str) -> np.ndarray:
        if not os.path.isfile(path):
            raise MissingDataError(
                f"OLMo order file {path!r} does not exist (expected the run's train_data/global_indices.npy, or a "
                f"file written once by OLMoBatches(...).write_order(path))"
            )
        size = os.path.getsize(path)
        if size % 4:
            raise DataError(f"OLMo order file {path!r}: {size} bytes is not a whole number of uint32 indices")
        order = np.memmap(path, dtype="<u4", mode="r")
        n, B, N = order.size, self.batch_size, self.n_sequences
        if not N - B < n < N + B:
            raise DataError(
                f"OLMo order file {path!r} holds {n} indices but the {len(self.files)} token files hold {N} "
                f"sequences of {self.seq_len} {self.dtype.name} tokens (expected the same count within one batch "
                f"of {B}): check the file list, its order, data.seq_len and data.olmo_dtype"
            )
        head = order[: self.n_steps * B]
        if head.size and int(head.max()) >= N:
            raise DataError(
                f"OLMo order file {path!r} names sequence {int(head.max())} but the token files hold {N} sequences"
            )
        return order

    @property
    def order(self) -> np.ndarray:
        """The epoch's sequence ids in training order (computed on first use, or the order file)."""
        if self._order is None:
            self._order = olmo_order(self.n_sequences, self.seed, self.epoch)
        return self._order

    def sequence_ids(self, global_indices) -> np.ndarray:
        """OLMo's instance index (its ``batch["index"]``) of each training-order position."""
        g = self.checked_indices(global_indices)
        return np.asarray(self.order[g], dtype=np.int64)

    def source(self, sequence_id: int) -> Tuple[str, int, int]:
        """``(file, local sequence, first token offset in that file)`` of OLMo instance ``sequence_id``."""
        s = int(sequence_id)
        if not 0 <= s < self.n_sequences:
            raise ValueError(f"sequence id {s} outside [0, {self.n_sequences})")
        i = int(np.searchsorted(self.offsets, s, side="right")) - 1
        local = s - int(self.offsets[i])
        return self.files[i], local, local * self.seq_len

    # -- reading ---------------------------------------------------------------------------------------------
    def _range(self, lo: int, hi: int) -> np.ndarray:
        return self.rows(np.arange(lo, hi, dtype=np.int64))

    def rows(self, global_indices) -> np.ndarray:
        """Tokens ``[len, seq_len]`` at training-order positions (any order, repeats allowed), native byte order."""
        ids = self.sequence_ids(global_indices)
        out = np.empty((ids.size, self.seq_len), dtype=self.dtype.newbyteorder("="))
        f = np.searchsorted(self.offsets, ids, side="right") - 1
        for i in np.unique(f).tolist():
            m = f == i
            out[m] = self._tokens(i)[ids[m] - int(self.offsets[i])]
        return out

    def write_order(self, path: Union[str, os.PathLike]) -> str:
        """Write the epoch's order as OLMo writes ``global_indices.npy`` (raw ``uint32``, no header), so later runs
        read it (``order_file``) instead of shuffling again; returns the path."""
        path = os.fspath(path)
        tmp = path + ".tmp"
        np.asarray(self.order, dtype="<u4").tofile(tmp)
        os.replace(tmp, path)
        return path

    def __repr__(self) -> str:
        return (
            f"OLMoBatches({self.path!r}, files={len(self.files)}, batch_size={self.batch_size}, "
            f"seq_len={self.seq_len}, seed={self.seed}, epoch={self.epoch}, dtype={self.dtype.name}, "
            f"n_sequences={self.n_sequences}, n_steps={self.n_steps})"
        )

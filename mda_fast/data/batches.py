"""What every training-order reader shares (``PythiaBatches``, ``OLMoBatches``): a global index is a position in
the run's training order, step ``k`` is global indices ``k·batch_size … (k+1)·batch_size − 1``, and the window of
steps ``[start, end)`` is read in chunks. A reader sets ``path``, ``batch_size``, ``seq_len``, ``n_rows``,
``n_steps`` and implements ``_range(lo, hi)`` (rows ``[lo, hi)`` of the order) and ``rows``."""

from __future__ import annotations

import abc
from typing import Iterator, Optional, Tuple

import numpy as np


class StepBatches(abc.ABC):
    """Index arithmetic, steps and windows over a reader's training order (see the module docstring)."""

    path: str
    batch_size: int
    seq_len: int
    n_rows: int
    n_steps: int

    @abc.abstractmethod
    def _range(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` of the training order as a ``[hi - lo, seq_len]`` array."""

    def global_index(self, step, pos):
        """``step * batch_size + pos`` (ints or arrays); validates both ranges."""
        s, p = np.asarray(step), np.asarray(pos)
        if np.any(s < 0) or np.any(s >= self.n_steps):
            raise ValueError(f"step {step} outside [0, {self.n_steps})")
        if np.any(p < 0) or np.any(p >= self.batch_size):
            raise ValueError(f"position {pos} outside [0, {self.batch_size})")
        out = s.astype(np.int64) * self.batch_size + p
        return int(out) if out.ndim == 0 else out

    def locate(self, global_index):
        """Inverse of :meth:`global_index`: ``(step, position_in_batch)``."""
        g = np.asarray(global_index)
        if np.any(g < 0) or np.any(g >= self.n_steps * self.batch_size):
            raise ValueError(
                f"global index {global_index} outside the {self.n_steps} full steps "
                f"[0, {self.n_steps * self.batch_size})"
            )
        s, p = np.divmod(g.astype(np.int64), self.batch_size)
        return (int(s), int(p)) if g.ndim == 0 else (s, p)

    def checked_indices(self, global_indices) -> np.ndarray:
        """``global_indices`` as int64 after checking they are a 1-D integer array inside ``[0, n_rows)``."""
        g = np.asarray(global_indices)
        if g.ndim != 1 or (g.size and g.dtype.kind not in "iu"):
            raise ValueError(f"global_indices must be a 1-D integer array, got shape {g.shape} dtype {g.dtype}")
        if g.size and (g.min() < 0 or g.max() >= self.n_rows):
            raise ValueError(f"global indices must lie in [0, {self.n_rows}), got range [{g.min()}, {g.max()}]")
        return g.astype(np.int64)

    def step(self, k: int) -> np.ndarray:
        """Step ``k``'s batch ``[batch_size, seq_len]`` in the native dtype."""
        if not isinstance(k, (int, np.integer)):
            raise TypeError(f"step must be an int, got {type(k).__name__}")
        if not 0 <= k < self.n_steps:
            raise ValueError(f"step {k} outside [0, {self.n_steps}) for {self.n_rows} rows of batch {self.batch_size}")
        return self._range(k * self.batch_size, (k + 1) * self.batch_size)

    def window(
        self, start_step: int, end_step: int, chunk: Optional[int] = None
    ) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(global_index, step, position_in_batch, tokens)`` for steps ``[start_step, end_step)``.

        ``end_step`` is exclusive. Each tuple holds ``chunk`` rows (default ``batch_size``; the last may be
        shorter) in global order, so a chunk may straddle a step boundary. Index arrays are int64 ``[c]``,
        tokens ``[c, seq_len]``.
        """
        if not (0 <= start_step <= end_step <= self.n_steps):
            raise ValueError(
                f"window [{start_step}, {end_step}) is not within the {self.n_steps} steps of {self.path!r} "
                f"(end_step is exclusive, so it may equal n_steps)"
            )
        chunk = self.batch_size if chunk is None else chunk
        if not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ValueError(f"chunk must be a positive int, got {chunk!r}")
        lo, hi = start_step * self.batch_size, end_step * self.batch_size
        for a in range(lo, hi, chunk):
            b = min(hi, a + chunk)
            g = np.arange(a, b, dtype=np.int64)
            yield g, g // self.batch_size, g % self.batch_size, self._range(a, b)

    def __len__(self) -> int:
        return self.n_steps

"""``InterventionConfig``: the settings of one intervention experiment, validated on construction.

Definitions: the docstring of :mod:`mda_fast.study.interventions`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...config import ARMS, DEFAULT_ARMS
from ...core.probes import icl_positions
from ...data.categories import load_category_sidecar
from ..stats import top_count

__all__ = ["InterventionConfig"]


@dataclass
class InterventionConfig:
    """Settings of one intervention experiment (see the module docstring for every definition).

    ``data``: a ``PythiaBatches`` or a path (then ``batch_size`` and ``seq_len`` are required). ``heads``:
    target heads ``[(layer, head), ...]``. ``end_step`` is exclusive. ``device=None`` keeps the checkpoint's.
    """

    run_dir: str
    data: Any
    start_step: int
    end_step: int
    train_until: int
    heads: Sequence[Tuple[int, int]]
    out_dir: str
    batch_size: Optional[int] = None
    seq_len: Optional[int] = None
    eval_every: int = 50
    top_frac: float = 0.10
    arms: Sequence[str] = DEFAULT_ARMS
    seeds: Sequence[int] = (0,)
    score_column: Optional[int] = None
    augment_steps: Optional[Sequence[int]] = None
    augment_copies: int = 1
    insert_mode: str = "append"
    threshold: float = 0.3
    localize_seq_len: int = 32
    localize_n: int = 64
    localize_seed: int = 0
    probe_L: int = 32
    probe_n: int = 200
    probe_seed: int = 0
    low: int = 4
    high: Optional[int] = None
    icl_tokens: Optional[Tuple[int, int]] = None
    icl_band: Optional[int] = None
    heldout_rows: Optional[Sequence[int]] = None
    n_heldout: int = 256
    eval_batch_size: int = 64
    device: Optional[str] = None
    keep_checkpoints: bool = False
    categories: Any = None
    checkpoint_dir: Optional[str] = None
    pretrained: Optional[Dict[str, Any]] = None
    _batches: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        self._batches = self._open_data()
        b = self._batches
        self.batch_size, self.seq_len = int(b.batch_size), int(b.seq_len)
        self._check_numbers()
        self._check_arms()
        self.heads = [tuple(int(x) for x in h) for h in self.heads]
        if not self.heads or any(len(h) != 2 for h in self.heads):
            raise ValueError(f"heads: expected a non-empty list of (layer, head), got {self.heads}")
        if self.heldout_rows is not None:
            self.heldout_rows = [int(i) for i in self.heldout_rows]
        self._check_icl()

    def _open_data(self):
        from ...data import PythiaBatches

        if isinstance(self.data, (str, os.PathLike)):
            if self.batch_size is None or self.seq_len is None:
                raise ValueError("data: a path needs batch_size= and seq_len=")
            return PythiaBatches(os.fspath(self.data), batch_size=self.batch_size, seq_len=self.seq_len)
        for attr in ("step", "rows", "batch_size", "seq_len", "n_steps", "n_rows"):
            if not hasattr(self.data, attr):
                raise TypeError(f"data: expected a PythiaBatches or a path, got {type(self.data).__name__}")
        for name in ("batch_size", "seq_len"):
            v = getattr(self, name)
            if v is not None and v != getattr(self.data, name):
                raise ValueError(f"{name}={v} differs from the data's {name}={getattr(self.data, name)}")
        return self.data

    def _check_numbers(self) -> None:
        for name in (
            "start_step",
            "end_step",
            "train_until",
            "eval_every",
            "augment_copies",
            "n_heldout",
            "eval_batch_size",
            "localize_seq_len",
            "localize_n",
            "probe_L",
            "probe_n",
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TypeError(f"{name}: expected an int, got {v!r}")
        if not 0 <= self.start_step < self.end_step <= self.train_until:
            raise ValueError(
                f"window: expected 0 <= start_step < end_step <= train_until, got start_step="
                f"{self.start_step}, end_step={self.end_step}, train_until={self.train_until}"
            )
        if self.train_until > self._batches.n_steps:
            raise ValueError(f"train_until={self.train_until}: the data has only {self._batches.n_steps} steps")
        for name in ("eval_every", "augment_copies", "n_heldout", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not (isinstance(self.top_frac, (float, int)) and 0 < self.top_frac < 1):
            raise ValueError(f"top_frac: expected a fraction in (0, 1), got {self.top_frac!r}")

    def _check_arms(self) -> None:
        self.arms = tuple(self.arms)
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"arms: unknown arm(s) {unknown}; expected a subset of {list(ARMS)}")
        if len(set(self.arms)) != len(self.arms) or "baseline" not in self.arms:
            raise ValueError(f"arms: expected distinct arms including 'baseline', got {list(self.arms)}")
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: expected at least one distinct seed, got {list(self.seeds)}")
        if self.insert_mode not in ("append", "replace"):
            raise ValueError(f"insert_mode: expected 'append' or 'replace', got {self.insert_mode!r}")
        if self.augment_steps is not None:
            steps = [int(s) for s in self.augment_steps]
            bad = [s for s in steps if not self.start_step <= s < self.train_until]
            if not steps or bad:
                raise ValueError(
                    f"augment_steps: expected a non-empty list of steps in [start_step, train_until) = "
                    f"[{self.start_step}, {self.train_until}), got {bad or steps}"
                )
            self.augment_steps = tuple(steps)

    def _check_icl(self) -> None:
        T = self.seq_len - 1
        early, late = self.icl_tokens if self.icl_tokens is not None else icl_positions(T)
        band = self.icl_band if self.icl_band is not None else T // 64
        if not (1 <= early - band and early < late and late + band <= T and band >= 0):
            raise ValueError(
                f"icl_tokens=({early}, {late}) with band {band}: expected 1 <= early-band, early < late, "
                f"late+band <= T={T}"
            )
        self.icl_tokens, self.icl_band = (int(early), int(late)), int(band)

    @property
    def batches(self):
        return self._batches

    @property
    def window_size(self) -> int:
        return (self.end_step - self.start_step) * self.batch_size

    @property
    def k(self) -> int:
        return top_count(self.window_size, self.top_frac)

    def resolved_augment_steps(self) -> Tuple[int, ...]:
        if self.augment_steps is not None:
            return tuple(self.augment_steps)
        half = -(-(self.end_step - self.start_step) // 2)
        return tuple(range(self.start_step, self.start_step + half))

    def eval_steps(self) -> List[int]:
        s = set(range(self.start_step, self.train_until + 1, self.eval_every))
        s.update((self.end_step, self.train_until))
        return sorted(s)

    def checkpoint(self) -> str:
        """The window-start checkpoint: ``checkpoint_dir``, else ``run_dir/step{start_step}``."""
        return self.checkpoint_dir or os.path.join(self.run_dir, f"step{self.start_step}")

    def dominant_categories(self) -> Tuple[np.ndarray, List[str]]:
        """(dominant category index of every data row, category names), from ``categories`` or the data's
        category sidecar (:mod:`mda_fast.data.categories`); needed by the matched arms. ``categories`` is
        ``(fractions [n_rows, n_categories], names)`` or the fractions alone (names then from the sidecar, or
        ``category0``, ``category1``, ...)."""
        path = getattr(self._batches, "path", "")
        side = load_category_sidecar(path) if path and not isinstance(self.categories, tuple) else None
        if self.categories is not None:
            fr, names = _given_categories(self.categories, side)
        elif side is None:
            raise ValueError(
                "matched arms need per-row categories: the data has no <prefix>.categories.npy "
                "sidecar; pass categories= (fractions [n_rows, n_categories])"
            )
        else:
            fr, names = side
        if fr.ndim != 2 or fr.shape[0] < self.end_step * self.batch_size:
            raise ValueError(
                f"categories: expected [n_rows >= {self.end_step * self.batch_size}, n_categories], "
                f"got shape {fr.shape}"
            )
        known = np.isfinite(fr).all(axis=1)  # rows without categories (a sampled categorization) are -1
        return np.where(known, np.argmax(np.where(np.isfinite(fr), fr, -1.0), axis=1), -1), names

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init and f.name != "categories"}
        d["data"] = str(getattr(self._batches, "path", self.data if isinstance(self.data, str) else ""))
        d["heads"] = [list(h) for h in self.heads]
        for key in ("arms", "seeds", "augment_steps", "icl_tokens"):
            d[key] = None if d[key] is None else list(d[key])
        d["augment_steps_resolved"] = list(self.resolved_augment_steps())
        d["eval_steps"] = self.eval_steps()
        return d


def _given_categories(categories: Any, side) -> Tuple[np.ndarray, List[str]]:
    """``categories=`` as (fractions, names): a ``(fractions, names)`` pair, or fractions named like the sidecar."""
    if isinstance(categories, tuple) and len(categories) == 2:
        return np.asarray(categories[0]), [str(c) for c in categories[1]]
    fr = np.asarray(categories)
    n_cat = fr.shape[1] if fr.ndim == 2 else 0
    if side is not None and len(side[1]) == n_cat:
        return fr, list(side[1])
    return fr, [f"category{c}" for c in range(n_cat)]

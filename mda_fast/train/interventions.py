"""Per-sample interventions (deletion, insertion) and ``compose``: a step's rows after them (pure, no torch).

Global sample index of batch position ``p`` at step ``k`` is ``k * batch_size + p``. The loss denominator is always
the *unmodified* batch's ``batch_size * T``, so every other sample keeps its exact weight:

* ``delete``: a deleted sample is dropped from its batch; the step's gradient is the unmodified gradient minus
  the deleted samples' per-sample gradients / (batch_size * T) (identical to giving its tokens loss weight 0).
* ``insert`` with ``insert_mode="append"`` (default): inserted sequences are extra rows; the step's gradient is
  the unmodified gradient plus the inserted samples' per-sample gradients / (batch_size * T).
* ``insert`` with ``insert_mode="replace"``: each inserted sequence takes the slot of one sample of that batch:
  ``Insertion.position`` if given, else a slot drawn (seeded by ``(Interventions.seed, step)``) among slots that
  are neither deleted nor already taken. The replaced sample is left out of that step (logged as ``replaced``).

Inserted sequences are never affected by ``delete``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Insertion", "Interventions", "Composition", "compose"]


@dataclass
class Insertion:
    """One extra sequence at training step ``step``: ``index`` (a global sample index of the dataset) or
    ``tokens`` (a raw ``[seq_len]`` token array), exactly one of them. ``position`` picks the replaced batch slot
    in ``"replace"`` mode (ignored when appending). ``name`` labels it in the batch log (default ``idx<index>``
    or ``raw<j>``, ``j`` its position in ``Interventions.insert``)."""

    step: int
    index: Optional[int] = None
    tokens: Optional[np.ndarray] = None
    position: Optional[int] = None
    name: Optional[str] = None


def _check_insertion(j: int, it: Insertion) -> None:
    """Validate ``insert[j]`` and normalise it in place (``tokens`` as an array, default ``name``)."""
    if not isinstance(it, Insertion):
        raise TypeError(f"insert[{j}]: expected an Insertion, got {type(it).__name__}")
    if (it.index is None) == (it.tokens is None):
        raise ValueError(f"insert[{j}]: give exactly one of index= or tokens=")
    if not (isinstance(it.step, (int, np.integer)) and it.step >= 0):
        raise ValueError(f"insert[{j}].step: expected an int >= 0, got {it.step!r}")
    if it.index is not None and int(it.index) < 0:
        raise ValueError(f"insert[{j}].index: expected >= 0, got {it.index}")
    if it.tokens is not None:
        tok = np.asarray(it.tokens)
        if tok.ndim != 1 or not np.issubdtype(tok.dtype, np.integer):
            raise ValueError(
                f"insert[{j}].tokens: expected a 1-D integer array, got shape {tok.shape} dtype {tok.dtype}"
            )
        if tok.size and tok.min() < 0:
            raise ValueError(f"insert[{j}].tokens: token ids must be >= 0")
        it.tokens = tok
    if it.name is None:
        it.name = f"idx{int(it.index)}" if it.index is not None else f"raw{j}"


@dataclass
class Interventions:
    """Samples to delete (global indices) and sequences to insert; see the module docstring for semantics."""

    delete: Iterable[int] = frozenset()
    insert: Sequence[Insertion] = ()
    insert_mode: str = "append"
    seed: int = 0
    _by_step: Dict[int, List[Insertion]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        delete = frozenset(int(i) for i in self.delete)
        if any(i < 0 for i in delete):
            raise ValueError(f"delete: global sample indices must be >= 0, got {min(delete)}")
        self.delete = delete
        if self.insert_mode not in ("append", "replace"):
            raise ValueError(f"insert_mode: expected 'append' or 'replace', got {self.insert_mode!r}")
        ins = list(self.insert)
        self._by_step = {}
        for j, it in enumerate(ins):
            _check_insertion(j, it)
            self._by_step.setdefault(int(it.step), []).append(it)
        self.insert = tuple(ins)
        for step, items in self._by_step.items():
            pos = [it.position for it in items if it.position is not None]
            if self.insert_mode == "replace" and len(pos) != len(set(pos)):
                raise ValueError(f"insert: two insertions at step {step} replace the same position")

    def at_step(self, step: int) -> List[Insertion]:
        """Insertions of training step ``step`` (in the order given)."""
        return self._by_step.get(int(step), [])

    @property
    def empty(self) -> bool:
        return not self.delete and not self.insert

    @classmethod
    def duplicate(
        cls,
        indices: Iterable[int],
        steps: Iterable[int],
        delete: Iterable[int] = (),
        insert_mode: str = "append",
        seed: int = 0,
    ) -> Interventions:
        """Insert a copy of each global sample in ``indices`` once, spread round-robin over ``steps``
        (index ``j`` goes to ``steps[j % len(steps)]``)."""
        steps = [int(s) for s in steps]
        if not steps:
            raise ValueError("steps: expected at least one step")
        ins = [Insertion(step=steps[j % len(steps)], index=int(i)) for j, i in enumerate(indices)]
        return cls(delete=delete, insert=ins, insert_mode=insert_mode, seed=seed)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (raw tokens are given by length only)."""
        return {
            "delete": sorted(self.delete),
            "insert": [
                {
                    "step": int(it.step),
                    "name": it.name,
                    "index": None if it.index is None else int(it.index),
                    "n_tokens": None if it.tokens is None else int(it.tokens.size),
                    "position": it.position,
                }
                for it in self.insert
            ],
            "insert_mode": self.insert_mode,
            "seed": self.seed,
        }


# ---------------------------------------------------------------------------------------------------------------
# a step's composition


@dataclass
class Composition:
    """One step's rows after interventions.

    Attributes:
        rows: the actual training rows, ``[n_rows, seq_len]`` int64 (kept rows in batch order, then appended ones).
        record: the batch-log record (``step``, ``indices``, ``deleted``, ``inserted``, ``replaced``, ``n_rows``,
            ``denominator``).
    """

    rows: np.ndarray
    record: dict


def _source(it: Insertion, slot: Optional[int]) -> dict:
    return {"id": it.name, "index": None if it.index is None else int(it.index), "slot": slot}


def _replace_slots(
    step: int,
    g0: int,
    ins: Sequence[Insertion],
    ins_rows: Sequence[np.ndarray],
    seed: int,
    rows: list,
    source: list,
    live: list,
) -> List[int]:
    """Put each insertion into its batch slot (in place); returns the global indices of the replaced samples."""
    B = len(rows)
    replaced = []
    taken = {it.position for it in ins if it.position is not None}
    rng = np.random.default_rng([int(seed), int(step)])
    for it, tok in zip(ins, ins_rows):
        pos = it.position
        if pos is None:
            free = [p for p in range(B) if live[p] and p not in taken]
            if not free:
                raise ValueError(f"insert at step {step}: no free batch slot left to replace")
            pos = int(free[int(rng.integers(len(free)))])
            taken.add(pos)
        if live[pos]:
            replaced.append(g0 + pos)
        rows[pos] = tok
        source[pos] = _source(it, pos)
        live[pos] = True
    return replaced


def _assemble(
    rows: list, source: list, live: list, extra: Sequence[Tuple[np.ndarray, dict]]
) -> Tuple[list, List[int], List[dict]]:
    """The live rows in slot order then the appended ones: ``(rows, kept global indices, inserted records)``."""
    out_rows, indices, inserted = [], [], []
    for p in range(len(rows)):
        if not live[p]:
            continue
        src = source[p]
        if isinstance(src, dict):
            inserted.append(dict(src, row=len(out_rows)))
        else:
            indices.append(src)
        out_rows.append(rows[p])
    for tok, src in extra:
        inserted.append(dict(src, row=len(out_rows)))
        out_rows.append(tok)
    return out_rows, indices, inserted


def compose(
    step: int, base: np.ndarray, interventions: Interventions, insert_rows: Sequence[np.ndarray]
) -> Composition:
    """Step ``step``'s rows after ``interventions`` (see the module docstring).

    ``base`` is the unmodified batch ``[batch_size, seq_len]``; ``insert_rows`` the token rows of
    ``interventions.at_step(step)``, in that order (an index insertion's row read from the dataset).
    """
    ins = interventions.at_step(step)
    if len(insert_rows) != len(ins):
        raise ValueError(f"insert_rows: expected {len(ins)} rows for step {step}, got {len(insert_rows)}")
    B, seq_len = base.shape
    g0 = step * B
    deleted = [p for p in range(B) if g0 + p in interventions.delete]
    rows = [base[p] for p in range(B)]
    source: List[Any] = list(range(g0, g0 + B))  # global index, or an insertion record
    live = [True] * B
    for p in deleted:
        live[p] = False
    replaced, extra = [], []
    if interventions.insert_mode == "replace":
        replaced = _replace_slots(step, g0, ins, insert_rows, interventions.seed, rows, source, live)
    else:
        extra = [(tok, _source(it, None)) for it, tok in zip(ins, insert_rows)]
    out_rows, indices, inserted = _assemble(rows, source, live, extra)
    T = seq_len - 1
    arr = np.stack(out_rows).astype(np.int64) if out_rows else np.zeros((0, seq_len), np.int64)
    record = {
        "step": int(step),
        "indices": [int(i) for i in indices],
        "deleted": [g0 + p for p in deleted],
        "inserted": inserted,
        "replaced": replaced,
        "n_rows": len(out_rows),
        "denominator": B * T,
    }
    return Composition(arr, record)

"""A training run's logs in ``out_dir``: JSONL readers and writers, and the log file names.

``metrics.jsonl`` (per step: step, loss, loss_per_token, lr, grad_norm, n_rows, tokens_per_s, time_s),
``batches.jsonl`` (per step: step, indices, deleted, inserted, replaced, n_rows, denominator), ``eval.jsonl``
(``eval_fn`` results with their step), ``interventions.json`` and ``config.json``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, List, Optional

from ..io import atomic_file

__all__ = [
    "METRICS_FILE",
    "BATCHES_FILE",
    "EVAL_FILE",
    "CONFIG_FILE",
    "INTERVENTIONS_FILE",
    "read_jsonl",
    "keep_jsonl",
    "append_jsonl",
    "write_json",
    "JsonlWriter",
]

METRICS_FILE = "metrics.jsonl"
BATCHES_FILE = "batches.jsonl"
EVAL_FILE = "eval.jsonl"
CONFIG_FILE = "config.json"
INTERVENTIONS_FILE = "interventions.json"


def read_jsonl(path: str) -> List[dict]:
    """All records of a JSONL file (empty list when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def keep_jsonl(path: str, keep: Callable[[dict], bool]) -> None:
    """Rewrite the JSONL file ``path`` (atomically) with only the records ``keep`` accepts; no-op if absent."""
    if os.path.exists(path):
        recs = [r for r in read_jsonl(path) if keep(r)]
        with atomic_file(path) as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")


def append_jsonl(path: str, record: dict) -> None:
    """Append one record to the JSONL file ``path``."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def write_json(path: str, obj: Any, indent: Optional[int] = None) -> None:
    """Write ``obj`` as JSON to ``path`` (atomically replacing it)."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=indent)


class JsonlWriter:
    """Appends records to a JSONL file, flushed after each one (a context manager)."""

    def __init__(self, path: str):
        self.path = path
        self._f = None

    def __enter__(self) -> JsonlWriter:
        self._f = open(self.path, "a")
        return self

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def __exit__(self, *exc) -> None:
        self._f.close()
        self._f = None

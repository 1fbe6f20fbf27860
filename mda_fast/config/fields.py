"""The field machinery of the config dataclasses: ``opt`` (a field with its doc, allowed values and range), the type
check of a value against a field (``type_ok``) and the value check (``check_value``: choices, range, finite, the
``device`` and ``mix`` kinds)."""

from __future__ import annotations

import json
import re
from dataclasses import field

from ..errors import ConfigError


def opt(default, doc: str, *, choices=None, ge=None, gt=None, le=None, lt=None, kind: str | None = None):
    """A config field: its default, its doc, and the allowed values (``choices``) or range (``ge``/``gt``/...)."""
    meta = {"doc": doc, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "kind": kind}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=meta)
    return field(default=default, metadata=meta)


def type_ok(value, default, kind) -> bool:
    if kind == "heads":
        return value == "auto" or (
            isinstance(value, list)
            and all(
                isinstance(h, list) and len(h) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in h)
                for h in value
            )
        )
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(x, str) for x in value)
    if kind == "list[int]":
        return isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    if kind == "mix":
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in value.items()
        )
    want = type(default)
    if want is bool:
        return isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, want)


TYPE_NAMES = {
    "heads": "'auto' or [[layer, head], ...]",
    "list[str]": "a list of strings",
    "list[int]": "a list of integers",
    "mix": "a table of category = share",
    "device": "str",
}


def check_value(key: str, v, meta) -> None:
    choices = meta.get("choices")
    if choices is not None and v not in choices:
        raise ConfigError(f"{key} = {v!r}: expected one of {list(choices)}")
    for op, bound, ok in (
        ("ge", meta.get("ge"), lambda a, b: a >= b),
        ("gt", meta.get("gt"), lambda a, b: a > b),
        ("le", meta.get("le"), lambda a, b: a <= b),
        ("lt", meta.get("lt"), lambda a, b: a < b),
    ):
        if bound is not None and not ok(v, bound):
            sym = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[op]
            raise ConfigError(f"{key} = {v!r}: expected a value {sym} {bound}")
    if v != v or v in (float("inf"), float("-inf")):
        raise ConfigError(f"{key} = {v!r}: expected a finite number")
    kind = meta.get("kind")
    if kind == "device" and not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
        raise ConfigError(f"{key} = {v!r}: expected auto, cpu, cuda or cuda:N")
    if kind == "mix" and any(s < 0 for s in v.values()):
        raise ConfigError(f"{key}: shares must be >= 0, got {v!r}")

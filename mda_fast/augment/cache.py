"""Cache keys of the study's trained runs: a short fingerprint of what a run depends on."""

from __future__ import annotations

import hashlib
import json

__all__ = ["fingerprint"]


def fingerprint(obj) -> str:
    """16 hex digits of the SHA-256 of ``obj`` as sorted JSON (non-JSON values by ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]

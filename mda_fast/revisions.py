"""Hub revision names and their training steps: one parser for every place that reads a checkpoint's step.

A hub checkpoint's revision name carries its training step as ``step<k>``: Pythia's ``step1000``, OLMo-2's
``stage1-step1000-tokens3B``. :func:`revision_step` reads it, :func:`order_revisions` orders a list of names by step
(refusing a name without a step, two names of one step, or names of two training stages), :func:`revision_for_step`
finds the name of a step in such a list, and :func:`run_dir_steps` lists the ``step<k>/`` checkpoints of a mda-fast
training run. ``main`` (or a commit hash) names one checkpoint of unknown step: it is accepted only where a single
checkpoint is meant (``model.revision``), never in a list of checkpoints.
"""

from __future__ import annotations

import os
import re

__all__ = ["order_revisions", "revision_for_step", "revision_step", "run_dir_steps"]

_STEP = re.compile(r"(?:.*[-_])?step(\d+)(?:[-_].*)?")
_STAGE = re.compile(r"stage(\d+)[-_]")


def revision_step(name: str) -> int:
    """The training step a hub revision name carries: ``step1000`` -> 1000, ``stage1-step1000-tokens3B`` -> 1000.

    ``ValueError`` (one line) for a name without a ``step<k>`` part (``main``, a commit hash): such a name is one
    checkpoint of unknown step, usable only where a single checkpoint is meant (``model.revision``)."""
    m = _STEP.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(
            f"revision {name!r} names no training step; expected a name carrying step<k> (step1000, "
            "stage1-step1000-tokens3B); 'main' or a commit names one checkpoint of unknown step (model.revision only)"
        )
    return int(m.group(1))


def _stage(name: str):
    m = _STAGE.match(name)
    return int(m.group(1)) if m else None


def order_revisions(revisions) -> list:
    """``[(step, name)]`` of hub revision names, ascending by step (:func:`revision_step`).

    ``ValueError`` (one line) for a name without a step, two names of one step, or names of different training
    stages (``stage1-…`` and ``stage2-…``: each stage counts its steps from 0, so their steps do not order)."""
    revisions = list(revisions)
    pairs = [(revision_step(r), r) for r in revisions]
    stages: dict = {}
    for r in revisions:
        stages.setdefault(_stage(r), r)
    if len(stages) > 1:
        first, second = list(stages.values())[:2]
        raise ValueError(
            f"revisions {first!r} and {second!r} are from different training stages; expected revisions of one "
            "stage (each stage counts its steps from 0)"
        )
    seen: dict = {}
    for k, r in pairs:
        if k in seen and seen[k] != r:
            raise ValueError(f"revisions {seen[k]!r} and {r!r} both name step {k}; expected one revision per step")
        seen[k] = r
    return sorted(seen.items())


def revision_for_step(revisions, step: int) -> str:
    """The name in ``revisions`` whose step is ``step``; ``step<k>`` (Pythia's naming) when none is."""
    for k, r in order_revisions(revisions or []):
        if k == int(step):
            return r
    return f"step{int(step)}"


def run_dir_steps(run_dir: str) -> list:
    """The steps of the ``step<k>/`` checkpoint directories of a mda-fast training run, ascending ([] if none)."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(
        int(d[4:])
        for d in os.listdir(run_dir)
        if re.fullmatch(r"step\d+", d) and os.path.isdir(os.path.join(run_dir, d))
    )

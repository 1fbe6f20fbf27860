"""The package version and the environment a result was computed in (versions, threads), recorded in every
study's ``summary.json`` and report: torch's thread count changes the order of floating-point sums, so figures such
as first threshold crossings move with it (see docs/studies.md)."""

from __future__ import annotations

import os
import platform

try:  # one source for the version: pyproject.toml, through the installed metadata
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _dist_version

    __version__ = _dist_version("mda-fast")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"


def environment() -> dict:
    """Versions of the numeric stack and the thread settings of this process (JSON-ready)."""
    import numpy
    import torch
    import transformers

    return {
        "mda_fast": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }

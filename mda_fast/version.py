"""The package version and the environment a result was computed in (versions, threads), recorded in every
study's ``summary.json`` and report: torch's thread count changes the order of floating-point sums, so figures such
as first threshold crossings move with it (see docs/studies.md)."""

from __future__ import annotations

import functools
import os
import platform

try:  # one source for the version: pyproject.toml, through the installed metadata
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _dist_version

    __version__ = _dist_version("mda-fast")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"


def _cpu_model() -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere ``platform.processor()``), or None."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


@functools.lru_cache(maxsize=1)
def source_commit() -> str | None:
    """The git commit of the source tree this package runs from (``+dirty`` with uncommitted changes to tracked
    files), or None where it is not a git checkout (an installed wheel)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        run = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Versions of the numeric stack, the source commit, the CPU and its SIMD level as torch uses it, and the thread
    settings of this process (JSON-ready): the CPU's kernels, like the thread count, set the order of floating-point
    sums."""
    import numpy
    import torch
    import transformers

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch < 2.1
        capability = None
    return {
        "mda_fast": __version__,
        "mda_fast_commit": source_commit(),
        "cpu": _cpu_model(),
        "torch_cpu_capability": capability,
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

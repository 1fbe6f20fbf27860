"""Optional dependencies of the corpus readers (the ``corpus`` extra): imported on first use, with one clear line
naming the missing package and the pip command when one is absent."""

from __future__ import annotations

import importlib

from ..errors import ConfigError

#: module -> (pip package, what needs it)
PACKAGES = {
    "zstandard": ("zstandard", ".zst files"),
    "pyarrow": ("pyarrow", "Parquet files and datasets' save_to_disk directories"),
    "pyarrow.parquet": ("pyarrow", "Parquet files"),
    "pyarrow.ipc": ("pyarrow", "datasets' save_to_disk directories"),
}


def require(module: str, where: str = ""):
    """``import module``, or a :class:`ConfigError` naming the package and the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package, what = PACKAGES.get(module, (module.split(".")[0], "this input"))
        at = f"{where}: " if where else ""
        raise ConfigError(
            f"{at}reading {what} needs the Python package {package!r}, which is not installed; "
            f"install it with: pip install {package}  (or pip install 'mda-fast[corpus]')"
        ) from None

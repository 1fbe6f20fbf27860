"""mda-fast: Mechanistic Data Attribution (arXiv 2601.21996) for GPT-NeoX / Pythia attention heads."""

from . import text_probes  # noqa: F401,E402  (registers the "induction_text" probe)
from .adapters import ModelAdapter, ModelShape, adapter_for, register_adapter
from .capture import per_sample_head_grads
from .ekfac import Factors, fit_ekfac
from .errors import ConfigError, DataError, MdaFastError, ModelError, NonFiniteError, OutputError, StateError
from .heads import Block, HeadSpec, ModuleSpec, head_blocks
from .influence import InfluenceScorer
from .localize import localize, localize_all
from .model import load_pythia
from .probes import Probe, get_probe, register_probe

try:  # one source for the version: pyproject.toml, through the installed metadata
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _dist_version

    __version__ = _dist_version("mda-fast")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Block",
    "ConfigError",
    "ModelAdapter",
    "ModelShape",
    "adapter_for",
    "register_adapter",
    "DataError",
    "Factors",
    "MdaFastError",
    "ModelError",
    "NonFiniteError",
    "OutputError",
    "StateError",
    "HeadSpec",
    "InfluenceScorer",
    "ModuleSpec",
    "Probe",
    "fit_ekfac",
    "get_probe",
    "head_blocks",
    "load_pythia",
    "localize",
    "localize_all",
    "per_sample_head_grads",
    "register_probe",
]

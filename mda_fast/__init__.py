"""mda-fast: Mechanistic Data Attribution (arXiv 2601.21996) for GPT-NeoX / Pythia attention heads."""

from .adapters import ModelAdapter, ModelShape, adapter_for, register_adapter
from .core import text_probes  # noqa: F401,E402  (registers the "induction_text" probe)
from .core.capture import per_sample_head_grads
from .core.ekfac import Factors, fit_ekfac
from .core.heads import Block, HeadSpec, ModuleSpec, head_blocks
from .core.influence import InfluenceScorer
from .core.localize import localize, localize_all
from .core.model import load_pythia
from .core.probes import Probe, get_probe, register_probe
from .errors import ConfigError, DataError, MdaFastError, ModelError, NonFiniteError, OutputError, StateError
from .version import __version__

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

"""mda-fast: Mechanistic Data Attribution (arXiv 2601.21996) for GPT-NeoX / Pythia attention heads."""
from .capture import per_sample_head_grads
from .errors import ConfigError, DataError, MdaFastError, ModelError, NonFiniteError, OutputError, StateError
from .ekfac import Factors, fit_ekfac
from .heads import Block, HeadSpec, ModuleSpec, head_blocks
from .influence import InfluenceScorer
from .localize import localize, localize_all
from .model import load_pythia
from .probes import Probe, get_probe, register_probe

__version__ = "0.1.0"

__all__ = [
    "Block", "ConfigError", "DataError", "Factors", "MdaFastError", "ModelError", "NonFiniteError",
    "OutputError", "StateError", "HeadSpec", "InfluenceScorer", "ModuleSpec", "Probe", "fit_ekfac", "get_probe",
    "head_blocks", "load_pythia", "localize", "localize_all", "per_sample_head_grads", "register_probe",
]

"""Training data: Megatron ``.bin/.idx`` files, Pythia's step order, OLMo's token files and order, tokenizers, the
category sidecar, the synthetic demo corpus and a corpus built from any files (``build_corpus``)."""

from .categories import load_category_sidecar, write_category_sidecar
from .corpus import CorpusConfig, build_corpus
from .megatron import (
    DTYPE_CODES,
    SHARD_CONVENTION,
    MissingDataError,
    MMapIndexedDataset,
    resolve_prefix,
    shard_bin_paths,
    write_megatron,
)
from .olmo import OLMoBatches
from .pythia import PythiaBatches
from .tokenizer import ByteTokenizer, HFTokenizer, get_decoder, get_tokenizer, load_tokenizer

__all__ = [
    "DTYPE_CODES",
    "MMapIndexedDataset",
    "MissingDataError",
    "resolve_prefix",
    "SHARD_CONVENTION",
    "shard_bin_paths",
    "write_megatron",
    "PythiaBatches",
    "OLMoBatches",
    "ByteTokenizer",
    "HFTokenizer",
    "get_decoder",
    "get_tokenizer",
    "load_tokenizer",
    "CATEGORIES",
    "SyntheticConfig",
    "generate_corpus",
    "load_category_sidecar",
    "write_category_sidecar",
    "CorpusConfig",
    "build_corpus",
]

_SYNTHETIC = ("CATEGORIES", "SyntheticConfig", "generate_corpus")


def __getattr__(name):
    """The synthetic corpus's names, imported on first use: reading real data never loads the generator."""
    if name in _SYNTHETIC:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

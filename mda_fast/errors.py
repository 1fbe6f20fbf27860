"""The exceptions mda-fast raises for bad input, bad files and non-finite numbers.

Every one of them carries a message of one line: what was wrong and what was expected. The CLI prints it and
exits with code 2; library users can catch ``MdaFastError`` (or the builtin base each subclass also derives from,
so ``except ValueError`` keeps working).
"""

from __future__ import annotations


class MdaFastError(Exception):
    """Base class of every error mda-fast raises on purpose."""


class ConfigError(MdaFastError, ValueError):
    """A config key has a wrong type or value, or is unknown (the message names the key)."""


class DataError(MdaFastError, ValueError):
    """Training data (a Megatron ``.bin/.idx`` set, rows, a sidecar) is missing, inconsistent or out of range."""


class MissingDataError(DataError, FileNotFoundError):
    """A Megatron ``.idx`` or its token stream is absent (a :class:`DataError` and a ``FileNotFoundError``)."""


class ModelError(MdaFastError, ValueError):
    """A model or checkpoint cannot be used: not GPT-NeoX, missing weights, unreachable without the HF cache."""


class NonFiniteError(MdaFastError, ValueError):
    """A NaN or infinity was found; the message names where (parameters, factors, probe gradients, a score chunk)."""


class StateError(MdaFastError, ValueError):
    """An output directory holds results that do not fit the request (a resume after a refit, missing stages)."""


class OutputError(MdaFastError, OSError):
    """An output cannot be written: read-only or full disk, ``--out`` naming a file, a directory in use."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """``error``'s message on one line (its lines joined, whitespace collapsed), shortened to ``limit`` characters,
    for quoting a lower-level error (LAPACK, safetensors, Hugging Face) inside a one-line mda-fast message."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

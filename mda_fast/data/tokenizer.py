"""Tokenizers: a byte-level one for the CPU demo and GPT-NeoX-20B (Pythia's) through ``tokenizers``.

Both expose ``encode(str) -> np.ndarray[int64]``, ``decode(ids) -> str``, ``vocab_size`` and ``eod_id`` (0 in
both, Pythia's convention; there is no BOS). ``decode`` keeps special tokens visible.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Union

import numpy as np

__all__ = ["ByteTokenizer", "HFTokenizer", "load_tokenizer", "get_tokenizer", "get_decoder"]


class ByteTokenizer:
    """Byte-level vocabulary: 0 = EOD, 1 = PAD, 2-3 reserved, byte ``b`` -> ``b + 4``; ``vocab_size = 260``."""

    EOD = 0
    PAD = 1
    OFFSET = 4
    vocab_size = 260
    eod_id = EOD
    pad_id = PAD
    _SPECIAL = {0: "<|eod|>", 1: "<|pad|>", 2: "<|reserved2|>", 3: "<|reserved3|>"}

    def encode(self, text: str, append_eod: bool = False) -> np.ndarray:
        """UTF-8 bytes of ``text`` shifted by 4, optionally followed by EOD; int64."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + self.OFFSET
        if append_eod:
            ids = np.append(ids, self.EOD)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; specials appear as ``<|eod|>``, ``<|pad|>``, ``<|reservedN|>``; bad UTF-8 -> U+FFFD."""
        arr = np.asarray(ids).reshape(-1)
        if arr.size == 0:
            return ""
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.min() < 0 or arr.max() >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got range [{arr.min()}, {arr.max()}]")
        special = arr < self.OFFSET
        if not special.any():
            return (arr - self.OFFSET).astype(np.uint8).tobytes().decode("utf-8", errors="replace")
        out = []
        cuts = np.flatnonzero(special)
        prev = 0
        for c in cuts.tolist():
            if c > prev:
                out.append((arr[prev:c] - self.OFFSET).astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
            out.append(self._SPECIAL[int(arr[c])])
            prev = c + 1
        if prev < arr.size:
            out.append((arr[prev:] - self.OFFSET).astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
        return "".join(out)

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=260, eod=0, pad=1)"


class HFTokenizer:
    """Thin wrapper of a ``tokenizers.Tokenizer`` (GPT-NeoX-20B for Pythia) with the ``ByteTokenizer`` API."""

    def __init__(self, tokenizer, source: str = ""):
        self.tokenizer = tokenizer
        self.source = source
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        eod = tokenizer.token_to_id("<|endoftext|>")
        self.eod_id = 0 if eod is None else int(eod)

    def encode(self, text: str, append_eod: bool = False) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        return np.append(ids, self.eod_id) if append_eod else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` with special tokens (``<|endoftext|>``) kept visible."""
        arr = np.asarray(ids).reshape(-1)
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        return self.tokenizer.decode([int(i) for i in arr.tolist()], skip_special_tokens=False)

    def id_to_token(self, i: int):
        return self.tokenizer.id_to_token(int(i))

    def __repr__(self) -> str:
        return f"HFTokenizer({self.source!r}, vocab_size={self.vocab_size})"


def load_tokenizer(path_or_name: Union[str, os.PathLike]) -> HFTokenizer:
    """A ``tokenizer.json`` path (``Tokenizer.from_file``) or a hub name (``Tokenizer.from_pretrained``)."""
    from tokenizers import Tokenizer

    src = os.fspath(path_or_name)
    if os.path.isfile(src):
        try:
            return HFTokenizer(Tokenizer.from_file(src), src)
        except Exception as e:  # tokenizers raises its own Exception type
            raise ValueError(f"{src!r} is not a valid tokenizer.json: {e}") from e
    if os.path.isdir(src) and os.path.isfile(os.path.join(src, "tokenizer.json")):
        return load_tokenizer(os.path.join(src, "tokenizer.json"))
    if src.endswith(".json") or os.path.isdir(src) or src.startswith((".", os.sep, "~")):
        raise FileNotFoundError(f"tokenizer file not found: {src!r} (expected a tokenizer.json)")
    try:
        return HFTokenizer(Tokenizer.from_pretrained(src), src)
    except Exception as e:
        raise ValueError(
            f"could not load tokenizer {src!r} from the Hugging Face hub ({type(e).__name__}: {e}); "
            f"pass the path of a local tokenizer.json instead (the GPT-NeoX-20B tokenizer.json of a Pythia download)"
        ) from e


def get_tokenizer(kind: Union[str, os.PathLike]):
    """``"bytes"`` -> :class:`ByteTokenizer`; anything else -> :func:`load_tokenizer`."""
    if isinstance(kind, str) and kind == "bytes":
        return ByteTokenizer()
    return load_tokenizer(kind)


def get_decoder(kind: Union[str, os.PathLike]) -> Callable[[Iterable[int]], str]:
    """The ``decode`` function for ``"bytes"`` or a tokenizer path / hub name."""
    return get_tokenizer(kind).decode

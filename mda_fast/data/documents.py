"""Documents from the corpus formats people have: JSON lines (plain, ``.gz``, ``.zst``), Parquet, and a directory
written by Hugging Face ``datasets``' ``save_to_disk``.

Which ``--from`` path is read how (:func:`input_kind`):

* a file named ``*.jsonl``, ``*.ndjson`` or ``*.jsonl/.json/.ndjson`` + ``.gz`` / ``.zst`` / ``.zstd``: JSON lines,
  one object per line (the Pile's ``{"text", "meta": {"pile_set_name"}}``, Dolma's ``{"id", "text", "source",
  "added", "created", "metadata"}``); blank lines are skipped (counted);
* a file named ``*.parquet`` / ``*.pq``: Parquet (read with pyarrow, one record batch at a time);
* a directory holding ``state.json`` and ``dataset_info.json``: a ``save_to_disk`` dataset, whose Arrow IPC stream
  files (``state.json``'s ``_data_files``, in that order) are read with pyarrow. A ``DatasetDict`` directory
  (``dataset_dict.json``) is refused with the splits to choose from;
* anything else (a directory of files, a single text file): not a document input (:mod:`mda_fast.data.walk`).

Each record gives one document: its text at ``--text-field`` and, with ``--category-field``, its label at that
dotted path (``meta.pile_set_name``, ``source``; a string or an integer). Records are numbered as a user finds
them: ``line N`` (from 1) in JSON lines, ``row N`` (from 0, the index ``dataset[N]``) in Parquet and Arrow.

A bad record (malformed JSON, not an object, not UTF-8, a missing or non-string field) is a :class:`DataError`
naming the file and the line or row; with ``bad_records="skip"`` it is skipped and counted by reason instead.
A record whose text is empty is always skipped (``empty text``), and so is a blank line (``blank line``).

The readers stream: memory holds one decompressed block (1 MiB), one record batch, or the longest line.
zstandard and pyarrow are optional (``pip install 'mda-fast[corpus]'``); a missing one is one clear line.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

from ..errors import ConfigError, DataError, one_line
from .optional import require

__all__ = [
    "InputFile",
    "Fields",
    "input_kind",
    "file_kind",
    "list_inputs",
    "check_input",
    "read_documents",
    "field_path",
    "JSONL_SUFFIXES",
    "TABLE_SUFFIXES",
]

#: file-name ending -> compression of a JSON-lines file
JSONL_SUFFIXES = {
    **{s: None for s in (".jsonl", ".ndjson")},
    **{b + c: "gzip" for b in (".jsonl", ".json", ".ndjson") for c in (".gz",)},
    **{b + c: "zstd" for b in (".jsonl", ".json", ".ndjson") for c in (".zst", ".zstd")},
}
TABLE_SUFFIXES = (".parquet", ".pq")
BLOCK = 1 << 20  # decompressed bytes per read
BATCH_ROWS = 1024  # Parquet / Arrow rows per record batch
_MISSING = object()


@dataclass
class InputFile:
    """One file of document records: ``where`` is how messages name it (the path as given, or inside a
    ``save_to_disk`` directory ``DIR/data-00000-of-00001.arrow``)."""

    root: int
    path: str
    where: str
    kind: str  # jsonl | parquet | arrow
    compression: Optional[str]
    size: int


@dataclass
class Fields:
    """The dotted paths of a record's text and (optional) label."""

    text: Tuple[str, ...]
    category: Optional[Tuple[str, ...]]


def field_path(spec: str, flag: str) -> Tuple[str, ...]:
    """``"meta.pile_set_name"`` -> ``("meta", "pile_set_name")``; empty parts are a :class:`ConfigError`."""
    parts = tuple(spec.split("."))
    if not spec or any(not p for p in parts):
        raise ConfigError(f"{flag} {spec!r}: expected a field name or a dotted path such as meta.pile_set_name")
    return parts


def input_kind(path: str) -> Optional[str]:
    """``"jsonl"``, ``"parquet"``, ``"hf-disk"`` or ``None`` (a directory of files / a text file)."""
    if os.path.isdir(path):
        names = set(os.listdir(path))
        if "dataset_dict.json" in names or {"state.json", "dataset_info.json"} <= names:
            return "hf-disk"
        return None
    return file_kind(path)


def file_kind(name: str) -> Optional[str]:
    """``"jsonl"`` or ``"parquet"`` from a file's name alone, else ``None``."""
    low = os.path.basename(name).lower()
    if any(low.endswith(s) for s in JSONL_SUFFIXES):
        return "jsonl"
    if low.endswith(TABLE_SUFFIXES):
        return "parquet"
    return None


def _compression(name: str) -> Optional[str]:
    low = name.lower()
    for s, c in sorted(JSONL_SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if low.endswith(s):
            return c
    return None


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError as e:
        raise DataError(f"--from {path}: cannot read it ({e.strerror or e})") from None


def list_inputs(roots: List[str]) -> List[InputFile]:
    """The document files of the ``--from`` roots, in order (a ``save_to_disk`` directory: its data files)."""
    out = []
    for ri, root in enumerate(roots):
        kind = input_kind(root)
        if kind == "jsonl":
            out.append(InputFile(ri, os.path.basename(root), root, "jsonl", _compression(root), _size(root)))
        elif kind == "parquet":
            out.append(InputFile(ri, os.path.basename(root), root, "parquet", None, _size(root)))
        elif kind == "hf-disk":
            for name in _hf_data_files(root):
                p = os.path.join(root, name)
                out.append(InputFile(ri, name, p, "arrow", None, _size(p)))
        else:
            raise ConfigError(f"--from {root}: not a JSON-lines, Parquet or save_to_disk input")
    return out


def _hf_data_files(root: str) -> List[str]:
    if os.path.exists(os.path.join(root, "dataset_dict.json")):
        splits = sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "state.json")))
        raise ConfigError(
            f"--from {root}: a datasets DatasetDict (splits {', '.join(splits) or 'none'}); expected one split's "
            f"directory, e.g. {os.path.join(root, splits[0] if splits else 'train')}"
        )
    state = os.path.join(root, "state.json")
    try:
        with open(state, "rb") as fh:
            files = json.loads(fh.read().decode("utf-8"))["_data_files"]
        names = [f["filename"] for f in files]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"--from {root}: state.json is not a datasets state ({one_line(e, 120)}); expected "
            '{"_data_files": [{"filename": "data-00000-of-00001.arrow"}, ...]} as save_to_disk writes it'
        ) from None
    if not names or not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..") for n in names):
        raise DataError(f"--from {root}: state.json lists no data files ({names!r}); expected Arrow file names")
    for n in names:
        if not os.path.isfile(os.path.join(root, n)):
            raise DataError(f"--from {root}: state.json lists {n}, which does not exist; expected save_to_disk's files")
    return names


# ------------------------------------------------------------------------------------------------ up-front checks


def check_input(inp: InputFile, fields: Fields) -> None:
    """Before any work: the input's optional package, and for tables the text / label columns and their types."""
    if inp.kind == "jsonl":
        if inp.compression == "zstd":
            require("zstandard", f"--from {inp.where}")
        return
    pa = require("pyarrow", f"--from {inp.where}")
    schema = _table_schema(inp)
    for flag, path in (("--text-field", fields.text), ("--category-field", fields.category)):
        if path is None:
            continue
        t = _arrow_leaf(schema, path, inp, flag)
        if not (_is_text(pa, t) or (flag == "--category-field" and pa.types.is_integer(t))):
            raise DataError(
                f"--from {inp.where}: {flag} {'.'.join(path)} has type {t}; expected a string column"
                + (" (or integers)" if flag == "--category-field" else "")
            )


def _is_text(pa, t) -> bool:
    """A string column of any Arrow flavour (large, view, dictionary-encoded)."""
    if pa.types.is_dictionary(t):
        return _is_text(pa, t.value_type)
    is_view = getattr(pa.types, "is_string_view", None)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or bool(is_view and is_view(t))


def _table_schema(inp: InputFile):
    try:
        if inp.kind == "parquet":
            return require("pyarrow.parquet").ParquetFile(inp.where).schema_arrow
        pa = require("pyarrow")
        with pa.memory_map(inp.where, "r") as src:
            return pa.ipc.open_stream(src).schema
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        what = "Parquet" if inp.kind == "parquet" else "Arrow IPC stream (save_to_disk)"
        raise DataError(f"--from {inp.where}: not a readable {what} file ({one_line(e, 120)})") from None


def _arrow_leaf(schema, path: Tuple[str, ...], inp: InputFile, flag: str):
    pa = require("pyarrow")
    names = schema.names
    if path[0] not in names:
        raise DataError(
            f"--from {inp.where}: no column {path[0]!r} for {flag} {'.'.join(path)}; its columns: {', '.join(names)}"
        )
    t = schema.field(path[0]).type
    for i, part in enumerate(path[1:], 1):
        if not pa.types.is_struct(t) or t.get_field_index(part) < 0:
            raise DataError(
                f"--from {inp.where}: {flag} {'.'.join(path)}: {'.'.join(path[:i])} has type {t}, no field {part!r}"
            )
        t = t.field(part).type
    return t


# ------------------------------------------------------------------------------------------------ reading


class _Counting(io.RawIOBase):
    """A raw file that hashes and counts the bytes read through it (the manifest's sha256, the progress bar)."""

    def __init__(self, fh, hasher):
        self.fh, self.hasher, self.n = fh, hasher, 0

    def readable(self):
        return True

    def readinto(self, b):
        k = self.fh.readinto(b)
        if k:
            self.hasher.update(memoryview(b)[:k])
            self.n += k
        return k

    def read(self, size=-1):
        data = self.fh.read(size)
        self.hasher.update(data)
        self.n += len(data)
        return data


class _ZstdStream:
    """The decompressed bytes of a zstd file, frame after frame (zstd's command line concatenates frames); a file
    that ends inside a frame raises ``EOFError`` (zstandard's stream reader would end quietly)."""

    def __init__(self, raw, zstd):
        self.raw, self.zstd = raw, zstd
        self.d = zstd.ZstdDecompressor().decompressobj()
        self.in_frame = False

    def read(self, size: int = -1) -> bytes:
        while True:
            chunk = self.raw.read(1 << 16)
            if not chunk:
                if self.in_frame:
                    raise EOFError("the file ends inside a zstd frame (truncated?)")
                return b""
            out = []
            while chunk:
                if self.d.eof:
                    self.d = self.zstd.ZstdDecompressor().decompressobj()
                out.append(self.d.decompress(chunk))
                chunk = self.d.unused_data if self.d.eof else b""
                self.in_frame = not self.d.eof
            data = b"".join(out)
            if data:
                return data


class DocumentReader:
    """The documents of one input: ``for text, label, record in reader`` (label ``None`` without a category
    field). ``consumed`` is the input's bytes read so far; after the loop ``sha256`` is the file's hash, ``skips``
    the skipped records by reason and ``documents`` the documents given."""

    def __init__(self, inp: InputFile, fields: Fields, bad_records: str = "error"):
        self.inp, self.fields, self.bad_records = inp, fields, bad_records
        self.consumed, self.documents, self.sha256 = 0, 0, None
        self.skips: Counter = Counter()

    def __iter__(self) -> Iterator[Tuple[str, Optional[str], int]]:
        if self.inp.kind == "jsonl":
            yield from self._jsonl()
        else:
            yield from self._table()

    # -------------------------------------------------------------------------------------------- records

    def _bad(self, reason: str, where: str, detail: str, expected: str) -> None:
        if self.bad_records != "skip":
            raise DataError(f"--from {self.inp.where}: {where}: {detail}; expected {expected}")
        self.skips[reason] += 1

    def _document(self, text, label, where: str):
        """(text, label) of a record's two values, or None (skipped: bad or empty)."""
        if text is _MISSING or text is None:
            return self._bad(
                "missing text field",
                where,
                f"no {'.'.join(self.fields.text)} field"
                if text is _MISSING
                else f"{'.'.join(self.fields.text)} is null",
                "--text-field to name a string field of every record",
            )
        if not isinstance(text, str):
            return self._bad(
                "text not a string",
                where,
                f"{'.'.join(self.fields.text)} is a {type(text).__name__}",
                "a string (--text-field)",
            )
        if self.fields.category is not None:
            name = ".".join(self.fields.category)
            if label is _MISSING or label is None:
                what = f"no {name} field" if label is _MISSING else f"{name} is null"
                return self._bad(
                    "missing category field", where, what, "--category-field to name a field of every record"
                )
            if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
                return self._bad(
                    "category not a string", where, f"{name} is {label!r}", "a non-empty string (or an integer)"
                )
            label = str(label)
        else:
            label = None
        if not text:
            self.skips["empty text"] += 1
            return None
        return text, label

    # -------------------------------------------------------------------------------------------- JSON lines

    def _jsonl(self):
        import hashlib

        h = hashlib.sha256()
        try:
            fh = open(self.inp.where, "rb")
        except OSError as e:
            raise DataError(f"--from {self.inp.where}: cannot read it ({e.strerror or e})") from None
        with fh:
            raw = _Counting(fh, h)
            if self.inp.compression == "gzip":
                import gzip

                stream = gzip.GzipFile(fileobj=raw, mode="rb")
            elif self.inp.compression == "zstd":
                stream = _ZstdStream(raw, require("zstandard", f"--from {self.inp.where}"))
            else:
                stream = raw
            text_path, cat_path = self.fields.text, self.fields.category
            n = 0
            for n, line in self._lines(stream, raw):
                if not line.strip():
                    self.skips["blank line"] += 1
                    continue
                where = f"line {n}"
                try:
                    s = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    self._bad(
                        "not UTF-8", where, f"not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1})", "UTF-8"
                    )
                    continue
                try:
                    obj = json.loads(s)
                except ValueError as e:
                    self._bad("malformed JSON", where, f"not valid JSON ({one_line(e, 100)})", "one JSON object a line")
                    continue
                if not isinstance(obj, dict):
                    self._bad("not a JSON object", where, f"a JSON {type(obj).__name__}", "one JSON object a line")
                    continue
                doc = self._document(_get(obj, text_path), _get(obj, cat_path) if cat_path else None, where)
                if doc is not None:
                    self.documents += 1
                    yield doc[0], doc[1], n
        self.sha256 = h.hexdigest()

    def _lines(self, stream, raw) -> Iterator[Tuple[int, bytes]]:
        """(line number from 1, line bytes without its newline); a trailing newline adds no line."""
        n, pending = 0, []
        while True:
            try:
                block = stream.read(BLOCK)
            except Exception as e:  # noqa: BLE001 - zstandard.ZstdError, gzip.BadGzipFile, EOFError, zlib.error
                if isinstance(e, DataError):
                    raise
                raise DataError(
                    f"--from {self.inp.where}: cannot decompress it ({one_line(e, 120)}; {n} whole lines read before); "
                    f"expected a complete {self.inp.compression} JSON-lines file"
                ) from None
            self.consumed = raw.n
            if not block:
                break
            if b"\n" not in block:
                pending.append(block)
                continue
            if pending:
                block = b"".join(pending) + block
                pending = []
            parts = block.split(b"\n")
            tail = parts.pop()
            for p in parts:
                n += 1
                yield n, p
            if tail:
                pending.append(tail)
        if pending:
            n += 1
            yield n, b"".join(pending)

    # -------------------------------------------------------------------------------------------- tables

    def _table(self):
        from .corpus_tokenizer import file_sha256

        self.sha256 = file_sha256(self.inp.where)
        pa = require("pyarrow", f"--from {self.inp.where}")
        tops = list(dict.fromkeys([self.fields.text[0]] + ([self.fields.category[0]] if self.fields.category else [])))
        row, src = 0, None
        try:
            if self.inp.kind == "parquet":
                pf = require("pyarrow.parquet").ParquetFile(self.inp.where)
                total = max(1, pf.metadata.num_rows)
                batches, src = pf.iter_batches(batch_size=BATCH_ROWS, columns=tops), None
            else:
                src = pa.memory_map(self.inp.where, "r")
                batches, total = pa.ipc.open_stream(src), None
            for batch in batches:
                cols = [batch.column(batch.schema.get_field_index(t)).to_pylist() for t in tops]
                texts = [_get_rest(v, self.fields.text) for v in cols[0]]
                labels = (
                    [_get_rest(v, self.fields.category) for v in cols[tops.index(self.fields.category[0])]]
                    if self.fields.category
                    else [None] * len(texts)
                )
                for t, lab in zip(texts, labels):
                    doc = self._document(t, lab, f"row {row}")
                    if doc is not None:
                        self.documents += 1
                        yield doc[0], doc[1], row
                    row += 1
                self.consumed = src.tell() if src is not None else self.inp.size * min(1.0, row / total)
        except (OSError, ValueError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"--from {self.inp.where}: cannot read it at row {row} ({one_line(e, 120)})") from None
        finally:
            if src is not None:
                src.close()
        self.consumed = self.inp.size


def _get(obj, path: Tuple[str, ...]):
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def _get_rest(value, path: Tuple[str, ...]):
    """A table value of column ``path[0]`` followed down ``path[1:]`` (struct values are dicts)."""
    return _get(value, path[1:]) if len(path) > 1 else value


def read_documents(inp: InputFile, fields: Fields, bad_records: str = "error") -> DocumentReader:
    """The documents of ``inp`` (see :class:`DocumentReader`)."""
    return DocumentReader(inp, fields, bad_records)

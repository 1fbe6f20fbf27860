"""A training corpus from any files: walk, classify, tokenize, pack, write (``mda-fast corpus``).

Document files (JSON lines, ``.gz`` / ``.zst``, Parquet, ``datasets``' ``save_to_disk`` directories; detected by
:func:`mda_fast.data.documents.input_kind`) are built by :mod:`mda_fast.data.corpus_documents` instead, streamed in
constant memory (see ``docs/corpus.md``); this module checks the options and ``--out``, creates a missing output
directory (removed again when the build fails) and moves the finished files into place. The rest of this docstring
is about directories of files.

:func:`build_corpus` walks one or more directories (or files), reads every text file, labels it with a category
(:mod:`mda_fast.data.classify`), tokenizes it (bytes or a ``tokenizer.json``, e.g. GPT-NeoX-20B's), packs the
documents into rows of ``seq_len`` tokens and writes, next to ``PREFIX``:

* ``PREFIX.bin`` / ``PREFIX.idx`` — a Megatron dataset, one entry per row of exactly ``seq_len`` tokens (``uint16``
  when the vocabulary fits, else ``int32``); read it with ``PythiaBatches(PREFIX, batch_size, seq_len)``.
* ``PREFIX.categories.npy`` / ``.json`` — the category sidecar (:mod:`mda_fast.data.categories`): per row the
  fraction of its tokens from each category; an EOD (and, with ``packing="rows"``, the padding after it) counts
  toward the document it ends.
* ``PREFIX.manifest.json`` — what went in (see :func:`build_corpus`).

Order is deterministic: roots in the order given, files by relative POSIX path (byte order); the same files and
options give byte-identical outputs. Hidden entries (names starting with ``.``, e.g. ``.git``) are left out unless
``include_hidden``; directory symlinks are not followed.

Packing (``packing``):

* ``"stream"`` (Pythia's, ``preprocess_data.py --append-eod``): every document followed by the tokenizer's EOD
  (``<|endoftext|>``, id 0 for GPT-NeoX; 0 for bytes), all concatenated and cut into rows of ``seq_len``; a row
  may start inside a document and hold several. The trailing partial row is dropped (``dropped_tokens``).
* ``"rows"``: every document starts a new row. Its tokens and EOD fill as many rows as needed; the last one is
  padded to ``seq_len`` with EOD (``pad_tokens``; Pythia never trains on its ``<|padding|>`` id, EOD it has seen).
  Nothing is dropped.

Files that cannot be used are listed in the manifest's ``skipped`` with a reason: ``binary (NUL bytes)``,
``binary (not UTF-8 ...)``, ``empty``, ``unreadable (...)``, ``hidden``, ``larger than max_file_bytes``,
``symlinked directory (not followed)``, ``override PATTERN: skip``. The build's own outputs (a previous build
at the same prefix inside a walked tree) are neither read nor listed.

The outputs are written under temporary names beside ``PREFIX`` and renamed at the end (the ``.idx`` last), so a
failed build leaves no partial dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config.fields import check_value, opt, type_ok
from ..errors import ConfigError, DataError
from .categories import sidecar_paths, write_category_sidecar
from .classify import CATEGORIES, SKIP, check_overrides, classify
from .content import classifier_record
from .corpus_documents import build_documents, document_fields
from .corpus_tokenizer import NEOX_REPOS, encode_texts, file_sha256, resolve_tokenizer  # noqa: F401 (re-exported)
from .documents import check_input, file_kind, input_kind, list_inputs
from .megatron import write_megatron
from .megatron_shards import shard_files, strip_prefix
from .packing import pack_documents, row_fractions
from .walk import public_record, read_text_file, walk_files

__all__ = [
    "CorpusConfig",
    "build_corpus",
    "resolve_tokenizer",
    "MANIFEST",
    "NEOX_REPOS",
    "corpus_outputs",
    "manifest_path",
    "load_overrides",
]

MANIFEST = ".manifest.json"
FORMAT = "mda-fast corpus"
VERSION = 1
#: hub repositories whose cached ``tokenizer.json`` is GPT-NeoX-20B's (Pythia ships the same file)


@dataclass
class CorpusConfig:
    """How :func:`build_corpus` turns files into rows."""

    tokenizer: str = opt(
        "bytes",
        "bytes, neox (GPT-NeoX-20B's tokenizer.json from the local HF cache), or the path "
        "of a tokenizer.json (or of a directory holding one)",
    )
    seq_len: int = opt(2049, "tokens per row (2049 in Pythia: 2048 inputs + 1 shifted label)", ge=2)
    packing: str = opt(
        "stream",
        "stream: documents + EOD concatenated and cut into rows (Pythia's way; the last "
        "partial row dropped); rows: every document starts a row, its last row padded "
        "with EOD",
        choices=("stream", "rows"),
    )
    overrides: dict = opt(
        {},
        "pattern -> category: a .ext or a glob on the relative path or base name; first "
        "match wins; category 'skip' leaves the file out",
        kind="overrides",
    )
    include_hidden: bool = opt(False, "also read names starting with '.' (e.g. .git/, .env)")
    max_file_bytes: int = opt(0, "skip files larger than this many bytes; 0: no limit", ge=0)
    text_field: str = opt("text", "document inputs: the record field (a dotted path) holding the text")
    category_field: str = opt(
        "", "document inputs: the record field (a dotted path, e.g. meta.pile_set_name or source) of its label"
    )
    categories: str = opt(
        "auto",
        "document inputs: the sidecar's labels: field (from category_field), content (the classifier), "
        "field+content or content+field (the first in the sidecar, the second beside it); auto: field with a "
        "category_field, else content",
        choices=("auto", "field", "content", "field+content", "content+field"),
    )
    shuffle_seed: int = opt(-1, "shuffle the documents with this seed before packing; -1: keep their order", ge=-1)
    bad_records: str = opt(
        "error",
        "document inputs: a malformed / non-UTF-8 record or one missing a field: error (exit 2, naming the file "
        "and line) or skip (counted in the manifest)",
        choices=("error", "skip"),
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kind = f.metadata.get("kind")
            if kind == "overrides":
                self.overrides = check_overrides(v, "overrides")
                continue
            if not type_ok(v, f.default, kind):
                raise ConfigError(f"corpus {f.name} = {v!r}: expected {type(f.default).__name__}")
            check_value(f"corpus {f.name}", v, f.metadata)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def labellings(self) -> List[str]:
        """The labellings of a document build, the sidecar's first: ``["field"]``, ``["content", "field"]``, ..."""
        spec = self.categories
        if spec == "auto":
            spec = "field" if self.category_field else "content"
        views = spec.split("+")
        if "field" in views and not self.category_field:
            raise ConfigError(f"--categories {self.categories}: needs --category-field (e.g. meta.pile_set_name)")
        return views


# ------------------------------------------------------------------------------------------------ outputs


def manifest_path(prefix) -> str:
    return strip_prefix(prefix) + MANIFEST


def corpus_outputs(prefix) -> List[str]:
    """The five files a corpus at ``prefix`` consists of (``.idx`` first)."""
    p = strip_prefix(prefix)
    return [p + ".idx", p + ".bin", *sidecar_paths(p), p + MANIFEST]


def _check_out(prefix: str) -> str:
    """The output prefix, checked: not a directory, its directory existing (or creatable: the nearest existing
    ancestor a writable directory) and holding no sharded token files of this prefix."""
    p = strip_prefix(prefix)
    if not os.path.basename(p):
        raise ConfigError(f"--out {prefix}: expected a path prefix such as DIR/document, not a directory")
    if os.path.isdir(p):
        raise ConfigError(
            f"--out {prefix}: is a directory; expected a path prefix such as {os.path.join(p, 'document')}"
        )
    d = os.path.dirname(os.path.abspath(p))
    anc = d
    while not os.path.exists(anc) and os.path.dirname(anc) != anc:
        anc = os.path.dirname(anc)
    if not os.path.isdir(anc):
        raise ConfigError(f"--out {prefix}: {anc} is a file; expected a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {prefix}: directory {anc} is not writable; expected a writable directory")
    shards = shard_files(p)
    if shards:
        raise ConfigError(
            f"--out {prefix}: {d} already holds sharded token files of this prefix "
            f"({shards[0][2]}, ...); delete them or choose another prefix"
        )
    return p


def _make_parents(prefix: str) -> Optional[str]:
    """Create the directory of ``prefix`` where missing; returns the topmost directory created (None: it existed)."""
    d = os.path.dirname(os.path.abspath(prefix))
    top = None
    while not os.path.exists(d):
        top, d = d, os.path.dirname(d)
    if top is not None:
        os.makedirs(os.path.dirname(os.path.abspath(prefix)))
    return top


# ------------------------------------------------------------------------------------------------ build


def build_corpus(
    dirs: Sequence[str], out_prefix, config: Optional[CorpusConfig] = None, progress: bool = False, tokenizer=None
) -> dict:
    """Build the corpus of the files under ``dirs`` at ``out_prefix`` (see the module docstring); returns the manifest.

    ``tokenizer``: an already loaded tokenizer with its record (the pair :func:`resolve_tokenizer` returns);
    default: ``resolve_tokenizer(config.tokenizer)``.

    The manifest (``PREFIX.manifest.json``)::

        {"format": "mda-fast corpus", "version": 1,
         "roots": [the --from paths as given], "tokenizer": {"name", "path", "sha256", "vocab_size", "eod_id"},
         "seq_len", "packing", "dtype", "n_rows", "n_tokens" (= n_rows * seq_len), "dropped_tokens", "pad_tokens",
         "categories": [sidecar column order], "config": {CorpusConfig fields},
         "totals": {category: {"files", "bytes", "tokens" (document tokens, no EOD), "share" (of row tokens)}},
         "files": [{"root" (index into roots), "path" (relative, POSIX), "category", "rule", "sha256", "bytes",
                    "tokens" (without its EOD), "start" (its first token's index in the flattened rows),
                    "rows" ([first, last] row it occupies, or null when it lies in the dropped tail)}],
         "skipped": [{"root", "path", "reason"}]}

    From document files the manifest has ``"input": "documents"``, ``n_documents``, ``n_skipped_records``,
    ``shuffle_seed``, ``labellings`` and per input file ``inputs`` (path, format, compression, bytes, sha256,
    documents, tokens, skipped records by reason) instead of ``files``; ``PREFIX.documents.npy`` maps each
    document to its input, line / row and first token (:mod:`mda_fast.data.corpus_documents`, ``docs/corpus.md``).
    """
    config = config or CorpusConfig()
    roots = _check_roots(dirs)
    kinds = [input_kind(r) for r in roots]
    prefix = _check_out(os.fspath(out_prefix))
    if any(kinds) and not all(kinds):
        plain = [r for r, k in zip(roots, kinds) if not k]
        raise ConfigError(
            f"--from: mixes document files (JSON lines, Parquet, save_to_disk) with directories or text files "
            f"({plain[0]}); expected one kind per build"
        )
    if not any(kinds):
        _check_walk_options(config)
    else:
        check = document_fields(config)  # before the tokenizer: every option checked first
        config.labellings()
    tok = tokenizer if tokenizer is not None else resolve_tokenizer(config.tokenizer)
    made = None
    try:
        if any(kinds):
            inputs = list_inputs(roots)
            for inp in inputs:
                check_input(inp, check)
            made = _make_parents(prefix)
            return _build_from_documents(roots, inputs, prefix, config, tok, progress)
        made = _make_parents(prefix)
        return _build_files(roots, prefix, config, tok, progress)
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


def _build_from_documents(
    roots: List[str], inputs: list, prefix: str, config: CorpusConfig, tokenizer, progress: bool
) -> dict:
    """The corpus of document inputs (:mod:`mda_fast.data.corpus_documents`), built under a temporary prefix and
    moved into place (the ``.idx`` last); outputs of an earlier build this one does not write are removed."""
    d, base = os.path.split(os.path.abspath(prefix))
    tmp = os.path.join(d, f".{base}.tmp-{os.getpid()}")
    suffixes: List[str] = []
    try:
        body, suffixes = build_documents(inputs, tmp, config, tokenizer, progress, name=base)
        manifest = {"format": FORMAT, "version": VERSION, "roots": roots, **body}
        with open(tmp + MANIFEST, "w") as fh:
            json.dump(manifest, fh, indent=1)
            fh.write("\n")
        order = [s for s in suffixes if s != ".idx"] + [MANIFEST, ".idx"]
        for suf in order:
            os.replace(tmp + suf, prefix + suf)
        for stale in _optional_outputs(prefix):
            if stale[len(prefix) :] not in order:
                with contextlib.suppress(OSError):
                    os.remove(stale)
        return manifest
    finally:
        for name in os.listdir(d):
            if name.startswith(f".{base}.tmp-{os.getpid()}"):
                p = os.path.join(d, name)
                shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)


def _optional_outputs(prefix: str) -> List[str]:
    """The files a build may or may not write: the second labelling's sidecar and the documents index."""
    return [prefix + ".documents.npy"] + [
        prefix + f".{v}{ext}" for v in ("field", "content") for ext in (".categories.npy", ".categories.json")
    ]


def _check_walk_options(config: CorpusConfig) -> None:
    """The document-input options make no sense for directories of files: refuse them."""
    for name, default in (
        ("text_field", "text"),
        ("category_field", ""),
        ("categories", "auto"),
        ("bad_records", "error"),
    ):
        if getattr(config, name) != default:
            raise ConfigError(
                f"--{name.replace('_', '-')} {getattr(config, name)}: only for document inputs (JSON lines, Parquet, "
                f"save_to_disk); a directory of files has one document per file, labelled by its name and content"
            )


def _build_files(roots: List[str], prefix: str, config: CorpusConfig, tokenizer, progress: bool) -> dict:
    """The corpus of the files under ``roots`` (one document per file; see :func:`build_corpus`)."""
    tok, tok_rec = tokenizer
    cands, skipped = walk_files(roots, config, {os.path.realpath(p) for p in corpus_outputs(prefix)})
    extra = sorted({c for c in config.overrides.values() if c not in CATEGORIES and c != SKIP})
    categories = list(CATEGORIES) + extra
    dtype = np.uint16 if tok_rec["vocab_size"] <= 1 << 16 else np.int32
    files, docs, cats = _read_all(
        cands, skipped, config, tok, dtype, {c: i for i, c in enumerate(categories)}, progress
    )
    _check_read(roots, files, skipped, docs, tok_rec)
    if config.shuffle_seed >= 0:
        order = np.random.default_rng(config.shuffle_seed).permutation(len(docs)).tolist()
        files, docs, cats = [files[i] for i in order], [docs[i] for i in order], [cats[i] for i in order]
    S = config.seq_len
    rows, labels, starts, dropped, pad = _pack(roots, docs, cats, config, int(tok_rec["eod_id"]), dtype)
    n_rows = int(rows.shape[0])
    _locate(files, starts, docs, n_rows * S, S)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "roots": roots,
        "tokenizer": tok_rec,
        "seq_len": S,
        "packing": config.packing,
        "dtype": np.dtype(dtype).name,
        "n_rows": n_rows,
        "n_tokens": n_rows * S,
        "dropped_tokens": int(dropped),
        "pad_tokens": int(pad),
        "n_files": len(files),
        "n_skipped": len(skipped),
        "categories": categories,
        "config": config.to_dict(),
        "totals": _totals(files, labels, categories, n_rows * S),
        "files": files,
        "skipped": skipped,
    }
    _write(prefix, rows, dtype, row_fractions(labels, n_rows, S, len(categories)), categories, manifest)
    return manifest


def _check_read(roots: List[str], files: list, skipped: list, docs: List[np.ndarray], tok_rec: dict) -> None:
    """``skipped`` sorted; raise ``DataError`` unless some file was read and every token id is below the vocab."""
    skipped.sort(key=lambda r: (r["root"], r["path"].encode("utf-8", "surrogateescape")))
    if not files:
        why = f" ({len(skipped)} skipped: {_reasons(skipped)})" if skipped else ""
        docs_in = [s["path"] for s in skipped if file_kind(s["path"])]
        hint = f"; JSON lines / Parquet files such as {docs_in[0]} go to --from themselves" if docs_in else ""
        raise DataError(f"--from {' '.join(roots)}: no usable text files{why}; expected UTF-8 text files{hint}")
    for d in docs:
        if d.size and int(d.max()) >= tok_rec["vocab_size"]:
            raise DataError(
                f"tokenizer {tok_rec['name']}: token id {int(d.max())} >= its vocab_size {tok_rec['vocab_size']}"
            )


def _pack(roots: List[str], docs, cats, config: CorpusConfig, eod_id: int, dtype):
    """``pack_documents`` of the documents into ``config.seq_len`` rows; ``DataError`` when not one row is full."""
    S = config.seq_len
    rows, labels, starts, dropped, pad = pack_documents(docs, cats, S, config.packing, eod_id, dtype)
    if int(rows.shape[0]) == 0:
        raise DataError(
            f"--from {' '.join(roots)}: the corpus holds {dropped} tokens, less than one row of "
            f"seq_len={S}; expected more text or a smaller --seq-len"
        )
    return rows, labels, starts, dropped, pad


def _check_roots(dirs) -> List[str]:
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    roots = [os.fspath(d) for d in dirs]
    if not roots:
        raise ConfigError("--from: expected at least one directory")
    for r in roots:
        if not os.path.exists(r):
            raise ConfigError(f"--from {r}: no such directory; expected a directory (or file) of text files")
        if not (os.path.isdir(r) or os.path.isfile(r)):
            raise ConfigError(f"--from {r}: not a directory or a regular file")
    return roots


def _read_all(
    cands: List[dict], skipped: List[dict], config: CorpusConfig, tok, dtype, cat_index: dict, progress: bool
) -> Tuple[List[dict], List[np.ndarray], List[int]]:
    """Read, classify and tokenize every candidate (in order); unusable ones go to ``skipped``."""
    from tqdm.auto import tqdm

    files, docs, cats = [], [], []
    for rec in cands:
        rec["size"] = 0
        with contextlib.suppress(OSError):
            rec["size"] = os.path.getsize(rec["abs"])
    batch: List[Tuple[dict, str]] = []

    def flush():
        for (rec, _), ids in zip(batch, encode_texts(tok, [t for _, t in batch])):
            docs.append(ids.astype(dtype))
            cats.append(cat_index[rec["category"]])
            rec["tokens"] = int(ids.size)
            files.append(rec)
        batch.clear()

    pending = 0
    with tqdm(
        total=sum(r["size"] for r in cands), unit="B", unit_scale=True, desc="corpus", disable=not progress
    ) as bar:
        for rec in cands:
            data, text, reason = read_text_file(rec, config)
            if reason is None:
                cat, rule = classify(rec["path"], text, config.overrides)
                reason = f"{rule}: skip" if cat == SKIP else None
            if reason is not None:
                skipped.append({**public_record(rec), "reason": reason})
            else:
                batch.append(
                    (
                        {
                            **public_record(rec),
                            "category": cat,
                            "rule": rule,
                            "sha256": hashlib.sha256(data).hexdigest(),
                            "bytes": len(data),
                        },
                        text,
                    )
                )
                pending += len(data)
                if len(batch) >= 64 or pending >= 1 << 24:
                    flush()
                    pending = 0
            bar.update(rec["size"])
        flush()
    return files, docs, cats


def _locate(files: List[dict], starts: np.ndarray, docs: List[np.ndarray], kept: int, S: int) -> None:
    """Each file's first token in the flattened rows and the rows it occupies (None in the dropped tail)."""
    for rec, s, d in zip(files, starts.tolist(), docs):
        rec["start"] = int(s)
        last = min(s + d.size, kept - 1)  # its EOD (or the last kept token)
        rec["rows"] = [int(s // S), int(last // S)] if s < kept else None


def _totals(files: List[dict], labels: np.ndarray, categories: List[str], kept: int) -> dict:
    counts = np.bincount(labels, minlength=len(categories))
    totals = {}
    for i, c in enumerate(categories):
        mine = [f for f in files if f["category"] == c]
        totals[c] = {
            "files": len(mine),
            "bytes": sum(f["bytes"] for f in mine),
            "tokens": sum(f["tokens"] for f in mine),
            "share": float(counts[i] / kept),
        }
    return totals


def _reasons(skipped: List[dict]) -> str:
    counts: Dict[str, int] = {}
    for s in skipped:
        key = s["reason"].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def _write(prefix: str, rows: np.ndarray, dtype, fractions: np.ndarray, categories: List[str], manifest: dict) -> None:
    d, base = os.path.split(os.path.abspath(prefix))
    tmp = os.path.join(d, f".{base}.tmp-{os.getpid()}")
    tmp_out, final = corpus_outputs(tmp), corpus_outputs(prefix)
    try:
        write_megatron(tmp, rows, dtype=dtype)
        write_category_sidecar(
            tmp,
            fractions,
            categories,
            seq_len=manifest["seq_len"],
            packing=manifest["packing"],
            tokenizer=manifest["tokenizer"]["name"],
            eod_id=manifest["tokenizer"]["eod_id"],
            source=FORMAT,
            token_share={c: manifest["totals"][c]["share"] for c in categories},
            classifier=classifier_record(),  # the files' categories: by name, else by content
        )
        with open(tmp_out[-1], "w") as fh:
            json.dump(manifest, fh, indent=1)
            fh.write("\n")
        for src, dst in list(zip(tmp_out, final))[1:] + [(tmp_out[0], final[0])]:  # the .idx last
            os.replace(src, dst)
        for stale in _optional_outputs(prefix):  # a document build's extras, not this build's
            with contextlib.suppress(OSError):
                os.remove(stale)
    finally:
        for p in tmp_out:
            with contextlib.suppress(OSError):
                os.remove(p)


def load_overrides(path: str) -> dict:
    """An override mapping from a JSON or TOML file (a table of ``pattern = category``)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise ConfigError(f"--map {path}: cannot read it ({e.strerror or e}); expected a JSON or TOML file") from None
    try:
        if path.endswith(".toml"):
            try:
                import tomllib
            except ImportError:  # Python < 3.11
                import tomli as tomllib

            doc = tomllib.loads(raw.decode("utf-8"))
        else:
            doc = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"--map {path}: not valid {'TOML' if path.endswith('.toml') else 'JSON'} "
            f"({' '.join(str(e).split())[:120]}); expected a table of pattern = category"
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"--map {path}: expected a table of pattern = category, got {type(doc).__name__}")
    return check_overrides(doc, f"--map {path}")


def corpus_fingerprint(prefix: str) -> str:
    """SHA-256 over the token file, the index and the category sidecar's array: equal for equal corpora."""
    h = hashlib.sha256()
    for ext in (".bin", ".idx", ".categories.npy"):
        h.update(file_sha256(prefix + ext).encode())
    return h.hexdigest()

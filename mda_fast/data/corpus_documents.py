"""The corpus of document inputs (JSON lines, Parquet, ``save_to_disk``; :mod:`mda_fast.data.documents`), streamed
in constant memory: read, label, tokenize, (shuffle,) pack and write under a temporary prefix; the orchestrator
(:mod:`mda_fast.data.corpus`) writes the manifest and moves the files into place.

Labellings (``CorpusConfig.categories``): ``field`` (the record's ``category_field``) and ``content`` (the content
classifier, :func:`mda_fast.data.classify.sniff`: a document has no file name). The first is the category sidecar
``PREFIX.categories.npy/.json``; a second one is a sidecar of its own, ``PREFIX.<name>.categories.npy/.json``,
which the first one's metadata names (``"labellings"``).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import DataError
from .categories import write_sidecar_meta
from .classify import CATEGORIES, sniff
from .content import classifier_record
from .corpus_tokenizer import encode_texts
from .doc_shuffle import BucketShuffle, bucket_count
from .documents import Fields, InputFile, field_path, read_documents
from .row_writer import MAX_COLUMNS, NpyAppender, RowWriter, sidecar_order

__all__ = ["build_documents", "document_fields", "CLASSIFIER"]

#: how the content labelling is made (recorded in the sidecar)
CLASSIFIER = "mda_fast.data.classify.sniff (content only)"
TEXT_BATCH = 512  # documents per tokenizer call
TEXT_BATCH_BYTES = 8 << 20


def document_fields(config) -> Fields:
    """The text and label paths of ``config`` (``ConfigError`` on an empty part)."""
    return Fields(
        field_path(config.text_field, "--text-field"),
        field_path(config.category_field, "--category-field") if config.category_field else None,
    )


class _Columns:
    """Label -> column of one labelling: the fixed ones first (their column = their position), then in order of
    first appearance; at most :data:`MAX_COLUMNS`."""

    def __init__(self, what: str, fixed=()):
        self.what, self.fixed = what, list(fixed)
        self.index: Dict[str, int] = {c: i for i, c in enumerate(self.fixed)}
        self.docs: List[int] = [0] * len(self.fixed)
        self.tokens: List[int] = [0] * len(self.fixed)

    def __call__(self, label: str, n_tokens: int) -> int:
        i = self.index.get(label)
        if i is None:
            if len(self.index) >= MAX_COLUMNS:
                raise DataError(
                    f"{self.what}: more than {MAX_COLUMNS} distinct labels (e.g. {label!r}); expected a category "
                    f"field such as meta.pile_set_name or source, not an identifier"
                )
            i = self.index[label] = len(self.index)
            self.docs.append(0)
            self.tokens.append(0)
        self.docs[i] += 1
        self.tokens[i] += n_tokens
        return i

    def names(self) -> List[str]:
        return sidecar_order(list(self.index), self.fixed)


def _estimate_token_bytes(inputs: List[InputFile], itemsize: int) -> int:
    """An upper estimate of the token data: compressed text expands about 5x, a token per byte at most."""
    return sum(i.size * (5 if (i.compression or i.kind != "jsonl") else 1) for i in inputs) * itemsize


def build_documents(
    inputs: List[InputFile], tmp: str, config, tokenizer: Tuple[object, dict], progress: bool, name: str = "PREFIX"
) -> Tuple[dict, List[str]]:
    """Stream ``inputs`` into the corpus files at the temporary prefix ``tmp`` (to become the prefix whose base
    name is ``name``); returns (the manifest's body, the suffixes written: ``.bin``, the sidecars,
    ``.documents.npy``, ``.idx`` last)."""
    from tqdm.auto import tqdm

    tok, tok_rec = tokenizer
    fields = document_fields(config)
    views = config.labellings()
    S, eod = config.seq_len, int(tok_rec["eod_id"])
    dtype = np.dtype(np.uint16 if tok_rec["vocab_size"] <= 1 << 16 else np.int32)
    vocab = int(tok_rec["vocab_size"])
    columns = {
        v: _Columns(f"--category-field {config.category_field}") if v == "field" else _Columns("content", CATEGORIES)
        for v in views
    }
    writer = RowWriter(tmp, S, config.packing, eod, dtype, len(views))
    index = NpyAppender(tmp + ".documents.tmp", np.int64, 3)
    shuffle: Optional[BucketShuffle] = None
    if config.shuffle_seed >= 0:
        n_b = bucket_count(_estimate_token_bytes(inputs, dtype.itemsize))
        shuffle = BucketShuffle(tmp + ".shuffle", config.shuffle_seed, n_b, dtype, 2 + len(views))
    records = []

    def place(ids: np.ndarray, meta) -> None:
        start = writer.add(ids, [int(c) for c in meta[2:]])
        index.append(np.array([int(meta[0]), int(meta[1]), start], dtype=np.int64))

    def emit(ii: int, batch: List[Tuple[str, Optional[str], int]], rec: dict) -> None:
        for (text, label, rno), ids in zip(batch, encode_texts(tok, [b[0] for b in batch])):
            if ids.size and int(ids.max()) >= vocab:
                raise DataError(f"tokenizer {tok_rec['name']}: token id {int(ids.max())} >= its vocab_size {vocab}")
            ids = ids.astype(dtype)
            cols = [columns[v](label if v == "field" else sniff(text)[0], int(ids.size)) for v in views]
            rec["tokens"] += int(ids.size)
            meta = [ii, rno, *cols]
            if shuffle is not None:
                shuffle.add(ids, np.asarray(meta, dtype=np.int64))
            else:
                place(ids, meta)
        batch.clear()

    try:
        with tqdm(
            total=sum(i.size for i in inputs), unit="B", unit_scale=True, desc="corpus", disable=not progress
        ) as bar:
            base = 0
            for ii, inp in enumerate(inputs):
                reader = read_documents(inp, fields, config.bad_records)
                rec = {
                    "root": inp.root,
                    "path": inp.path,
                    "format": inp.kind,
                    "compression": inp.compression,
                    "bytes": inp.size,
                    "tokens": 0,
                }
                batch: list = []
                size = 0
                for doc in reader:
                    batch.append(doc)
                    size += len(doc[0])
                    if len(batch) >= TEXT_BATCH or size >= TEXT_BATCH_BYTES:
                        emit(ii, batch, rec)
                        size = 0
                        bar.update(base + int(reader.consumed) - bar.n)
                emit(ii, batch, rec)
                base += inp.size
                bar.update(base - bar.n)
                rec.update(sha256=reader.sha256, documents=reader.documents, skipped=dict(sorted(reader.skips.items())))
                records.append(rec)
        n_docs = sum(r["documents"] for r in records)
        if not n_docs:
            skipped = _skip_summary(records)
            raise DataError(
                f"--from {inputs[0].where}{' ...' if len(inputs) > 1 else ''}: no documents"
                f"{f' ({skipped})' if skipped else ' (empty)'}; expected records with a non-empty "
                f"{config.text_field} field"
            )
        if shuffle is not None:
            for ids, meta in shuffle:
                place(ids, meta.tolist())
        names = {v: columns[v].names() for v in views}
        suffixes = [".categories.npy"] + [f".{v}.categories.npy" for v in views[1:]]
        stats = writer.finish([[columns[v].index[c] for c in names[v]] for v in views], [tmp + suf for suf in suffixes])
        if stats["n_rows"] == 0:
            raise DataError(
                f"--from {inputs[0].where}{' ...' if len(inputs) > 1 else ''}: the documents hold "
                f"{stats['dropped_tokens']} tokens, less than one row of seq_len={S}; expected more text or a "
                f"smaller --seq-len"
            )
        index.save(tmp + ".documents.npy")
    finally:
        writer.close()
        index.close()
        if shuffle is not None:
            shuffle.close()
    kept = stats["n_rows"] * S
    labellings = {}
    for v, tokens in zip(views, stats["tokens"]):
        col = columns[v]
        labellings[v] = {
            "source": f"field {config.category_field}" if v == "field" else CLASSIFIER,
            "categories": names[v],
            "totals": {
                c: {
                    "documents": col.docs[col.index[c]],
                    "tokens": col.tokens[col.index[c]],
                    "share": (tokens[col.index[c]] if col.index[c] < len(tokens) else 0) / kept,
                }
                for c in names[v]
            },
        }
    _write_sidecar_metas(tmp, name, views, labellings, stats["n_rows"], config, tok_rec)
    body = {
        "input": "documents",
        "tokenizer": tok_rec,
        "seq_len": S,
        "packing": config.packing,
        "dtype": dtype.name,
        "n_rows": stats["n_rows"],
        "n_tokens": kept,
        "dropped_tokens": stats["dropped_tokens"],
        "pad_tokens": stats["pad_tokens"],
        "n_files": len(records),
        "n_documents": n_docs,
        "n_skipped": sum(1 for r in records if not r["documents"]),
        "n_skipped_records": sum(sum(r["skipped"].values()) for r in records),
        "shuffle_seed": config.shuffle_seed if config.shuffle_seed >= 0 else None,
        "shuffle_buckets": shuffle.n if shuffle is not None else None,
        "categories": names[views[0]],
        "labelled_by": views[0],
        "config": config.to_dict(),
        "totals": labellings[views[0]]["totals"],
        "labellings": labellings,
        "inputs": records,
        "skipped": [
            {"root": r["root"], "path": r["path"], "reason": "empty" if not r["skipped"] else "no documents"}
            for r in records
            if not r["documents"]
        ],
        "documents_index": f"{name}.documents.npy: int64 [n_documents, 3] = (input, line or row, first token in "
        "the flattened rows; >= n_tokens: in the dropped tail), in corpus order",
    }
    jsons = [s.replace(".npy", ".json") for s in suffixes]
    return body, [".bin", *suffixes, *jsons, ".documents.npy", ".idx"]


def _skip_summary(records: List[dict]) -> str:
    total: Dict[str, int] = {}
    for r in records:
        for k, n in r["skipped"].items():
            total[k] = total.get(k, 0) + n
    return ", ".join(f"{n} {k}" for k, n in sorted(total.items()))


def _write_sidecar_metas(
    tmp: str, name: str, views: List[str], labellings: dict, n_rows: int, config, tok_rec: dict
) -> None:
    """The sidecars' JSON; the first one's ``"labellings"`` names every labelling's sidecar (its ``.json``)."""
    for i, v in enumerate(views):
        lab = labellings[v]
        meta = {
            "seq_len": config.seq_len,
            "packing": config.packing,
            "tokenizer": tok_rec["name"],
            "eod_id": tok_rec["eod_id"],
            "source": "mda-fast corpus",
            "labelled_by": v,
            "label_source": lab["source"],
            "token_share": {c: t["share"] for c, t in lab["totals"].items()},
        }
        if v == "content":
            meta["classifier"] = classifier_record()
        if i == 0:
            meta["labellings"] = {
                w: f"{name}.categories.json" if w == v else f"{name}.{w}.categories.json" for w in views
            }
        write_sidecar_meta(tmp if i == 0 else f"{tmp}.{v}", lab["categories"], **meta, n_rows=n_rows)

"""``mda-fast corpus --from`` on the corpus formats people have, written here from their published descriptions:

* the Pile: JSON lines ``{"text": ..., "meta": {"pile_set_name": ...}}``, zstd-compressed (``00.jsonl.zst``);
* Dolma: JSON lines with ``id``, ``text``, ``source``, ``added``, ``created``, ``metadata``, gzip-compressed
  (``*.json.gz``);
* Parquet written by pyarrow (a ``text`` column and a ``meta`` struct);
* a ``datasets`` ``save_to_disk`` directory: ``data-0000i-of-0000n.arrow`` Arrow IPC streams, ``state.json`` with
  ``_data_files``, ``dataset_info.json`` (written with pyarrow following that layout).

The rows are checked against an independent packing of the same documents (bytes tokenizer: the token stream is
the documents' UTF-8 bytes, each followed by EOD 0), the sidecars against each document's label, the streamed
writer against the in-memory ``pack_documents`` + ``write_megatron`` + ``row_fractions``, and the shuffle for being
a seeded permutation.
"""

import gzip
import hashlib
import json
import os

import numpy as np
import pytest

from mda_fast.cli import main
from mda_fast.data import PythiaBatches, load_category_sidecar, write_megatron
from mda_fast.data.classify import CATEGORIES, sniff
from mda_fast.data.corpus import CorpusConfig, build_corpus
from mda_fast.data.doc_shuffle import BucketShuffle
from mda_fast.data.packing import pack_documents, row_fractions
from mda_fast.data.row_writer import RowWriter
from mda_fast.errors import ConfigError, DataError

zstd = pytest.importorskip("zstandard")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SETS = ["Pile-CC", "Github", "ArXiv", "StackExchange"]


def _text(rng, kind: str) -> str:
    n = int(rng.integers(1, 30))
    if kind == "Github":
        return "import os\n\ndef f(x):\n    return os.path.join(x, 'y')\n" * n
    if kind == "ArXiv":
        return "\\documentclass{article}\n\\begin{document}\nWe show $x^2 \\geq 0$.\n\\end{document}\n" * n
    if kind == "StackExchange":
        return "Q: How do I sort a list?\nA: Use sorted(xs) — it returns a new list. ünïcödé 世界\n" * n
    return "The quick brown fox jumps over the lazy dog. " * n


def pile_docs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    kinds = [SETS[int(i)] for i in rng.integers(0, len(SETS), size=n)]
    return [{"text": _text(rng, k), "meta": {"pile_set_name": k}} for k in kinds]


def write_jsonl(path, records, compress=None, raw_lines=None):
    if raw_lines is not None:
        data = b"".join(raw_lines)
    else:
        data = ("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)).encode("utf-8")
    if compress == "zstd":
        data = zstd.ZstdCompressor(level=3).compress(data)
    elif compress == "gzip":
        data = gzip.compress(data)
    with open(path, "wb") as fh:
        fh.write(data)
    return str(path)


def write_parquet(path, records, row_group_size=64):
    table = pa.table(
        {
            "text": pa.array([r["text"] for r in records], type=pa.string()),
            "meta": pa.array([r["meta"] for r in records], type=pa.struct([("pile_set_name", pa.string())])),
        }
    )
    pq.write_table(table, str(path), row_group_size=row_group_size)
    return str(path)


def write_save_to_disk(directory, records, n_files=2):
    """The ``save_to_disk`` layout: Arrow IPC stream shards, state.json (``_data_files``), dataset_info.json."""
    os.makedirs(directory, exist_ok=True)
    schema = pa.schema([("text", pa.string()), ("meta", pa.struct([("pile_set_name", pa.string())]))])
    bounds = np.linspace(0, len(records), n_files + 1).astype(int)
    names = []
    for i in range(n_files):
        part = records[bounds[i] : bounds[i + 1]]
        name = f"data-{i:05d}-of-{n_files:05d}.arrow"
        table = pa.table({"text": [r["text"] for r in part], "meta": [r["meta"] for r in part]}, schema=schema)
        with pa.OSFile(os.path.join(directory, name), "wb") as sink, pa.ipc.new_stream(sink, schema) as w:
            w.write_table(table, max_chunksize=50)
        names.append(name)
    with open(os.path.join(directory, "state.json"), "w") as fh:
        json.dump({"_data_files": [{"filename": n} for n in names], "_fingerprint": "0", "_split": None}, fh)
    with open(os.path.join(directory, "dataset_info.json"), "w") as fh:
        json.dump(
            {
                "features": {
                    "text": {"dtype": "string", "_type": "Value"},
                    "meta": {"pile_set_name": {"dtype": "string", "_type": "Value"}},
                }
            },
            fh,
        )
    return str(directory)


def ids(text):
    """The bytes tokenizer's ids of ``text``, independently: UTF-8 byte b -> b + 4 (0-3 are EOD, PAD, reserved)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16) + 4


def expected_stream(texts, S):
    """The ``stream`` packing of the documents, independently: ids + EOD 0, cut into rows of S."""
    flat = np.concatenate([np.append(ids(t), np.uint16(0)) for t in texts])
    n = flat.size // S
    return flat[: n * S].reshape(n, S), flat.size - n * S


def expected_fractions(texts, labels, names, S):
    lab = np.concatenate(
        [np.full(len(t.encode("utf-8")) + 1, names.index(c), dtype=np.int64) for t, c in zip(texts, labels)]
    )
    n = lab.size // S
    lab = lab[: n * S].reshape(n, S)
    return np.stack([(lab == i).mean(axis=1) for i in range(len(names))], axis=1)


def _rows(prefix, S):
    m = json.load(open(prefix + ".manifest.json"))
    pb = PythiaBatches(prefix, batch_size=1, seq_len=S)
    return m, np.stack([pb.rows(np.array([i]))[0] for i in range(m["n_rows"])])


# ------------------------------------------------------------------------------------------------ the formats


@pytest.mark.parametrize("packing", ["stream", "rows"])
def test_pile_jsonl_zst(tmp_path, packing):
    docs = pile_docs()
    src = write_jsonl(tmp_path / "00.jsonl.zst", docs, "zstd")
    S = 97
    prefix = str(tmp_path / "out" / "pile")
    cfg = CorpusConfig(seq_len=S, packing=packing, category_field="meta.pile_set_name")
    m = build_corpus([src], prefix, cfg)
    texts = [d["text"] for d in docs]
    labels = [d["meta"]["pile_set_name"] for d in docs]
    m2, rows = _rows(prefix, S)
    assert m2 == json.loads(json.dumps(m))
    if packing == "stream":
        want, dropped = expected_stream(texts, S)
        np.testing.assert_array_equal(rows, want)
        assert m["dropped_tokens"] == dropped and m["pad_tokens"] == 0
    else:  # every document starts a row; its last row is padded with EOD
        starts = np.load(prefix + ".documents.npy")[:, 2]
        assert (starts % S == 0).all()
        for t, s in zip(texts, starts.tolist()):
            b = ids(t)
            row = rows.reshape(-1)[s : s + -(-(b.size + 1) // S) * S]
            np.testing.assert_array_equal(row[: b.size], b)
            assert (row[b.size :] == 0).all()
    fr, names = load_category_sidecar(prefix)
    assert names == sorted(set(labels)) and m["categories"] == names and m["labelled_by"] == "field"
    if packing == "stream":
        np.testing.assert_allclose(fr, expected_fractions(texts, labels, names, S), atol=1e-6)
    np.testing.assert_allclose(fr.sum(axis=1), 1.0, atol=1e-5)
    (inp,) = m["inputs"]
    assert inp["sha256"] == hashlib.sha256(open(src, "rb").read()).hexdigest()
    assert inp["documents"] == len(docs) == m["n_documents"] and inp["compression"] == "zstd"
    assert inp["tokens"] == sum(len(t.encode()) for t in texts)
    for c in names:
        assert m["totals"][c]["documents"] == labels.count(c)
    # the documents index: input, line (from 1), first token
    idx = np.load(prefix + ".documents.npy")
    assert idx.shape == (len(docs), 3) and (idx[:, 0] == 0).all() and idx[:, 1].tolist() == list(range(1, 301))


def test_dolma_json_gz_both_labellings(tmp_path):
    """Dolma's fields (id, text, source, added, created, metadata), gzip; labelled by ``source`` and by content:
    the first labelling is the sidecar, the second a sidecar of its own named in the first one's metadata."""
    rng = np.random.default_rng(1)
    docs = []
    for i in range(200):
        src = ["common-crawl", "stack-dedup", "peS2o"][i % 3]
        kind = {"common-crawl": "Pile-CC", "stack-dedup": "Github", "peS2o": "ArXiv"}[src]
        docs.append(
            {
                "id": f"doc-{i}",
                "text": _text(rng, kind),
                "source": src,
                "added": "2023-05-01T00:00:00.000Z",
                "created": "2020-01-01T00:00:00.000Z",
                "metadata": {"url": f"https://example.org/{i}", "length": 3},
            }
        )
    a = write_jsonl(tmp_path / "part-0000.json.gz", docs[:120], "gzip")
    b = write_jsonl(tmp_path / "part-0001.json.gz", docs[120:], "gzip")
    S = 64
    prefix = str(tmp_path / "dolma")
    cfg = CorpusConfig(seq_len=S, category_field="source", categories="field+content")
    m = build_corpus([a, b], prefix, cfg)
    texts = [d["text"] for d in docs]
    want, _ = expected_stream(texts, S)
    np.testing.assert_array_equal(_rows(prefix, S)[1], want)
    fr, names = load_category_sidecar(prefix)
    assert names == ["common-crawl", "peS2o", "stack-dedup"]
    np.testing.assert_allclose(fr, expected_fractions(texts, [d["source"] for d in docs], names, S), atol=1e-6)
    cfr, cnames = load_category_sidecar(prefix + ".content")
    assert cnames[: len(CATEGORIES)] == CATEGORIES
    content = [sniff(t)[0] for t in texts]
    assert {"python", "latex"} <= set(content)
    np.testing.assert_allclose(cfr, expected_fractions(texts, content, cnames, S), atol=1e-6)
    meta = json.load(open(prefix + ".categories.json"))
    assert meta["labellings"] == {"field": "dolma.categories.json", "content": "dolma.content.categories.json"}
    assert meta["label_source"] == "field source"
    cmeta = json.load(open(prefix + ".content.categories.json"))
    assert cmeta["labelled_by"] == "content"
    # the content labels name the classifier that made them (its version and settings, the weights' hash in them);
    # the field labels name none
    from mda_fast.data.content import CLASSIFIER_VERSION, SETTINGS

    assert cmeta["classifier"] == {"version": CLASSIFIER_VERSION, "settings": SETTINGS} and "classifier" not in meta
    assert [i["documents"] for i in m["inputs"]] == [120, 80] and [i["path"] for i in m["inputs"]] == [
        "part-0000.json.gz",
        "part-0001.json.gz",
    ]
    assert m["labellings"]["content"]["totals"]["python"]["documents"] == content.count("python")
    # content only: that labelling is the sidecar, and the other sidecar of the earlier build is removed
    build_corpus([a, b], prefix, CorpusConfig(seq_len=S))
    assert load_category_sidecar(prefix)[1] == cnames and not os.path.exists(prefix + ".content.categories.npy")


def test_parquet_and_save_to_disk_equal_jsonl(tmp_path):
    """The same records as JSON lines, Parquet (struct ``meta``, several row groups) and a save_to_disk directory
    (two Arrow shards) give byte-identical corpora."""
    docs = pile_docs(250, seed=2)
    S = 50
    cfg = CorpusConfig(seq_len=S, category_field="meta.pile_set_name", categories="content+field")
    out = {}
    for name, src in (
        ("jsonl", write_jsonl(tmp_path / "a.jsonl", docs)),
        ("parquet", write_parquet(tmp_path / "a.parquet", docs)),
        ("disk", write_save_to_disk(tmp_path / "saved", docs)),
    ):
        prefix = str(tmp_path / name)
        m = build_corpus([src], prefix, cfg)
        out[name] = {
            ext: open(prefix + ext, "rb").read()
            for ext in (".bin", ".idx", ".categories.npy", ".field.categories.npy", ".documents.npy")
        }
        assert m["n_documents"] == 250
    for k in (".bin", ".idx", ".categories.npy", ".field.categories.npy"):
        assert out["jsonl"][k] == out["parquet"][k] == out["disk"][k], k
    # rows are numbered from 0 in tables (dataset[i]), lines from 1 in JSON lines
    assert np.load(tmp_path / "parquet.documents.npy")[:3, 1].tolist() == [0, 1, 2]
    disk = np.load(tmp_path / "disk.documents.npy")
    assert disk[:, 0].max() == 1 and disk[disk[:, 0] == 1][0, 1] == 0
    m = json.load(open(tmp_path / "disk.manifest.json"))
    assert [i["path"] for i in m["inputs"]] == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    assert [i["format"] for i in m["inputs"]] == ["arrow", "arrow"]


def test_shuffle_is_a_seeded_permutation_of_the_documents(tmp_path, monkeypatch):
    import mda_fast.data.doc_shuffle as DS

    docs = pile_docs(400, seed=3)
    src = write_jsonl(tmp_path / "a.jsonl.zst", docs, "zstd")
    S = 40

    def build(name, seed, bucket_bytes=DS.BUCKET_BYTES):
        monkeypatch.setattr(DS, "BUCKET_BYTES", bucket_bytes)
        prefix = str(tmp_path / name)
        m = build_corpus([src], prefix, CorpusConfig(seq_len=S, packing="rows", shuffle_seed=seed))
        return m, prefix

    m, p = build("a", 7, bucket_bytes=4096)  # several buckets
    assert m["shuffle_seed"] == 7 and m["shuffle_buckets"] > 1
    idx = np.load(p + ".documents.npy")
    lines = idx[:, 1].tolist()
    assert sorted(lines) == list(range(1, 401)) and lines != sorted(lines)
    flat = np.fromfile(p + ".bin", dtype=np.uint16)
    for line, start in idx[:, 1:].tolist():  # every document is where the index says
        b = ids(docs[line - 1]["text"])
        np.testing.assert_array_equal(flat[start : start + b.size], b)
        assert flat[start + b.size] == 0
    fr, names = load_category_sidecar(p)
    np.testing.assert_allclose(fr.sum(axis=1), 1.0, atol=1e-5)
    _, p2 = build("b", 7, bucket_bytes=4096)
    assert open(p + ".bin", "rb").read() == open(p2 + ".bin", "rb").read()
    _, p3 = build("c", 8, bucket_bytes=4096)
    assert np.load(p3 + ".documents.npy")[:, 1].tolist() != lines
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_bucket_shuffle_is_uniform(tmp_path):
    """Random buckets + a random order within each: all 6 orders of 3 documents about equally often."""
    counts = {}
    for seed in range(600):
        sh = BucketShuffle(str(tmp_path / "b"), seed, 2, np.uint16, 1)
        for i in range(3):
            sh.add(np.array([i], dtype=np.uint16), np.array([i]))
        order = tuple(int(t[0]) for t, _ in sh)
        sh.close()
        counts[order] = counts.get(order, 0) + 1
    assert len(counts) == 6 and all(60 <= c <= 140 for c in counts.values()), counts


# ------------------------------------------------------------------------------------------------ the writer


@pytest.mark.parametrize("packing", ["stream", "rows"])
@pytest.mark.parametrize("S", [2, 7, 64])
def test_row_writer_equals_the_in_memory_packing(tmp_path, packing, S):
    """Streamed rows and fractions == ``pack_documents`` + ``write_megatron`` + ``row_fractions``, with documents
    longer than the writer's buffer, empty ones and two labellings (one with columns out of first-seen order)."""
    rng = np.random.default_rng(S)
    docs = [rng.integers(1, 50, size=int(n)).astype(np.uint16) for n in rng.integers(0, 40, size=60)]
    docs[5] = rng.integers(1, 50, size=S * 9 + 3).astype(np.uint16)  # > the buffer below
    cats_a = rng.integers(0, 3, size=len(docs)).tolist()
    cats_b = rng.integers(0, 5, size=len(docs)).tolist()
    rows, labels, starts, dropped, pad = pack_documents(docs, cats_a, S, packing, 0, np.uint16)
    ref = str(tmp_path / "ref")
    write_megatron(ref, rows, dtype=np.uint16)
    w = RowWriter(str(tmp_path / "new"), S, packing, 0, np.uint16, 2, buffer_rows=3)
    got_starts = [w.add(d, [a, b]) for d, a, b in zip(docs, cats_a, cats_b)]
    order_b = [4, 2, 0, 1, 3]
    st = w.finish([[0, 1, 2], order_b], [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")])
    assert st["n_rows"] == rows.shape[0] and st["dropped_tokens"] == dropped and st["pad_tokens"] == pad
    assert got_starts == starts.tolist()
    for ext in (".bin", ".idx"):
        assert open(ref + ext, "rb").read() == open(str(tmp_path / "new") + ext, "rb").read(), ext
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), row_fractions(labels, rows.shape[0], S, 3), atol=1e-7)
    _, labels_b, *_ = pack_documents(docs, cats_b, S, packing, 0, np.uint16)
    np.testing.assert_allclose(
        np.load(tmp_path / "b.npy"), row_fractions(labels_b, rows.shape[0], S, 5)[:, order_b], atol=1e-7
    )


# ------------------------------------------------------------------------------------------------ bad inputs


def test_skipped_records_are_counted(tmp_path):
    lines = [
        json.dumps({"text": "good one " * 10, "meta": {"pile_set_name": "A"}}).encode() + b"\n",
        b"{not json\n",
        b"\n",
        json.dumps({"meta": {"pile_set_name": "A"}}).encode() + b"\n",
        b'{"text": "caf\xe9", "meta": {"pile_set_name": "A"}}\n',
        json.dumps({"text": "", "meta": {"pile_set_name": "A"}}).encode() + b"\n",
        json.dumps({"text": "no label " * 10}).encode() + b"\n",
        b"[1, 2]\n",
        json.dumps({"text": 3, "meta": {"pile_set_name": "A"}}).encode() + b"\n",
        json.dumps({"text": "good two " * 10, "meta": {"pile_set_name": "B"}}).encode(),  # no final newline
    ]
    src = write_jsonl(tmp_path / "bad.jsonl.zst", None, "zstd", raw_lines=lines)
    cfg = CorpusConfig(seq_len=8, category_field="meta.pile_set_name", bad_records="skip")
    m = build_corpus([src], str(tmp_path / "doc"), cfg)
    assert m["n_documents"] == 2 and m["n_skipped_records"] == 8
    assert m["inputs"][0]["skipped"] == {
        "blank line": 1,
        "empty text": 1,
        "malformed JSON": 1,
        "missing category field": 1,
        "missing text field": 1,
        "not UTF-8": 1,
        "not a JSON object": 1,
        "text not a string": 1,
    }
    assert np.load(tmp_path / "doc.documents.npy")[:, 1].tolist() == [1, 10]


def test_zstd_frames_and_truncation(tmp_path):
    """Several zstd frames one after the other (``cat a.zst b.zst``) are one input; a file cut inside a frame is an
    error, not a quietly shorter corpus."""
    docs = pile_docs(120, seed=4)
    a = zstd.ZstdCompressor().compress("".join(json.dumps(d) + "\n" for d in docs[:70]).encode())
    b = zstd.ZstdCompressor().compress("".join(json.dumps(d) + "\n" for d in docs[70:]).encode())
    (tmp_path / "ab.jsonl.zst").write_bytes(a + b)
    m = build_corpus([str(tmp_path / "ab.jsonl.zst")], str(tmp_path / "doc"), CorpusConfig(seq_len=16))
    assert m["n_documents"] == 120
    (tmp_path / "cut.jsonl.zst").write_bytes(a + b[: len(b) - 3])
    with pytest.raises(DataError, match="cut.jsonl.zst: cannot decompress it .*ends inside a zstd frame"):
        build_corpus([str(tmp_path / "cut.jsonl.zst")], str(tmp_path / "doc2"), CorpusConfig(seq_len=16))
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress((json.dumps(docs[0]) + "\n").encode() * 50)[:-9])
    with pytest.raises(DataError, match="cut.jsonl.gz: cannot decompress it"):
        build_corpus([str(tmp_path / "cut.jsonl.gz")], str(tmp_path / "doc2"), CorpusConfig(seq_len=16))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(("doc2", ".doc2"))]


def test_missing_package_is_one_clear_line(tmp_path, monkeypatch):
    import builtins

    src = write_jsonl(tmp_path / "a.jsonl.zst", pile_docs(5), "zstd")
    pq_src = write_parquet(tmp_path / "a.parquet", pile_docs(5))
    real = builtins.__import__

    def no(name, *a, **k):
        if name.split(".")[0] in ("zstandard", "pyarrow"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no)
    import importlib

    monkeypatch.setattr(importlib, "import_module", lambda n: no(n))
    with pytest.raises(
        ConfigError, match=r"'zstandard', which is not installed; install it with: pip install zstandard"
    ):
        build_corpus([src], str(tmp_path / "doc"), CorpusConfig(seq_len=8))
    with pytest.raises(ConfigError, match=r"Parquet files .*'pyarrow'.*pip install pyarrow"):
        build_corpus([pq_src], str(tmp_path / "doc"), CorpusConfig(seq_len=8))
    assert sorted(os.listdir(tmp_path)) == ["a.jsonl.zst", "a.parquet"]


def test_input_errors(tmp_path):
    docs = pile_docs(5)
    good = write_jsonl(tmp_path / "a.jsonl", docs)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "x.txt").write_text("hello " * 50)
    with pytest.raises(ConfigError, match="mixes document files"):
        build_corpus([good, str(tmp_path / "tree")], str(tmp_path / "doc"))
    (tmp_path / "shards").mkdir()
    write_jsonl(tmp_path / "shards" / "00.jsonl.zst", docs, "zstd")
    with pytest.raises(DataError, match="no usable text files .*such as 00.jsonl.zst go to --from themselves"):
        build_corpus([str(tmp_path / "shards")], str(tmp_path / "doc"))
    with pytest.raises(ConfigError, match="--category-field source: only for document inputs"):
        build_corpus([str(tmp_path / "tree")], str(tmp_path / "doc"), CorpusConfig(category_field="source"))
    with pytest.raises(ConfigError, match="needs --category-field"):
        build_corpus([good], str(tmp_path / "doc"), CorpusConfig(categories="field"))
    with pytest.raises(ConfigError, match="dotted path"):
        build_corpus([good], str(tmp_path / "doc"), CorpusConfig(category_field="meta..x"))
    dd = tmp_path / "dd"
    write_save_to_disk(dd / "train", docs)
    (dd / "dataset_dict.json").write_text('{"splits": ["train"]}')
    with pytest.raises(ConfigError, match="DatasetDict .*splits train.*dd/train"):
        build_corpus([str(dd)], str(tmp_path / "doc"))
    pqf = write_parquet(tmp_path / "b.parquet", docs)
    with pytest.raises(DataError, match="no column 'body'.*its columns: text, meta"):
        build_corpus([pqf], str(tmp_path / "doc"), CorpusConfig(text_field="body"))
    with pytest.raises(DataError, match="meta.source: meta has type struct.*no field 'source'"):
        build_corpus([pqf], str(tmp_path / "doc"), CorpusConfig(category_field="meta.source"))
    with pytest.raises(DataError, match="--text-field meta has type struct.*expected a string column"):
        build_corpus([pqf], str(tmp_path / "doc"), CorpusConfig(text_field="meta"))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(("doc", ".doc"))]


def test_cli_document_inputs(tmp_path, capsys):
    src = write_jsonl(tmp_path / "00.jsonl.zst", pile_docs(50), "zstd")
    prefix = str(tmp_path / "data" / "pile")  # data/ does not exist: it is created
    args = ["corpus", "--from", src, "--out", prefix, "--seq-len", "32", "--no-progress"]
    assert main(args + ["--category-field", "meta.pile_set_name", "--shuffle-seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "50 documents from 1 files" in out
    m = json.load(open(prefix + ".manifest.json"))
    assert m["config"]["shuffle_seed"] == 1 and m["config"]["category_field"] == "meta.pile_set_name"


def test_shuffle_seed_on_a_directory_of_files(tmp_path):
    """``--shuffle-seed`` also permutes the files of a directory build (seeded; the same files)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(12):
        (tree / f"f{i:02d}.txt").write_text(f"file {i} " * 20)
    plain = build_corpus([str(tree)], str(tmp_path / "a"), CorpusConfig(seq_len=16))
    m1 = build_corpus([str(tree)], str(tmp_path / "b"), CorpusConfig(seq_len=16, shuffle_seed=5))
    m2 = build_corpus([str(tree)], str(tmp_path / "c"), CorpusConfig(seq_len=16, shuffle_seed=5))
    order = [f["path"] for f in m1["files"]]
    assert order == [f["path"] for f in m2["files"]] and sorted(order) == [f["path"] for f in plain["files"]]
    assert order != sorted(order)
    flat = np.fromfile(tmp_path / "b.bin", dtype=np.uint16)
    for f in m1["files"]:
        if f["rows"] is not None and f["start"] + f["tokens"] < flat.size:
            np.testing.assert_array_equal(
                flat[f["start"] : f["start"] + f["tokens"]], ids((tree / f["path"]).read_text())
            )

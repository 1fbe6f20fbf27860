"""``mda-fast corpus``: a temp tree with a file of every category, the manifest, determinism, rows read back through
PythiaBatches (bytes exactly; GPT-NeoX with the shared tokenizer.json), the sidecar, both packings, overrides,
atomic writes, and the CLI's bad inputs (exit 2, one line naming the offending thing, nothing written)."""

import hashlib
import json
import os

import numpy as np
import pytest
from conftest import SHARED

from mda_fast.cli import main
from mda_fast.data import ByteTokenizer, PythiaBatches, load_category_sidecar, load_tokenizer
from mda_fast.data.classify import CATEGORIES, classify, sniff
from mda_fast.data.corpus import CorpusConfig, build_corpus, corpus_outputs
from mda_fast.errors import ConfigError, DataError

TOKENIZER = os.environ.get("MDA_FAST_NEOX_TOKENIZER") or os.path.join(SHARED, "data", "gpt-neox-20b-tokenizer.json")

PEM = (
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ0Zl0Yh3b8ZyQ2k5tQx1wq0xHn8wCgYIKoZIzj0EAwIw\n"
    "DzENMAsGA1UEAwwEdGVzdDAeFw0yNDAxMDEwMDAwMDBaFw0yNTAxMDEwMDAwMDBa\n-----END CERTIFICATE-----\n"
)
B64 = (
    "U28gbG9uZyBhbmQgdGhhbmtzIGZvciBhbGwgdGhlIGZpc2guIFNvIGxvbmcgYW5kIHRoYW5rcw==\n"
    "Zm9yIGFsbCB0aGUgZmlzaC4gU28gbG9uZyBhbmQgdGhhbmtzIGZvciBhbGwgdGhlIGZpc2gu\n"
)
LOG = (
    "2024-05-01 12:00:01 INFO server started on port 8080\n2024-05-01 12:00:02 WARN cache miss for key=42\n"
    "2024-05-01 12:00:03 ERROR connection reset by peer\n"
)

# relative path -> (content, expected category or None for skipped, expected rule prefix / skip reason)
TREE = {
    "src/a.py": ("import os\n\n\ndef f(x):\n    return os.path.join(x, 'y')\n", "python", "extension"),
    "src/lib.c": ("int main(void) { return 0; }\n", "c", "extension"),
    "src/app.js": ("function add(a, b) {\n  return a + b;\n}\n", "javascript", "extension"),
    "src/run.sh": ("echo hello\n", "code", "extension"),
    "conf/settings.yaml": ("name: demo\nitems:\n  - one\n", "config", "extension"),
    "docs/b.md": ("# Title\n\nSome *prose* here, with a [link](http://x.org).\n", "markdown", "extension"),
    "docs/c.rst": ("Title\n=====\n\nA paragraph of reStructuredText.\n", "markdown", "extension"),
    "web/d.xml": ('<?xml version="1.0"?>\n<root><item id="1">one</item></root>\n', "xml", "extension"),
    "web/e.html": ("<!DOCTYPE html>\n<html><body><p>Hello</p></body></html>\n", "xml", "extension"),
    "web/f.svg": ('<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>\n', "xml", "extension"),
    "paper/g.tex": (
        "\\documentclass{article}\n\\begin{document}\nHello $x^2$.\n\\end{document}\n",
        "latex",
        "extension",
    ),
    "data/h.json": ('{"a": [1, 2, 3], "b": {"c": "d"}}\n', "json", "extension"),
    "data/i.csv": ("name,age,city\nAda,36,London\nAlan,41,Wilmslow\n", "table", "extension"),
    "keys/k.pem": (PEM, "base64", "extension"),
    "keys/blob.b64": (B64, "base64", "extension"),
    "logs/app.log": (LOG, "log", "extension"),
    "notes.txt": ("Just some plain notes.\nNothing special.\n", "prose_en", "content"),
    "Makefile": ("all:\n\tcc -o a lib.c\n", "code", "name"),
    # extension-less: sniffed by content
    "sniff/cert": (PEM, "base64", "content"),
    "sniff/blob": (B64, "base64", "content"),
    "sniff/run": ("#!/bin/sh\necho hello\n", "code", "content"),
    "sniff/tool": ("#!/usr/bin/env python3\nprint('hi')\n", "python", "content"),
    "sniff/module": ("import sys\nfrom os import path\n\ndef main():\n    pass\n", "python", "content"),
    "sniff/page": ("<html><head></head><body>x</body></html>\n", "xml", "content"),
    "sniff/config": ('{"key": "value", "n": 3}\n', "json", "content"),
    "sniff/events": (LOG, "log", "content"),
    "sniff/table": ("x,y\n1,2\n3,4\n5,6\n", "table", "content"),
    "sniff/dump": (
        "4f2a9c01de33b7e85a10ff2c6d8e9b3a7c11d0e4f5a6b7c8d9e0\n9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b\n",
        "hex",
        "content",
    ),
    "sniff/ids": ("0f8fad5b-d9cb-469f-a165-70867728950e\n7c9e6679-7425-40de-944b-e07fc1f90ae7\n", "uuid", "content"),
    "sniff/SUMS": (
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  a.txt\n"
        "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752  b.txt\n",
        "hash",
        "content",
    ),
    "sniff/brief": (
        "Sehr geehrte Damen und Herren,\nvielen Dank für Ihren Brief. Wir werden die Unterlagen prüfen.\n",
        "prose_other",
        "content",
    ),
    "sniff/marks": ("@@@ ### !!! ~~~ *** %%% ^^^\n", "other", "content"),
    "sniff/paper": ("Intro.\n\\section{Method}\nWe do \\emph{this}.\n", "latex", "content"),
    "sniff/README": ("# Project\n\n- one\n- two\n\nSee ```code```.\n", "markdown", "content"),
    "sniff/letter": ("Dear Sir,\nThank you for your letter.\n", "prose_en", "content"),
    # (classifier v2 reads the v1 text "Unicode name, unicode text: 世界 🙂" as prose_other: five English words, no
    # English function word, two CJK letters; the row's point is the Unicode name, so its text is plainly English)
    "héllo wörld.txt": ("Unicode name, and the text of the file is in unicode: 世界 🙂\n", "prose_en", "content"),
    # skipped
    "bin/blob.dat": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", None, "binary (NUL bytes)"),
    "bin/latin1.txt": ("caf\xe9 au lait\n".encode("latin-1"), None, "binary (not UTF-8"),
    "empty.txt": ("", None, "empty"),
    ".hidden.py": ("x = 1\n", None, "hidden"),
    ".git/config": ("[core]\n", None, "hidden"),
}


def write_tree(root, tree=TREE):
    for rel, (content, _, _) in tree.items():
        p = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)
    return str(root)


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "tree")


def _skipped_path(rel):
    return ".git/" if rel.startswith(".git/") else rel


def _bytes_of(prefix):
    return {os.path.basename(p): open(p, "rb").read() for p in corpus_outputs(prefix)}


# ------------------------------------------------------------------------------------------------ classification


def test_every_category_and_skip(tree, tmp_path):
    m = build_corpus([tree], str(tmp_path / "doc"), CorpusConfig(seq_len=32))
    files = {f["path"]: f for f in m["files"]}
    skipped = {s["path"]: s["reason"] for s in m["skipped"]}
    for rel, (content, cat, rule) in TREE.items():
        if cat is None:
            assert skipped[_skipped_path(rel)].startswith(rule), (rel, skipped.get(_skipped_path(rel)))
            assert rel not in files
            continue
        f = files[rel]
        assert (f["category"], f["rule"].split(" ")[0].rstrip(":")) == (cat, rule), (rel, f)
        data = content.encode("utf-8")
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
        assert f["tokens"] == len(data)  # bytes tokenizer: one token per byte
    assert set(m["categories"]) == set(CATEGORIES) and m["categories"][: len(CATEGORIES)] == CATEGORIES
    assert {f["category"] for f in m["files"]} == set(CATEGORIES)  # the tree covers them all
    # order: files by relative path (byte order)
    paths = [f["path"] for f in m["files"]]
    assert paths == sorted(paths, key=lambda p: p.encode())
    assert m["n_files"] == len(files) and m["n_skipped"] == len(m["skipped"])
    for c in CATEGORIES:
        mine = [f for f in m["files"] if f["category"] == c]
        assert m["totals"][c]["files"] == len(mine) and m["totals"][c]["tokens"] == sum(f["tokens"] for f in mine)
    assert abs(sum(t["share"] for t in m["totals"].values()) - 1) < 1e-9
    on_disk = json.load(open(str(tmp_path / "doc") + ".manifest.json"))
    assert on_disk == json.loads(json.dumps(m))


def test_classify_rules_and_overrides():
    assert classify("x/y.PY", "") == ("python", "extension .py")
    assert classify("a/CMakeLists.txt", "")[0] == "code"
    assert classify("a.unknownext", "<?xml version='1.0'?><a/>")[0] == "xml"
    assert sniff("")[0] == "other"
    assert sniff('{"a": 1}\n{"b": 2}\n')[0] == "json"  # JSON lines
    ov = {"vendor/*": "skip", ".log": "text", "*.min.js": "minified", "LICENSE": "legal"}
    assert classify("vendor/lib.py", "", ov) == ("skip", "override vendor/*")
    assert classify("logs/a.LOG", LOG, ov) == ("text", "override .log")
    assert classify("web/app.min.js", "x", ov)[0] == "minified"
    assert classify("sub/LICENSE", "MIT", ov)[0] == "legal"
    assert classify("web/app.js", "x", ov)[0] == "javascript"
    assert classify("a.py", "", {"*.py": "first", "a.py": "second"})[0] == "first"  # first match wins
    with pytest.raises(ConfigError):
        CorpusConfig(overrides={".py": 3})
    with pytest.raises(ConfigError):
        CorpusConfig(overrides={".py": "bad name!"})
    with pytest.raises(ConfigError):
        CorpusConfig(packing="lines")
    with pytest.raises(ConfigError):
        CorpusConfig(seq_len=1)


def test_overrides_in_a_build(tree, tmp_path):
    ov = {"logs/*": "skip", ".csv": "tables", "*.md": "docs"}
    m = build_corpus([tree], str(tmp_path / "doc"), CorpusConfig(seq_len=16, overrides=ov))
    files = {f["path"]: f for f in m["files"]}
    assert "logs/app.log" not in files
    assert {s["path"]: s["reason"] for s in m["skipped"]}["logs/app.log"] == "override logs/*: skip"
    assert files["data/i.csv"]["category"] == "tables" and files["docs/b.md"]["category"] == "docs"
    assert m["categories"] == CATEGORIES + ["docs", "tables"]
    fr, names = load_category_sidecar(str(tmp_path / "doc"))
    assert names == m["categories"] and fr.shape == (m["n_rows"], len(names))


# ------------------------------------------------------------------------------------------------ rows and sidecar


def _expected_stream(m, tree, tok):
    parts = []
    for f in m["files"]:
        text = open(os.path.join(tree, *f["path"].split("/")), encoding="utf-8").read()
        parts += [tok.encode(text), [tok.eod_id]]
    return np.concatenate(parts).astype(np.int64)


def _labels_stream(m, S):
    lab = np.concatenate([np.full(f["tokens"] + 1, m["categories"].index(f["category"])) for f in m["files"]])
    return lab[: m["n_rows"] * S]


@pytest.mark.parametrize("S", [16, 64])
def test_stream_rows_equal_tokenization(tree, tmp_path, S):
    prefix = str(tmp_path / "doc")
    m = build_corpus([tree], prefix, CorpusConfig(seq_len=S, packing="stream"))
    stream = _expected_stream(m, tree, ByteTokenizer())
    n = len(stream) // S
    assert m["n_rows"] == n and m["dropped_tokens"] == len(stream) - n * S and m["pad_tokens"] == 0
    b = PythiaBatches(prefix, batch_size=1, seq_len=S)
    assert b.n_rows == n and b.dtype == np.uint16
    got = b.rows(np.arange(n)).astype(np.int64)
    np.testing.assert_array_equal(got.reshape(-1), stream[: n * S])
    # the sidecar: per row the category fractions (an EOD counts toward its document), each row sums to 1
    fr, names = load_category_sidecar(prefix)
    assert fr.dtype == np.float32 and fr.shape == (n, len(names))
    np.testing.assert_allclose(fr.sum(axis=1), 1, atol=1e-6)
    lab = _labels_stream(m, S).reshape(n, S)
    ref = np.stack([np.bincount(r, minlength=len(names)) / S for r in lab])
    np.testing.assert_allclose(fr, ref, atol=1e-7)
    meta = json.load(open(prefix + ".categories.json"))
    assert meta["n_rows"] == n and meta["seq_len"] == S and meta["packing"] == "stream" and meta["eod_id"] == 0
    from mda_fast.data.content import CLASSIFIER_VERSION, SETTINGS

    assert meta["classifier"] == {"version": CLASSIFIER_VERSION, "settings": SETTINGS}  # what labelled the files
    for f in m["files"]:  # start / rows locate each file in the rows
        if f["rows"] is not None:
            assert f["rows"][0] == f["start"] // S
            flat = got.reshape(-1)
            k = min(f["tokens"], n * S - f["start"])
            text = open(os.path.join(tree, *f["path"].split("/")), encoding="utf-8").read()
            np.testing.assert_array_equal(flat[f["start"] : f["start"] + k], ByteTokenizer().encode(text)[:k])


def test_rows_packing_starts_each_document(tree, tmp_path):
    S = 48
    prefix = str(tmp_path / "doc")
    m = build_corpus([tree], prefix, CorpusConfig(seq_len=S, packing="rows"))
    tok = ByteTokenizer()
    got = PythiaBatches(prefix, batch_size=1, seq_len=S).rows(np.arange(m["n_rows"])).astype(np.int64)
    fr, names = load_category_sidecar(prefix)
    row, pad = 0, 0
    for f in m["files"]:
        text = open(os.path.join(tree, *f["path"].split("/")), encoding="utf-8").read()
        ids = np.append(tok.encode(text), tok.eod_id)
        k = -(-ids.size // S)
        assert f["rows"] == [row, row + k - 1] and f["start"] == row * S
        flat = got[row : row + k].reshape(-1)
        np.testing.assert_array_equal(flat[: ids.size], ids)
        assert (flat[ids.size :] == tok.eod_id).all()  # padded with EOD
        col = names.index(f["category"])
        np.testing.assert_allclose(fr[row : row + k, col], 1.0)  # one document per row: the padding is its category
        pad += k * S - ids.size
        row += k
    assert m["n_rows"] == row and m["pad_tokens"] == pad and m["dropped_tokens"] == 0


def test_neox_tokenizer_rows(tree, tmp_path):
    if not os.path.isfile(TOKENIZER):
        pytest.skip(f"the GPT-NeoX tokenizer is absent ({TOKENIZER}); set MDA_FAST_NEOX_TOKENIZER")
    S = 32
    prefix = str(tmp_path / "doc")
    m = build_corpus([tree], prefix, CorpusConfig(tokenizer=TOKENIZER, seq_len=S))
    tok = load_tokenizer(TOKENIZER)
    assert tok.eod_id == 0 and m["tokenizer"]["eod_id"] == 0 and m["dtype"] == "uint16"
    assert m["tokenizer"]["sha256"] == hashlib.sha256(open(TOKENIZER, "rb").read()).hexdigest()
    stream = _expected_stream(m, tree, tok)
    n = len(stream) // S
    got = PythiaBatches(prefix, batch_size=1, seq_len=S).rows(np.arange(n)).astype(np.int64)
    np.testing.assert_array_equal(got.reshape(-1), stream[: n * S])
    for f in m["files"]:
        text = open(os.path.join(tree, *f["path"].split("/")), encoding="utf-8").read()
        assert f["tokens"] == len(tok.encode(text))
    fr, _ = load_category_sidecar(prefix)
    np.testing.assert_allclose(fr.sum(axis=1), 1, atol=1e-6)


# ------------------------------------------------------------------------------------------------ determinism, atomicity


def test_deterministic_and_own_outputs_ignored(tree, tmp_path):
    cfg = CorpusConfig(seq_len=16)
    a = _bytes_of(build_corpus([tree], str(tmp_path / "a"), cfg) and str(tmp_path / "a"))
    build_corpus([tree], str(tmp_path / "b"), cfg)
    b = {k.replace("b.", "a.", 1): v for k, v in _bytes_of(str(tmp_path / "b")).items()}
    assert a == b
    # the output inside the tree: a rebuild does not read its own previous outputs
    inside = os.path.join(tree, "out", "doc")
    os.makedirs(os.path.dirname(inside))
    m1 = build_corpus([tree], inside, cfg)
    first = _bytes_of(inside)
    m2 = build_corpus([tree], inside, cfg)
    assert _bytes_of(inside) == first
    assert [f["path"] for f in m1["files"]] == [f["path"] for f in m2["files"]]
    assert not any(f["path"].startswith("out/") for f in m2["files"] + m2["skipped"])


def test_several_roots_and_a_file(tree, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "z.py").write_text("print(1)\n")
    single = tmp_path / "single.md"
    single.write_text("# One file\n")
    m = build_corpus([tree, str(other), str(single)], str(tmp_path / "doc"), CorpusConfig(seq_len=16))
    assert m["roots"] == [tree, str(other), str(single)]
    tail = [(f["root"], f["path"], f["category"]) for f in m["files"][-2:]]
    assert tail == [(1, "z.py", "python"), (2, "single.md", "markdown")]


def test_failed_build_leaves_nothing(tree, tmp_path, monkeypatch):
    import mda_fast.data.corpus as corpus

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(corpus, "write_category_sidecar", boom)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError):
        build_corpus([tree], str(out / "doc"), CorpusConfig(seq_len=16))
    assert os.listdir(out) == []


def test_out_directory_is_created(tree, tmp_path):
    """``--out data/corpus`` with no ``data/``: the directories are made (every other command creates its --out)."""
    prefix = tmp_path / "new" / "deeper" / "doc"
    assert main(["corpus", "--from", tree, "--out", str(prefix), "--seq-len", "16", "--no-progress"]) == 0
    assert sorted(os.listdir(prefix.parent)) == sorted(os.path.basename(p) for p in corpus_outputs(str(prefix)))


def test_library_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        build_corpus([str(tmp_path / "nope")], str(tmp_path / "doc"))
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "a.txt").write_text("hi")
    with pytest.raises(DataError, match="less than one row"):
        build_corpus([str(tmp_path / "small")], str(tmp_path / "doc"), CorpusConfig(seq_len=64))
    assert [p for p in os.listdir(tmp_path) if p.startswith("doc")] == []


# ------------------------------------------------------------------------------------------------ the CLI


def test_cli_builds(tree, tmp_path, capsys):
    prefix = str(tmp_path / "doc")
    assert (
        main(["corpus", "--from", tree, "--out", prefix, "--seq-len", "16", "--packing", "rows", "--no-progress"]) == 0
    )
    out = capsys.readouterr().out
    assert "rows of 16 tokens" in out and "skipped" in out
    m = json.load(open(prefix + ".manifest.json"))
    assert m["packing"] == "rows" and m["seq_len"] == 16
    mp = tmp_path / "map.toml"
    mp.write_text('"*.md" = "markdown"\n".log" = "skip"\n')
    assert main(["corpus", "--from", tree, "--out", prefix, "--seq-len", "16", "--map", str(mp), "--no-progress"]) == 0
    m = json.load(open(prefix + ".manifest.json"))
    assert "markdown" in m["categories"] and all(not f["path"].endswith(".log") for f in m["files"])


def _bad_cases(tmp_path):
    def d(name, files):
        p = tmp_path / name
        p.mkdir(exist_ok=True)
        for k, v in files.items():
            (p / k).write_bytes(v)
        return str(p)

    good = d("good", {"a.txt": b"hello world, " * 20})
    (tmp_path / "afile").write_text("x")
    (tmp_path / "bad_tok.json").write_text("{not a tokenizer")
    (tmp_path / "bad_map.json").write_text("{oops")
    (tmp_path / "list_map.json").write_text('["*.py"]')
    (tmp_path / "int_map.json").write_text('{"*.py": 3}')
    (tmp_path / "outdir").mkdir()
    out = str(tmp_path / "outdir" / "doc")
    return [
        ("missing-dir", ["--from", str(tmp_path / "nope"), "--out", out], ["nope", "no such directory"]),
        ("empty-tree", ["--from", d("empty", {}), "--out", out], ["empty", "no usable text files"]),
        (
            "only-binaries",
            ["--from", d("bins", {"a.bin": b"\x00\x01", "b.txt": b"\xff\xfe"}), "--out", out],
            ["no usable text files", "binary"],
        ),
        (
            "tokenizer-missing",
            ["--from", good, "--out", out, "--tokenizer", str(tmp_path / "none.json")],
            ["--tokenizer", "none.json"],
        ),
        (
            "tokenizer-unreadable",
            ["--from", good, "--out", out, "--tokenizer", str(tmp_path / "bad_tok.json")],
            ["--tokenizer", "bad_tok.json", "not a readable tokenizer.json"],
        ),
        ("seq-len-1", ["--from", good, "--out", out, "--seq-len", "1"], ["--seq-len", ">= 2"]),
        ("seq-len-too-long", ["--from", good, "--out", out, "--seq-len", "100000"], ["seq_len=100000"]),
        # a missing --out directory is created, and removed again when the build fails (nothing left behind)
        (
            "out-dir-missing-build-fails",
            ["--from", good, "--out", str(tmp_path / "nodir" / "sub" / "doc")],
            ["less than one row"],
        ),
        ("out-under-file", ["--from", good, "--out", str(tmp_path / "afile" / "doc")], ["afile", "is a file"]),
        ("out-is-dir", ["--from", good, "--out", str(tmp_path / "outdir")], ["outdir", "is a directory"]),
        ("map-missing", ["--from", good, "--out", out, "--map", str(tmp_path / "nomap.json")], ["--map", "nomap"]),
        (
            "map-bad-json",
            ["--from", good, "--out", out, "--map", str(tmp_path / "bad_map.json")],
            ["--map", "bad_map.json", "JSON"],
        ),
        ("map-not-table", ["--from", good, "--out", out, "--map", str(tmp_path / "list_map.json")], ["--map", "table"]),
        ("map-bad-value", ["--from", good, "--out", out, "--map", str(tmp_path / "int_map.json")], ["--map", "*.py"]),
    ]


CASE_IDS = [
    "missing-dir",
    "empty-tree",
    "only-binaries",
    "tokenizer-missing",
    "tokenizer-unreadable",
    "seq-len-1",
    "seq-len-too-long",
    "out-dir-missing-build-fails",
    "out-under-file",
    "out-is-dir",
    "map-missing",
    "map-bad-json",
    "map-not-table",
    "map-bad-value",
]


def _snapshot(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize("cid", CASE_IDS)
def test_cli_bad_inputs(tmp_path, capsys, monkeypatch, cid):
    monkeypatch.delenv("MDA_FAST_DEBUG", raising=False)
    cases = {c[0]: c for c in _bad_cases(tmp_path)}
    assert sorted(cases) == sorted(CASE_IDS)
    _, args, words = cases[cid]
    before = _snapshot(tmp_path)
    capsys.readouterr()
    rc = main(["corpus"] + args + ["--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, (cid, err)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("mda-fast corpus: error: "), (cid, err)
    for w in words:
        assert w in lines[0], (cid, w, lines[0])
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before, cid
    print(f"\nCASE {cid} | {lines[0]}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_cli_unreadable_tree(tmp_path, capsys):
    root = tmp_path / "locked"
    root.mkdir()
    (root / "a.txt").write_text("x" * 100)
    os.chmod(root, 0)
    try:
        assert main(["corpus", "--from", str(root), "--out", str(tmp_path / "doc"), "--no-progress"]) == 2
    finally:
        os.chmod(root, 0o755)
    err = capsys.readouterr().err
    assert "locked" in err and "Traceback" not in err


def _tiny_tokenizer_json(path):
    """A small word-level tokenizer.json (``<|endoftext|>`` = 0), made with ``tokenizers``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate("the a of and to in is".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return str(path)


def test_neox_from_the_hf_cache(tree, tmp_path, monkeypatch, capsys):
    """``--tokenizer neox`` reads GPT-NeoX-20B's tokenizer.json from the local HF cache (the one the environment
    names now); absent: one line, exit 2, nothing written."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("MDA_FAST_DEBUG", raising=False)
    out = tmp_path / "o"
    out.mkdir()
    args = [
        "corpus",
        "--from",
        tree,
        "--out",
        str(out / "doc"),
        "--tokenizer",
        "neox",
        "--seq-len",
        "8",
        "--no-progress",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tokenizer neox" in err[0] and "cache" in err[0] and os.listdir(out) == []
    snap = tmp_path / "hf-home" / "hub" / "models--EleutherAI--gpt-neox-20b" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0123abcd")
    tj = _tiny_tokenizer_json(snap / "tokenizer.json")
    assert main(args) == 0
    m = json.load(open(str(out / "doc") + ".manifest.json"))
    assert m["tokenizer"]["name"] == "neox" and m["tokenizer"]["path"] == os.path.abspath(tj)
    assert m["tokenizer"]["sha256"] == hashlib.sha256(open(tj, "rb").read()).hexdigest()
    assert m["tokenizer"]["vocab_size"] == 9 and m["tokenizer"]["eod_id"] == 0

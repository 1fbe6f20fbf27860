"""Synthetic corpus: determinism, Pythia packing exactness (recounted naively), sidecar, mix proportions."""

import hashlib
import json

import numpy as np
import pytest

from mda_fast.data import ByteTokenizer, MMapIndexedDataset, PythiaBatches
from mda_fast.data.synthetic import (
    CATEGORIES,
    DEFAULT_MIX,
    SyntheticConfig,
    generate_corpus,
    generate_documents,
    load_category_sidecar,
    pack_documents,
)


def _digest(prefix):
    h = hashlib.sha256()
    for ext in (".idx", ".bin", ".categories.npy"):
        h.update(open(prefix + ext, "rb").read())
    return h.hexdigest()


def test_categories_and_defaults():
    assert CATEGORIES == ["prose", "xml", "latex", "code", "hexlog", "base64", "csv", "repeat"]
    assert set(DEFAULT_MIX) == set(CATEGORIES) and abs(sum(DEFAULT_MIX.values()) - 1) < 1e-9
    cfg = SyntheticConfig(10)
    assert cfg.seq_len == 129 and cfg.seed == 0
    np.testing.assert_allclose(SyntheticConfig(5, mix={"xml": 3, "csv": 1}).weights(), [0, 0.75, 0, 0, 0, 0, 0.25, 0])


def test_config_validation():
    with pytest.raises(ValueError, match="unknown categories"):
        SyntheticConfig(10, mix={"poetry": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        SyntheticConfig(10, mix={"xml": -1.0})
    with pytest.raises(ValueError, match="all be zero"):
        SyntheticConfig(10, mix={"xml": 0.0})
    with pytest.raises(ValueError, match="n_sequences"):
        SyntheticConfig(0)
    with pytest.raises(ValueError, match="repeat_len"):
        SyntheticConfig(10, repeat_len=(5, 2))


def test_determinism(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    generate_corpus(a, SyntheticConfig(300, seed=7), progress=False)
    generate_corpus(b, SyntheticConfig(300, seed=7), progress=False)
    generate_corpus(c, SyntheticConfig(300, seed=8), progress=False)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    ta = MMapIndexedDataset(a).read_tokens(0, 300 * 129)
    tc = MMapIndexedDataset(c).read_tokens(0, 300 * 129)
    assert (ta != tc).mean() > 0.5


def test_packing_exact_against_naive_recount(tmp_path):
    cfg = SyntheticConfig(200, seq_len=57, seed=3)
    prefix = str(tmp_path / "p")
    info = generate_corpus(prefix, cfg, progress=False)
    docs = generate_documents(cfg)
    # naive packing: a Python list, one token at a time
    stream, lab = [], []
    for c, b in docs:
        for byte in b:
            stream.append(byte + 4)
            lab.append(c)
        stream.append(0)
        lab.append(c)
        if len(stream) >= 200 * 57:
            break
    stream = np.array(stream[: 200 * 57]).reshape(200, 57)
    lab = np.array(lab[: 200 * 57]).reshape(200, 57)
    pb = PythiaBatches(prefix, batch_size=10, seq_len=57)
    assert pb.n_rows == 200 and pb.n_steps == 20 and pb.dtype == np.uint16
    got = np.concatenate([w[3] for w in pb.window(0, 20)])
    np.testing.assert_array_equal(got, stream)
    # EODs sit exactly after each document
    lens = np.cumsum([len(b) + 1 for _, b in docs])
    eod_pos = lens[lens <= 200 * 57] - 1
    np.testing.assert_array_equal(np.flatnonzero(got.reshape(-1) == 0), eod_pos)
    assert not (got.reshape(-1)[np.setdiff1d(np.arange(200 * 57), eod_pos)] < 4).any()
    # sidecar fractions = recount of the naive labels
    fr, names = load_category_sidecar(prefix)
    assert names == CATEGORIES and fr.dtype == np.float32 and fr.shape == (200, 8)
    ref = np.stack([(lab == c).sum(1) / 57 for c in range(8)], axis=1)
    np.testing.assert_allclose(fr, ref, atol=1e-7)
    np.testing.assert_allclose(fr.sum(1), 1.0, atol=1e-6)
    meta = json.load(open(prefix + ".categories.json"))
    assert meta["categories"] == CATEGORIES and meta["seq_len"] == 57 and meta["n_rows"] == 200
    assert meta["config"]["seed"] == 3 and meta["config"]["mix"] == {c: DEFAULT_MIX[c] for c in CATEGORIES}
    assert info["n_rows"] == 200
    # documents decode to their category's shape
    tok = ByteTokenizer()
    for c, b in docs[:50]:
        text = b.decode()
        assert "\x00" not in text
        if CATEGORIES[c] == "xml":
            assert text.startswith("<") and "</" in text
        if CATEGORIES[c] == "csv":
            assert text.startswith("id,name,city,amount,date\n")
        if CATEGORIES[c] == "latex":
            assert "\\begin{equation}" in text
        if CATEGORIES[c] == "code":
            assert text.startswith("def ")
        assert tok.decode(tok.encode(text)) == text


def test_repeat_documents_repeat_their_chunk():
    cfg = SyntheticConfig(50, mix={"repeat": 1.0}, repeat_len=(12, 12), repeat_copies=(4, 4), seed=1)
    docs = generate_documents(cfg)
    for c, b in docs:
        chunk = b[:12]
        assert b.count(chunk) >= 4


@pytest.mark.parametrize("mix", [DEFAULT_MIX, {"prose": 0.5, "base64": 0.3, "repeat": 0.2}])
def test_mix_proportions(tmp_path, mix):
    prefix = str(tmp_path / "m")
    info = generate_corpus(prefix, SyntheticConfig(2000, mix=mix, seed=5), progress=False)
    fr, names = load_category_sidecar(prefix)
    share = fr.mean(0)
    w = np.array([mix.get(c, 0.0) for c in CATEGORIES])
    w = w / w.sum()
    np.testing.assert_allclose(share, w, atol=0.01)
    np.testing.assert_allclose([info["token_share"][c] for c in CATEGORIES], share, atol=1e-5)
    assert (share[w == 0] == 0).all()


def test_pack_documents_small():
    docs = [(1, b"ab"), (7, b"cde"), (0, b"f")]
    toks, lab = pack_documents(docs, seq_len=3, n_rows=3)
    a, b, c, d, e, f = (x + 4 for x in b"abcdef")
    np.testing.assert_array_equal(toks, [[a, b, 0], [c, d, e], [0, f, 0]])
    np.testing.assert_array_equal(lab, [[1, 1, 1], [7, 7, 7], [7, 0, 0]])
    with pytest.raises(ValueError, match="need 12"):
        pack_documents(docs, seq_len=4, n_rows=3)


def test_sidecar_absent(tmp_path):
    assert load_category_sidecar(str(tmp_path / "nothing")) is None


def test_rows_packing_against_naive_rebuild(tmp_path):
    """'rows' packing: one category per row, each row starts at a document start, EOD after each document,
    counts by largest remainder; rebuilt naively from the per-category generators."""
    from mda_fast.data import synthetic as S

    mix = {"prose": 0.25, "xml": 0.25, "repeat": 0.5}
    cfg = SyntheticConfig(101, seq_len=61, mix=mix, seed=4, packing="rows")
    prefix = str(tmp_path / "r")
    info = generate_corpus(prefix, cfg, progress=False)
    cats = S.row_categories(cfg)
    counts = np.bincount(cats, minlength=8)
    assert counts.sum() == 101 and counts[CATEGORIES.index("repeat")] in (50, 51)
    assert counts[CATEGORIES.index("prose")] + counts[CATEGORIES.index("xml")] in (50, 51)
    # naive: draw each category's documents in order, fill its rows one after another
    rngs = {c: np.random.default_rng(np.random.SeedSequence([4, CATEGORIES.index(c)])) for c in mix}
    expect = []
    for i in range(101):
        name = CATEGORIES[cats[i]]
        row = []
        while len(row) < 61:
            row += [b + 4 for b in S.GENERATORS[name](rngs[name], cfg).encode()] + [0]
        expect.append(row[:61])
    pb = PythiaBatches(prefix, batch_size=1, seq_len=61)
    got = np.stack([pb.rows([i])[0] for i in range(101)])
    np.testing.assert_array_equal(got, np.array(expect))
    fr, names = load_category_sidecar(prefix)
    np.testing.assert_array_equal(fr, np.eye(8, dtype=np.float32)[cats])
    assert info["config"]["packing"] == "rows"
    # a repeat row starts with its chunk, which recurs in the row
    r = int(np.flatnonzero(cats == CATEGORIES.index("repeat"))[0])
    text = bytes(int(t) - 4 for t in got[r] if t >= 4)
    assert text.count(text[:8]) >= 2
    with pytest.raises(ValueError, match="packing"):
        SyntheticConfig(10, packing="docs")

"""OLMo's training order (``mda_fast.data.olmo``) against files written here from OLMo's published rules.

The token files are raw memmaps (``ndarray.tofile``, no header), as OLMo's ``MemMapDataset`` reads them; each file
holds ``floor(bytes / (itemsize * seq_len))`` sequences and never shares one with the next file; the order is
``arange(N, uint32)`` shuffled in place by ``Generator(PCG64(seed + epoch))`` and step ``b`` is
``order[b*B : (b+1)*B]`` (OLMo's ``iterable_dataset.py`` and the README's data-order snippet). The expected
sequences are built here from the token lists that were written, not read back through mda_fast.
"""

import numpy as np
import pytest
import torch

from mda_fast.config import load_config
from mda_fast.data.olmo import OLMoBatches, olmo_order, read_path_list
from mda_fast.errors import ConfigError, DataError, MissingDataError

L = 8  # tokens per sequence


def published_order(n, seed, epoch=0):
    """OLMo's ``_build_global_indices`` (shuffle on), written out from the rule."""
    idx = np.arange(n, dtype=np.uint32)
    np.random.Generator(np.random.PCG64(seed=seed + epoch)).shuffle(idx)
    return idx


def write_files(tmp_path, lengths, dtype=np.uint32, seed=0, high=100_278):
    """Token files of the given lengths (in tokens); returns (paths, the expected sequences in id order)."""
    rng = np.random.default_rng(seed)
    paths, seqs = [], []
    for i, n in enumerate(lengths):
        toks = rng.integers(0, high, size=n).astype(dtype)
        p = tmp_path / f"part-{i:02d}-00000.npy"  # OLMo's names end in .npy though the files are raw memmaps
        toks.tofile(p)
        paths.append(str(p))
        seqs += [toks[j * L : (j + 1) * L].astype(np.int64).tolist() for j in range(n // L)]  # the tail is dropped
    return paths, seqs


LENGTHS = [5 * L + 3, 2 * L, L - 1, 0, 7 * L + L - 1, 3 * L]  # remainders, a file too short for one sequence, empty


def test_counts_offsets_and_sequences_never_span_files(tmp_path):
    paths, seqs = write_files(tmp_path, LENGTHS)
    b = OLMoBatches(paths, batch_size=4, seq_len=L, seed=6198)
    assert b.file_sequences.tolist() == [5, 2, 0, 0, 7, 3]
    assert b.n_sequences == len(seqs) == 17 and b.n_steps == 4
    assert b.dtype == np.dtype("<u4")
    # sequence id 5 is file 1's first sequence, not file 0's 3 leftover tokens + file 1's first 5
    assert b.source(5) == (paths[1], 0, 0)
    assert b.source(7) == (paths[4], 0, 0) and b.source(16) == (paths[5], 2, 2 * L)


@pytest.mark.parametrize("seed,epoch", [(6198, 0), (6198, 1), (0, 0)])
def test_steps_follow_the_published_order(tmp_path, seed, epoch):
    paths, seqs = write_files(tmp_path, LENGTHS, seed=seed)
    B = 4
    b = OLMoBatches(paths, batch_size=B, seq_len=L, seed=seed, epoch=epoch)
    order = published_order(len(seqs), seed, epoch)
    assert np.array_equal(b.order, order)
    for k in range(b.n_steps):
        want = [seqs[i] for i in order[k * B : (k + 1) * B]]
        assert b.step(k).astype(np.int64).tolist() == want
    # window: global index = training-order position; chunks straddle steps
    got = list(b.window(1, 4, chunk=3))
    g = np.concatenate([c[0] for c in got])
    assert g.tolist() == list(range(B, 4 * B))
    assert np.concatenate([c[1] for c in got]).tolist() == (g // B).tolist()
    assert np.concatenate([c[2] for c in got]).tolist() == (g % B).tolist()
    assert np.concatenate([c[3] for c in got]).astype(np.int64).tolist() == [seqs[order[i]] for i in g]
    # arbitrary positions, repeats, and the dropped tail (position 16: no step, still readable)
    pos = np.array([16, 3, 3, 0, 9])
    assert b.rows(pos).astype(np.int64).tolist() == [seqs[order[i]] for i in pos]
    assert b.sequence_ids(pos).tolist() == order[pos].tolist()
    assert b.locate(b.global_index(2, 3)) == (2, 3)


def test_the_shuffle_is_pcg64_as_published():
    """Pinned values of Generator(PCG64(seed)).shuffle(arange(n, uint32)): if numpy's algorithm ever changed, this
    (and with it every OLMo order computed here) would be wrong, and this test says so."""
    assert olmo_order(10, 6198).tolist() == [2, 4, 7, 3, 8, 9, 0, 6, 1, 5]
    assert olmo_order(12, 6198, epoch=1).tolist() == [9, 11, 4, 8, 5, 6, 2, 1, 10, 3, 0, 7]
    assert olmo_order(7, 0).dtype == np.uint32


def test_uint16_files_and_native_tokens(tmp_path):
    paths, seqs = write_files(tmp_path, [3 * L, 2 * L + 1], dtype=np.uint16, high=50_280)
    b = OLMoBatches(paths, batch_size=2, seq_len=L, seed=1, dtype="uint16")
    order = published_order(5, 1)
    assert b.rows(np.arange(5)).astype(np.int64).tolist() == [seqs[i] for i in order]
    assert b.rows(np.arange(2)).dtype == np.dtype(np.uint16)
    with pytest.raises(ValueError, match="memmap_dtype"):
        OLMoBatches(paths, seq_len=L, dtype="int32")


def test_tokens_above_uint16(tmp_path):
    paths, seqs = write_files(tmp_path, [4 * L], high=100_278, seed=3)
    b = OLMoBatches(paths, batch_size=2, seq_len=L, seed=6198)
    assert max(max(s) for s in seqs) > 65_535
    assert b.rows(np.arange(4)).astype(np.int64).tolist() == [seqs[i] for i in published_order(4, 6198)]


def test_order_file_is_read_and_checked(tmp_path):
    """OLMo's global_indices.npy: a raw uint32 memmap; with drop_last and world size W it holds floor(N/W)*W ids."""
    paths, seqs = write_files(tmp_path, LENGTHS)
    N, W, B = len(seqs), 2, 4
    order = published_order(N, 6198)[: (N // W) * W]
    f = tmp_path / "global_indices.npy"
    mm = np.memmap(f, dtype=np.uint32, mode="w+", shape=(order.size,))
    mm[:] = order
    mm.flush()
    del mm
    b = OLMoBatches(paths, batch_size=B, seq_len=L, seed=999, order_file=f)  # the file wins over the seed
    assert b.n_rows == 16 and b.n_steps == 4
    assert b.step(3).astype(np.int64).tolist() == [seqs[i] for i in order[12:16]]
    with pytest.raises(ValueError, match=r"must lie in \[0, 16\)"):
        b.rows(np.array([16]))
    # an order file for other files (the wrong seq_len makes fewer sequences) is refused
    with pytest.raises(DataError, match="holds 16 indices but the 6 token files hold 7 sequences"):
        OLMoBatches(paths, batch_size=B, seq_len=2 * L, order_file=f)
    bad = tmp_path / "bad.npy"
    np.full(16, N + 5, dtype=np.uint32).tofile(bad)
    with pytest.raises(DataError, match="names sequence 22"):
        OLMoBatches(paths, batch_size=B, seq_len=L, order_file=bad)
    with pytest.raises(MissingDataError, match="does not exist"):
        OLMoBatches(paths, batch_size=B, seq_len=L, order_file=tmp_path / "nope.npy")
    # write_order writes the same format back
    out = OLMoBatches(paths, batch_size=B, seq_len=L, seed=6198).write_order(tmp_path / "mine.npy")
    assert np.array_equal(np.fromfile(out, dtype=np.uint32), published_order(N, 6198))


def test_path_list_from_an_olmo_config_block(tmp_path):
    paths, seqs = write_files(tmp_path, [2 * L, 3 * L])
    (tmp_path / "bucket" / "preprocessed").mkdir(parents=True)
    moved = []
    for p in paths:
        dst = tmp_path / "bucket" / "preprocessed" / p.rsplit("/", 1)[1]
        dst.write_bytes(open(p, "rb").read())
        moved.append(str(dst))
    lst = tmp_path / "paths.txt"
    lst.write_text(
        "    # ProofPile 2\n"
        + f"    - gs://ai2-llm/preprocessed/{moved[0].rsplit('/', 1)[1]}\n\n"
        + f"    - s3://ai2-llm/preprocessed/{moved[1].rsplit('/', 1)[1]}  # trailing comment\n"
    )
    assert read_path_list(lst, root=str(tmp_path / "bucket")) == moved
    b = OLMoBatches(lst, batch_size=2, seq_len=L, root=str(tmp_path / "bucket"))
    assert b.files == moved and b.n_sequences == 5
    with pytest.raises(MissingDataError, match="does not exist"):
        OLMoBatches(lst, batch_size=2, seq_len=L)  # resolved under the list's folder: not there
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DataError, match="lists no token files"):
        read_path_list(tmp_path / "empty.txt")


def test_np_save_files_are_refused(tmp_path):
    p = tmp_path / "tokens.npy"
    np.save(p, np.arange(4 * L, dtype=np.uint32))
    with pytest.raises(DataError, match="np.save header"):
        OLMoBatches([p], batch_size=2, seq_len=L)


def test_config_format_olmo_opens_through_the_stages(tmp_path):
    from mda_fast.stages.inputs import open_data
    from mda_fast.stages.score import _data_identity

    paths, seqs = write_files(tmp_path, [10 * L, 6 * L + 5])
    lst = tmp_path / "paths.txt"
    lst.write_text("\n".join(p.rsplit("/", 1)[1] for p in paths) + "\n")
    over = [
        "data.format=olmo",
        f"data.path={lst}",
        "data.batch_size=4",
        f"data.seq_len={L}",
        "data.olmo_seed=6198",
        "data.olmo_epoch=2",
        "window.start_step=1",
        "window.end_step=4",
    ]
    cfg = load_config(None, over)
    data = open_data(cfg)
    order = published_order(16, 6198, 2)
    assert data.n_steps == 4
    assert data.step(1).astype(np.int64).tolist() == [seqs[i] for i in order[4:8]]
    assert [row[0] for row in _data_identity(str(lst), "olmo")] == ["paths.txt"] + [p.rsplit("/", 1)[1] for p in paths]
    with pytest.raises(ConfigError, match="window.end_step = 5 is beyond the data"):
        open_data(load_config(None, over[:-1] + ["window.end_step=5"]))
    with pytest.raises(DataError, match="does not exist"):
        open_data(load_config(None, over + ["data.olmo_order_file=" + str(tmp_path / "missing.npy")]))
    with pytest.raises(ConfigError, match="induction_text probe reads a Megatron data set"):
        load_config(None, over + ['targets.probes=["induction_text"]'])


def _olmo_like_tokenizer_json(path):
    """A word-level tokenizer.json shaped like OLMo-2's dolma2 tokenizer: 100278 ids, ``<|endoftext|>`` = 100257 and
    words above 65535 (so the corpus needs 32-bit tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = "the a of and to in is it was".split()
    vocab = {f"<filler{i}>": i for i in range(100_278)}
    for i, w in enumerate(words):
        vocab.pop(f"<filler{70_000 + i}>")
        vocab[w] = 70_000 + i
    vocab.pop("<filler100257>")
    vocab["<|endoftext|>"] = 100_257
    vocab.pop("<filler1>")
    vocab["<unk>"] = 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return str(path)


def test_own_corpus_with_an_olmo_tokenizer_json(tmp_path):
    """``mda-fast corpus --tokenizer PATH/tokenizer.json`` (``CorpusConfig(tokenizer=...)``) with a tokenizer of
    OLMo-2's size writes 32-bit tokens, takes ``<|endoftext|>`` as the separator, and reads back in Pythia's order."""
    from mda_fast.data import CorpusConfig, PythiaBatches, build_corpus

    tj = _olmo_like_tokenizer_json(tmp_path / "tokenizer.json")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("the a of and to in is it was " * 6)
    (src / "b.md").write_text("it was the a of " * 9)
    m = build_corpus([str(src)], str(tmp_path / "doc"), CorpusConfig(tokenizer=tj, seq_len=L, packing="stream"))
    assert m["dtype"] == "int32"
    assert m["tokenizer"]["vocab_size"] == 100_278 and m["tokenizer"]["eod_id"] == 100_257
    b = PythiaBatches(str(tmp_path / "doc"), batch_size=1, seq_len=L, packing="stream")
    rows = b.rows(np.arange(b.n_rows)).astype(np.int64)
    assert rows.max() == 100_257 and rows.min() >= 70_000  # word ids above 65535 and the separator
    assert set(rows.flatten().tolist()) <= set(range(70_000, 70_009)) | {100_257}


def test_fit_and_score_on_olmo_files_equal_the_same_rows_in_step_order(tmp_path):
    """End to end through the CLI: ``fit`` + ``score`` on OLMo files (``data.format = "olmo"``) give the same
    scores, row for row, as on a ``.npy`` holding the rows in OLMo's step order written here from the rule."""
    from conftest import make_tiny

    from mda_fast.cli import main

    model_dir = tmp_path / "model"
    make_tiny(n_layers=2, vocab=64, ctx=64, dtype=torch.float64).save_pretrained(model_dir)
    S, B = 17, 4
    rng = np.random.default_rng(7)
    paths, seqs = [], []
    for i, n in enumerate([9 * S + 5, 7 * S, 12 * S + 16]):
        toks = rng.integers(0, 64, size=n).astype(np.uint32)
        p = tmp_path / f"part-{i}.npy"
        toks.tofile(p)
        paths.append(p)
        seqs += [toks[j * S : (j + 1) * S] for j in range(n // S)]
    lst = tmp_path / "paths.txt"
    lst.write_text("\n".join(str(p) for p in paths) + "\n")
    order = published_order(len(seqs), 6198)
    np.save(tmp_path / "rows.npy", np.stack([seqs[i] for i in order]).astype(np.uint16))
    common = [
        f"model.name={model_dir}",
        "model.device=cpu",
        "model.dtype=float64",
        "targets.heads=[[1, 0]]",
        "targets.mode=qk",
        "targets.probe_L=6",
        "targets.probe_n=4",
        "targets.probe_high=64",
        "fit.n_sequences=12",
        f"data.batch_size={B}",
        f"data.seq_len={S}",
        "window.start_step=1",
        "window.end_step=5",
        "score.backend=torch",
    ]
    runs = {"olmo": ["data.format=olmo", f"data.path={lst}"], "npy": [f"data.path={tmp_path / 'rows.npy'}"]}
    scores = {}
    for name, extra in runs.items():
        out = str(tmp_path / f"out-{name}")
        args = sum([["--set", s] for s in common + extra], [])
        for cmd in ("fit", "score"):
            assert main([cmd, "--out", out, "--no-progress"] + args) == 0, (name, cmd)
        scores[name] = {k: np.load(f"{out}/score/{k}.npy") for k in ("scores", "global_index", "step", "position")}
    a, b = scores["olmo"], scores["npy"]
    assert a["global_index"].tolist() == list(range(B, 5 * B))
    for k in ("global_index", "step", "position"):
        assert np.array_equal(a[k], b[k])
    # float64 model, scores stored as float32: equal to rounding (a wrong row changes a score completely)
    assert np.abs(a["scores"] - b["scores"]).max() <= 1e-6 * np.abs(b["scores"]).max()
    assert np.abs(a["scores"]).max() > 0 and len(set(a["scores"].ravel().tolist())) == a["scores"].size

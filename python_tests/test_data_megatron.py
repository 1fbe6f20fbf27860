"""Megatron reader/writer: round trips (single and sharded), shard boundaries, dtypes, corruption."""

import os
import struct

import numpy as np
import pytest

from mda_fast.data import DTYPE_CODES, MMapIndexedDataset, write_megatron
from mda_fast.data.megatron import shard_bin_paths


def _rand_seqs(rng, n, lo=0, hi=50000, max_len=40, dtype=np.uint16):
    lens = rng.integers(0, max_len, size=n)
    lens[0] = max(lens[0], 1)
    return [rng.integers(lo, hi, size=int(k)).astype(dtype) for k in lens]


def _read_idx_by_hand(path):
    """Independent parse of the .idx layout (struct only), to check the writer."""
    with open(path, "rb") as f:
        b = f.read()
    magic, version, code, n, dc = struct.unpack_from("<9sQBQQ", b, 0)
    off = 34
    sizes = struct.unpack_from(f"<{n}i", b, off)
    off += 4 * n
    pointers = struct.unpack_from(f"<{n}q", b, off)
    off += 8 * n
    doc_idx = struct.unpack_from(f"<{dc}q", b, off)
    return magic, version, code, list(sizes), list(pointers), list(doc_idx), len(b) - off - 8 * dc


@pytest.mark.parametrize("n_shards", [1, 2, 5, 17])
def test_round_trip(tmp_path, n_shards):
    rng = np.random.default_rng(n_shards)
    seqs = _rand_seqs(rng, 37)
    prefix = str(tmp_path / "doc")
    paths = write_megatron(prefix, seqs, n_shards=n_shards)
    assert len(paths) == 1 + n_shards
    if n_shards > 1:
        assert os.path.basename(paths[1]) == f"doc-00000-of-{n_shards - 1:05d}.bin"  # -of- is the last index
        assert os.path.basename(paths[-1]) == f"doc-{n_shards - 1:05d}-of-{n_shards - 1:05d}.bin"
        assert shard_bin_paths(prefix) == paths[1:]
    # shards are a plain byte-concatenation of the stream
    stream = b"".join(open(p, "rb").read() for p in paths[1:])
    assert stream == b"".join(s.astype("<u2").tobytes() for s in seqs)
    ds = MMapIndexedDataset(prefix)
    assert len(ds) == len(seqs)
    assert ds.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(ds.sizes, [len(s) for s in seqs])
    for i, s in enumerate(seqs):
        got = ds[i]
        assert got.dtype == np.dtype("<u2")
        np.testing.assert_array_equal(got, s)
    np.testing.assert_array_equal(ds[-1], seqs[-1])
    with pytest.raises(IndexError):
        ds[len(seqs)]
    # independent parse of the index
    magic, version, code, sizes, pointers, doc_idx, rest = _read_idx_by_hand(prefix + ".idx")
    assert (magic, version, code, rest) == (b"MMIDIDX\x00\x00", 1, 8, 0)
    assert sizes == [len(s) for s in seqs]
    assert pointers == list(np.concatenate([[0], np.cumsum([2 * len(s) for s in seqs])[:-1]]))
    assert doc_idx == list(range(len(seqs) + 1))


def test_sequence_spanning_shard_boundary_mid_token(tmp_path):
    # 3 sequences of 5 u16 tokens = 30 bytes; 4 shards of ceil(30/4)=8 bytes: boundaries at bytes 8, 16, 24,
    # i.e. inside sequence 0 (token 4 starts at byte 8) and sequence 1 (bytes 10..20) at byte 16 and 24 (seq 2).
    # With 7 shards (5 bytes each) boundaries fall mid-token (odd byte offsets).
    seqs = [np.array([1, 2, 3, 4, 5]) * 257 + k for k in range(3)]
    for n_shards in (4, 7):
        prefix = str(tmp_path / f"s{n_shards}")
        write_megatron(prefix, seqs, n_shards=n_shards)
        sizes = [os.path.getsize(p) for p in shard_bin_paths(prefix)]
        assert sum(sizes) == 30 and len(sizes) == n_shards
        if n_shards == 7:
            assert any(np.cumsum(sizes)[:-1] % 2 == 1)  # a token straddles a shard boundary
        ds = MMapIndexedDataset(prefix)
        for i in range(3):
            np.testing.assert_array_equal(ds[i], seqs[i])
        np.testing.assert_array_equal(ds.read_tokens(3, 9), np.concatenate(seqs)[3:12])


def test_view_is_zero_copy_within_a_shard(tmp_path):
    prefix = str(tmp_path / "z")
    write_megatron(prefix, [np.arange(100), np.arange(100)], n_shards=1)
    ds = MMapIndexedDataset(prefix)
    a = ds[1]
    assert not a.flags.owndata and not a.flags.writeable


@pytest.mark.parametrize("code", sorted(DTYPE_CODES))
def test_every_dtype_code(tmp_path, code):
    dt = DTYPE_CODES[code]
    rng = np.random.default_rng(code)
    if dt.kind == "f":
        seqs = [rng.standard_normal(int(k)).astype(dt) for k in rng.integers(1, 20, 9)]
    else:
        info = np.iinfo(dt)
        seqs = [rng.integers(info.min, info.max, size=int(k), dtype=dt, endpoint=True) for k in rng.integers(1, 20, 9)]
        seqs[0][0], seqs[0][-1] = info.min, info.max
    prefix = str(tmp_path / f"d{code}")
    write_megatron(prefix, seqs, dtype=dt, n_shards=3)
    assert _read_idx_by_hand(prefix + ".idx")[2] == code
    ds = MMapIndexedDataset(prefix)
    assert ds.dtype == dt
    for i, s in enumerate(seqs):
        np.testing.assert_array_equal(ds[i], s)
        assert ds[i].dtype == dt


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        write_megatron(str(tmp_path / "a"), [np.array([0, 70000])], dtype=np.uint16)
    with pytest.raises(ValueError, match="outside"):
        write_megatron(str(tmp_path / "a"), [np.array([-1])], dtype=np.uint16)
    with pytest.raises(TypeError, match="dtype code"):
        write_megatron(str(tmp_path / "a"), [np.array([1])], dtype=np.uint32)
    with pytest.raises(ValueError, match="n_shards"):
        write_megatron(str(tmp_path / "a"), [np.array([1])], n_shards=0)
    with pytest.raises(ValueError, match="1-D"):
        write_megatron(str(tmp_path / "a"), [np.zeros((2, 2), int)])


# -- corruption -------------------------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    seqs = _rand_seqs(rng, 20, max_len=30)
    prefix = str(tmp_path / "c")
    write_megatron(prefix, seqs, n_shards=3)
    MMapIndexedDataset(prefix)  # valid before we break it
    return prefix, seqs


def _patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _assert_bad(prefix, pattern, fname):
    with pytest.raises(ValueError, match=pattern) as e:
        MMapIndexedDataset(prefix)
    assert fname in str(e.value)


def test_bad_magic(good):
    prefix, _ = good
    _patch(prefix + ".idx", 0, b"XXIDIDX")
    _assert_bad(prefix, "bad magic", "c.idx")


def test_bad_version(good):
    prefix, _ = good
    _patch(prefix + ".idx", 9, struct.pack("<Q", 2))
    _assert_bad(prefix, "version 2", "c.idx")


@pytest.mark.parametrize("code", [0, 9, 255])
def test_bad_dtype_code(good, code):
    prefix, _ = good
    _patch(prefix + ".idx", 17, bytes([code]))
    _assert_bad(prefix, f"dtype code {code}", "c.idx")


def test_swapped_dtype_caught_by_pointers(good):
    prefix, _ = good
    _patch(prefix + ".idx", 17, bytes([4]))  # claims i32 while pointers advance 2 bytes per token
    _assert_bad(prefix, "inconsistent pointers", "c.idx")


@pytest.mark.parametrize("cut", [1, 8, 100])
def test_truncated_idx(good, cut):
    prefix, _ = good
    size = os.path.getsize(prefix + ".idx")
    os.truncate(prefix + ".idx", size - cut)
    _assert_bad(prefix, "truncated index", "c.idx")


def test_idx_shorter_than_header(good):
    prefix, _ = good
    os.truncate(prefix + ".idx", 20)
    _assert_bad(prefix, "truncated index", "c.idx")


def test_oversized_idx(good):
    prefix, _ = good
    with open(prefix + ".idx", "ab") as f:
        f.write(b"\0" * 8)
    _assert_bad(prefix, "oversized index", "c.idx")


def test_truncated_bin(good):
    prefix, _ = good
    last = shard_bin_paths(prefix)[-1]
    os.truncate(last, os.path.getsize(last) - 1)
    _assert_bad(prefix, "truncated token stream", "c-00000-of-00002.bin")


def test_oversized_bin(good):
    prefix, _ = good
    with open(shard_bin_paths(prefix)[1], "ab") as f:
        f.write(b"\0\0")
    _assert_bad(prefix, "oversized token stream", "c-00000-of-00002.bin")


def test_missing_shard(good):
    prefix, _ = good
    os.remove(shard_bin_paths(prefix)[1])
    with pytest.raises(ValueError, match=r"missing 1 shard \[00001\]"):
        MMapIndexedDataset(prefix)


def test_missing_bin_and_idx(tmp_path):
    with pytest.raises(FileNotFoundError, match="index not found"):
        MMapIndexedDataset(str(tmp_path / "nothing"))
    write_megatron(str(tmp_path / "only"), [np.arange(3)])
    os.remove(str(tmp_path / "only.bin"))
    with pytest.raises(FileNotFoundError, match="no token stream"):
        MMapIndexedDataset(str(tmp_path / "only"))


def test_ambiguous_single_and_shards(good):
    prefix, _ = good
    open(prefix + ".bin", "wb").close()
    with pytest.raises(ValueError, match="ambiguous"):
        MMapIndexedDataset(prefix)


def test_inconsistent_pointer(good):
    prefix, seqs = good
    n = len(seqs)
    _patch(prefix + ".idx", 34 + 4 * n + 8 * 5, struct.pack("<q", 2))  # pointer[5]
    _assert_bad(prefix, r"pointer\[5\]", "c.idx")


def test_inconsistent_size(good):
    prefix, seqs = good
    _patch(prefix + ".idx", 34 + 4 * 3, struct.pack("<i", len(seqs[3]) + 1))  # sizes[3] one too many
    _assert_bad(prefix, r"pointer\[4\]", "c.idx")


def test_inconsistent_last_size(good):
    prefix, seqs = good
    n = len(seqs)
    _patch(prefix + ".idx", 34 + 4 * (n - 1), struct.pack("<i", len(seqs[-1]) + 1))
    _assert_bad(prefix, "truncated token stream", "c.idx")


def test_negative_size(good):
    prefix, _ = good
    _patch(prefix + ".idx", 34 + 4 * 2, struct.pack("<i", -3))
    _assert_bad(prefix, "negative size", "c.idx")


def test_bad_doc_idx(good):
    prefix, seqs = good
    n = len(seqs)
    _patch(prefix + ".idx", 34 + 12 * n + 8 * n, struct.pack("<q", n + 5))  # doc_idx[-1]
    _assert_bad(prefix, "doc_idx", "c.idx")


def test_doc_idx_not_monotone(good):
    prefix, seqs = good
    n = len(seqs)
    _patch(prefix + ".idx", 34 + 12 * n + 8 * 3, struct.pack("<q", 10))  # doc_idx[3] = 10 > doc_idx[4] = 4
    _assert_bad(prefix, "doc_idx", "c.idx")


@pytest.mark.parametrize("bad_at", [None, 2, 3, 4, 6])
def test_chunked_validation(good, monkeypatch, bad_at):
    """Validation runs in chunks (bounded memory on Pythia's 146M entries); check it across chunk borders."""
    import mda_fast.data.megatron as meg

    monkeypatch.setattr(meg, "_CHECK_CHUNK", 3)
    prefix, seqs = good
    n = len(seqs)
    if bad_at is None:
        ds = MMapIndexedDataset(prefix)
        for i, s in enumerate(seqs):
            np.testing.assert_array_equal(ds[i], s)
        return
    ptr = int(MMapIndexedDataset(prefix).pointers[bad_at])
    _patch(prefix + ".idx", 34 + 4 * n + 8 * bad_at, struct.pack("<q", ptr + 2))
    _assert_bad(prefix, rf"pointer\[{bad_at}\]", "c.idx")

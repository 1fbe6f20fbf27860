"""Pythia's published data layout, written here from the format's specification (struct/numpy, not the package's
writer): one ``document.idx`` (MMIDIDX) for the whole stream, and the stream either as the 21 byte-split shards
``document-00000-of-00020.bin`` .. ``document-00020-of-00020.bin`` (the number after ``of`` is the last index) or
as the single ``document.bin`` that Pythia's ``utils/unshard_memmap.py`` writes. Rows read back through
``PythiaBatches`` and ``MMapIndexedDataset`` must equal the ground-truth token array; every broken set must raise
one clear one-line ``DataError`` naming the convention.
"""

import os
import struct

import numpy as np
import pytest

from mda_fast.data import MMapIndexedDataset, PythiaBatches, shard_bin_paths, write_megatron
from mda_fast.data.megatron import MissingDataError, resolve_prefix
from mda_fast.errors import DataError

L, B, N_ROWS = 9, 4, 50  # 50 rows x 9 u16 tokens = 900 bytes; 12 full steps of 4 + 2 spare rows
CONVENTION = "LAST index, not the count"


def _idx_bytes(sizes, dtype_code=8, itemsize=2):
    """MMIDIDX index from the spec: magic, <Q version 1, <B dtype code, <Q len, <Q doc_count, i32 sizes,
    i64 byte pointers, i64 doc_idx (one document per sequence, as in Pythia's preshuffled files)."""
    n = len(sizes)
    pointers = np.concatenate([[0], np.cumsum(np.asarray(sizes, np.int64) * itemsize)[:-1]]) if n else []
    return (
        b"MMIDIDX\x00\x00"
        + struct.pack("<QBQQ", 1, dtype_code, n, n + 1)
        + struct.pack(f"<{n}i", *sizes)
        + struct.pack(f"<{n}q", *map(int, pointers))
        + struct.pack(f"<{n + 1}q", *range(n + 1))
    )


def _write_set(directory, rows, shard_bytes=None, base="document", last_index=None):
    """``document.idx`` plus the stream cut every ``shard_bytes`` bytes (Pythia cuts every 5e9 bytes, the last
    shard holding the rest) into ``<base>-IIIII-of-LLLLL.bin``; ``shard_bytes=None`` writes ``<base>.bin``.
    ``last_index`` overrides LLLLL (to forge count-style names). Returns (prefix, shard byte boundaries)."""
    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, base)
    with open(prefix + ".idx", "wb") as f:
        f.write(_idx_bytes([rows.shape[1]] * rows.shape[0]))
    stream = rows.astype("<u2").tobytes()
    if shard_bytes is None:
        with open(prefix + ".bin", "wb") as f:
            f.write(stream)
        return prefix, []
    chunks = [stream[i : i + shard_bytes] for i in range(0, len(stream), shard_bytes)]
    last = len(chunks) - 1 if last_index is None else last_index
    for i, c in enumerate(chunks):
        with open(f"{prefix}-{i:05d}-of-{last:05d}.bin", "wb") as f:
            f.write(c)
    return prefix, list(range(shard_bytes, len(stream), shard_bytes))


def _truth(seed, n_rows=N_ROWS, seq_len=L):
    return np.random.default_rng(seed).integers(0, 50277, size=(n_rows, seq_len), dtype=np.uint16)


def _check_reads(path, rows, seq_len=L, batch=B):
    """Every access path of PythiaBatches and MMapIndexedDataset returns the ground truth."""
    pb = PythiaBatches(path, batch_size=batch, seq_len=seq_len)
    n_steps = len(rows) // batch
    assert (pb.n_rows, pb.n_steps) == (len(rows), n_steps)
    for k in range(n_steps):
        np.testing.assert_array_equal(pb.step(k), rows[k * batch : (k + 1) * batch])
    perm = np.random.default_rng(1).permutation(len(rows))
    np.testing.assert_array_equal(pb.rows(perm), rows[perm])
    got = np.concatenate([w[3] for w in pb.window(0, n_steps, chunk=5)])
    np.testing.assert_array_equal(got, rows[: n_steps * batch])
    ds = MMapIndexedDataset(path)
    for i in range(len(rows)):
        np.testing.assert_array_equal(ds[i], rows[i])
    return ds


# -- layouts that must open ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shard_bytes", [44, 43], ids=["even-split", "odd-split"])
def test_real_21_shard_set(tmp_path, shard_bytes):
    """21 shards named -of-00020. Even split: 44-byte shards end inside rows (18 bytes each) at token borders.
    Odd split (43 bytes): a token's two bytes straddle a boundary; the reader reassembles it (documented)."""
    rows = _truth(0)
    prefix, cuts = _write_set(str(tmp_path / "pile"), rows, shard_bytes)
    assert len(cuts) == 20 and any(c % (2 * L) for c in cuts)  # 21 files, boundaries inside sequences
    assert all(c % 2 == 0 for c in cuts) == (shard_bytes % 2 == 0)
    paths = shard_bin_paths(prefix)
    assert [os.path.basename(p) for p in paths] == [f"document-{i:05d}-of-00020.bin" for i in range(21)]
    ds = _check_reads(prefix, rows)
    assert ds.bin_paths == paths and ds.nbytes == rows.nbytes


def test_pythia_row_length_2049(tmp_path):
    rows = _truth(2, n_rows=8, seq_len=2049)  # 32,784 bytes in 21 shards of 1,562 bytes (the last 1,544)
    prefix, cuts = _write_set(str(tmp_path / "p"), rows, 1562)
    assert len(cuts) == 20
    _check_reads(prefix, rows, seq_len=2049, batch=2)


def test_unsharded_document_bin(tmp_path):
    """The single document.bin that unshard_memmap.py writes (the shards' concatenation) with document.idx."""
    rows = _truth(3)
    prefix, _ = _write_set(str(tmp_path / "merged"), rows, None)
    assert shard_bin_paths(prefix) == []
    ds = _check_reads(prefix, rows)
    assert ds.bin_paths == [prefix + ".bin"]
    with pytest.raises(DataError, match="entry 0 has 9 tokens but seq_len=8"):
        PythiaBatches(prefix, batch_size=B, seq_len=8)


@pytest.mark.parametrize("base, shard_bytes", [("document", 44), ("pile_0.87_deduped_text_document", 11)])
def test_deduped_download_and_path_forms(tmp_path, base, shard_bytes):
    """The deduped dataset (pile-deduped-pythia-preshuffled/document-000NN-of-00020.bin, and the older
    pile_0.87_deduped_text_document-000NN-of-00081 naming): prefix, .idx, shard 0, directory and Path all open."""
    rows = _truth(4)
    d = tmp_path / "datasets--EleutherAI--pile-deduped-pythia-preshuffled" / "pile-deduped-pythia-preshuffled"
    prefix, cuts = _write_set(str(d), rows, shard_bytes, base=base)
    last = len(cuts)
    shard0 = f"{prefix}-00000-of-{last:05d}.bin"
    for form in (prefix, prefix + ".idx", shard0, str(d), str(d) + os.sep, d / base):
        assert resolve_prefix(form) == prefix, form
    _check_reads(shard0, rows)
    _check_reads(str(d), rows)


def test_writer_follows_the_real_convention(tmp_path):
    rows = _truth(5)
    paths = write_megatron(str(tmp_path / "w" / "document"), rows, n_shards=21)
    assert [os.path.basename(p) for p in paths[1:]] == [f"document-{i:05d}-of-00020.bin" for i in range(21)]
    # byte-identical to the spec-written set
    prefix, _ = _write_set(str(tmp_path / "s"), rows, None)
    assert b"".join(open(p, "rb").read() for p in paths[1:]) == open(prefix + ".bin", "rb").read()
    assert open(paths[0], "rb").read() == open(prefix + ".idx", "rb").read()
    _check_reads(paths[0], rows)
    with pytest.raises(DataError, match="already holds other token-stream files"):
        write_megatron(str(tmp_path / "w" / "document"), rows, n_shards=4)  # would leave a mixed set behind
    with pytest.raises(DataError, match="already holds other token-stream files"):
        write_megatron(str(tmp_path / "s" / "document"), rows, n_shards=3)  # document.bin beside new shards


# -- sets that must be refused ---------------------------------------------------------------------------------


@pytest.fixture
def real(tmp_path):
    rows = _truth(6)
    prefix, _ = _write_set(str(tmp_path / "pile"), rows, 44)
    MMapIndexedDataset(prefix)  # valid before we break it
    return prefix, rows


def _refused(path, *patterns, cls=DataError):
    with pytest.raises(cls) as e:
        PythiaBatches(path, batch_size=B, seq_len=L)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for p in patterns:
        assert p in msg, (p, msg)
    return msg


def test_missing_shard_00007(real):
    prefix, _ = real
    os.remove(f"{prefix}-00007-of-00020.bin")
    _refused(prefix, "-of-00020 means 21 shards 00000..00020", "missing 1 shard [00007]", CONVENTION)


def test_missing_final_shard(real):
    prefix, _ = real
    os.remove(f"{prefix}-00020-of-00020.bin")
    _refused(prefix, "final shard -00020-of-00020.bin is missing", "shard count", CONVENTION)


def test_count_style_names_refused_not_read_short(tmp_path):
    """20 shards named -00000..-00019-of-00020 (``of`` as the count): complete bytes, but named against the
    convention; refused with the rename that fixes it rather than guessed."""
    rows = _truth(7)
    prefix, cuts = _write_set(str(tmp_path / "old"), rows, 45, last_index=20)
    assert len(cuts) == 19
    _refused(prefix, "stops at -00019-of-00020", "rename a complete set of 20 shards to -of-00019", CONVENTION)


def test_document_bin_beside_shards(real):
    prefix, rows = real
    with open(prefix + ".bin", "wb") as f:
        f.write(rows.astype("<u2").tobytes())
    _refused(prefix, "two token streams", "document.bin", "document-00000-of-00020.bin", CONVENTION)


def test_duplicate_shard_index(real):
    prefix, _ = real
    with open(f"{prefix}-00007-of-00020.bin", "rb") as f, open(f"{prefix}-0007-of-00020.bin", "wb") as g:
        g.write(f.read())
    _refused(prefix, "duplicate shard 00007", "document-0007-of-00020.bin", CONVENTION)


def test_mixed_totals(real):
    prefix, _ = real
    with open(f"{prefix}-00000-of-00021.bin", "wb") as f:
        f.write(b"\0" * 44)
    _refused(prefix, "mix several -of- totals ['-of-00020', '-of-00021']", CONVENTION)


def test_index_above_last(real):
    prefix, _ = real
    with open(f"{prefix}-00021-of-00020.bin", "wb") as f:
        f.write(b"\0" * 2)
    _refused(prefix, "index above the last index 00020", "[00021]", CONVENTION)


@pytest.mark.parametrize("shard, delta, kind", [(7, -2, "truncated"), (3, 2, "oversized"), (20, -1, "truncated")])
def test_sizes_not_summing_to_the_index(real, shard, delta, kind):
    """A short or long shard (an interrupted download); delta -1 leaves a byte count that is not a whole number
    of u16 tokens. The message names the shard whose size is off when it is not the (smaller) final one."""
    prefix, rows = real
    path = f"{prefix}-{shard:05d}-of-00020.bin"
    if delta < 0:
        os.truncate(path, os.path.getsize(path) + delta)
    else:
        with open(path, "ab") as f:
            f.write(b"\0" * delta)
    msg = _refused(
        prefix,
        f"{kind} token stream 21 shards",
        f"{rows.nbytes + delta} bytes",
        f"describes {rows.nbytes} bytes",
        CONVENTION,
    )
    odd = f"shards whose size differs from shard 0's 44 bytes: ['document-{shard:05d}-of-00020.bin']"
    assert (odd in msg) == (shard != 20) and ("differs" in msg) == (shard != 20)


def test_git_lfs_pointer_named(real):
    prefix, _ = real
    with open(f"{prefix}-00005-of-00020.bin", "wb") as f:
        f.write(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 5000000000\n")
    _refused(prefix, "Git LFS pointer", "document-00005-of-00020.bin")


def test_missing_index_or_stream(tmp_path, real):
    prefix, _ = real
    os.remove(prefix + ".idx")
    msg = _refused(prefix, "Megatron index not found", "document.idx", cls=MissingDataError)
    assert "beside 'document.bin' or its shards" in msg
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError, for callers that catch that
        MMapIndexedDataset(prefix)
    _refused(os.path.dirname(prefix), "holds no Megatron .idx", cls=MissingDataError)
    rows = _truth(8)
    p2, _ = _write_set(str(tmp_path / "nostream"), rows, None)
    os.remove(p2 + ".bin")
    _refused(p2, "no token stream", "-00000-of-LLLLL.bin", CONVENTION, cls=MissingDataError)
    _write_set(str(tmp_path / "two"), rows, None)
    _write_set(str(tmp_path / "two"), rows, None, base="other")
    _refused(str(tmp_path / "two"), "several Megatron indexes ['document.idx', 'other.idx']")

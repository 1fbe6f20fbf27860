"""PythiaBatches: step/window arithmetic, random access, .npy rows, packing modes."""

import numpy as np
import pytest

from mda_fast.data import PythiaBatches, write_megatron

B, L = 4, 7


@pytest.fixture(params=["megatron1", "megatron3", "megatron4", "npy"])
def fake(request, tmp_path):
    """A fake dataset of 3 full steps of batch 4 plus 2 spare rows; token values encode (row, column).

    196 bytes: 3 shards split at bytes 66, 132 (inside rows 4 and 9); 4 shards at odd bytes 49, 98, 147.
    """
    n_rows = 3 * B + 2
    rows = (np.arange(n_rows)[:, None] * 100 + np.arange(L)[None, :]).astype(np.uint16)
    if request.param == "npy":
        path = str(tmp_path / "rows.npy")
        np.save(path, rows)
    else:
        path = str(tmp_path / "doc")
        write_megatron(path, rows, n_shards=int(request.param[-1]))
    return PythiaBatches(path, batch_size=B, seq_len=L), rows


def test_step_arithmetic(fake):
    pb, rows = fake
    assert (pb.n_steps, pb.n_rows, pb.batch_size, pb.seq_len, len(pb)) == (3, 14, B, L, 3)
    for k in range(3):
        got = pb.step(k)
        assert got.shape == (B, L) and got.dtype == np.uint16 and got.flags.writeable
        np.testing.assert_array_equal(got, rows[k * B : (k + 1) * B])
        assert got[0, 0] == k * B * 100  # first row of step k is global row k*B
    for bad in (-1, 3):
        with pytest.raises(ValueError, match="step"):
            pb.step(bad)
    assert pb.global_index(2, 3) == 11
    np.testing.assert_array_equal(pb.global_index(np.array([0, 1, 2]), np.array([3, 0, 1])), [3, 4, 9])
    assert pb.locate(11) == (2, 3)
    with pytest.raises(ValueError):
        pb.global_index(1, B)
    with pytest.raises(ValueError):
        pb.global_index(3, 0)
    with pytest.raises(ValueError):
        pb.locate(12)  # a spare row belongs to no step


@pytest.mark.parametrize("chunk", [None, 1, 3, 5, 100])
def test_window(fake, chunk):
    pb, rows = fake
    got = list(pb.window(1, 3, chunk=chunk))
    g = np.concatenate([w[0] for w in got])
    np.testing.assert_array_equal(g, np.arange(B, 3 * B))
    np.testing.assert_array_equal(np.concatenate([w[1] for w in got]), np.arange(B, 3 * B) // B)
    np.testing.assert_array_equal(np.concatenate([w[2] for w in got]), np.arange(B, 3 * B) % B)
    toks = np.concatenate([w[3] for w in got])
    np.testing.assert_array_equal(toks, rows[B : 3 * B])
    np.testing.assert_array_equal(toks[:, 0] // 100, g)  # tokens belong to their global index
    c = B if chunk is None else chunk
    assert [len(w[0]) for w in got][:-1] == [c] * (len(got) - 1)


def test_window_bounds(fake):
    pb, _ = fake
    assert list(pb.window(2, 2)) == []
    assert sum(len(w[0]) for w in pb.window(0, 3)) == 3 * B  # end_step exclusive, may equal n_steps
    for a, b in ((0, 4), (-1, 2), (2, 1)):
        with pytest.raises(ValueError, match="window"):
            list(pb.window(a, b))
    with pytest.raises(ValueError, match="chunk"):
        list(pb.window(0, 1, chunk=0))


def test_rows_random_access(fake):
    pb, rows = fake
    idx = np.array([13, 0, 5, 5, 12, 7, 4, 9, 3, 10])
    np.testing.assert_array_equal(pb.rows(idx), rows[idx])
    perm = np.random.default_rng(0).permutation(14)
    got = pb.rows(perm)
    assert got.flags.writeable and got.dtype == np.uint16
    np.testing.assert_array_equal(got, rows[perm])
    assert pb.rows([]).shape == (0, L)
    with pytest.raises(ValueError, match="global indices"):
        pb.rows([14])
    with pytest.raises(ValueError, match="global indices"):
        pb.rows([-1])


def test_seq_len_mismatch_raises(tmp_path):
    rows = np.arange(3 * 10, dtype=np.uint16).reshape(3, 10)
    write_megatron(str(tmp_path / "m"), rows)
    with pytest.raises(ValueError, match="entry 0 has 10 tokens but seq_len=9"):
        PythiaBatches(str(tmp_path / "m"), batch_size=1, seq_len=9)
    np.save(str(tmp_path / "r.npy"), rows)
    with pytest.raises(ValueError, match=r"\(N, 9\)"):
        PythiaBatches(str(tmp_path / "r.npy"), batch_size=1, seq_len=9)
    with pytest.raises(ValueError, match="packing"):
        PythiaBatches(str(tmp_path / "m"), packing="docs")


def test_stream_packing(tmp_path):
    """Variable-length entries, packing='stream': concatenated tokens cut into seq_len rows, tail dropped."""
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 1000, int(k)).astype(np.uint16) for k in rng.integers(1, 30, 40)]
    write_megatron(str(tmp_path / "v"), seqs, n_shards=3)
    stream = np.concatenate(seqs)
    L2, B2 = 11, 3
    pb = PythiaBatches(str(tmp_path / "v"), batch_size=B2, seq_len=L2, packing="stream")
    n_rows = len(stream) // L2
    assert pb.n_rows == n_rows and pb.n_steps == n_rows // B2
    ref = stream[: n_rows * L2].reshape(n_rows, L2)
    np.testing.assert_array_equal(pb.step(1), ref[B2 : 2 * B2])
    np.testing.assert_array_equal(pb.rows([n_rows - 1, 0]), ref[[n_rows - 1, 0]])
    with pytest.raises(ValueError, match="seq_len"):
        PythiaBatches(str(tmp_path / "v"), batch_size=B2, seq_len=L2)


def test_bad_args(tmp_path):
    np.save(str(tmp_path / "r.npy"), np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="batch_size"):
        PythiaBatches(str(tmp_path / "r.npy"), batch_size=0, seq_len=5)
    np.save(str(tmp_path / "f.npy"), np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="integer"):
        PythiaBatches(str(tmp_path / "f.npy"), batch_size=2, seq_len=5)

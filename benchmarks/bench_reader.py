"""Reader throughput (sequences/s): sequential and random access on a sharded file of 2049-token u16 rows.

    python benchmarks/bench_reader.py [--rows 20000] [--shards 4] [--dir /tmp/mda_bench_reader]

The file is written first, so reads hit the page cache (warm). Every access materialises the tokens (a copy or a
sum), so lazy memmap views are not counted as free. The baseline is fancy indexing of one in-memory array.
"""

import argparse
import os
import shutil
import time

import numpy as np

from mda_fast.data import MMapIndexedDataset, PythiaBatches, write_megatron


def _rate(fn, n_seq, min_time=0.5):
    fn()  # warm-up
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return reps * n_seq / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--seq-len", type=int, default=2049)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dir", default="/tmp/mda_bench_reader")
    ap.add_argument(
        "--validate-entries",
        type=int,
        default=8_000_000,
        help="also time open+validate of an index with this many 1-token entries (0: skip)",
    )
    args = ap.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    prefix = os.path.join(args.dir, "document")
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 50277, size=(args.rows, args.seq_len), dtype=np.uint16)
    t0 = time.perf_counter()
    write_megatron(prefix, rows, n_shards=args.shards)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = MMapIndexedDataset(prefix)
    t_open = time.perf_counter() - t0
    pb = PythiaBatches(prefix, batch_size=args.batch, seq_len=args.seq_len)
    B, n = args.batch, len(ds)
    rand = rng.integers(0, n, size=B)
    seq_start = [0]

    def ds_seq():
        s = seq_start[0]
        for i in range(s, s + B):
            np.array(ds[i % n])
        seq_start[0] = (s + B) % n

    def ds_rand():
        for i in rand.tolist():
            np.array(ds[i])

    step = [0]

    def pb_step():
        pb.step(step[0] % pb.n_steps)
        step[0] += 1

    def pb_window():
        for _ in pb.window(0, pb.n_steps):
            pass

    def pb_rows():
        pb.rows(rand)

    def mem_rows():
        rows[rand].sum()

    results = [
        ("MMapIndexedDataset[i], sequential", ds_seq, B),
        ("MMapIndexedDataset[i], random", ds_rand, B),
        ("PythiaBatches.step(k), sequential", pb_step, B),
        ("PythiaBatches.window(0, n_steps)", pb_window, pb.n_steps * B),
        ("PythiaBatches.rows(idx), random", pb_rows, B),
        ("baseline: in-memory array[idx], random", mem_rows, B),
    ]
    mb = rows.nbytes / 2**20
    print(
        f"{args.rows} rows x {args.seq_len} u16 tokens ({mb:.0f} MiB) in {args.shards} shards; "
        f"write {t_write:.2f} s, open+validate {t_open * 1e3:.1f} ms"
    )
    print("| access | sequences/s | MiB/s |")
    print("| --- | ---: | ---: |")
    for name, fn, k in results:
        r = _rate(fn, k)
        print(f"| {name} | {r:,.0f} | {r * args.seq_len * 2 / 2**20:,.0f} |")
    shutil.rmtree(args.dir, ignore_errors=True)
    if args.validate_entries:
        n = args.validate_entries
        big = _write_index_only(os.path.join(args.dir, "big"), n)
        t0 = time.perf_counter()
        MMapIndexedDataset(big)
        dt = time.perf_counter() - t0
        print(
            f"open+validate of a {n:,}-entry index: {dt:.2f} s ({n / dt / 1e6:.1f} M entries/s; "
            f"Pythia's 146.4M entries -> ~{146.432e6 / (n / dt):.0f} s)"
        )
        shutil.rmtree(args.dir, ignore_errors=True)


def _write_index_only(prefix, n):
    """An n-entry index of 1-token u16 sequences, written with numpy (the list-based writer is slow for tiny rows)."""
    from mda_fast.data import megatron as m

    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with open(prefix + ".idx", "wb") as f:
        f.write(m._HEADER.pack(m._MAGIC, 1, 8, n, n + 1))
        f.write(np.ones(n, "<i4").tobytes())
        f.write((np.arange(n, dtype="<i8") * 2).tobytes())
        f.write(np.arange(n + 1, dtype="<i8").tobytes())
    np.zeros(n, "<u2").tofile(prefix + ".bin")
    return prefix


if __name__ == "__main__":
    main()

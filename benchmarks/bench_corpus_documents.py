"""``mda-fast corpus --from FILE.jsonl.zst`` throughput: reading alone, and whole builds.

    python benchmarks/bench_corpus_documents.py [--mb 50] [--dir /tmp/mda_bench_corpus]
        [--tokenizer ../shared/data/gpt-neox-20b-tokenizer.json]

The input is a Pile-style ``00.jsonl.zst`` (``{"text", "meta": {"pile_set_name"}}``, zstd level 3) of ``--mb`` MB
of real text: the Python standard library's files on this machine (sorted by path, each file one document, cut
at 64 KiB), labelled by kind. Reported per stage: MB/s of text (uncompressed), documents/s and, for builds, rows
of 2049 tokens per second (wall clock; the CPU seconds of this process beside them, the tokenizer's threads
included). Stages: ``read`` (decompress + JSON + fields, :mod:`mda_fast.data.documents`); builds
with the bytes tokenizer labelled by the field, by content (the classifier), and shuffled; and with the
``--tokenizer`` (GPT-NeoX-20B) labelled by the field.
"""

import argparse
import json
import os
import shutil
import sysconfig
import time

from mda_fast.data.corpus import CorpusConfig, build_corpus
from mda_fast.data.documents import Fields, list_inputs, read_documents

KINDS = {".py": "Github", ".rst": "Pile-CC", ".txt": "Pile-CC", ".html": "Pile-CC", ".json": "Github"}


def make_input(path: str, mb: float) -> dict:
    import zstandard

    root = sysconfig.get_paths()["stdlib"]
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if os.path.splitext(f)[1] in KINDS)
    budget, n_docs, n_bytes = int(mb * 1e6), 0, 0
    cctx = zstandard.ZstdCompressor(level=3)
    with open(path, "wb") as fh, cctx.stream_writer(fh) as w:
        while n_bytes < budget:  # the library again when it is smaller than the budget
            for p in files:
                try:
                    text = open(p, encoding="utf-8").read()[: 64 << 10]
                except (OSError, UnicodeDecodeError):
                    continue
                if not text:
                    continue
                line = json.dumps({"text": text, "meta": {"pile_set_name": KINDS[os.path.splitext(p)[1]]}})
                w.write(line.encode() + b"\n")
                n_docs += 1
                n_bytes += len(text.encode())
                if n_bytes >= budget:
                    break
    return {"documents": n_docs, "text_bytes": n_bytes, "file_bytes": os.path.getsize(path)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50)
    ap.add_argument("--dir", default="/tmp/mda_bench_corpus")
    ap.add_argument("--tokenizer", default=os.path.join("..", "shared", "data", "gpt-neox-20b-tokenizer.json"))
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    src = os.path.join(args.dir, "00.jsonl.zst")
    info = make_input(src, args.mb)
    mb = info["text_bytes"] / 1e6
    print(
        f"input {src}: {info['documents']} documents, {mb:.1f} MB of text, {info['file_bytes'] / 1e6:.1f} MB compressed"
    )

    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(1 for _ in read_documents(list_inputs([src])[0], Fields(("text",), ("meta", "pile_set_name"))))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"read                    {mb / dt:7.1f} MB/s  {n / dt:9.0f} docs/s  ({dt:.2f} s, {cpu:.2f} CPU s)")

    stages = [
        ("build bytes, field", dict(tokenizer="bytes", category_field="meta.pile_set_name")),
        ("build bytes, content", dict(tokenizer="bytes")),
        ("build bytes, shuffled", dict(tokenizer="bytes", category_field="meta.pile_set_name", shuffle_seed=0)),
    ]
    if os.path.isfile(args.tokenizer):
        stages.append(("build neox, field", dict(tokenizer=args.tokenizer, category_field="meta.pile_set_name")))
    for name, kw in stages:
        prefix = os.path.join(args.dir, "out", "doc")
        t0, c0 = time.perf_counter(), time.process_time()
        m = build_corpus([src], prefix, CorpusConfig(seq_len=2049, **kw))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"{name:23s} {mb / dt:7.1f} MB/s  {m['n_documents'] / dt:9.0f} docs/s  {m['n_rows'] / dt:8.0f} rows/s  "
            f"({dt:.2f} s, {cpu:.2f} CPU s, {m['n_rows']} rows)"
        )
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Row categorization: throughput (rows/s) on real text with the real GPT-NeoX tokenizer, the projected time for a
Pythia-14m window, and the content classifier's precision and recall on the labelled set.

    python benchmarks/bench_categorize.py [--rows 1000] [--workers 1,2] [--tokenizer ../shared/data/gpt-neox-20b-tokenizer.json]
                                          [--dir /tmp/mda_bench_categorize] [--json benchmarks/results/categorize.json]

Throughput: the labelled set's documents (real files of this machine and its packages, plus the generated LaTeX,
blob and log documents) and the standard library's Python modules, in a seeded order, tokenized with GPT-NeoX-20B,
joined with EOD and cut into 2,049-token rows (Pythia's packing), written as a Megatron data set; then
``mda-fast categorize``'s own code (:func:`mda_fast.stages.categorize.run_categorize`, every row: decode, split at
EOD, classify) runs on it with each ``--workers`` count. The projection for a Pythia-14m window (1,024,000 rows):
sampled = the top and bottom 10% (102,400 rows each) and the default 7,300-row sample; full = every row.

Accuracy (``--accuracy-only`` skips the throughput): the held-out half of :mod:`mda_fast.data.labelled_set` (the
model of the classifier was trained on the other half, ``scripts/train_content_model.py``), pieces of 129 bytes
(3 per document) and of 2,049 GPT-NeoX tokens (2 per document) at seeded offsets, labelled by content (a piece in a
natural-language region of its file that reads as prose is prose: :func:`mda_fast.data.labelled_set.content_label`);
precision and recall per category of the classifier, and of its rules alone (version 1's decision list) for
comparison, and the same pieces labelled by their files' categories (``python_tests/test_classify_accuracy.py``
asserts the same numbers' floor).
"""

import argparse
import json
import os
import shutil
import sysconfig
import time
from collections import Counter

import numpy as np

from mda_fast.config import load_config
from mda_fast.data import load_tokenizer, write_megatron
from mda_fast.data.content import CATEGORIES, CLASSIFIER_VERSION, SETTINGS, classify_rules, classify_text
from mda_fast.data.labelled_set import labelled_documents, pieces, precision_recall, set_digest
from mda_fast.stages.categorize import run_categorize

WINDOW = 1_024_000
SAMPLED = 2 * 102_400 + 7_300


def _corpus(tok, n_rows: int, seq_len: int, seed: int = 0) -> np.ndarray:
    docs = [d.text for d in labelled_documents()]
    std = sysconfig.get_paths()["stdlib"]
    for dirpath, _, files in sorted(os.walk(std)):
        if "site-packages" in dirpath or "__pycache__" in dirpath:
            continue
        for f in sorted(files):
            if f.endswith(".py"):
                try:
                    docs.append(open(os.path.join(dirpath, f), encoding="utf-8").read())
                except (OSError, UnicodeDecodeError):
                    pass
    rng = np.random.default_rng(seed)
    need = n_rows * seq_len
    out, total = [], 0
    for i in rng.permutation(len(docs)):
        ids = tok.encode(docs[i], append_eod=True)
        out.append(ids)
        total += ids.size
        if total >= need:
            break
    stream = np.concatenate(out)
    if stream.size < need:
        raise SystemExit(f"only {stream.size} tokens of text found; lower --rows")
    return stream[:need].reshape(n_rows, seq_len).astype(np.uint16)


def _fake_scores(out: str, n: int, batch: int, start: int) -> None:
    d = os.path.join(out, "score")
    os.makedirs(d, exist_ok=True)
    gi = np.arange(start * batch, start * batch + n, dtype=np.int64)
    np.save(os.path.join(d, "global_index.npy"), gi)
    np.save(os.path.join(d, "scores.npy"), np.random.default_rng(0).standard_normal((n, 1)).astype(np.float32))
    json.dump({"target_names": ["bench"]}, open(os.path.join(d, "targets.json"), "w"))


def throughput(args) -> dict:
    tok = load_tokenizer(args.tokenizer)
    t0 = time.perf_counter()
    rows = _corpus(tok, args.rows, 2049)
    t_tok = time.perf_counter() - t0
    shutil.rmtree(args.dir, ignore_errors=True)
    prefix = os.path.join(args.dir, "data", "document")
    write_megatron(prefix, rows)
    batch = 8
    res = {"rows": args.rows, "seq_len": 2049, "tokenize_s": t_tok, "runs": []}
    for w in [int(x) for x in args.workers.split(",")]:
        out = os.path.join(args.dir, f"out{w}")
        _fake_scores(out, args.rows, batch, 0)
        cfg = load_config(
            None,
            [f'data.path="{prefix}"', f"data.batch_size={batch}", "data.seq_len=2049",
             f'data.tokenizer="{args.tokenizer}"', "window.start_step=0", f"window.end_step={args.rows // batch}",
             "categorize.sample_rows=0", f"categorize.workers={w}", "categorize.chunk=64"],
        )  # fmt: skip
        t0 = time.perf_counter()
        r = run_categorize(cfg, out, progress=False)
        wall = time.perf_counter() - t0
        rate = r["rows_per_s"]
        res["runs"].append({"workers": r["workers"], "rows_per_s": rate, "wall_s": wall,
                            "projected_sampled_h": SAMPLED / rate / 3600, "projected_full_h": WINDOW / rate / 3600})  # fmt: skip
        fr = np.load(os.path.join(out, "categories", "window.categories.npy"))
        res["token_share"] = {c: float(v) for c, v in zip(CATEGORIES, fr.mean(axis=0)) if v > 0}
    shutil.rmtree(args.dir, ignore_errors=True)
    return res


def accuracy(args) -> dict:
    docs = labelled_documents(split="heldout")
    train = labelled_documents(split="train")
    tok = load_tokenizer(args.tokenizer)
    out = {
        "classifier_version": CLASSIFIER_VERSION,
        "settings": SETTINGS,
        "documents": {c: sum(d.category == c for d in docs) for c in CATEGORIES},
        "training_documents": {c: sum(d.category == c for d in train) for c in CATEGORIES},
        "heldout_set_sha256": set_digest(docs),
        "training_set_sha256": set_digest(train),
        "heldout_documents": [{"category": d.category, "key": d.key, "sha256": d.sha256} for d in docs],
    }
    for name, kw in (("129 bytes", dict(n_bytes=129, per_doc=3)), ("2049 tokens", dict(tokenizer=tok, n_tokens=2049))):
        ps = pieces(docs, labels="content", **kw)
        files = [p[0] for p in pieces(docs, labels="file", **kw)]  # the same pieces, by their files' categories
        labels = [p[0] for p in ps]
        t0 = time.perf_counter()
        pred = [classify_text(p[1])[0] for p in ps]
        rate = len(ps) / (time.perf_counter() - t0)
        rules = [classify_rules(p[1])[0] for p in ps]
        out[name] = {"pieces_per_s": rate, "scores": precision_recall(labels, pred, CATEGORIES),
                     "rules_scores": precision_recall(labels, rules, CATEGORIES),
                     "accuracy": float(np.mean([a == b for a, b in zip(labels, pred)])),
                     "rules_accuracy": float(np.mean([a == b for a, b in zip(labels, rules)])),
                     # pieces in a natural-language region of their file that read as prose: labelled prose
                     "prose_by_content": {c: sum(1 for y, f in zip(labels, files) if f == c and y != c) for c in CATEGORIES},
                     "scores_by_file": precision_recall(files, pred, CATEGORIES),
                     "accuracy_by_file": float(np.mean([a == b for a, b in zip(files, pred)])),
                     "errors": [{"label": y, "file_category": f, "predicted": p, "rules": r, "source": q[2],
                                 "text": q[1][:300]}
                                for y, f, p, r, q in zip(labels, files, pred, rules, ps) if y != p]}  # fmt: skip
    out["unseen_config"] = unseen_config(tok)
    return out


#: config files outside the labelled set, never looked at while the rules were written: (name, glob)
UNSEEN_CONFIG = (
    ("systemd units", "/usr/lib/systemd/system/*.service"),
    ("ALSA configuration", "/usr/share/alsa/**/*.conf"),
    ("Google Cloud SDK YAML (where installed)", "/usr/lib/google-cloud-sdk/lib/**/*.yaml"),
)


def unseen_config(tok, limit: int = 60) -> dict:
    """Recall of ``config`` on config files outside the labelled set (:data:`UNSEEN_CONFIG`; ``limit`` files each,
    by the hash of their path), labelled by content like the held-out half."""
    import glob
    import hashlib

    from mda_fast.data.labelled_set import Document

    out = {}
    for name, pat in UNSEEN_CONFIG:
        paths = sorted(glob.glob(pat, recursive=True), key=lambda p: hashlib.sha256(p.encode()).hexdigest())
        docs = []
        for p in paths:
            try:
                with open(p, encoding="utf-8") as fh:
                    text = fh.read(1 << 18)
            except (OSError, UnicodeDecodeError):
                continue
            if len(text) >= 200 and not text.lstrip().startswith("<"):
                docs.append(Document("config", p, text, hashlib.sha256(text.encode()).hexdigest(), p))
            if len(docs) >= limit:
                break
        if not docs:
            continue
        out[name] = {"files": len(docs)}
        for size, kw in (
            ("129 bytes", dict(n_bytes=129, per_doc=3)),
            ("2049 tokens", dict(tokenizer=tok, n_tokens=2049)),
        ):
            ps = pieces(docs, labels="content", **kw)
            pred = [classify_text(q[1])[0] for q in ps]
            conf = [q[0] == "config" for q in ps]
            out[name][size] = {"n": sum(conf), "recall": float(np.mean([y == "config" for y, c in zip(pred, conf) if c])),
                               "predicted": dict(Counter(y for y, c in zip(pred, conf) if c).most_common())}  # fmt: skip
    return out


def _table(acc: dict) -> str:
    lines = [
        "| category | files (train / held out) | 129 B: n | P | R | rules P | rules R | 2,049 tok: n | P | R | rules P | rules R |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    f = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
    for c in CATEGORIES:
        cells = []
        for size in ("129 bytes", "2049 tokens"):
            a, r = acc[size]["scores"][c], acc[size]["rules_scores"][c]
            cells += [str(a["n"]), f(a["precision"]), f(a["recall"]), f(r["precision"]), f(r["recall"])]
        files = f"{acc['training_documents'][c]} / {acc['documents'][c]}"
        lines.append(f"| {c} | {files} | " + " | ".join(cells) + " |")
    lines.append("\nLabelled by file instead (every piece its file's category), cells below 0.9:")
    for size in ("129 bytes", "2049 tokens"):
        for c in CATEGORIES:
            a = acc[size]["scores_by_file"][c]
            for what in ("precision", "recall"):
                if a["n"] >= 20 and a[what] is not None and a[what] < 0.9:
                    lines.append(f"  {size} {c} {what} {a[what]:.2f} ({acc[size]['prose_by_content'][c]} of {a['n']} "
                                 "pieces prose by content)")  # fmt: skip
    for name, u in acc.get("unseen_config", {}).items():
        lines.append(f"\nconfig files outside the set, {name} ({u['files']} files): recall "
                     + ", ".join(f"{size} {u[size]['recall']:.2f} (n={u[size]['n']})" for size in ("129 bytes", "2049 tokens")))  # fmt: skip
    for size in ("129 bytes", "2049 tokens"):
        lines.append(f"\n{size}: accuracy {acc[size]['accuracy']:.3f} (rules alone {acc[size]['rules_accuracy']:.3f}; "
                     f"labelled by file {acc[size]['accuracy_by_file']:.3f}), {acc[size]['pieces_per_s']:.0f} pieces/s")  # fmt: skip
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--workers", default="1,2", help="comma-separated process counts")
    ap.add_argument(
        "--tokenizer", default=os.path.join(here, "..", "..", "shared", "data", "gpt-neox-20b-tokenizer.json")
    )
    ap.add_argument("--dir", default="/tmp/mda_bench_categorize")
    ap.add_argument("--json", default=os.path.join(here, "results", "categorize.json"))
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--accuracy-only", action="store_true", help="measure precision and recall only")
    args = ap.parse_args()
    res = {"cpu_count": os.cpu_count(), "throughput": {"runs": []} if args.accuracy_only else throughput(args)}
    for r in res["throughput"]["runs"]:
        print(f"{r['workers']} process(es): {r['rows_per_s']:.1f} rows/s; Pythia-14m window: sampled "
              f"{r['projected_sampled_h']:.2f} h, full {r['projected_full_h']:.2f} h")  # fmt: skip
    if not args.skip_accuracy:
        res["accuracy"] = accuracy(args)
        print(_table(res["accuracy"]))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(res, f, indent=1)
    print(f"-> {args.json}")


if __name__ == "__main__":
    main()

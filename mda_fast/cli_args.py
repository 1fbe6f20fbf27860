"""The ``mda-fast`` command line: each subcommand, what it needs, what it writes and its next step."""

from __future__ import annotations

import argparse

#: the first line of ``mda-fast --help``
DESCRIPTION = "mechanistic data attribution for GPT-NeoX / Pythia attention heads (see each subcommand's --help)."

STAGES = {
    "localize": (
        "score every head at every checkpoint; emergence steps and plot",
        "needs model.name (hub checkpoints) or model.run_dir; writes OUT/localize/; next: fit",
    ),
    "fit": (
        "fit EK-FAC factors for the target heads on the window",
        "needs data.path and the window-end checkpoint; writes OUT/factors/ and OUT/targets.json; next: score",
    ),
    "score": (
        "score every sequence of the window (resumable)",
        "needs OUT/factors/ from fit; writes OUT/score/; next: analyze",
    ),
    "categorize": (
        "content categories (LaTeX, XML, code by language, JSON, blobs, logs, tables, markdown, prose) for the "
        "top and bottom rows and a random sample of the window",
        "needs the finished OUT/score/ and data.tokenizer; writes OUT/categories/ (resumable); analyze runs it "
        "itself when data.path has no category sidecar; next: analyze",
    ),
    "analyze": (
        "influence statistics, category enrichment, overlaps, top samples",
        "needs the finished OUT/score/; writes OUT/analyze/; next: report",
    ),
    "report": (
        "self-contained HTML report",
        "needs OUT/analyze/ (and uses localize/intervene results); writes OUT/report.html",
    ),
    "intervene": (
        "deletion / augmentation retraining arms",
        "needs model.run_dir (a mda-fast training run) and the finished OUT/score/; writes "
        "OUT/interventions/ and the report",
    ),
    "train": (
        "train a model preset (train.family: gpt_neox, llama, olmo2, gpt2, ...) on a Megatron data set (Pythia "
        "recipe, checkpoints with optimizer state)",
        "needs data.path and train.preset; writes OUT/run/ (step<k>/ checkpoints, logs); next: localize with "
        "model.run_dir = OUT/run",
    ),
    "demo": (
        "everything on the embedded CPU demo (no data, no network)",
        "writes OUT/ with every stage's outputs, OUT/report.html and OUT/summary.json",
    ),
    "augment": (
        "mechanistic data augmentation: motifs of the top samples, synthetic data, the cross-scale study",
        "default config augment-demo (CPU, embedded, no data); writes OUT/augment.json and "
        "OUT/augment.html; rerun to continue",
    ),
    "study": (
        "the whole method on real text shipped with Python and the installed packages (config real-text)",
        "writes OUT/data/ (the corpus, its manifest with every file's hash), every stage's outputs, "
        "OUT/report.html and OUT/summary.json; rerun the same command to continue",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``mda-fast`` argument parser: one subcommand per stage, ``corpus`` and ``config``."""
    from .version import __version__

    ap = argparse.ArgumentParser(prog="mda-fast", description=DESCRIPTION)
    ap.add_argument("--version", action="version", version=f"mda-fast {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, (help_, detail) in STAGES.items():
        p = sub.add_parser(name, help=help_, description=f"{help_}. {detail}.")
        p.add_argument("--config", default=None, help="TOML/JSON config (path or packaged name)")
        p.add_argument("--out", required=True, help="output directory")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        if name == "augment":
            p.add_argument(
                "--quick", action="store_true", help="a tiny version of the study (tests; numbers mean nothing)"
            )
        if name == "score":
            _score_options(p)
        if name == "study":
            p.add_argument("--quick", action="store_true", help="a tiny corpus and short runs (under a minute)")
    _corpus_parser(sub)
    cp = sub.add_parser(
        "config",
        help="show the resolved config with each key's doc",
        description="Print the resolved config (defaults, file, --set) with each key's doc.",
    )
    cp.add_argument("action", choices=["show"])
    cp.add_argument("--config", default=None, help="TOML/JSON config (path or packaged name)")
    cp.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    return ap


def _score_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue an interrupted scoring run")
    many = p.add_mutually_exclusive_group()
    many.add_argument(
        "--devices",
        metavar="LIST",
        help="score on several devices at once, one torchrun rank each (started here by torch.distributed's "
        "launcher), then merge: cuda (every visible GPU), or a list such as cuda:0,cuda:1",
    )
    many.add_argument("--shard", metavar="I/K", help="score only shard I of K (counted from 0)")
    many.add_argument("--merge", metavar="K", type=int, help="merge K finished shards into score/")
    p.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        metavar="N",
        help="with --devices: restart the ranks up to N times after a failure (they resume)",
    )


def _corpus_parser(sub) -> None:
    kp = sub.add_parser(
        "corpus",
        help="a Megatron corpus + category sidecar + manifest from directories of files",
        description="Walk the directories, read the text files (binaries skipped and listed), label each with a "
        "category, tokenize, pack into rows and write PREFIX.bin/.idx, PREFIX.categories.npy/.json and "
        "PREFIX.manifest.json.",
    )
    kp.add_argument(
        "--from",
        dest="dirs",
        nargs="+",
        required=True,
        metavar="PATH",
        help="directories (or files) to read; or document files: JSON lines (.jsonl, .jsonl.gz, .jsonl.zst, "
        ".json.gz, ...), Parquet (.parquet), a datasets save_to_disk directory",
    )
    kp.add_argument("--out", required=True, metavar="PREFIX", help="output prefix, e.g. data/document")
    kp.add_argument(
        "--tokenizer",
        default="bytes",
        help="bytes, neox (GPT-NeoX-20B from the local HF cache) or a tokenizer.json path (default bytes)",
    )
    kp.add_argument("--seq-len", type=int, default=2049, help="tokens per row (default 2049, Pythia's)")
    kp.add_argument(
        "--packing",
        choices=("stream", "rows"),
        default="stream",
        help="stream: Pythia's (documents + EOD cut into rows); rows: every document starts a row",
    )
    kp.add_argument(
        "--map",
        default=None,
        metavar="FILE",
        help="JSON/TOML table of overrides: pattern (.ext or glob) = category (or skip)",
    )
    kp.add_argument(
        "--text-field", default="text", metavar="PATH", help="document inputs: the text's field (default text)"
    )
    kp.add_argument(
        "--category-field",
        default="",
        metavar="PATH",
        help="document inputs: the label's field, a dotted path (meta.pile_set_name, source)",
    )
    kp.add_argument(
        "--categories",
        choices=("auto", "field", "content", "field+content", "content+field"),
        default="auto",
        help="document inputs: label by the field, by content, or both (the first in the sidecar); "
        "auto: field with --category-field, else content",
    )
    kp.add_argument(
        "--shuffle-seed",
        type=int,
        default=-1,
        metavar="N",
        help="shuffle the documents with seed N (default: keep order)",
    )
    kp.add_argument(
        "--bad-records",
        choices=("error", "skip"),
        default="error",
        help="document inputs: a malformed record is an error (default) or skipped and counted in the manifest",
    )
    kp.add_argument("--include-hidden", action="store_true", help="also read names starting with '.'")
    kp.add_argument("--max-file-bytes", type=int, default=0, help="skip larger files (default 0: no limit)")
    kp.add_argument("--no-progress", action="store_true", help="no progress bar")

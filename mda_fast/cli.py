"""``mda-fast``: mechanistic data attribution for GPT-NeoX / Pythia attention heads (see each subcommand's --help).

Each subcommand reads one config (``--config``: a TOML/JSON path or a packaged name such as
``pythia-14m-induction``), applies ``--set section.key=value`` overrides, validates the whole config against the
data, the model and ``--out`` before any work, and writes into ``--out``. Any error is one line on stderr
(what was wrong, what was expected) and exit code 2; a failed command leaves no new partial output behind.
``MDA_FAST_DEBUG=1`` re-raises the error with its traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

from .dist import under_torchrun
from .errors import ConfigError, MdaFastError, OutputError

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
        "train a GPT-NeoX preset on a Megatron data set (Pythia recipe, checkpoints with optimizer state)",
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


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="mda-fast", description=__doc__.splitlines()[0])
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
            p.add_argument("--resume", action="store_true", help="continue an interrupted scoring run")
            many = p.add_mutually_exclusive_group()
            many.add_argument(
                "--devices",
                metavar="LIST",
                help="score on several devices at once, one torchrun rank each (started here by "
                "torch.distributed's launcher), then merge: cuda (every visible GPU), or a "
                "list such as cuda:0,cuda:1",
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
        if name == "study":
            p.add_argument("--quick", action="store_true", help="a tiny corpus and short runs (under a minute)")
    kp = sub.add_parser(
        "corpus",
        help="a Megatron corpus + category sidecar + manifest from directories of files",
        description="Walk the directories, read the text files (binaries skipped and listed), label "
        "each with a category, tokenize, pack into rows and write PREFIX.bin/.idx, "
        "PREFIX.categories.npy/.json and PREFIX.manifest.json.",
    )
    kp.add_argument(
        "--from", dest="dirs", nargs="+", required=True, metavar="DIR", help="directories (or files) to read"
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
    kp.add_argument("--include-hidden", action="store_true", help="also read names starting with '.'")
    kp.add_argument("--max-file-bytes", type=int, default=0, help="skip larger files (default 0: no limit)")
    kp.add_argument("--no-progress", action="store_true", help="no progress bar")
    cp = sub.add_parser(
        "config",
        help="show the resolved config with each key's doc",
        description="Print the resolved config (defaults, file, --set) with each key's doc.",
    )
    cp.add_argument("action", choices=["show"])
    cp.add_argument("--config", default=None, help="TOML/JSON config (path or packaged name)")
    cp.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    return ap


def _load(args, packaged_default: str | None = None):
    from .config import load_config, packaged_config, resolve_config_arg

    path = (
        resolve_config_arg(args.config)
        if args.config
        else (packaged_config(packaged_default) if packaged_default else None)
    )
    return load_config(path, args.set)


def _run(args, progress: bool):
    from .stages import analyze, checks, fit, intervene, localize, report, score, shards
    from .stages.inputs import load_targets
    from .stages.io import OutputLock, score_dir
    from .study.findings import findings, findings_text

    if args.cmd == "augment":
        from .stages.augment import run_augment

        return run_augment(args.out, args.set, config_path=args.config, quick=args.quick, progress=progress)
    if args.cmd == "demo":
        from .stages.demo import run_demo

        return run_demo(args.out, args.set, config_path=args.config, progress=progress)
    if args.cmd == "study":
        from .stages.study import run_study

        return run_study(args.out, args.set, config_path=args.config, progress=progress, quick=args.quick)
    if args.cmd == "corpus":
        from .stages.corpus import run_corpus

        return run_corpus(
            args.dirs,
            args.out,
            tokenizer=args.tokenizer,
            seq_len=args.seq_len,
            packing=args.packing,
            map_path=args.map,
            progress=progress,
            include_hidden=args.include_hidden,
            max_file_bytes=args.max_file_bytes,
        )
    cfg = _load(args)
    if under_torchrun():
        return _run_torchrun(args, cfg, progress)
    shard = None
    if args.cmd == "score":
        if args.merge is not None and args.merge < 1:
            raise ConfigError(f"--merge {args.merge}: expected the number of shards (>= 1)")
        shard = shards.parse_shard(args.shard) if args.shard else None
        devices = shards.parse_devices(args.devices) if args.devices else None
        k = shard[1] if shard else (len(devices) if devices else None)
        if k is not None:  # whole steps per shard: at most one shard per step
            score.shard_range(score.score_window(cfg, 1)[1], 1, (0, k))
    checks.validate(args.cmd, cfg, args.out)
    lock_dir = score_dir(args.out, shard) if shard is not None else args.out
    with OutputLock(args.out, lock_dir=lock_dir):
        if args.cmd == "train":
            from .stages.train import run_train

            run_train(cfg, args.out, progress)
        elif args.cmd == "localize":
            localize.run_localize(cfg, args.out, progress)
        elif args.cmd == "fit":
            fit.run_fit(cfg, args.out, progress)
        elif args.cmd == "score":
            _score(args, cfg, shard, devices, progress)
        elif args.cmd == "analyze":
            r = analyze.run_analyze(cfg, args.out, progress)
            targets, _ = load_targets(args.out)
            print("\n".join(findings_text(findings(r, targets))))
        elif args.cmd == "report":
            print(report.run_report(cfg, args.out))
        elif args.cmd == "intervene":
            intervene.run_intervene(cfg, args.out, progress=progress)
            print(report.run_report(cfg, args.out))


def _score(args, cfg, shard, devices, progress: bool) -> None:
    """``mda-fast score``: one process, a shard, a merge, or ranks on ``--devices``; Ctrl-C says how to resume."""
    from .stages import score, shards
    from .stages.io import score_dir

    try:
        if args.merge is not None:
            r = shards.merge(cfg, args.out, args.merge)
        elif devices:
            r = shards.launch(
                cfg, args.out, devices, resume=args.resume, progress=progress, max_restarts=args.max_restarts
            )
        else:
            r = score.run_score(cfg, args.out, resume=args.resume, progress=progress, shard=shard)
        if shard is None and not devices:  # a whole score/ (the ranks of --devices wrote theirs)
            _write_topk(cfg, args.out)
    except KeyboardInterrupt:
        flag = f" --shard {args.shard}" if shard else ""
        raise Interrupted(
            f"interrupted; the finished chunks in {score_dir(args.out, shard)} are kept: continue "
            f"with `mda-fast score{flag} --resume` and the same --config, --set and --out"
        ) from None
    rate = f" ({r['seq_per_s']:.1f} seq/s)" if r.get("seq_per_s") else ""
    print(f"scored {r['n_scored']} sequences -> {r['scores_path']}{rate}")


def _write_topk(cfg, out: str) -> None:
    from .stages.inputs import open_data
    from .stages.score import score_window
    from .stages.topk import shard_candidates, write_topk
    from .study.stats import top_count

    n = score_window(cfg, open_data(cfg).batch_size)[1]
    k = top_count(n, cfg.analyze.top_frac)
    write_topk(out, shard_candidates(out, None, k), k, cfg.analyze.top_frac, n)


def _run_torchrun(args, cfg, progress: bool):
    """This process is one rank of a torchrun job (``WORLD_SIZE`` > 1): ``fit``, ``score`` and ``intervene`` run
    on every rank (``stages.distributed``); the other commands run on rank 0 alone."""
    from .dist import LOG_ENV, Dist, rank_device, redirect_output
    from .stages.distributed import run_stage
    from .stages.inputs import device_of

    if args.cmd == "score" and (args.shard or args.merge is not None or args.devices):
        raise ConfigError(
            "--shard, --merge and --devices are for runs without torchrun; under torchrun every "
            "rank scores its own shard and rank 0 merges them"
        )
    if os.environ.get(LOG_ENV):  # started by `score --devices`: this rank's output goes to its log file
        redirect_output(os.environ[LOG_ENV].replace("{rank}", os.environ.get("RANK", "0")))
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    dev = rank_device(cfg.model.device, local)
    if dev != cfg.model.device:
        args.set = list(args.set) + [f'model.device="{dev}"']
        cfg = _load(args)
    if args.cmd not in ("fit", "score", "intervene"):
        if int(os.environ.get("RANK", "0") or 0) == 0:
            os.environ.pop("WORLD_SIZE")
            return _run(args, progress)
        return None
    dist = Dist.from_env(device_of(cfg))
    try:
        r = run_stage(args.cmd, cfg, args.out, dist, resume=getattr(args, "resume", False), progress=progress)
        if args.cmd == "score":
            print(
                f"scored {r['n_scored']} sequences on {dist.world} ranks -> {r['scores_path']} "
                f"({r['seq_per_s']:.1f} seq/s)"
                if dist.is_main
                else f"rank {dist.rank} of {dist.world}: scored {r['n_scored']} sequences -> {r['scores_path']}"
            )
        if dist.is_main and args.cmd == "intervene":
            from .stages import report

            print(report.run_report(cfg, args.out))
    finally:
        dist.close()
    return r


class Interrupted(Exception):
    """Ctrl-C: the message says how to resume."""


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    progress = not getattr(args, "no_progress", False)
    _log_to_stdout()
    if not progress:
        _quiet_transformers()
    try:
        if args.cmd == "config":
            from .config import describe

            print(describe(_load(args)))
            return 0
        _run(args, progress)
    except Interrupted as e:
        return _fail(args.cmd, str(e), 130, prefix="")
    except KeyboardInterrupt:
        return _fail(args.cmd, "interrupted; nothing of this command's unfinished output was kept", 130, prefix="")
    except (MdaFastError, ValueError, TypeError) as e:
        if os.environ.get("MDA_FAST_DEBUG"):
            raise
        return _fail(args.cmd, str(e), 2)
    except MemoryError:
        return _fail(args.cmd, "out of memory; lower the batch sizes (fit.batch_size, score.batch_size)", 2)
    except OSError as e:
        return _fail(args.cmd, _os_message(e), 2)
    return 0


def _fail(cmd: str, message: str, code: int, prefix: str = "error: ") -> int:
    """One line on stderr, ``mda-fast <cmd>: error: <message>``; returns the exit code."""
    print(f"mda-fast {cmd}: {prefix}{_one_line(message)}", file=sys.stderr)
    return code


def _os_message(e: OSError) -> str:
    if isinstance(e, OutputError):
        return str(e)
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}" + (" (the disk is full)" if e.errno == errno.ENOSPC else "")


def _one_line(e) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


class _StdoutHandler(logging.StreamHandler):
    """The package's INFO messages on the current ``sys.stdout`` (the CLI's output)."""

    def emit(self, record):
        self.stream = sys.stdout
        super().emit(record)


def _log_to_stdout() -> None:
    log = logging.getLogger("mda_fast")
    if not any(isinstance(h, _StdoutHandler) for h in log.handlers):
        h = _StdoutHandler(sys.stdout)
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False


def _quiet_transformers() -> None:
    """``--no-progress``: no progress bars from transformers' weight loading either."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


if __name__ == "__main__":
    sys.exit(main())

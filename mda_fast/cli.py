"""``mda-fast``: mechanistic data attribution for GPT-NeoX / Pythia attention heads (see each subcommand's --help).

Each subcommand reads one config (``--config``: a TOML/JSON path or a packaged name such as
``pythia-14m-induction``), applies ``--set section.key=value`` overrides, validates the whole config against the
data, the model and ``--out`` before any work, and writes into ``--out``. Any error is one line on stderr
(what was wrong, what was expected) and exit code 2; a failed command leaves no new partial output behind.
``MDA_FAST_DEBUG=1`` re-raises the error with its traceback instead.
"""

from __future__ import annotations

import errno
import logging
import os
import sys

from .cli_args import STAGES, build_parser  # noqa: F401 (STAGES re-exported)
from .dist import under_torchrun
from .errors import ConfigError, MdaFastError, OutputError


def _load(args, packaged_default: str | None = None):
    from .config import load_config, packaged_config, resolve_config_arg

    path = (
        resolve_config_arg(args.config)
        if args.config
        else (packaged_config(packaged_default) if packaged_default else None)
    )
    return load_config(path, args.set)


def _run(args, progress: bool):
    if args.cmd in ("augment", "demo", "study", "corpus"):
        return _run_whole(args, progress)
    from .io import OutputLock, score_dir
    from .stages import checks, score, shards

    cfg = _load(args)
    if under_torchrun():
        return _run_torchrun(args, cfg, progress)
    shard = devices = None
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
        if args.cmd == "score":
            _score(args, cfg, shard, devices, progress)
        else:
            _run_stage(args.cmd, cfg, args.out, progress)


def _run_whole(args, progress: bool):
    """The commands that run several stages into one ``--out`` (or build a corpus)."""
    if args.cmd == "augment":
        from .stages.augment import run_augment

        return run_augment(args.out, args.set, config_path=args.config, quick=args.quick, progress=progress)
    if args.cmd == "demo":
        from .stages.demo import run_demo

        return run_demo(args.out, args.set, config_path=args.config, progress=progress)
    if args.cmd == "study":
        from .stages.study import run_study

        return run_study(args.out, args.set, config_path=args.config, progress=progress, quick=args.quick)
    from .stages.corpus import run_corpus

    options = ("tokenizer", "seq_len", "packing", "include_hidden", "max_file_bytes", "text_field", "category_field",
               "categories", "shuffle_seed", "bad_records")  # fmt: skip
    return run_corpus(
        args.dirs, args.out, map_path=args.map, progress=progress, **{k: getattr(args, k) for k in options}
    )


def _run_stage(cmd: str, cfg, out: str, progress: bool) -> None:
    """One stage (not score) on a validated config, under the output lock."""
    from .stages import analyze, fit, intervene, localize, report
    from .stages.inputs import load_targets
    from .study.findings import findings, findings_text

    if cmd == "train":
        from .stages.train import run_train

        run_train(cfg, out, progress)
    elif cmd == "localize":
        localize.run_localize(cfg, out, progress)
    elif cmd == "fit":
        fit.run_fit(cfg, out, progress)
    elif cmd == "categorize":
        from .stages.categorize import run_categorize

        r = run_categorize(cfg, out, progress)
        rate = f" ({r['rows_per_s']:.0f} rows/s on {r['workers']} processes)" if r.get("rows_per_s") else ""
        print(f"categorized {r['n_rows']} rows -> {r['dir']}{rate}")
    elif cmd == "analyze":
        r = analyze.run_analyze(cfg, out, progress)
        targets, _ = load_targets(out)
        print("\n".join(findings_text(findings(r, targets))))
    elif cmd == "report":
        print(report.run_report(cfg, out))
    elif cmd == "intervene":
        intervene.run_intervene(cfg, out, progress=progress)
        print(report.run_report(cfg, out))


def _score(args, cfg, shard, devices, progress: bool) -> None:
    """``mda-fast score``: one process, a shard, a merge, or ranks on ``--devices``; Ctrl-C says how to resume."""
    from .io import score_dir
    from .stages import distributed, score, shards

    try:
        if args.merge is not None:
            r = shards.merge(cfg, args.out, args.merge)
        elif devices:
            r = distributed.launch(
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
    clean = False
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
        clean = True
    finally:
        dist.close(clean, destroy=not torchrun_worker())  # a worker leaves with os._exit (main)
    return r


class Interrupted(Exception):
    """Ctrl-C: the message says how to resume."""


def main(argv=None) -> int:
    code = _main(argv)
    if torchrun_worker():
        _leave(code)
    return code


def torchrun_worker() -> bool:
    """This process is a worker that torchrun's agent (or ``score --devices``) started, in a job of several."""
    return under_torchrun() and bool(os.environ.get("TORCHELASTIC_RUN_ID"))


def _leave(code: int) -> None:
    """End a torchrun worker once its output is flushed, without the interpreter's teardown: every file it
    wrote is closed by then, and that teardown of torch's distributed objects can abort a rank that has done
    all its work ("terminate called without an active exception"), which torchrun reports as a failed rank."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
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
    """The package's INFO messages on the current ``sys.stdout`` (the CLI's output), its warnings on ``sys.stderr``."""

    def emit(self, record):
        self.stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
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

"""``mda-fast``: localize | fit | score | analyze | report | intervene | demo.

Each subcommand reads one TOML config (``--config``; packaged configs by name, e.g. ``pythia-14m-induction``),
applies ``--set section.key=value`` overrides, validates everything before starting, and writes into ``--out``.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import pipeline as P
from . import shards
from .shards import ShardFailed
from .config import check_values, load_config, packaged_config


def _config(args):
    path = args.config
    if path and not os.path.exists(path) and not os.sep in path:
        path = packaged_config(path)
    return load_config(path, args.set)


def _validate(cmd: str, cfg, out: str) -> None:
    """Fail fast on bad configs: missing files, a window beyond the data, heads out of range."""
    check_values(cfg)
    if cmd in ("fit", "score", "analyze", "intervene"):
        P.open_data(cfg)
    if cmd in ("localize", "fit", "score", "intervene"):
        name, _ = P.checkpoint_ref(cfg)
        if cfg["model"]["run_dir"] and not os.path.isdir(cfg["model"]["run_dir"]):
            raise ValueError(f"model.run_dir {cfg['model']['run_dir']!r} does not exist")
    if cmd in ("fit", "score") and cfg["targets"]["heads"] != "auto":
        from transformers import AutoConfig

        name, rev = P.checkpoint_ref(cfg)
        mc = AutoConfig.from_pretrained(name, revision=rev) if rev else AutoConfig.from_pretrained(name)
        for L, h in cfg["targets"]["heads"]:
            if not (0 <= L < mc.num_hidden_layers and 0 <= h < mc.num_attention_heads):
                raise ValueError(f"targets.heads: head [{L}, {h}] is out of range for a model with "
                                 f"{mc.num_hidden_layers} layers and {mc.num_attention_heads} heads")
    for p in cfg["targets"]["probes"]:
        from .probes import get_probe
        get_probe(p)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="mda-fast", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, help_ in [("localize", "score every head at every checkpoint; emergence steps and plot"),
                        ("fit", "fit EK-FAC factors for the target heads on the window"),
                        ("score", "score every sequence of the window (resumable)"),
                        ("analyze", "influence statistics, category enrichment, overlaps, top samples"),
                        ("report", "self-contained HTML report"),
                        ("intervene", "deletion / augmentation retraining arms"),
                        ("demo", "everything on the embedded CPU demo (no data, no network)")]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", default=None, help="TOML config (path or packaged name)")
        p.add_argument("--out", required=True, help="output directory")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
        p.add_argument("--no-progress", action="store_true")
        if name == "score":
            p.add_argument("--resume", action="store_true", help="continue an interrupted scoring run")
            many = p.add_mutually_exclusive_group()
            many.add_argument("--devices", metavar="LIST",
                              help="score on several devices at once, one shard process each, then merge: "
                                   "cuda (every visible GPU), or a list such as cuda:0,cuda:1")
            many.add_argument("--shard", metavar="I/K", help="score only shard I of K (counted from 0)")
            many.add_argument("--merge", metavar="K", type=int, help="merge K finished shards into score/")
    args = ap.parse_args(argv)
    progress = not args.no_progress
    try:
        if args.cmd == "demo":
            from .demo import run_demo
            run_demo(args.out, args.set, config_path=args.config, progress=progress)
            return 0
        cfg = _config(args)
        _validate(args.cmd, cfg, args.out)
        os.makedirs(args.out, exist_ok=True)
        if args.cmd == "localize":
            P.run_localize(cfg, args.out, progress)
        elif args.cmd == "fit":
            P.run_fit(cfg, args.out, progress)
        elif args.cmd == "score":
            if args.merge is not None:
                if args.merge < 1:
                    raise ValueError(f"--merge {args.merge}: expected the number of shards (>= 1)")
                r = shards.merge(cfg, args.out, args.merge)
            elif args.devices:
                r = shards.launch(cfg, args.out, shards.parse_devices(args.devices), resume=args.resume,
                                  progress=progress)
            else:
                shard = shards.parse_shard(args.shard) if args.shard else None
                r = P.run_score(cfg, args.out, resume=args.resume, progress=progress, shard=shard)
            print(f"scored {r['n_scored']} sequences -> {r['scores_path']}")
        elif args.cmd == "analyze":
            r = P.run_analyze(cfg, args.out, progress)
            print("\n".join(P.findings_text(P.findings(r, P._read_json(os.path.join(args.out, "targets.json"))))))
        elif args.cmd == "report":
            print(P.run_report(cfg, args.out))
        elif args.cmd == "intervene":
            P.run_intervene(cfg, args.out, progress=progress)
            print(P.run_report(cfg, args.out))
    except (ValueError, ShardFailed) as e:
        print(f"mda-fast {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

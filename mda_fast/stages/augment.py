"""``mda-fast augment``: the cross-scale mechanistic-data-augmentation study (``mda_fast.augment.study``).

Validates the whole config first (every key, then the augment section against the presets and the corpus), locks
``--out`` (``OutputLock``), runs the study (resumable: rerun the same command to continue) and writes
``OUT/augment.json`` and ``OUT/augment.html`` atomically. ``--quick`` shrinks everything (two tiny sizes, short
rows, a few dozen steps, two seeds) to exercise the whole path in well under a minute: its numbers mean nothing.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..config import Config, load_config, packaged_config, resolve_config_arg
from ..errors import ConfigError
from ..io import OutputLock, write_json
from .checks import check_family
from .runs import refuse_other_config

logger = logging.getLogger(__name__)

#: the --quick overrides (applied after the config file and before --set)
QUICK = [
    "augment.sizes=['tiny-1l', 'tiny-2l']",
    "augment.seeds=[0, 1]",
    "augment.window_steps=10",
    "augment.train_after=10",
    "augment.eval_every=10",
    "augment.n_heldout=16",
    "augment.n_motifs=2",
    "augment.top_frac=0.1",
    "augment.budget_frac=0.1",
    "augment.copy_span_min=4",
    "augment.copy_span_max=12",
    "corpus.seq_len=33",
    "data.seq_len=33",
    "data.batch_size=8",
    "train.total_steps=40",
    "corpus.heldout_sequences=256",
    "localize.seq_len=8",
    "localize.n=8",
    "localize.threshold=0.3",
    "targets.probe_L=8",
    "targets.probe_n=8",
    "fit.n_sequences=64",
    "fit.batch_size=32",
    "score.batch_size=32",
    "score.chunk=1024",
]

STATE = "augment.state.json"


def _check_sizes(cfg: Config) -> bool:
    """``augment.sizes``: distinct presets, or distinct hub names ``owner/name`` (not both); whether hub names."""
    from ..augment.pretrained import is_hub_size
    from ..train import get_preset

    a = cfg.augment
    if not a.sizes:
        raise ConfigError("augment.sizes: expected at least one model preset or hub name")
    hub = [p for p in a.sizes if is_hub_size(p)]
    if hub and len(hub) < len(a.sizes):
        raise ConfigError(
            f"augment.sizes {a.sizes}: expected presets only or hub names only (the presets train on the byte-level "
            f"synthetic corpus, hub models on data.path in their own tokenizer), got both"
        )
    for p in hub:
        if p.count("/") != 1 or not all(p.split("/")):
            try:
                get_preset(p)
            except (KeyError, ValueError) as e:
                raise ConfigError(f"augment.sizes: {e}, or a Hugging Face hub name owner/name") from None
    if len(set(a.sizes)) != len(a.sizes):
        raise ConfigError(f"augment.sizes {a.sizes}: expected distinct presets")
    return bool(hub)


def _check_hub(cfg: Config) -> None:
    """The settings hub sizes need: ``data.path``, a byte-free generator, a schedule covering the study."""
    from ..augment.arms import copy_range

    a = cfg.augment
    if not cfg.data.path:
        raise ConfigError(
            f"data.path is empty: hub sizes {a.sizes} train on a real dataset; name its Megatron prefix (the Pile's "
            f"document, as Pythia)"
        )
    low, high = copy_range(cfg)
    if not 0 <= low < high <= 50304:
        raise ConfigError(
            f"augment.copy_low/copy_high = {low}/{high}: expected 0 <= copy_low < copy_high <= the vocabulary "
            f"(GPT-NeoX: 50304; its real ids 4..50277)"
        )
    if a.llm_url and cfg.data.tokenizer != "bytes":
        raise ConfigError(
            f"augment.llm_url: the LLM-written generators write byte-level rows; unsupported with data.tokenizer "
            f"{cfg.data.tokenizer!r} (leave it empty for the built-in generators)"
        )
    if a.schedule_steps < cfg.train.total_steps:
        raise ConfigError(
            f"augment.schedule_steps = {a.schedule_steps} must be at least train.total_steps = "
            f"{cfg.train.total_steps} (the arms train within the LR schedule)"
        )


def _check_real_text(cfg: Config) -> None:
    """``augment.corpus = "real-text"``: known ``study.sources`` with positive caps, byte-level presets."""
    from ..data.sources import SOURCES
    from ..train import get_preset

    src = cfg.study.sources
    unknown = [n for n in src if n not in SOURCES]
    if not src or unknown:
        raise ConfigError(
            f"study.sources {dict(src)}: augment.corpus = 'real-text' needs name = max_bytes entries from "
            f"{sorted(SOURCES)}" + (f"; unknown: {unknown}" if unknown else "")
        )
    if any(v < 1 for v in src.values()):
        raise ConfigError(f"study.sources: every cap must be >= 1 byte, got {dict(src)}")
    small = [p for p in cfg.augment.sizes if get_preset(p).vocab_size < 260]
    if small:
        raise ConfigError(f"augment.sizes {small}: the real-text corpus is byte-level; expected tiny-* presets")
    if cfg.corpus.heldout_sequences < cfg.augment.n_heldout:
        raise ConfigError(
            f"corpus.heldout_sequences = {cfg.corpus.heldout_sequences} is below augment.n_heldout = "
            f"{cfg.augment.n_heldout} (the ICL and held-out-loss rows)"
        )


def check_augment(cfg: Config) -> None:
    """The augment section against itself, the presets and the corpus (one ConfigError naming the key); no data
    is read (``check_augment_data`` checks a hub study's data and checkpoints). ``train.family`` must have an
    adapter (the study localizes, fits and scores its sizes)."""
    from ..augment.study import STUDY_ARMS

    check_family(cfg)

    a = cfg.augment
    hub = _check_sizes(cfg)
    bad = [x for x in a.arms if x not in STUDY_ARMS]
    if bad or "none" not in a.arms or len(set(a.arms)) != len(a.arms):
        raise ConfigError(f"augment.arms {a.arms}: expected distinct arms including 'none' from {list(STUDY_ARMS)}")
    if not a.seeds or len(set(a.seeds)) != len(a.seeds):
        raise ConfigError(f"augment.seeds {a.seeds}: expected at least one distinct seed")
    if a.window_steps % a.eval_every:
        raise ConfigError(
            f"augment.window_steps = {a.window_steps} must be a multiple of augment.eval_every = "
            f"{a.eval_every} (the window starts at a checkpoint)"
        )
    if a.base_eval_every and a.base_eval_every % a.eval_every:
        raise ConfigError(
            f"augment.base_eval_every = {a.base_eval_every} must be a multiple of augment.eval_every = "
            f"{a.eval_every} (the window end is a base-run evaluation the arms evaluate too)"
        )
    if a.copy_span_min > a.copy_span_max:
        raise ConfigError(f"augment.copy_span_min = {a.copy_span_min} exceeds copy_span_max = {a.copy_span_max}")
    seq_key, seq_len = ("data.seq_len", cfg.data.seq_len) if hub else ("corpus.seq_len", cfg.corpus.seq_len)
    if 2 * a.copy_span_max + 1 > seq_len:
        raise ConfigError(
            f"augment.copy_span_max = {a.copy_span_max}: S || S does not fit rows of {seq_key} = {seq_len}"
        )
    if a.window_steps + a.train_after >= cfg.train.total_steps:
        raise ConfigError(
            f"augment.window_steps + train_after = {a.window_steps + a.train_after} must be below "
            f"train.total_steps = {cfg.train.total_steps}"
        )
    if hub and a.corpus == "real-text":
        raise ConfigError(
            f"augment.corpus = 'real-text' with hub sizes {a.sizes}: the real-text corpus is byte-level; "
            f"expected presets (tiny-*) or augment.corpus = 'synthetic' with data.path"
        )
    if a.corpus == "real-text":
        _check_real_text(cfg)
    if hub:
        _check_hub(cfg)
    elif cfg.data.seq_len != cfg.corpus.seq_len:
        raise ConfigError(f"data.seq_len = {cfg.data.seq_len} differs from corpus.seq_len = {cfg.corpus.seq_len}")
    if a.llm_url and not a.llm_url.startswith(("http://", "https://")):
        raise ConfigError(f"augment.llm_url = {a.llm_url!r}: expected http(s)://host[:port]/v1")
    for key, L in (("localize.seq_len", cfg.localize.seq_len), ("targets.probe_L", cfg.targets.probe_L)):
        if 2 * L > 2048:
            raise ConfigError(f"{key} = {L}: rows of 2L tokens exceed the tiny presets' context of 2048")


def check_augment_data(cfg: Config) -> None:
    """A hub study's inputs: ``data.path`` readable and holding ``train.total_steps`` steps and the held-out rows
    after them, every revision of every size in the local HF cache, of a known shape and vocabulary (one line)."""
    from ..augment.arms import copy_range
    from ..augment.pretrained import is_hub_size, revision_steps, size_checkpoint
    from ..core.model import read_model_config
    from ..train import preset_for_shape
    from .inputs import open_data

    a = cfg.augment
    if not any(is_hub_size(p) for p in a.sizes):
        return  # the synthetic corpus is generated by the study
    data = open_data(cfg, check_window=False)
    if data.n_rows < cfg.train.total_steps * data.batch_size + a.n_heldout:
        raise ConfigError(
            f"train.total_steps = {cfg.train.total_steps}: data.path {cfg.data.path!r} holds {data.n_steps} steps of "
            f"{data.batch_size} rows; expected train.total_steps steps and augment.n_heldout = {a.n_heldout} rows after"
        )
    high = copy_range(cfg)[1]
    for p in a.sizes:
        for k in revision_steps(cfg):
            s = read_model_config(size_checkpoint(cfg, p, k))
            try:
                preset_for_shape(s.n_layers, s.d_model, s.n_heads, s.vocab_size)
            except ValueError as e:
                raise ConfigError(f"augment.sizes {p!r}: {e}") from None
            if high > s.vocab_size:
                raise ConfigError(f"augment.copy_high = {high} exceeds {p}'s vocabulary of {s.vocab_size} ids")


def load_augment_config(config_path: str | None, overrides: list | None, quick: bool) -> Config:
    path = resolve_config_arg(config_path) if config_path else packaged_config("augment-demo")
    cfg = load_config(path, (QUICK if quick else []) + list(overrides or []))
    check_augment(cfg)
    check_augment_data(cfg)
    return cfg


def run_augment(
    out: str, overrides: list | None = None, config_path: str | None = None, quick: bool = False, progress: bool = True
) -> dict:
    """The study into ``out``; a rerun with the same config continues it, another config is refused."""
    from ..augment.pretrained import is_hub_size
    from ..augment.report import write_augment_report
    from ..augment.study import run_study
    from ..data import PythiaBatches

    cfg = load_augment_config(config_path, overrides, quick)
    state = os.path.join(out, STATE)
    refuse_other_config(out, STATE, cfg, "an augment study")
    with OutputLock(out):
        if not os.path.exists(state):
            write_json(state, {"config": cfg.to_dict()})
        res = run_study(cfg, out, progress)
        data = PythiaBatches(cfg.data.path, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len)
        ids = sorted({ex["id"] for m in res["motifs"].values() for mo in m["motifs"] for ex in mo["examples"]})
        # the report highlights example rows as bytes: none for a real tokenizer (the rows' ids are in augment.json)
        ids = [] if cfg.data.tokenizer != "bytes" and any(is_hub_size(p) for p in cfg.augment.sizes) else ids
        texts = dict(zip(ids, np.asarray(data.rows(np.asarray(ids, np.int64))).astype(np.int64))) if ids else {}
        res["report"] = os.path.abspath(write_augment_report(res, os.path.join(out, "augment.html"), texts))
        logger.info("\n".join(["", *res["findings"], f"report: {res['report']}", f"elapsed {res['elapsed_s']} s"]))
        return res

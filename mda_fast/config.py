"""TOML (or JSON) run configs: defaults, command-line overrides (``--set section.key=value``) and validation.

Every key is known in advance: an unknown section or key is an error before any work starts.
"""
from __future__ import annotations

import copy
import json
import os
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

DEFAULTS: dict = {
    "model": {
        "name": "",            # HF hub name or local HF directory (e.g. "EleutherAI/pythia-14m")
        "revision": "",        # checkpoint to score at; "" = f"step{window.end_step}"
        "run_dir": "",         # alternatively a mda-fast training run holding step{k}/ checkpoints
        "dtype": "float32",
        "device": "auto",
        "attn_implementation": "sdpa",
    },
    "data": {
        "path": "",            # Megatron prefix (document / document-00000-of-00020.bin ...) or .npy rows
        "batch_size": 1024,
        "seq_len": 2049,
        "tokenizer": "EleutherAI/gpt-neox-20b",  # hub name, tokenizer.json path, or "bytes"
    },
    "window": {"start_step": 1000, "end_step": 2000},   # end exclusive
    "localize": {
        "revisions": [],       # HF revisions to track; [] = a Pythia-like default list up to the window end
        "steps": [],           # for run_dir: checkpoint steps; [] = every saved step{k}
        "seq_len": 32, "n": 64, "seed": 0, "batch_size": 32,
        "threshold": 0.3, "metric": "prefix_matching", "low": 4, "high": 0,
    },
    "targets": {
        "heads": "auto",       # "auto" or [[layer, head], ...]
        "n_induction": 1,      # auto: top prefix-matching heads at the window-end checkpoint
        "n_control": 1,        # auto: top previous-token heads that are not induction heads (for overlap)
        "mode": "qkvo", "bias": False,
        "probes": ["induction"],
        "probe_L": 32, "probe_n": 200, "probe_seed": 0, "probe_low": 4, "probe_high": 0,
    },
    "fit": {"n_sequences": 4096, "batch_size": 8, "fisher": "true", "method": "ekfac", "damping": 0.1, "seed": 0},
    "score": {"batch_size": 8, "chunk": 1024, "backend": "", "limit_steps": 0,
              "tf32": True},       # float32 models on a GPU: TF32 matmuls for the scoring passes (no effect on CPU)
    "analyze": {"top_frac": 0.1, "table_k": 50, "snippet_tokens": 96},
    "report": {"title": "Mechanistic data attribution"},
    # demo-only sections
    "corpus": {"n_sequences": 0, "seq_len": 129, "seed": 0, "mix": {}, "heldout_sequences": 512, "packing": "rows"},
    # total_steps: the most steps trained (the corpus holds this many batches); with after_emergence >= 0, training
    # stops that many steps after the first checkpoint where some head's prefix-matching reaches localize.threshold
    "train": {"preset": "tiny-2l", "total_steps": 2000, "schedule_steps": 10000, "lr": 3e-3,
              "checkpoint_every": 100, "seed": 0, "window_steps": 400, "after_emergence": 300},
    "intervene": {"enabled": True, "arms": ["baseline", "delete-top", "delete-random", "augment-top", "augment-random"],
                  "seeds": [0], "top_frac": 0.1, "train_after": 300, "eval_every": 50},
}


def load_config(path: str | None = None, overrides: list[str] | None = None, base: dict | None = None) -> dict:
    """Defaults ← ``base`` ← TOML file ← ``overrides``; raises ValueError on unknown keys or wrong types."""
    cfg = copy.deepcopy(DEFAULTS)
    if base:
        _merge(cfg, base, "")
    if path:
        if not os.path.exists(path):
            raise ValueError(f"config file not found: {path}")
        with open(path, "rb") as fh:
            try:
                loaded = json.load(fh) if path.endswith(".json") else tomllib.load(fh)
            except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}: invalid {'JSON' if path.endswith('.json') else 'TOML'}: {e}") from None
        _merge(cfg, loaded, "")
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r}: expected section.key=value (TOML value, e.g. window.start_step=5)")
        key, value = item.split("=", 1)
        section, name = key.strip().split(".", 1)
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value  # bare string
        _merge(cfg, {section: {name: parsed}}, "")
    return cfg


def _merge(dst: dict, src: dict, where: str) -> None:
    for k, v in src.items():
        path = f"{where}{k}"
        if k not in dst:
            raise ValueError(f"unknown config key {path!r}; known keys here: {sorted(dst)}")
        if isinstance(dst[k], dict) and k != "mix":
            if not isinstance(v, dict):
                raise ValueError(f"config {path!r} must be a table (section), got {v!r}")
            _merge(dst[k], v, path + ".")
            continue
        want = type(dst[k])
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
        if path == "targets.heads":
            ok = v == "auto" or (isinstance(v, list) and all(isinstance(h, list) and len(h) == 2 for h in v))
        if not ok:
            raise ValueError(f"config {path!r} must be {want.__name__}" +
                             (" ('auto' or [[layer, head], ...])" if path == "targets.heads" else "") + f", got {v!r}")
        dst[k] = v


def packaged_config(name: str) -> str:
    path = os.path.join(CONFIG_DIR, name if name.endswith(".toml") else name + ".toml")
    if not os.path.exists(path):
        raise ValueError(f"no packaged config {name!r}; available: {sorted(os.listdir(CONFIG_DIR))}")
    return path


def check_values(cfg: dict) -> None:
    """Value checks that need no data or model (run before any work): intervention arms, corpus packing."""
    from .interventions import ARMS

    arms = cfg["intervene"]["arms"]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or "baseline" not in arms or len(set(arms)) != len(arms):
        raise ValueError(f"intervene.arms {arms!r}: expected distinct arms including 'baseline' from {list(ARMS)}")
    if cfg["corpus"]["packing"] not in ("rows", "stream"):
        raise ValueError(f"corpus.packing {cfg['corpus']['packing']!r}: expected 'rows' or 'stream'")

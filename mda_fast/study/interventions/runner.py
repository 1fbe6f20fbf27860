"""Running the intervention arms: ``InterventionConfig`` (one experiment's settings), ``run_interventions``
(train every arm and seed, write ``interventions.json``) and ``load_interventions``.

Definitions: the docstring of :mod:`mda_fast.study.interventions`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...config import ARMS, DEFAULT_ARMS
from ...data.categories import load_category_sidecar
from ...outputs import atomic_file
from ...train import TrainConfig, branch_from_checkpoint, branch_from_pretrained, get_preset, read_jsonl
from ...train.trainer import STATE_FILE
from ..stats import top_count
from .evaluation import add_seed_figures, heldout_tokens, icl_positions, make_eval_fn
from .selection import ArmPlan, plan_arms
from .summary import summarize

__all__ = [
    "ARMS",
    "DEFAULT_ARMS",
    "RESULT_FILE",
    "OUTPUT_FILE",
    "InterventionConfig",
    "run_interventions",
    "load_interventions",
]

RESULT_FILE = "result.json"
OUTPUT_FILE = "interventions.json"


@dataclass
class InterventionConfig:
    """Settings of one intervention experiment (see the module docstring for every definition).

    ``data``: a ``PythiaBatches`` or a path (then ``batch_size`` and ``seq_len`` are required). ``heads``:
    target heads ``[(layer, head), ...]``. ``end_step`` is exclusive. ``device=None`` keeps the checkpoint's.
    """

    run_dir: str
    data: Any
    start_step: int
    end_step: int
    train_until: int
    heads: Sequence[Tuple[int, int]]
    out_dir: str
    batch_size: Optional[int] = None
    seq_len: Optional[int] = None
    eval_every: int = 50
    top_frac: float = 0.10
    arms: Sequence[str] = DEFAULT_ARMS
    seeds: Sequence[int] = (0,)
    score_column: Optional[int] = None
    augment_steps: Optional[Sequence[int]] = None
    augment_copies: int = 1
    insert_mode: str = "append"
    threshold: float = 0.3
    localize_seq_len: int = 32
    localize_n: int = 64
    localize_seed: int = 0
    probe_L: int = 32
    probe_n: int = 200
    probe_seed: int = 0
    low: int = 4
    high: Optional[int] = None
    icl_tokens: Optional[Tuple[int, int]] = None
    icl_band: Optional[int] = None
    heldout_rows: Optional[Sequence[int]] = None
    n_heldout: int = 256
    eval_batch_size: int = 64
    device: Optional[str] = None
    keep_checkpoints: bool = False
    categories: Any = None
    checkpoint_dir: Optional[str] = None
    pretrained: Optional[Dict[str, Any]] = None
    _batches: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        self._batches = self._open_data()
        b = self._batches
        self.batch_size, self.seq_len = int(b.batch_size), int(b.seq_len)
        self._check_numbers()
        self._check_arms()
        self.heads = [tuple(int(x) for x in h) for h in self.heads]
        if not self.heads or any(len(h) != 2 for h in self.heads):
            raise ValueError(f"heads: expected a non-empty list of (layer, head), got {self.heads}")
        if self.heldout_rows is not None:
            self.heldout_rows = [int(i) for i in self.heldout_rows]
        self._check_icl()

    def _open_data(self):
        from ...data import PythiaBatches

        if isinstance(self.data, (str, os.PathLike)):
            if self.batch_size is None or self.seq_len is None:
                raise ValueError("data: a path needs batch_size= and seq_len=")
            return PythiaBatches(os.fspath(self.data), batch_size=self.batch_size, seq_len=self.seq_len)
        for attr in ("step", "rows", "batch_size", "seq_len", "n_steps", "n_rows"):
            if not hasattr(self.data, attr):
                raise TypeError(f"data: expected a PythiaBatches or a path, got {type(self.data).__name__}")
        for name in ("batch_size", "seq_len"):
            v = getattr(self, name)
            if v is not None and v != getattr(self.data, name):
                raise ValueError(f"{name}={v} differs from the data's {name}={getattr(self.data, name)}")
        return self.data

    def _check_numbers(self) -> None:
        for name in (
            "start_step",
            "end_step",
            "train_until",
            "eval_every",
            "augment_copies",
            "n_heldout",
            "eval_batch_size",
            "localize_seq_len",
            "localize_n",
            "probe_L",
            "probe_n",
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TypeError(f"{name}: expected an int, got {v!r}")
        if not 0 <= self.start_step < self.end_step <= self.train_until:
            raise ValueError(
                f"window: expected 0 <= start_step < end_step <= train_until, got start_step="
                f"{self.start_step}, end_step={self.end_step}, train_until={self.train_until}"
            )
        if self.train_until > self._batches.n_steps:
            raise ValueError(f"train_until={self.train_until}: the data has only {self._batches.n_steps} steps")
        for name in ("eval_every", "augment_copies", "n_heldout", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not (isinstance(self.top_frac, (float, int)) and 0 < self.top_frac < 1):
            raise ValueError(f"top_frac: expected a fraction in (0, 1), got {self.top_frac!r}")

    def _check_arms(self) -> None:
        self.arms = tuple(self.arms)
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"arms: unknown arm(s) {unknown}; expected a subset of {list(ARMS)}")
        if len(set(self.arms)) != len(self.arms) or "baseline" not in self.arms:
            raise ValueError(f"arms: expected distinct arms including 'baseline', got {list(self.arms)}")
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: expected at least one distinct seed, got {list(self.seeds)}")
        if self.insert_mode not in ("append", "replace"):
            raise ValueError(f"insert_mode: expected 'append' or 'replace', got {self.insert_mode!r}")
        if self.augment_steps is not None:
            steps = [int(s) for s in self.augment_steps]
            bad = [s for s in steps if not self.start_step <= s < self.train_until]
            if not steps or bad:
                raise ValueError(
                    f"augment_steps: expected a non-empty list of steps in [start_step, train_until) = "
                    f"[{self.start_step}, {self.train_until}), got {bad or steps}"
                )
            self.augment_steps = tuple(steps)

    def _check_icl(self) -> None:
        T = self.seq_len - 1
        early, late = self.icl_tokens if self.icl_tokens is not None else icl_positions(T)
        band = self.icl_band if self.icl_band is not None else T // 64
        if not (1 <= early - band and early < late and late + band <= T and band >= 0):
            raise ValueError(
                f"icl_tokens=({early}, {late}) with band {band}: expected 1 <= early-band, early < late, "
                f"late+band <= T={T}"
            )
        self.icl_tokens, self.icl_band = (int(early), int(late)), int(band)

    @property
    def batches(self):
        return self._batches

    @property
    def window_size(self) -> int:
        return (self.end_step - self.start_step) * self.batch_size

    @property
    def k(self) -> int:
        return top_count(self.window_size, self.top_frac)

    def resolved_augment_steps(self) -> Tuple[int, ...]:
        if self.augment_steps is not None:
            return tuple(self.augment_steps)
        half = -(-(self.end_step - self.start_step) // 2)
        return tuple(range(self.start_step, self.start_step + half))

    def eval_steps(self) -> List[int]:
        s = set(range(self.start_step, self.train_until + 1, self.eval_every))
        s.update((self.end_step, self.train_until))
        return sorted(s)

    def checkpoint(self) -> str:
        """The window-start checkpoint: ``checkpoint_dir``, else ``run_dir/step{start_step}``."""
        return self.checkpoint_dir or os.path.join(self.run_dir, f"step{self.start_step}")

    def dominant_categories(self) -> Tuple[np.ndarray, List[str]]:
        """(dominant category index of every data row, category names), from ``categories`` or the data's
        category sidecar (:mod:`mda_fast.data.categories`); needed by the matched arms. ``categories`` is
        ``(fractions [n_rows, n_categories], names)`` or the fractions alone (names then from the sidecar, or
        ``category0``, ``category1``, ...)."""
        path = getattr(self._batches, "path", "")
        side = load_category_sidecar(path) if path and not isinstance(self.categories, tuple) else None
        if self.categories is not None:
            fr, names = _given_categories(self.categories, side)
        elif side is None:
            raise ValueError(
                "matched arms need per-row categories: the data has no <prefix>.categories.npy "
                "sidecar; pass categories= (fractions [n_rows, n_categories])"
            )
        else:
            fr, names = side
        if fr.ndim != 2 or fr.shape[0] < self.end_step * self.batch_size:
            raise ValueError(
                f"categories: expected [n_rows >= {self.end_step * self.batch_size}, n_categories], "
                f"got shape {fr.shape}"
            )
        return np.argmax(fr, axis=1), names

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init and f.name != "categories"}
        d["data"] = str(getattr(self._batches, "path", self.data if isinstance(self.data, str) else ""))
        d["heads"] = [list(h) for h in self.heads]
        for key in ("arms", "seeds", "augment_steps", "icl_tokens"):
            d[key] = None if d[key] is None else list(d[key])
        d["augment_steps_resolved"] = list(self.resolved_augment_steps())
        d["eval_steps"] = self.eval_steps()
        return d


def _given_categories(categories: Any, side) -> Tuple[np.ndarray, List[str]]:
    """``categories=`` as (fractions, names): a ``(fractions, names)`` pair, or fractions named like the sidecar."""
    if isinstance(categories, tuple) and len(categories) == 2:
        return np.asarray(categories[0]), [str(c) for c in categories[1]]
    fr = np.asarray(categories)
    n_cat = fr.shape[1] if fr.ndim == 2 else 0
    if side is not None and len(side[1]) == n_cat:
        return fr, list(side[1])
    return fr, [f"category{c}" for c in range(n_cat)]


def _fingerprint(config: InterventionConfig, plan: ArmPlan) -> str:
    d = config.to_dict()
    for key in ("arms", "seeds", "out_dir", "keep_checkpoints"):
        d.pop(key)
    d["interventions"] = plan.interventions.to_dict()
    d["arm"] = plan.arm
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_pretrained(config: InterventionConfig) -> dict:
    """The recipe for arms from a HF checkpoint without optimizer state (``config.pretrained``)."""
    ck = config.checkpoint()
    if not os.path.isfile(os.path.join(ck, "config.json")):
        raise ValueError(f"checkpoint {ck!r} (window start step {config.start_step}) missing: no config.json")
    cfg = TrainConfig.from_dict(dict(config.pretrained)).to_dict()
    if config.train_until > int(cfg["total_steps"]):
        raise ValueError(f"train_until={config.train_until} exceeds the schedule's total_steps={cfg['total_steps']}")
    p = get_preset(cfg["preset"])
    bad = [h for h in config.heads if not (0 <= h[0] < p.n_layers and 0 <= h[1] < p.n_heads)]
    if bad:
        raise ValueError(f"heads {bad} out of range for preset {p.name} ({p.n_layers} layers x {p.n_heads} heads)")
    return cfg


def _check_checkpoint(config: InterventionConfig) -> dict:
    if config.pretrained is not None:
        return _check_pretrained(config)
    ck = config.checkpoint()
    path = os.path.join(ck, STATE_FILE)
    if not os.path.exists(path):
        raise ValueError(f"checkpoint {ck!r} (window start step {config.start_step}) missing: no {STATE_FILE}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("optimizer") is None:
        raise ValueError(f"checkpoint {ck!r} was saved without optimizer state; arms need it to branch")
    if int(state["step"]) != config.start_step:
        raise ValueError(f"checkpoint {ck!r} holds step {state['step']}, expected {config.start_step}")
    d = state["data"]
    if (d["batch_size"], d["seq_len"]) != (config.batch_size, config.seq_len):
        raise ValueError(
            f"checkpoint {ck!r} was trained with batch_size={d['batch_size']}, seq_len={d['seq_len']}; "
            f"the data has batch_size={config.batch_size}, seq_len={config.seq_len}"
        )
    cfg = state["config"]
    if config.train_until > int(cfg["total_steps"]):
        raise ValueError(f"train_until={config.train_until} exceeds the run's total_steps={cfg['total_steps']}")
    p = get_preset(cfg["preset"])
    bad = [h for h in config.heads if not (0 <= h[0] < p.n_layers and 0 <= h[1] < p.n_heads)]
    if bad:
        raise ValueError(f"heads {bad} out of range for preset {p.name} ({p.n_layers} layers x {p.n_heads} heads)")
    return cfg


def _run_arm(
    config: InterventionConfig, plan: ArmPlan, run_dir: str, eval_fn, base_cfg: dict, progress: bool
) -> Dict[str, Any]:
    """Train one arm (or reuse its complete result) and return its curves."""
    fp = _fingerprint(config, plan)
    res_path = os.path.join(run_dir, RESULT_FILE)
    if os.path.exists(res_path):
        with open(res_path) as f:
            res = json.load(f)
        if res.get("fingerprint") == fp:
            return res
    if os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    overrides = dict(
        checkpoint_every=int(base_cfg["total_steps"]),
        checkpoint_extra=tuple(config.eval_steps()),
        save_optimizer=False,
        progress=progress,
    )
    if config.device is not None:
        overrides["device"] = config.device
    if config.pretrained is not None:
        tr = branch_from_pretrained(
            config.checkpoint(),
            config.batches,
            run_dir,
            config.start_step,
            TrainConfig.from_dict({**base_cfg, **overrides}),
            interventions=plan.interventions,
            eval_fn=eval_fn,
        )
    else:
        tr = branch_from_checkpoint(
            config.checkpoint(), config.batches, run_dir, interventions=plan.interventions, eval_fn=eval_fn, **overrides
        )
    tr.train(end_step=config.train_until)
    recs = {r["step"]: r for r in read_jsonl(tr.eval_path) if "head_score" in r}
    steps = config.eval_steps()
    missing = [s for s in steps if s not in recs]
    if missing:
        raise RuntimeError(f"arm {plan.arm} seed {plan.seed}: no evaluation at steps {missing}")
    res = {"steps": steps, "fingerprint": fp, "run_dir": run_dir}
    for key in ("head_score", "target_scores", "head_scores", "prev_token_scores", "probe_f", "loss", "icl"):
        res[key] = [recs[s][key] for s in steps]
    if not config.keep_checkpoints:
        for s in steps[:-1]:
            shutil.rmtree(tr.checkpoint_dir(s), ignore_errors=True)
    with atomic_file(res_path) as f:
        json.dump(res, f)
    return res


def _distinct_runs(config: InterventionConfig, plans: Dict[Tuple[str, int], ArmPlan]):
    """``([(plan, directory)] of the distinct trainings, {(arm, seed): directory})``: a deterministic arm is
    trained once, under the first seed."""
    runs, where = [], {}
    for (arm, seed), plan in plans.items():
        owner = config.seeds[0] if plan.deterministic else seed
        d = os.path.join(config.out_dir, arm, f"seed{owner}")
        where[(arm, seed)] = d
        if owner == seed:
            runs.append((plan, d))
    return runs, where


def _sets_json(config: InterventionConfig, sets: Dict[str, Any]) -> Dict[str, Any]:
    out = {
        "k": sets["k"],
        "window_size": config.window_size,
        "top": sets["top"].tolist(),
        "top_scores": sets["top_scores"].tolist(),
        "bottom": sets["bottom"].tolist(),
        "bottom_scores": sets["bottom_scores"].tolist(),
        "random": {str(s): np.sort(v).tolist() for s, v in sets["random"].items()},
    }
    if "matched" in sets:
        out["matched"] = {str(s): np.sort(v).tolist() for s, v in sets["matched"].items()}
        out["matched_composition"] = sets["matched_composition"]
    return out


def run_interventions(
    config: InterventionConfig, scores, global_index, progress: bool = True, dist=None
) -> Optional[Dict[str, Any]]:
    """Run every arm and seed, write ``out_dir/interventions.json`` and return its dict.

    The dict is ``{"arms": {arm: {"seeds": {seed: curves + derived figures}, "n_selected", "deterministic"}},
    "threshold", "baseline", "summary", "score_icl_pearson", "n_points", "sets", "config", "eval_steps",
    "icl_tokens", "icl_band"}``. ``summary`` (per arm), ``score_icl_pearson`` and ``n_points`` are the one
    summary (:func:`mda_fast.study.interventions.summary.summarize`), which the report shows as stored. Arms
    whose ``result.json`` matches the config are reused (resumable).

    ``dist`` (a ``mda_fast.dist.Dist``; needs ``rank``, ``world``, ``is_main``, ``barrier``): the distinct
    trainings are dealt out round-robin over the ranks (rank r trains runs r, r + world, ...); after a barrier
    rank 0 reads every run's ``result.json`` and writes the output; the other ranks return ``None``.
    """
    if not isinstance(config, InterventionConfig):
        raise TypeError(f"config: expected an InterventionConfig, got {type(config).__name__}")
    base_cfg = _check_checkpoint(config)
    plans, sets = plan_arms(config, scores, global_index)
    eval_fn = make_eval_fn(config, heldout_tokens(config))
    os.makedirs(config.out_dir, exist_ok=True)
    runs, where = _distinct_runs(config, plans)

    from tqdm.auto import tqdm

    results = {}
    shared = dist is not None and dist.world > 1
    mine = runs[dist.rank :: dist.world] if shared else runs
    bar = tqdm(mine, desc="intervention arms", unit="arm", disable=not progress, dynamic_ncols=True)
    for plan, d in bar:
        bar.set_postfix(arm=plan.arm, seed=plan.seed)
        results[d] = _run_arm(config, plan, d, eval_fn, base_cfg, progress)
    bar.close()
    if shared:
        dist.barrier("intervene: every arm trained")
        if not dist.is_main:
            return None
        for plan, d in runs:  # the other ranks' runs: their complete result.json is read, nothing is trained
            if d not in results:
                results[d] = _run_arm(config, plan, d, eval_fn, base_cfg, progress)

    arms: Dict[str, Dict[str, Any]] = {}
    for (arm, seed), plan in plans.items():
        a = arms.setdefault(
            arm, {"seeds": {}, "n_selected": int(plan.selected.size), "deterministic": plan.deterministic}
        )
        a["seeds"][str(seed)] = {k: v for k, v in results[where[(arm, seed)]].items() if k != "fingerprint"}
    add_seed_figures(arms, config)
    summary = summarize({"arms": arms, "threshold": config.threshold})
    out = {
        "arms": arms,
        "threshold": float(config.threshold),
        "baseline": "baseline",
        "summary": summary["arms"],
        "score_icl_pearson": summary["score_icl_pearson"],
        "n_points": summary["n_points"],
        "sets": _sets_json(config, sets),
        "config": config.to_dict(),
        "eval_steps": config.eval_steps(),
        "icl_tokens": list(config.icl_tokens),
        "icl_band": config.icl_band,
    }
    with atomic_file(os.path.join(config.out_dir, OUTPUT_FILE)) as f:
        json.dump(out, f)
    return out


def load_interventions(path: str) -> Dict[str, Any]:
    """Read ``interventions.json`` (a file or the directory holding it)."""
    if os.path.isdir(path):
        path = os.path.join(path, OUTPUT_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{path!r}: no {OUTPUT_FILE}")
    with open(path) as f:
        return json.load(f)

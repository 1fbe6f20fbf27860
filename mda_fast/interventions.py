"""Causal interventions: retrain from the window-start checkpoint with the top-scored samples deleted or duplicated.

Every arm is ``branch_from_checkpoint(run_dir/step{start_step}, data, out_dir/<arm>/seed<s>, interventions=...)``
trained to ``train_until``, so all arms share initial weights, optimizer state, LR schedule, data order and the
trainer's RNG state; they differ only by their ``Interventions`` (see ``mda_fast.train.trainer`` for the exact
semantics: a deleted sample contributes nothing and every other sample keeps its weight ``1 / (B*T)``).

Sets. The window holds the ``n = (end_step - start_step) * batch_size`` global indices ``start*B .. end*B - 1``.
Samples are ranked by their score (``score_column``, or the mean over the score columns when ``None``), ties
broken by the lower global index; ``k = analysis.top_count(n, top_frac)`` (``ceil(top_frac * n)``, at least 1:
the same top set as the analysis reports).

* ``baseline``: no intervention.
* ``delete-top``: the ``k`` highest-scored samples deleted (score > 0 means the sample pushes the head into
  existence, see ``mda_fast.influence``).
* ``delete-bottom``: the ``k`` lowest-scored (most negative) samples deleted.
* ``delete-random``: ``k`` samples drawn uniformly without replacement from the window minus the top set.
* ``delete-matched`` (optional): a category-matched random control. ``k`` samples drawn from the window minus the
  top set with the top set's composition by dominant category (the category holding most of a row's tokens, from
  the corpus sidecar ``<data>.categories.npy`` or ``categories=``): for each category as many samples as the top
  set has. It asks whether the scores pick better samples than "random rows of the categories MDA favours".
* ``augment-top`` / ``augment-random`` / ``augment-matched``: the top / random / matched set duplicated:
  ``augment_copies`` extra copies of each sample appended as extra rows (``insert_mode="append"``, default;
  ``"replace"`` overwrites random slots instead) at ``augment_steps``, round-robin in rank order (top: highest score first; random: draw order).
  Default ``augment_steps``: the first half of the window, ``start_step .. start_step + ceil(W/2) - 1``.

Seeds. Seed ``s`` draws the random set (``numpy.random.default_rng([s, 0x5EED])``), shared by ``delete-random`` and
``augment-random`` of that seed (the matched set uses ``[s, 0x3A7C]``), and is the ``Interventions.seed`` that
picks replaced slots in ``"replace"`` mode.
Nothing else depends on it. Arms that do not depend on the seed (``baseline``, ``delete-top``, ``delete-bottom``,
and ``augment-top`` in append mode) are trained once and their curves recorded under every seed.

Measurements (``eval_fn``, at ``eval_steps``: ``start_step``, every ``eval_every`` steps after it up to
``train_until``, ``end_step`` and ``train_until``):

* ``head_scores`` ``[n_layers][n_heads]``: every head's prefix-matching score (one ``localize_all`` pass, which
  also gives ``prev_token_scores``); ``target_scores``: the target heads'; ``head_score``: their mean.
* ``probe_f``: the induction probe's ``f`` (sum of log p(induction target) over the probe batch).
* ``loss``: mean token cross-entropy on the held-out rows; ``icl``: loss at a late token minus loss at an early
  token, averaged over held-out rows (negative = in-context learning). Olsson et al. use tokens 50 and 500 of a
  long context; here token positions ``round(50/512*T)`` and ``round(500/512*T)`` (1-based index of the predicted
  token, ``T = seq_len - 1``; 13 and 125 for T=128), each averaged over a band of ``±icl_band`` tokens.
* Held-out rows: ``heldout_rows`` (global row indices), default the last ``n_heldout`` rows of the data file,
  which must lie at or after step ``train_until`` (so no arm ever trains on them).

Derived figures per arm and seed: ``emergence_step`` (first eval step with ``head_score >= threshold``; ``None``
if never; per target in ``emergence_step_per_target``), ``area_vs_baseline`` (trapezoid of ``head_score - the
baseline's`` over the eval steps, same seed; units score x steps), and changes vs baseline of ``icl``,
``head_score``, ``loss`` at ``end_step`` and ``train_until``. ``summary`` gives their mean and std across seeds.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .analysis import top_count
from .config import ARMS, DEFAULT_ARMS
from .localize import localize_all
from .probes import InductionProbe
from .train import Interventions, branch_from_checkpoint, get_preset, read_jsonl
from .train.trainer import STATE_FILE

__all__ = [
    "ARMS",
    "DEFAULT_ARMS",
    "InterventionConfig",
    "ArmPlan",
    "select_sets",
    "plan_arms",
    "icl_positions",
    "make_eval_fn",
    "derive",
    "run_interventions",
    "load_interventions",
]

RANDOM_STREAM = 0x5EED
MATCHED_STREAM = 0x3A7C
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
    _batches: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        from .data import PythiaBatches

        if isinstance(self.data, (str, os.PathLike)):
            if self.batch_size is None or self.seq_len is None:
                raise ValueError("data: a path needs batch_size= and seq_len=")
            self._batches = PythiaBatches(os.fspath(self.data), batch_size=self.batch_size, seq_len=self.seq_len)
        else:
            for attr in ("step", "rows", "batch_size", "seq_len", "n_steps", "n_rows"):
                if not hasattr(self.data, attr):
                    raise TypeError(f"data: expected a PythiaBatches or a path, got {type(self.data).__name__}")
            for name in ("batch_size", "seq_len"):
                v = getattr(self, name)
                if v is not None and v != getattr(self.data, name):
                    raise ValueError(f"{name}={v} differs from the data's {name}={getattr(self.data, name)}")
            self._batches = self.data
        b = self._batches
        self.batch_size, self.seq_len = int(b.batch_size), int(b.seq_len)
        for name in ("start_step", "end_step", "train_until", "eval_every", "augment_copies", "n_heldout",
                     "eval_batch_size", "localize_seq_len", "localize_n", "probe_L", "probe_n"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TypeError(f"{name}: expected an int, got {v!r}")
        if not 0 <= self.start_step < self.end_step <= self.train_until:
            raise ValueError(f"window: expected 0 <= start_step < end_step <= train_until, got start_step="
                             f"{self.start_step}, end_step={self.end_step}, train_until={self.train_until}")
        if self.train_until > b.n_steps:
            raise ValueError(f"train_until={self.train_until}: the data has only {b.n_steps} steps")
        for name in ("eval_every", "augment_copies", "n_heldout", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not (isinstance(self.top_frac, (float, int)) and 0 < self.top_frac < 1):
            raise ValueError(f"top_frac: expected a fraction in (0, 1), got {self.top_frac!r}")
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
                raise ValueError(f"augment_steps: expected a non-empty list of steps in [start_step, train_until) = "
                                 f"[{self.start_step}, {self.train_until}), got {bad or steps}")
            self.augment_steps = tuple(steps)
        self.heads = [tuple(int(x) for x in h) for h in self.heads]
        if not self.heads or any(len(h) != 2 for h in self.heads):
            raise ValueError(f"heads: expected a non-empty list of (layer, head), got {self.heads}")
        if self.heldout_rows is not None:
            self.heldout_rows = [int(i) for i in self.heldout_rows]
        T = self.seq_len - 1
        early, late = self.icl_tokens if self.icl_tokens is not None else icl_positions(T)
        band = self.icl_band if self.icl_band is not None else T // 64
        if not (1 <= early - band and early < late and late + band <= T and band >= 0):
            raise ValueError(f"icl_tokens=({early}, {late}) with band {band}: expected 1 <= early-band, early < late, "
                             f"late+band <= T={T}")
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
        return os.path.join(self.run_dir, f"step{self.start_step}")

    def dominant_categories(self) -> Tuple[np.ndarray, List[str]]:
        """(dominant category index of every data row, category names), from ``categories`` (an array of
        per-row fractions ``[n_rows, n_categories]``) or the data's sidecar; needed by the matched arms."""
        from .data.synthetic import CATEGORIES, load_category_sidecar

        if self.categories is not None:
            fr, names = np.asarray(self.categories), list(CATEGORIES)
        else:
            path = getattr(self._batches, "path", "")
            side = load_category_sidecar(path) if path else None
            if side is None:
                raise ValueError("matched arms need per-row categories: the data has no <prefix>.categories.npy "
                                 "sidecar; pass categories= (fractions [n_rows, n_categories])")
            fr, names = side
        if fr.ndim != 2 or fr.shape[0] < self.end_step * self.batch_size:
            raise ValueError(f"categories: expected [n_rows >= {self.end_step * self.batch_size}, n_categories], "
                             f"got shape {fr.shape}")
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


def icl_positions(T: int) -> Tuple[int, int]:
    """Olsson et al.'s tokens 50 and 500 (of 512) scaled to ``T`` predicted tokens: 1-based token indices."""
    early = max(1, int(math.floor(50 * T / 512 + 0.5)))
    late = min(T, int(math.floor(500 * T / 512 + 0.5)))
    return early, late


# ---------------------------------------------------------------------------------------------------------------
# sample sets and arms


def _window_scores(config: InterventionConfig, scores, global_index) -> Tuple[np.ndarray, np.ndarray]:
    """(global indices sorted, ranking score per index) after validating them against the window."""
    s = np.asarray(scores)
    g = np.asarray(global_index)
    n = config.window_size
    if g.ndim != 1 or g.dtype.kind not in "iu":
        raise ValueError(f"global_index: expected a 1-D integer array, got shape {g.shape} dtype {g.dtype}")
    if s.ndim not in (1, 2) or s.shape[0] != g.shape[0]:
        raise ValueError(f"scores: expected shape [{g.shape[0]}] or [{g.shape[0]}, n_targets] (one row per "
                         f"global_index), got {s.shape}")
    if g.shape[0] != n:
        raise ValueError(f"scores: {g.shape[0]} rows, but the window [{config.start_step}, {config.end_step}) holds "
                         f"{n} samples ({config.end_step - config.start_step} steps x batch {config.batch_size})")
    order = np.argsort(g, kind="stable")
    g = g[order].astype(np.int64)
    lo = config.start_step * config.batch_size
    if not np.array_equal(g, np.arange(lo, lo + n)):
        raise ValueError(f"global_index: expected each of the window's indices {lo} .. {lo + n - 1} exactly once")
    s = s[order].astype(np.float64)
    if s.ndim == 2:
        if config.score_column is None:
            s = s.mean(axis=1)
        elif not 0 <= config.score_column < s.shape[1]:
            raise ValueError(f"score_column={config.score_column}: scores have {s.shape[1]} columns")
        else:
            s = s[:, config.score_column]
    elif config.score_column not in (None, 0):
        raise ValueError(f"score_column={config.score_column}: scores are 1-D")
    if not np.isfinite(s).all():
        raise ValueError(f"scores: {int((~np.isfinite(s)).sum())} non-finite values")
    return g, s


def select_sets(config: InterventionConfig, scores, global_index) -> Dict[str, Any]:
    """``{"top": [k] (rank order), "bottom": [k] (most negative first), "random": {seed: [k] (draw order)}}``."""
    g, s = _window_scores(config, scores, global_index)
    k = config.k
    needs_random = any(a.endswith("-random") for a in config.arms)
    if needs_random and 2 * k > g.size:
        raise ValueError(f"top_frac={config.top_frac}: random sets of {k} disjoint from a top set of {k} need "
                         f"2k <= window size {g.size}")
    desc = np.lexsort((g, -s))  # by score descending, ties by lower index
    asc = np.lexsort((g, s))
    top = g[desc[:k]]
    pool = np.setdiff1d(g, top)
    random = {seed: np.random.default_rng([seed, RANDOM_STREAM]).choice(pool, size=k, replace=False)
              for seed in config.seeds}
    out = {"k": k, "top": top, "bottom": g[asc[:k]], "random": random,
           "top_scores": s[desc[:k]], "bottom_scores": s[asc[:k]]}
    if any(a.endswith("-matched") for a in config.arms):
        out["matched"], out["matched_composition"] = _matched_sets(config, top, pool)
    return out


def _matched_sets(config: InterventionConfig, top: np.ndarray, pool: np.ndarray):
    """Per seed, ``len(top)`` samples from ``pool`` with the top set's count of every dominant category, in a
    seeded random order; and the composition ``{category: count}``."""
    dom, names = config.dominant_categories()
    need = np.bincount(dom[top], minlength=len(names))
    pool_dom = dom[pool]
    for c in np.flatnonzero(need):
        have = int((pool_dom == c).sum())
        if have < need[c]:
            raise ValueError(f"matched arms: the top set holds {int(need[c])} {names[c]!r} rows but the rest of the "
                             f"window only {have}; lower top_frac or widen the window")
    sets = {}
    for seed in config.seeds:
        rng = np.random.default_rng([seed, MATCHED_STREAM])
        parts = [rng.choice(pool[pool_dom == c], size=int(need[c]), replace=False) for c in np.flatnonzero(need)]
        sets[seed] = rng.permutation(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return sets, {names[c]: int(need[c]) for c in np.flatnonzero(need)}


@dataclass
class ArmPlan:
    """One training run: ``arm`` under ``seed`` with its ``interventions`` and selected global indices."""

    arm: str
    seed: int
    interventions: Interventions
    selected: np.ndarray
    deterministic: bool


def _deterministic(arm: str, insert_mode: str) -> bool:
    return not arm.endswith(("-random", "-matched")) and not (arm.startswith("augment") and insert_mode == "replace")


def plan_arms(config: InterventionConfig, scores, global_index) -> Tuple[Dict[Tuple[str, int], ArmPlan], dict]:
    """``({(arm, seed): ArmPlan}, sets)`` for every configured arm and seed (see the module docstring)."""
    sets = select_sets(config, scores, global_index)
    plans = {}
    aug_steps = config.resolved_augment_steps()
    for seed in config.seeds:
        for arm in config.arms:
            if arm == "baseline":
                sel = np.zeros(0, np.int64)
            elif arm.endswith("-top"):
                sel = sets["top"]
            elif arm.endswith("-bottom"):
                sel = sets["bottom"]
            elif arm.endswith("-matched"):
                sel = sets["matched"][seed]
            else:
                sel = sets["random"][seed]
            if arm.startswith("augment"):
                iv = Interventions.duplicate(np.tile(sel, config.augment_copies), aug_steps,
                                             insert_mode=config.insert_mode, seed=seed)
            elif arm.startswith("delete"):
                iv = Interventions(delete=sel, seed=seed)
            else:
                iv = Interventions(seed=seed)
            plans[(arm, seed)] = ArmPlan(arm, seed, iv, np.asarray(sel, np.int64),
                                         _deterministic(arm, config.insert_mode))
    return plans, sets


# ---------------------------------------------------------------------------------------------------------------
# measurements


def heldout_tokens(config: InterventionConfig) -> np.ndarray:
    """The held-out rows ``[n, seq_len]`` int64 (validated never to be trained on by any arm)."""
    b = config.batches
    rows = (np.asarray(config.heldout_rows, np.int64) if config.heldout_rows is not None
            else np.arange(b.n_rows - config.n_heldout, b.n_rows, dtype=np.int64))
    first_free = config.train_until * config.batch_size
    if rows.size == 0 or rows.min() < first_free or rows.max() >= b.n_rows:
        raise ValueError(f"held-out rows must lie in [{first_free}, {b.n_rows}) (at or after step train_until="
                         f"{config.train_until}, inside the data); got "
                         f"{'none' if rows.size == 0 else f'[{rows.min()}, {rows.max()}]'}. Pass heldout_rows= or "
                         f"a smaller n_heldout / train_until")
    return np.asarray(b.rows(rows)).astype(np.int64)


def make_eval_fn(config: InterventionConfig, heldout: np.ndarray):
    """``eval_fn(model, step) -> dict`` for the trainer (empty dict at steps not in ``config.eval_steps()``)."""
    planned = set(config.eval_steps())
    probe = InductionProbe(L=config.probe_L, n=config.probe_n, seed=config.probe_seed, low=config.low,
                           high=config.high)
    T = config.seq_len - 1
    (early, late), band = config.icl_tokens, config.icl_band
    # CE at position p predicts 1-based token p + 1
    early_pos = torch.arange(early - 1 - band, early + band)
    late_pos = torch.arange(late - 1 - band, late + band)
    rows = torch.from_numpy(heldout)

    @torch.no_grad()
    def eval_fn(model, step):
        if step not in planned:
            return {}
        dev = next(model.parameters()).device
        loc = localize_all(model, ("prefix_matching", "prev_token"), config.localize_seq_len, config.localize_n,
                           config.localize_seed, config.eval_batch_size, config.low, config.high)
        pm = loc["prefix_matching"]
        targets = [float(pm[l, h]) for l, h in config.heads]
        ids = probe.inputs(model)
        f = 0.0
        for lo in range(0, ids.shape[0], config.eval_batch_size):
            b = ids[lo:lo + config.eval_batch_size]
            logits = model(input_ids=b, use_cache=False).logits
            f += float(probe.objective(model, None, b, logits, None).double().sum())
        ce = torch.empty(rows.shape[0], T, dtype=torch.float64)
        for lo in range(0, rows.shape[0], config.eval_batch_size):
            b = rows[lo:lo + config.eval_batch_size].to(dev)
            logits = model(input_ids=b[:, :-1], use_cache=False).logits.float()
            ce[lo:lo + b.shape[0]] = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), b[:, 1:], reduction="none").double().cpu()
        icl = ce[:, late_pos].mean(dim=1) - ce[:, early_pos].mean(dim=1)
        return {
            "head_score": float(np.mean(targets)),
            "target_scores": targets,
            "head_scores": pm.tolist(),
            "prev_token_scores": loc["prev_token"].tolist(),
            "probe_f": f,
            "loss": float(ce.mean()),
            "icl": float(icl.mean()),
        }

    return eval_fn


# ---------------------------------------------------------------------------------------------------------------
# derived figures


def _emergence(steps: Sequence[int], values: Sequence[float], threshold: float) -> Optional[int]:
    for s, v in zip(steps, values):
        if v >= threshold:
            return int(s)
    return None


def _mean_std(values) -> Dict[str, Optional[float]]:
    v = [x for x in values if x is not None]
    return {"mean": float(np.mean(v)) if v else None, "std": float(np.std(v)) if v else None, "n": len(v)}


def derive(arms: Dict[str, Dict[str, Any]], config: InterventionConfig) -> Dict[str, Any]:
    """Add derived figures to every ``arms[arm]["seeds"][seed]`` curve dict (in place); return the summary."""
    fixed = sorted({config.end_step, config.train_until})
    base = arms["baseline"]["seeds"]
    summary = {}
    for arm, a in arms.items():
        for seed, d in a["seeds"].items():
            steps = np.asarray(d["steps"], np.float64)
            d["emergence_step"] = _emergence(d["steps"], d["head_score"], config.threshold)
            d["emergence_step_per_target"] = [
                _emergence(d["steps"], [t[j] for t in d["target_scores"]], config.threshold)
                for j in range(len(config.heads))]
            b = base[seed]
            if list(b["steps"]) != list(d["steps"]):
                raise ValueError(f"arm {arm} seed {seed}: eval steps differ from the baseline's")
            diff = np.asarray(d["head_score"]) - np.asarray(b["head_score"])
            d["area_vs_baseline"] = float(np.sum((diff[1:] + diff[:-1]) * np.diff(steps)) / 2)
            idx = {s: i for i, s in enumerate(d["steps"])}
            for key in ("icl", "head_score", "loss", "probe_f"):
                d[f"{key}_change"] = {str(s): float(d[key][idx[s]] - b[key][idx[s]]) for s in fixed}
        seeds = list(a["seeds"].values())
        if a.get("deterministic"):  # trained once; the other seeds hold copies of that run
            seeds = seeds[:1]
        e = [d["emergence_step"] for d in seeds]
        summary[arm] = {
            "deterministic": bool(a.get("deterministic")),
            "n_seeds": len(seeds),
            "n_selected": a["n_selected"],
            "emergence_steps": e,
            "emergence": _mean_std(e),
            "area_vs_baseline": _mean_std([d["area_vs_baseline"] for d in seeds]),
            **{f"{key}_change": {str(s): _mean_std([d[f"{key}_change"][str(s)] for d in seeds]) for s in fixed}
               for key in ("icl", "head_score", "loss", "probe_f")},
        }
    return summary


# ---------------------------------------------------------------------------------------------------------------
# running


def _fingerprint(config: InterventionConfig, plan: ArmPlan) -> str:
    d = config.to_dict()
    for key in ("arms", "seeds", "out_dir", "keep_checkpoints"):
        d.pop(key)
    d["interventions"] = plan.interventions.to_dict()
    d["arm"] = plan.arm
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_checkpoint(config: InterventionConfig) -> dict:
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
        raise ValueError(f"checkpoint {ck!r} was trained with batch_size={d['batch_size']}, seq_len={d['seq_len']}; "
                         f"the data has batch_size={config.batch_size}, seq_len={config.seq_len}")
    cfg = state["config"]
    if config.train_until > int(cfg["total_steps"]):
        raise ValueError(f"train_until={config.train_until} exceeds the run's total_steps={cfg['total_steps']}")
    p = get_preset(cfg["preset"])
    bad = [h for h in config.heads if not (0 <= h[0] < p.n_layers and 0 <= h[1] < p.n_heads)]
    if bad:
        raise ValueError(f"heads {bad} out of range for preset {p.name} ({p.n_layers} layers x {p.n_heads} heads)")
    return cfg


def _run_arm(config: InterventionConfig, plan: ArmPlan, run_dir: str, eval_fn, base_cfg: dict,
             progress: bool) -> Dict[str, Any]:
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
    overrides = dict(checkpoint_every=int(base_cfg["total_steps"]), checkpoint_extra=tuple(config.eval_steps()),
                     save_optimizer=False, progress=progress)
    if config.device is not None:
        overrides["device"] = config.device
    tr = branch_from_checkpoint(config.checkpoint(), config.batches, run_dir, interventions=plan.interventions,
                                eval_fn=eval_fn, **overrides)
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
    tmp = res_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, res_path)
    return res


def run_interventions(config: InterventionConfig, scores, global_index, progress: bool = True) -> Dict[str, Any]:
    """Run every arm and seed, write ``out_dir/interventions.json`` and return its dict.

    The dict is ``{"arms": {arm: {"seeds": {seed: curves + derived figures}, "n_selected", "deterministic"}},
    "threshold", "baseline", "summary", "sets", "config", "eval_steps", "icl_tokens", "icl_band"}``; ``arms`` and
    ``threshold`` are what ``report.write_report(interventions=...)`` reads. Arms whose ``result.json`` matches
    the config are reused (resumable).
    """
    if not isinstance(config, InterventionConfig):
        raise TypeError(f"config: expected an InterventionConfig, got {type(config).__name__}")
    base_cfg = _check_checkpoint(config)
    plans, sets = plan_arms(config, scores, global_index)
    heldout = heldout_tokens(config)
    eval_fn = make_eval_fn(config, heldout)
    os.makedirs(config.out_dir, exist_ok=True)

    runs = []  # (plan, directory) of distinct trainings
    where = {}
    for (arm, seed), plan in plans.items():
        owner = config.seeds[0] if plan.deterministic else seed
        d = os.path.join(config.out_dir, arm, f"seed{owner}")
        where[(arm, seed)] = d
        if owner == seed:
            runs.append((plan, d))

    from tqdm.auto import tqdm

    results = {}
    bar = tqdm(runs, desc="intervention arms", unit="arm", disable=not progress, dynamic_ncols=True)
    for plan, d in bar:
        bar.set_postfix(arm=plan.arm, seed=plan.seed)
        results[d] = _run_arm(config, plan, d, eval_fn, base_cfg, progress)
    bar.close()

    arms: Dict[str, Dict[str, Any]] = {}
    for (arm, seed), plan in plans.items():
        a = arms.setdefault(arm, {"seeds": {}, "n_selected": int(plan.selected.size),
                                  "deterministic": plan.deterministic})
        a["seeds"][str(seed)] = {k: v for k, v in results[where[(arm, seed)]].items() if k != "fingerprint"}
    summary = derive(arms, config)
    out = {
        "arms": arms,
        "threshold": float(config.threshold),
        "baseline": "baseline",
        "summary": summary,
        "sets": {"k": sets["k"], "window_size": config.window_size, "top": sets["top"].tolist(),
                 "top_scores": sets["top_scores"].tolist(), "bottom": sets["bottom"].tolist(),
                 "bottom_scores": sets["bottom_scores"].tolist(),
                 "random": {str(s): np.sort(v).tolist() for s, v in sets["random"].items()},
                 **({"matched": {str(s): np.sort(v).tolist() for s, v in sets["matched"].items()},
                     "matched_composition": sets["matched_composition"]} if "matched" in sets else {})},
        "config": config.to_dict(),
        "eval_steps": config.eval_steps(),
        "icl_tokens": list(config.icl_tokens),
        "icl_band": config.icl_band,
    }
    path = os.path.join(config.out_dir, OUTPUT_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, path)
    return out


def load_interventions(path: str) -> Dict[str, Any]:
    """Read ``interventions.json`` (a file or the directory holding it)."""
    if os.path.isdir(path):
        path = os.path.join(path, OUTPUT_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{path!r}: no {OUTPUT_FILE}")
    with open(path) as f:
        return json.load(f)

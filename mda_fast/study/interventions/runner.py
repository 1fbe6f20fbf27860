"""Running the intervention arms: ``run_interventions`` (train every arm and seed, write ``interventions.json``)
and ``load_interventions``; ``InterventionConfig`` (one experiment's settings) lives in :mod:`.config`.

Definitions: the docstring of :mod:`mda_fast.study.interventions`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ...config import ARMS, DEFAULT_ARMS
from ...io import atomic_file
from ...train import TrainConfig, branch_from_checkpoint, branch_from_pretrained, get_preset, read_jsonl
from ...train.checkpoint import STATE_FILE
from .config import InterventionConfig
from .evaluation import add_seed_figures, heldout_tokens, make_eval_fn
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


def _fingerprint(config: InterventionConfig, plan: ArmPlan) -> str:
    d = config.to_dict()
    for key in ("arms", "seeds", "out_dir", "keep_checkpoints"):
        d.pop(key)
    d["interventions"] = plan.interventions.to_dict()
    d["arm"] = plan.arm
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_schedule(config: InterventionConfig, cfg: dict, owner: str) -> dict:
    """``cfg`` (a training config dict) after checking ``train_until`` and the heads against it."""
    if config.train_until > int(cfg["total_steps"]):
        raise ValueError(f"train_until={config.train_until} exceeds the {owner}'s total_steps={cfg['total_steps']}")
    p = get_preset(cfg["preset"])
    bad = [h for h in config.heads if not (0 <= h[0] < p.n_layers and 0 <= h[1] < p.n_heads)]
    if bad:
        raise ValueError(f"heads {bad} out of range for preset {p.name} ({p.n_layers} layers x {p.n_heads} heads)")
    return cfg


def _check_pretrained(config: InterventionConfig) -> dict:
    """The recipe for arms from a HF checkpoint without optimizer state (``config.pretrained``)."""
    ck = config.checkpoint()
    if not os.path.isfile(os.path.join(ck, "config.json")):
        raise ValueError(f"checkpoint {ck!r} (window start step {config.start_step}) missing: no config.json")
    return _check_schedule(config, TrainConfig.from_dict(dict(config.pretrained)).to_dict(), "schedule")


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
    return _check_schedule(config, state["config"], "run")


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
    results = _train_runs(
        config, runs, lambda plan, d: _run_arm(config, plan, d, eval_fn, base_cfg, progress), progress, dist
    )
    if results is None:
        return None
    out = _output(config, plans, sets, {key: results[d] for key, d in where.items()})
    with atomic_file(os.path.join(config.out_dir, OUTPUT_FILE)) as f:
        json.dump(out, f)
    return out


def _train_runs(config: InterventionConfig, runs, run_one, progress: bool, dist) -> Optional[Dict[str, Any]]:
    """``{directory: result}`` of every distinct run (``run_one(plan, directory)``), shared over ``dist``'s ranks;
    ``None`` on the ranks other than the main one."""
    from tqdm.auto import tqdm

    results = {}
    shared = dist is not None and dist.world > 1
    mine = runs[dist.rank :: dist.world] if shared else runs
    bar = tqdm(mine, desc="intervention arms", unit="arm", disable=not progress, dynamic_ncols=True)
    for plan, d in bar:
        bar.set_postfix(arm=plan.arm, seed=plan.seed)
        results[d] = run_one(plan, d)
    bar.close()
    if shared:
        dist.barrier("intervene: every arm trained")
        if not dist.is_main:
            return None
        for plan, d in runs:  # the other ranks' runs: their complete result.json is read, nothing is trained
            if d not in results:
                results[d] = run_one(plan, d)
    return results


def _output(
    config: InterventionConfig, plans: Dict[Tuple[str, int], ArmPlan], sets: Dict[str, Any], results: Dict
) -> Dict[str, Any]:
    """The ``interventions.json`` dict from every (arm, seed)'s result (``results[(arm, seed)]``)."""
    arms: Dict[str, Dict[str, Any]] = {}
    for (arm, seed), plan in plans.items():
        a = arms.setdefault(
            arm, {"seeds": {}, "n_selected": int(plan.selected.size), "deterministic": plan.deterministic}
        )
        a["seeds"][str(seed)] = {k: v for k, v in results[(arm, seed)].items() if k != "fingerprint"}
    add_seed_figures(arms, config)
    summary = summarize({"arms": arms, "threshold": config.threshold})
    return {
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


def load_interventions(path: str) -> Dict[str, Any]:
    """Read ``interventions.json`` (a file or the directory holding it)."""
    if os.path.isdir(path):
        path = os.path.join(path, OUTPUT_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{path!r}: no {OUTPUT_FILE}")
    with open(path) as f:
        return json.load(f)

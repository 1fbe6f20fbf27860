"""The stages behind the ``mda-fast`` CLI: localize → fit → score → analyze → report (and the demo).

Every stage reads a config dict (``mda_fast.config``) and reads/writes a fixed layout under ``out``:

    out/localize/localize.json, localize.csv, emergence.png     out/targets.json
    out/factors/factors.safetensors, factors.json
    out/score/scores.npy (float32 memmap [n_samples, n_targets]), global_index.npy, step.npy, position.npy,
              loss.npy, targets.json, progress.json
    out/analyze/analysis.json, top.csv                         out/report.html
"""
from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
import platform
import re
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from . import analysis as ana
from .ekfac import Factors, fit_ekfac
from .heads import HeadSpec, check_spec
from .influence import InfluenceScorer
from .localize import localize_all
from .model import load_pythia, neox_shape

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def _write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(ana._jsonable(obj), fh, indent=1)
    os.replace(tmp, path)


def _read_json(path: str):
    with open(path) as fh:
        return json.load(fh)


def device_of(cfg) -> torch.device:
    d = cfg["model"]["device"]
    return torch.device("cuda" if d == "auto" and torch.cuda.is_available() else ("cpu" if d == "auto" else d))


# ---- inputs ---------------------------------------------------------------------------------------------------
def open_data(cfg):
    from .data import PythiaBatches

    d = cfg["data"]
    if not d["path"]:
        raise ValueError("data.path is empty: name the Megatron prefix or .npy file of the training data")
    try:
        data = PythiaBatches(d["path"], batch_size=d["batch_size"], seq_len=d["seq_len"])
    except FileNotFoundError as e:
        raise ValueError(f"data.path {d['path']!r}: {e}") from None
    w = cfg["window"]
    if not 0 <= w["start_step"] < w["end_step"]:
        raise ValueError(f"window: expected 0 <= start_step < end_step, got {w['start_step']}..{w['end_step']}")
    if w["end_step"] > data.n_steps:
        raise ValueError(f"window end_step={w['end_step']} is beyond the data: {d['path']} holds {data.n_steps} steps "
                         f"of {d['batch_size']} sequences")
    return data


def checkpoint_ref(cfg, step: int | None = None) -> tuple[str, str | None]:
    """(name_or_path, revision) of the checkpoint at ``step`` (default: the window end)."""
    m = cfg["model"]
    step = cfg["window"]["end_step"] if step is None else step
    if m["run_dir"]:
        path = os.path.join(m["run_dir"], f"step{step}")
        if not os.path.isdir(path):
            raise ValueError(f"model.run_dir has no checkpoint for step {step}: {path} does not exist")
        return path, None
    if not m["name"]:
        raise ValueError("model: set model.name (HF name or path) or model.run_dir (a mda-fast training run)")
    return m["name"], (m["revision"] or f"step{step}")


def load_model(cfg, step: int | None = None):
    name, rev = checkpoint_ref(cfg, step)
    if cfg["model"]["dtype"] not in DTYPES:
        raise ValueError(f"model.dtype {cfg['model']['dtype']!r}: expected one of {sorted(DTYPES)}")
    return load_pythia(name, revision=rev, dtype=DTYPES[cfg["model"]["dtype"]], device=device_of(cfg),
                       attn_implementation=cfg["model"]["attn_implementation"])


def localize_checkpoints(cfg) -> list:
    """[(label step, name_or_path, revision)] of the checkpoints to localize."""
    m, loc = cfg["model"], cfg["localize"]
    if m["run_dir"]:
        steps = loc["steps"] or sorted(int(re.findall(r"step(\d+)$", p)[0])
                                       for p in glob.glob(os.path.join(m["run_dir"], "step*")) if re.search(r"step\d+$", p))
        return [(s, *checkpoint_ref(cfg, s)) for s in steps]
    revs = loc["revisions"] or [f"step{s}" for s in [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
                                if s < cfg["window"]["end_step"]] + [f"step{cfg['window']['end_step']}"]
    out = []
    for r in revs:
        mm = re.fullmatch(r"step(\d+)", r)
        if not mm:
            raise ValueError(f"localize.revisions: {r!r} is not of the form step<k>")
        out.append((int(mm.group(1)), m["name"], r))
    return out


# ---- localize -------------------------------------------------------------------------------------------------
def emergence_steps(steps, scores: np.ndarray, threshold: float) -> list:
    """[n_layers][n_heads] first step whose score reaches ``threshold`` (None if never)."""
    out = []
    for L in range(scores.shape[1]):
        row = []
        for h in range(scores.shape[2]):
            hit = np.nonzero(scores[:, L, h] >= threshold)[0]
            row.append(int(steps[hit[0]]) if hit.size else None)
        out.append(row)
    return out


def run_localize(cfg, out: str, progress: bool = True) -> dict:
    loc = cfg["localize"]
    ckpts = localize_checkpoints(cfg)
    if not ckpts:
        raise ValueError("localize: no checkpoints found")
    steps, per = [], {"prefix_matching": [], "prev_token": []}
    for step, name, rev in tqdm(ckpts, desc="localize checkpoints", unit="ckpt", disable=not progress):
        model = load_pythia(name, revision=rev, dtype=torch.float32, device=device_of(cfg))
        high = loc["high"] or None
        res = localize_all(model, seq_len=loc["seq_len"], n=loc["n"], seed=loc["seed"],
                           batch_size=loc["batch_size"], low=loc["low"], high=high)
        steps.append(step)
        for k in per:
            per[k].append(res[k].numpy())
    scores = {k: np.stack(v) for k, v in per.items()}
    em = emergence_steps(steps, scores[loc["metric"]], loc["threshold"])
    result = {"steps": steps, "scores": scores, "threshold": loc["threshold"], "metric": loc["metric"],
              "emergence_step": em, "checkpoints": [f"{n}@{r}" if r else n for _, n, r in ckpts]}
    final = scores[loc["metric"]][-1]
    order = np.dstack(np.unravel_index(np.argsort(-final, axis=None), final.shape))[0]
    result["ranking"] = [[int(L), int(h), float(final[L, h])] for L, h in order]
    d = os.path.join(out, "localize")
    _write_json(os.path.join(d, "localize.json"), result)
    with open(os.path.join(d, "localize.csv"), "w") as fh:
        fh.write("step,layer,head,prefix_matching,prev_token\n")
        for i, s in enumerate(steps):
            for L in range(final.shape[0]):
                for h in range(final.shape[1]):
                    fh.write(f"{s},{L},{h},{scores['prefix_matching'][i, L, h]:.6f},{scores['prev_token'][i, L, h]:.6f}\n")
    from .plots import emergence_png, save_png
    save_png(emergence_png({**result, "heads": [r[:2] for r in result["ranking"][:cfg['targets']['n_induction']]]}),
             os.path.join(d, "emergence.png"))
    return result


# ---- targets ------------------------------------------------------------------------------------------------
def resolve_targets(cfg, out: str, model) -> dict:
    """Target heads (induction + control) and specs; 'auto' reads the localization at the window end."""
    t = cfg["targets"]
    path = os.path.join(out, "targets.json")
    if t["heads"] == "auto":
        with torch.no_grad():
            loc = localize_all(model, seq_len=cfg["localize"]["seq_len"], n=cfg["localize"]["n"],
                               seed=cfg["localize"]["seed"], low=cfg["localize"]["low"],
                               high=cfg["localize"]["high"] or None)
        pm, pt = loc["prefix_matching"], loc["prev_token"]
        H = pm.shape[1]
        ind = [(int(i) // H, int(i) % H) for i in torch.argsort(pm.flatten(), descending=True)[:t["n_induction"]]]
        ctrl = [(int(i) // H, int(i) % H) for i in torch.argsort(pt.flatten(), descending=True)
                if (int(i) // H, int(i) % H) not in ind][:t["n_control"]]
        heads = [{"layer": L, "head": h, "role": "induction", "prefix_matching": float(pm[L, h]),
                  "prev_token": float(pt[L, h])} for L, h in ind]
        heads += [{"layer": L, "head": h, "role": "control", "prefix_matching": float(pm[L, h]),
                   "prev_token": float(pt[L, h])} for L, h in ctrl]
    else:
        heads = [{"layer": int(L), "head": int(h), "role": "given"} for L, h in t["heads"]]
    specs = [HeadSpec(x["layer"], x["head"], t["mode"], t["bias"]) for x in heads]
    for s in specs:
        check_spec(model, s)
    res = {"heads": heads, "specs": [[s.layer, s.head, s.mode, s.bias] for s in specs]}
    _write_json(path, res)
    return res


def load_targets(out: str) -> tuple[dict, list]:
    path = os.path.join(out, "targets.json")
    if not os.path.exists(path):
        raise ValueError(f"{path} not found: run `mda-fast fit` first (it chooses the target heads)")
    t = _read_json(path)
    return t, [HeadSpec(L, h, m, b) for L, h, m, b in t["specs"]]


def probe_kwargs(cfg) -> dict:
    t = cfg["targets"]
    return dict(L=t["probe_L"], n=t["probe_n"], seed=t["probe_seed"], low=t["probe_low"], high=t["probe_high"] or None)


# ---- fit ----------------------------------------------------------------------------------------------------
def run_fit(cfg, out: str, progress: bool = True) -> Factors:
    data = open_data(cfg)
    model = load_model(cfg)
    targets = resolve_targets(cfg, out, model)
    _, specs = load_targets(out)
    f, w = cfg["fit"], cfg["window"]
    n_window = (w["end_step"] - w["start_step"]) * data.batch_size
    rng = np.random.default_rng(f["seed"])
    pick = np.sort(rng.choice(n_window, size=min(f["n_sequences"], n_window), replace=False)) + w["start_step"] * data.batch_size
    dev = next(model.parameters()).device
    batches = [torch.from_numpy(data.rows(pick[i:i + f["batch_size"]]).astype(np.int64)).to(dev)
               for i in range(0, len(pick), f["batch_size"])]
    name, rev = checkpoint_ref(cfg)
    factors = fit_ekfac(model, specs, batches, fisher=f["fisher"], method=f["method"], damping=f["damping"],
                        seed=f["seed"], progress=progress, model_name=name, revision=rev)
    factors.meta["fit_indices"] = f"{len(pick)} sequences sampled from window {w['start_step']}..{w['end_step']} (seed {f['seed']})"
    factors.meta["targets"] = targets["heads"]
    factors.save(os.path.join(out, "factors"))
    return factors


# ---- score --------------------------------------------------------------------------------------------------
def _fingerprint(cfg, target_names, shard: tuple[int, int] | None = None) -> str:
    model = {k: v for k, v in cfg["model"].items() if k != "device"}  # any device gives the same scores
    key = json.dumps([model, cfg["data"]["path"], cfg["data"]["batch_size"], cfg["window"], cfg["targets"],
                      cfg["score"]["limit_steps"], cfg["score"]["tf32"], target_names] + ([list(shard)] if shard else []),
                     sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


SCORE_ARRAYS = {"scores": np.float32, "global_index": np.int64, "step": np.int64, "position": np.int64,
                "loss": np.float32}


def score_window(cfg, batch_size: int) -> tuple[int, int]:
    """(first global row index, number of rows) of the scored window (``score.limit_steps`` applied)."""
    w, s = cfg["window"], cfg["score"]
    end = w["end_step"] if not s["limit_steps"] else min(w["end_step"], w["start_step"] + s["limit_steps"])
    return w["start_step"] * batch_size, (end - w["start_step"]) * batch_size


def shard_range(n_steps: int, batch_size: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Window rows ``[lo, hi)`` of shard ``i`` of ``k``: whole training steps, contiguous, step counts differing
    by at most one (so every shard reads whole steps and scores the same batches as a single run would)."""
    i, k = shard
    if k > n_steps:
        raise ValueError(f"cannot split a window of {n_steps} steps into {k} shards; use at most {n_steps}")
    return i * n_steps // k * batch_size, (i + 1) * n_steps // k * batch_size


def score_dir(out: str, shard: tuple[int, int] | None = None) -> str:
    d = os.path.join(out, "score")
    return d if shard is None else os.path.join(d, "shards", f"{shard[0]}-of-{shard[1]}")


def run_score(cfg, out: str, resume: bool = False, progress: bool = True,
              shard: tuple[int, int] | None = None) -> dict:
    """Stream the window and write scores in chunks; ``resume`` continues after the last completed chunk.

    Each chunk's rows are written to the memmap and flushed before ``progress.json`` is atomically replaced, so
    an interruption loses at most the chunk in flight, which a resume recomputes (scores are deterministic).
    ``shard=(i, k)`` scores only the i-th of k contiguous parts of the window into ``score/shards/i-of-k/``
    (one process per device; ``mda_fast.shards`` launches them and merges the parts).
    """
    if shard is not None:
        i, k = shard
        if not (isinstance(i, int) and isinstance(k, int) and 0 <= i < k):
            raise ValueError(f"shard must be (i, k) with 0 <= i < k, got {shard!r}")
    data = open_data(cfg)
    s = cfg["score"]
    B = data.batch_size
    first, n_window = score_window(cfg, B)
    lo_all, hi_all = (0, n_window) if shard is None else shard_range(n_window // B, B, shard)
    model = load_model(cfg)
    _, specs = load_targets(out)
    factors = Factors.load(os.path.join(out, "factors"), device=next(model.parameters()).device)
    probes = cfg["targets"]["probes"]
    scorer = InfluenceScorer(model, specs, factors, probe=probes, probe_kwargs=probe_kwargs(cfg),
                             backend=cfg["score"]["backend"] or None, tf32=cfg["score"]["tf32"])
    n = hi_all - lo_all
    d = score_dir(out, shard)
    os.makedirs(d, exist_ok=True)
    fp = _fingerprint(cfg, scorer.target_names, shard)
    prog_path = os.path.join(d, "progress.json")
    files = {k: os.path.join(d, f"{k}.npy") for k in SCORE_ARRAYS}
    done = 0
    if resume and os.path.exists(prog_path):
        prog = _read_json(prog_path)
        if prog["fingerprint"] != fp:
            raise ValueError(f"--resume: {d} was written with a different config (fingerprint {prog['fingerprint']} "
                             f"!= {fp}); use a fresh --out or drop --resume")
        done = int(prog["n_done"])
        arrays = {k: np.load(p, mmap_mode="r+") for k, p in files.items()}
    else:
        arrays = {}
        for k, dt in SCORE_ARRAYS.items():
            shape = (n, scorer.n_targets) if k == "scores" else (n,)
            arrays[k] = np.lib.format.open_memmap(files[k], mode="w+", dtype=dt, shape=shape)
        _write_json(prog_path, {"n_done": 0, "n_total": n, "fingerprint": fp})
    _write_json(os.path.join(d, "targets.json"), {"target_names": scorer.target_names,
                                                  "probe_values": scorer.probe_values})
    dev = next(model.parameters()).device
    chunk = max(s["chunk"], s["batch_size"])
    T = data.seq_len - 1
    t0, start_done = time.perf_counter(), done
    desc = "score" if shard is None else f"score {shard[0]}/{shard[1]}"
    bar = tqdm(total=n, initial=done, desc=desc, unit="seq", disable=not progress, dynamic_ncols=True)
    while done < n:
        lo, hi = done, min(done + chunk, n)
        g = np.arange(lo, hi) + lo_all + first
        rows = data.rows(g)
        for i in range(0, hi - lo, s["batch_size"]):
            ids = torch.from_numpy(rows[i:i + s["batch_size"]].astype(np.int64)).to(dev)
            sc, loss = scorer.score(ids, return_loss=True)
            j = lo + i
            arrays["scores"][j:j + len(ids)] = sc.float().cpu().numpy()
            arrays["loss"][j:j + len(ids)] = loss.float().cpu().numpy()
            bar.update(len(ids))
            rate = bar.format_dict.get("rate") or 0.0
            bar.set_postfix(tok_s=f"{rate * T:.3g}")
        arrays["global_index"][lo:hi] = g
        arrays["step"][lo:hi] = g // B
        arrays["position"][lo:hi] = g % B
        for a in arrays.values():
            a.flush()
        done = hi
        _write_json(prog_path, {"n_done": done, "n_total": n, "fingerprint": fp})
    bar.close()
    elapsed = max(time.perf_counter() - t0, 1e-9)
    return {"n_scored": n, "scores_path": files["scores"], "target_names": scorer.target_names,
            "seq_per_s": (n - start_done) / elapsed, "fingerprint": fp}


# ---- analyze ------------------------------------------------------------------------------------------------
def run_analyze(cfg, out: str, progress: bool = True) -> dict:
    from .data import PythiaBatches, get_decoder
    from .data.synthetic import load_category_sidecar

    d = os.path.join(out, "score")
    prog_path = os.path.join(d, "progress.json")
    if not os.path.exists(prog_path):
        raise ValueError(f"{d} holds no scores: run `mda-fast score` first")
    prog = _read_json(prog_path)
    if prog["n_done"] != prog["n_total"]:
        raise ValueError(f"scoring is incomplete ({prog['n_done']}/{prog['n_total']}): run `mda-fast score --resume`")
    arr = {k: np.load(os.path.join(d, f"{k}.npy"), mmap_mode="r")
           for k in ("scores", "global_index", "step", "position", "loss")}
    names = _read_json(os.path.join(d, "targets.json"))["target_names"]
    data = PythiaBatches(cfg["data"]["path"], batch_size=cfg["data"]["batch_size"], seq_len=cfg["data"]["seq_len"])
    side = load_category_sidecar(cfg["data"]["path"])
    cats, cat_names = (None, None) if side is None else side
    try:
        decode = get_decoder(cfg["data"]["tokenizer"])
    except Exception as e:  # the hub may be unreachable: keep the analysis, drop the snippets
        print(f"[analyze] no text snippets: tokenizer {cfg['data']['tokenizer']!r} unavailable ({e})")
        decode = None
    a = cfg["analyze"]
    res = ana.analyze(np.asarray(arr["scores"]), names, global_index=np.asarray(arr["global_index"]),
                      step=np.asarray(arr["step"]), position=np.asarray(arr["position"]), loss=np.asarray(arr["loss"]),
                      category_fractions=cats, category_names=cat_names, top_fraction=a["top_frac"],
                      table_k=a["table_k"], row_tokens=lambda gi: data.rows(np.array([gi]))[0],
                      decode=decode, snippet_tokens=a["snippet_tokens"], out_dir=os.path.join(out, "analyze"),
                      progress=progress)
    return res


def findings(res: dict, targets: dict) -> dict:
    """The demo's findings, computed from the analysis (never assumed)."""
    prim = res["primary_target"]
    pt = res["per_target"][prim]
    out = {"top10_share": pt["cumulative"]["top_share"], "power_law": pt.get("power_law")}
    if "category_enrichment" in res:
        out["category_enrichment"] = dict(res["category_enrichment"])
    names = res["targets"]
    roles = {f"L{h['layer']}H{h['head']}": h["role"] for h in targets["heads"]}
    jm = np.asarray(res["jaccard"]["matrix"])
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            ri, rj = roles.get(names[i].split(":")[0].split(".")[0]), roles.get(names[j].split(":")[0].split(".")[0])
            pairs.append({"a": names[i], "b": names[j], "roles": [ri, rj], "jaccard": float(jm[i, j])})
    out["overlap"] = pairs
    return out


def findings_text(f: dict) -> list:
    lines = [f"The top 10% of window sequences hold {100 * f['top10_share']:.1f}% of the total positive influence "
             f"on the primary target (the paper reports about 50% for Pythia)."]
    pl = f.get("power_law") or {}
    if "exponent" in pl:
        lines.append(f"Rank–score tail power-law exponent {pl['exponent']:.2f} (R² {pl.get('r2', float('nan')):.2f}).")
    if f.get("category_enrichment"):
        ranked = sorted(f["category_enrichment"].items(), key=lambda kv: -(kv[1] or 0))
        over = [f"{c} ×{r:.2f}" for c, r in ranked if r is not None and r > 1.0]
        under = [f"{c} ×{r:.2f}" for c, r in ranked if r is not None and r <= 1.0]
        lines.append("Over-represented in the top 10% (share / base rate): " + (", ".join(over) or "none") +
                     "; under-represented: " + (", ".join(under) or "none") + ".")
    for p in f.get("overlap", []):
        lines.append(f"Top-set Jaccard overlap {p['a']} ({p['roles'][0]}) vs {p['b']} ({p['roles'][1]}): {p['jaccard']:.3f}.")
    return lines


def intervention_findings(result: dict) -> list:
    """One line per arm from ``run_interventions``' result: emergence step (per seed) against the baseline's, the
    area between its head-score curve and the baseline's, and the ICL change at the window end."""
    summ, threshold = result["summary"], result["threshold"]
    base = summ.get("baseline", {}).get("emergence", {}).get("mean")
    end = str(result["config"]["end_step"])
    lines = [f"Retraining from step {result['config']['start_step']} (threshold {threshold}): baseline emergence step "
             f"{'never' if base is None else f'{base:.0f}'}."]
    for arm, a in summ.items():
        if arm == "baseline":
            continue
        steps = a["emergence_steps"]
        em = ", ".join("never" if e is None else str(e) for e in (steps[:1] if len(set(steps)) == 1 else steps))
        if len(steps) > 1 and not result["arms"].get(arm, {}).get("deterministic", False):
            em += f" ({len(steps)} seeds)" if len(set(steps)) > 1 else f" (all {len(steps)} seeds)"

        def pm(d, sign_fmt, fmt):
            if d.get("mean") is None:
                return "n/a"
            return f"{d['mean']:{sign_fmt}}" + (f" ± {d['std']:{fmt}}" if d.get("std") else "")

        lines.append(f"{arm}: emergence {em}; area vs baseline {pm(a['area_vs_baseline'], '+.1f', '.1f')}; "
                     f"ICL change at step {end} {pm(a['icl_change'].get(end, {}), '+.3f', '.3f')}.")
    return lines


# ---- report -------------------------------------------------------------------------------------------------
def provenance(cfg) -> dict:
    import transformers

    from . import __version__
    try:
        from .kernels import available_backends
        backends = available_backends()
    except Exception as e:  # noqa: BLE001
        backends = f"unavailable ({e})"
    return {"mda_fast": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "machine": platform.platform(), "device": str(device_of(cfg)),
            "kernel backends": backends, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "checkpoint": "@".join(x for x in checkpoint_ref(cfg) if x)}


def run_report(cfg, out: str, interventions: dict | None = None, notes=None) -> str:
    from .report import write_report

    loc_path = os.path.join(out, "localize", "localize.json")
    emergence = _read_json(loc_path) if os.path.exists(loc_path) else None
    if emergence is not None and os.path.exists(os.path.join(out, "targets.json")):
        emergence["heads"] = [[h["layer"], h["head"]] for h in _read_json(os.path.join(out, "targets.json"))["heads"]]
    a_path = os.path.join(out, "analyze", "analysis.json")
    analysis = _read_json(a_path) if os.path.exists(a_path) else None
    top_path = os.path.join(out, "analyze", "top.csv")
    top = ana.read_table_csv(top_path) if os.path.exists(top_path) else None
    i_path = os.path.join(out, "interventions", "interventions.json")
    if interventions is None and os.path.exists(i_path):
        interventions = _read_json(i_path)
    if notes is None and analysis is not None and os.path.exists(os.path.join(out, "targets.json")):
        notes = findings_text(findings(analysis, _read_json(os.path.join(out, "targets.json"))))
    path = os.path.join(out, "report.html")
    return write_report(path, title=cfg["report"]["title"], config=cfg, provenance=provenance(cfg),
                        emergence=emergence, analysis=analysis, top_samples=top, interventions=interventions,
                        notes=notes, eod_marker="<|eod|>" if cfg["data"]["tokenizer"] == "bytes" else "<|endoftext|>")


# ---- intervene ----------------------------------------------------------------------------------------------
def run_intervene(cfg, out: str, progress: bool = True) -> dict:
    """Deletion / augmentation arms for the target heads (``mda_fast.interventions``) from ``out``'s scores."""
    from .interventions import InterventionConfig, run_interventions

    m, w, iv, loc, t = cfg["model"], cfg["window"], cfg["intervene"], cfg["localize"], cfg["targets"]
    if not m["run_dir"]:
        raise ValueError("intervene needs model.run_dir: a mda-fast training run whose checkpoints hold the optimizer "
                         "state (published Pythia checkpoints do not)")
    targets, _ = load_targets(out)
    heads = [(h["layer"], h["head"]) for h in targets["heads"] if h["role"] != "control"]
    d = os.path.join(out, "score")
    if not os.path.exists(os.path.join(d, "progress.json")):
        raise ValueError(f"{d} holds no scores: run `mda-fast score` first")
    data = open_data(cfg)
    train_until = min(w["end_step"] + iv["train_after"], data.n_steps - -(-cfg["corpus"]["heldout_sequences"] // data.batch_size))
    icfg = InterventionConfig(
        run_dir=m["run_dir"], data=data, start_step=w["start_step"], end_step=w["end_step"], train_until=train_until,
        heads=heads, out_dir=os.path.join(out, "interventions"), eval_every=iv["eval_every"], top_frac=iv["top_frac"],
        arms=list(iv["arms"]), seeds=list(iv["seeds"]), score_column=0, threshold=loc["threshold"],
        localize_seq_len=loc["seq_len"], localize_n=loc["n"], localize_seed=loc["seed"], probe_L=t["probe_L"],
        probe_n=t["probe_n"], probe_seed=t["probe_seed"], low=t["probe_low"], high=t["probe_high"] or None,
        n_heldout=max(1, min(256, cfg["corpus"]["heldout_sequences"])), device="cpu" if device_of(cfg).type == "cpu" else None)
    scores = np.load(os.path.join(d, "scores.npy"), mmap_mode="r")
    gi = np.load(os.path.join(d, "global_index.npy"), mmap_mode="r")
    return run_interventions(icfg, np.asarray(scores), np.asarray(gi), progress=progress)

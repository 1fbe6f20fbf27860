"""The stages behind the ``mda-fast`` CLI: localize → fit → score → analyze → report (and the demo).

Every stage reads a ``Config`` (``mda_fast.config``) and reads/writes a fixed layout under ``out``:

    out/localize/localize.json, localize.csv, emergence.png     out/targets.json
    out/factors/factors.safetensors, factors.json
    out/score/scores.npy (float32 memmap [n_samples, n_targets]), global_index.npy, step.npy, position.npy,
              loss.npy, targets.json, progress.json
    out/analyze/analysis.json, top.csv                         out/report.html

``localize``, ``fit`` and ``analyze`` build their directory beside its final name and swap it in when done
(``outputs.atomic_dir``), so a failed stage leaves nothing half-written. ``score`` writes in chunks and records
its progress, so an interrupted run resumes (``--resume``) without losing or duplicating a sample; its
fingerprint covers the factors, the targets, the data and every config value that changes a score.
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
from .study.findings import findings, findings_text, intervention_findings  # noqa: F401 (re-exported)
from .checks import SCORE_FILES, checkpoint_ref, device_of, open_data, require_complete_scores
from .config import Config
from .ekfac import Factors, fit_ekfac
from .errors import ConfigError, NonFiniteError, StateError
from .heads import HeadSpec, check_spec
from .influence import InfluenceScorer
from .localize import localize_all
from .model import load_pythia
from .outputs import atomic_dir, read_json, write_json

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}

__all__ = ["run_localize", "run_fit", "run_score", "run_analyze", "run_report", "run_intervene", "open_data", "checkpoint_ref", "device_of", "load_model",
           "SCORE_ARRAYS", "shard_range", "score_dir", "score_window", "score_fingerprint", "load_targets"]


def load_model(cfg: Config, step: int | None = None):
    name, rev = checkpoint_ref(cfg, step)
    return load_pythia(name, revision=rev, dtype=DTYPES[cfg.model.dtype], device=device_of(cfg),
                       attn_implementation=cfg.model.attn_implementation)


def localize_checkpoints(cfg: Config) -> list:
    """[(label step, name_or_path, revision)] of the checkpoints to localize.

    ``model.run_dir``: its ``step<k>/`` checkpoints (or ``localize.steps``). A hub name: ``localize.revisions`` or a
    Pythia-like default list. A local model directory is one checkpoint (revisions do not apply): it is
    localized once, labelled with ``model.revision``'s step if that reads ``step<k>``, else the window end.
    """
    m, loc = cfg.model, cfg.localize
    if m.run_dir:
        steps = loc.steps or sorted(int(re.findall(r"step(\d+)$", p)[0])
                                    for p in glob.glob(os.path.join(m.run_dir, "step*")) if re.search(r"step\d+$", p))
        return [(s, *checkpoint_ref(cfg, s)) for s in steps]
    if os.path.isdir(m.name):
        mm = re.fullmatch(r"step(\d+)", m.revision or "")
        return [(int(mm.group(1)) if mm else cfg.window.end_step, m.name, None)]
    revs = loc.revisions or [f"step{s}" for s in [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
                             if s < cfg.window.end_step] + [f"step{cfg.window.end_step}"]
    return [(int(r[4:]), m.name, r) for r in revs]


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


def run_localize(cfg: Config, out: str, progress: bool = True) -> dict:
    loc = cfg.localize
    ckpts = localize_checkpoints(cfg)
    if not ckpts:
        raise StateError(f"localize: no checkpoints found in model.run_dir {cfg.model.run_dir!r} (expected step<k>/)")
    steps, per = [], {"prefix_matching": [], "prev_token": []}
    for step, name, rev in tqdm(ckpts, desc="localize checkpoints", unit="ckpt", disable=not progress):
        model = load_pythia(name, revision=rev, dtype=torch.float32, device=device_of(cfg))
        res = localize_all(model, seq_len=loc.seq_len, n=loc.n, seed=loc.seed, batch_size=loc.batch_size,
                           low=loc.low, high=loc.high or None)
        for k in per:
            v = res[k].numpy()
            if not np.isfinite(v).all():
                raise NonFiniteError(f"localize: non-finite {k} scores at checkpoint {name}"
                                     + (f"@{rev}" if rev else "") + "; expected finite weights")
            per[k].append(v)
        steps.append(step)
    scores = {k: np.stack(v) for k, v in per.items()}
    em = emergence_steps(steps, scores[loc.metric], loc.threshold)
    result = {"steps": steps, "scores": scores, "threshold": loc.threshold, "metric": loc.metric,
              "emergence_step": em, "checkpoints": [f"{n}@{r}" if r else n for _, n, r in ckpts],
              "single_checkpoint": len(ckpts) == 1}
    final = scores[loc.metric][-1]
    order = np.dstack(np.unravel_index(np.argsort(-final, axis=None), final.shape))[0]
    result["ranking"] = [[int(L), int(h), float(final[L, h])] for L, h in order]
    if len(ckpts) == 1:
        print(f"[localize] one checkpoint ({result['checkpoints'][0]}): head scores without a history; emergence "
              f"steps need several checkpoints (model.run_dir with step<k>/, or hub revisions)")
    from .plots import emergence_png, save_png

    with atomic_dir(os.path.join(out, "localize")) as d:
        write_json(os.path.join(d, "localize.json"), result)
        with open(os.path.join(d, "localize.csv"), "w") as fh:
            fh.write("step,layer,head,prefix_matching,prev_token\n")
            for i, s in enumerate(steps):
                for L in range(final.shape[0]):
                    for h in range(final.shape[1]):
                        fh.write(f"{s},{L},{h},{scores['prefix_matching'][i, L, h]:.6f},"
                                 f"{scores['prev_token'][i, L, h]:.6f}\n")
        save_png(emergence_png({**result, "heads": [r[:2] for r in result["ranking"][:cfg.targets.n_induction]]}),
                 os.path.join(d, "emergence.png"))
    return result


# ---- targets ------------------------------------------------------------------------------------------------
def resolve_targets(cfg: Config, model) -> dict:
    """Target heads (induction + control) and specs; 'auto' reads the localization at the window end."""
    t, loc = cfg.targets, cfg.localize
    if t.heads == "auto":
        with torch.no_grad():
            res = localize_all(model, seq_len=loc.seq_len, n=loc.n, seed=loc.seed, low=loc.low,
                               high=loc.high or None)
        pm, pt = res["prefix_matching"], res["prev_token"]
        H = pm.shape[1]
        ind = [(int(i) // H, int(i) % H) for i in torch.argsort(pm.flatten(), descending=True)[:t.n_induction]]
        ctrl = [(int(i) // H, int(i) % H) for i in torch.argsort(pt.flatten(), descending=True)
                if (int(i) // H, int(i) % H) not in ind][:t.n_control]
        heads = [{"layer": L, "head": h, "role": "induction", "prefix_matching": float(pm[L, h]),
                  "prev_token": float(pt[L, h])} for L, h in ind]
        heads += [{"layer": L, "head": h, "role": "control", "prefix_matching": float(pm[L, h]),
                   "prev_token": float(pt[L, h])} for L, h in ctrl]
    else:
        heads = [{"layer": int(L), "head": int(h), "role": "given"} for L, h in t.heads]
    specs = [HeadSpec(x["layer"], x["head"], t.mode, t.bias) for x in heads]
    for s in specs:
        check_spec(model, s)
    return {"heads": heads, "specs": [[s.layer, s.head, s.mode, s.bias] for s in specs]}


def load_targets(out: str) -> tuple[dict, list]:
    t = read_json(os.path.join(out, "targets.json"), "run `mda-fast fit` first (it chooses the target heads)")
    try:
        return t, [HeadSpec(L, h, m, b) for L, h, m, b in t["specs"]]
    except (KeyError, TypeError, ValueError) as e:
        raise StateError(f"{os.path.join(out, 'targets.json')} is damaged ({e}); re-run `mda-fast fit`") from None


def probe_kwargs(cfg: Config, probe: str | None = None) -> dict:
    return cfg.probe_kwargs(probe)


def make_probes(cfg: Config) -> list:
    """The configured probes, each built with its own keyword arguments."""
    from .probes import get_probe

    return [get_probe(p, **cfg.probe_kwargs(p)) for p in cfg.targets.probes]


# ---- fit ----------------------------------------------------------------------------------------------------
def run_fit(cfg: Config, out: str, progress: bool = True) -> Factors:
    data = open_data(cfg)
    model = load_model(cfg)
    targets = resolve_targets(cfg, model)
    specs = [HeadSpec(L, h, m, b) for L, h, m, b in targets["specs"]]
    f, w = cfg.fit, cfg.window
    n_window = (w.end_step - w.start_step) * data.batch_size
    rng = np.random.default_rng(f.seed)
    pick = np.sort(rng.choice(n_window, size=min(f.n_sequences, n_window), replace=False)) + w.start_step * data.batch_size
    dev = next(model.parameters()).device
    batches = [torch.from_numpy(data.rows(pick[i:i + f.batch_size]).astype(np.int64)).to(dev)
               for i in range(0, len(pick), f.batch_size)]
    name, rev = checkpoint_ref(cfg)
    factors = fit_ekfac(model, specs, batches, fisher=f.fisher, method=f.method, damping=f.damping,
                        seed=f.seed, progress=progress, model_name=name, revision=rev)
    factors.meta["fit_indices"] = f"{len(pick)} sequences sampled from window {w.start_step}..{w.end_step} (seed {f.seed})"
    factors.meta["targets"] = targets["heads"]
    with atomic_dir(os.path.join(out, "factors")) as d:
        factors.save(d)
    write_json(os.path.join(out, "targets.json"), targets)
    return factors


# ---- score --------------------------------------------------------------------------------------------------
def file_digest(path: str, limit: int | None = None) -> str:
    """sha256 of a file (of its first ``limit`` bytes and its size, when ``limit`` is given)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        left = limit
        while True:
            block = fh.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
                if left <= 0:
                    break
    h.update(str(os.path.getsize(path)).encode())
    return h.hexdigest()


def _data_identity(path: str) -> list:
    """Sizes of the data files behind ``data.path`` (a replaced or regenerated data set changes them)."""
    base = path[:-4] if path.endswith((".idx", ".bin")) else path
    files = sorted(glob.glob(base + ".idx") + glob.glob(base + "*.bin") + glob.glob(base) + glob.glob(base + ".npy"))
    return [[os.path.basename(p), os.path.getsize(p)] for p in files if os.path.isfile(p)]


def _checkpoint_identity(cfg: Config) -> list:
    name, rev = checkpoint_ref(cfg)
    if os.path.isdir(name):
        weights = sorted(glob.glob(os.path.join(name, "*.safetensors")) + glob.glob(os.path.join(name, "*.bin")))
        return [name, rev, [file_digest(p, limit=16 << 20) for p in weights]]
    return [name, rev]


def score_fingerprint(cfg: Config, out: str, target_names, shard: tuple[int, int] | None = None) -> str:
    """What makes two scoring runs' rows interchangeable: the factors and targets files (their hashes), the
    checkpoint, the data, and every config value that changes a score (the device does not: any device's scores
    agree within rounding)."""
    m = {k: v for k, v in cfg.to_dict()["model"].items() if k != "device"}
    key = json.dumps([
        m, _checkpoint_identity(cfg), cfg.data.path, cfg.data.batch_size, cfg.data.seq_len,
        _data_identity(cfg.data.path), cfg.to_dict()["window"], cfg.to_dict()["targets"], cfg.score.limit_steps,
        cfg.score.tf32, cfg.score.backend, cfg.score.batch_size, list(target_names),
        file_digest(os.path.join(out, "factors", "factors.safetensors")),
        file_digest(os.path.join(out, "factors", "factors.json")), file_digest(os.path.join(out, "targets.json")),
    ] + ([list(shard)] if shard else []), sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


SCORE_ARRAYS = {"scores": np.float32, "global_index": np.int64, "step": np.int64, "position": np.int64,
                "loss": np.float32}
assert tuple(SCORE_ARRAYS) == SCORE_FILES


def score_window(cfg: Config, batch_size: int) -> tuple[int, int]:
    """(first global row index, number of rows) of the scored window (``score.limit_steps`` applied)."""
    w, s = cfg.window, cfg.score
    end = w.end_step if not s.limit_steps else min(w.end_step, w.start_step + s.limit_steps)
    return w.start_step * batch_size, (end - w.start_step) * batch_size


def shard_range(n_steps: int, batch_size: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Window rows ``[lo, hi)`` of shard ``i`` of ``k``: whole training steps, contiguous, step counts differing
    by at most one (so every shard reads whole steps and scores the same batches as a single run would)."""
    i, k = shard
    if k > n_steps:
        raise ConfigError(f"cannot split a window of {n_steps} steps into {k} shards; use at most {n_steps}")
    return i * n_steps // k * batch_size, (i + 1) * n_steps // k * batch_size


def score_dir(out: str, shard: tuple[int, int] | None = None) -> str:
    d = os.path.join(out, "score")
    return d if shard is None else os.path.join(d, "shards", f"{shard[0]}-of-{shard[1]}")


def _open_arrays(files: dict, n: int, n_targets: int, resume: bool) -> dict:
    if resume:
        arrays = {}
        for k, p in files.items():
            try:
                arrays[k] = np.load(p, mmap_mode="r+")
            except (OSError, ValueError) as e:
                raise StateError(f"--resume: {p} is missing or damaged ({e}); score into a fresh --out") from None
            want = (n, n_targets) if k == "scores" else (n,)
            if arrays[k].shape != want:
                raise StateError(f"--resume: {p} has shape {arrays[k].shape}, expected {want}; score into a fresh --out")
        return arrays
    return {k: np.lib.format.open_memmap(files[k], mode="w+", dtype=dt, shape=(n, n_targets) if k == "scores" else (n,))
            for k, dt in SCORE_ARRAYS.items()}


def run_score(cfg: Config, out: str, resume: bool = False, progress: bool = True,
              shard: tuple[int, int] | None = None) -> dict:
    """Stream the window and write scores in chunks; ``resume`` continues after the last completed chunk.

    Each chunk's rows are written to the memmap and flushed before ``progress.json`` is atomically replaced, so
    an interruption loses at most the chunk in flight, which a resume recomputes (scores are deterministic).
    ``shard=(i, k)`` scores only the i-th of k contiguous parts of the window into ``score/shards/i-of-k/``
    (one process per device; ``mda_fast.shards`` launches them and merges the parts). Every batch's scores are
    checked for non-finite values before they are written.
    """
    if shard is not None:
        i, k = shard
        if not (isinstance(i, int) and isinstance(k, int) and 0 <= i < k):
            raise ConfigError(f"shard must be (i, k) with 0 <= i < k, got {shard!r}")
    data = open_data(cfg)
    s = cfg.score
    B = data.batch_size
    first, n_window = score_window(cfg, B)
    lo_all, hi_all = (0, n_window) if shard is None else shard_range(n_window // B, B, shard)
    _, specs = load_targets(out)
    probes = make_probes(cfg)
    target_names = [f"{sp.name}:{p.name}" for sp in specs for p in probes]
    n = hi_all - lo_all
    d = score_dir(out, shard)
    fp = score_fingerprint(cfg, out, target_names, shard)
    prog_path = os.path.join(d, "progress.json")
    files = {k: os.path.join(d, f"{k}.npy") for k in SCORE_ARRAYS}
    resume = resume and os.path.exists(prog_path)
    if resume:  # refused before any model is loaded
        prog = read_json(prog_path)
        if prog.get("fingerprint") != fp:
            raise StateError(f"--resume: {d} was written with other factors, targets, data or score settings "
                             f"(fingerprint {prog.get('fingerprint')} != {fp}); score into a fresh --out, or drop "
                             f"--resume to start over")
    model = load_model(cfg)
    factors = Factors.load(os.path.join(out, "factors"), device=next(model.parameters()).device)
    scorer = InfluenceScorer(model, specs, factors, probe=probes, backend=s.backend or None, tf32=s.tf32)
    if scorer.target_names != target_names:
        raise StateError(f"score: the scorer's targets {scorer.target_names} differ from {target_names}")
    done = 0
    if resume:
        done = int(prog["n_done"])
        arrays = _open_arrays(files, n, scorer.n_targets, resume=True)
    else:
        os.makedirs(d, exist_ok=True)
        arrays = _open_arrays(files, n, scorer.n_targets, resume=False)
        write_json(prog_path, {"n_done": 0, "n_total": n, "fingerprint": fp})
    write_json(os.path.join(d, "targets.json"), {"target_names": scorer.target_names,
                                                  "probe_values": scorer.probe_values})
    dev = next(model.parameters()).device
    chunk = max(s.chunk, s.batch_size)
    T = data.seq_len - 1
    t0, start_done = time.perf_counter(), done
    desc = "score" if shard is None else f"score {shard[0]}/{shard[1]}"
    bar = tqdm(total=n, initial=done, desc=desc, unit="seq", disable=not progress, dynamic_ncols=True)
    while done < n:
        lo, hi = done, min(done + chunk, n)
        g = np.arange(lo, hi) + lo_all + first
        rows = data.rows(g)
        for i in range(0, hi - lo, s.batch_size):
            ids = torch.from_numpy(rows[i:i + s.batch_size].astype(np.int64)).to(dev)
            sc, loss = scorer.score(ids, return_loss=True, rows=[int(x) for x in g[i:i + len(ids)]])
            sc, loss = sc.float().cpu().numpy(), loss.float().cpu().numpy()
            if not (np.isfinite(sc).all() and np.isfinite(loss).all()):
                bad = int(g[i + np.nonzero(~(np.isfinite(sc).all(1) & np.isfinite(loss)))[0][0]])
                raise NonFiniteError(f"score: non-finite score or loss for sequence {bad} (step {bad // B}, position "
                                     f"{bad % B}) in the chunk of rows {g[0]}..{g[-1]}; expected finite values "
                                     f"(check the model's weights and the data)")
            j = lo + i
            arrays["scores"][j:j + len(ids)] = sc
            arrays["loss"][j:j + len(ids)] = loss
            bar.update(len(ids))
            rate = bar.format_dict.get("rate") or 0.0
            bar.set_postfix(tok_s=f"{rate * T:.3g}")
        arrays["global_index"][lo:hi] = g
        arrays["step"][lo:hi] = g // B
        arrays["position"][lo:hi] = g % B
        for a in arrays.values():
            a.flush()
        done = hi
        write_json(prog_path, {"n_done": done, "n_total": n, "fingerprint": fp})
    bar.close()
    elapsed = max(time.perf_counter() - t0, 1e-9)
    return {"n_scored": n, "scores_path": files["scores"], "target_names": scorer.target_names,
            "seq_per_s": (n - start_done) / elapsed, "fingerprint": fp}


# ---- analyze ------------------------------------------------------------------------------------------------
def run_analyze(cfg: Config, out: str, progress: bool = True) -> dict:
    from .data import get_decoder
    from .data.synthetic import load_category_sidecar

    require_complete_scores(out)
    d = os.path.join(out, "score")
    arr = {}
    for k in SCORE_FILES:
        try:
            arr[k] = np.asarray(np.load(os.path.join(d, f"{k}.npy"), mmap_mode="r"))
        except (OSError, ValueError) as e:
            raise StateError(f"{os.path.join(d, k + '.npy')} is damaged ({e}); re-run `mda-fast score`") from None
    if not np.isfinite(arr["scores"]).all():
        raise NonFiniteError(f"{os.path.join(d, 'scores.npy')} holds non-finite scores; re-run `mda-fast score`")
    names = read_json(os.path.join(d, "targets.json"))["target_names"]
    data = open_data(cfg)
    side = load_category_sidecar(cfg.data.path)
    cats, cat_names = (None, None) if side is None else side
    try:
        decode = get_decoder(cfg.data.tokenizer)
    except Exception as e:  # noqa: BLE001 - the hub may be unreachable: keep the analysis, drop the snippets
        print(f"[analyze] no text snippets: tokenizer {cfg.data.tokenizer!r} unavailable ({type(e).__name__})")
        decode = None
    a = cfg.analyze
    with atomic_dir(os.path.join(out, "analyze")) as tmp:
        res = ana.analyze(arr["scores"], names, global_index=arr["global_index"], step=arr["step"],
                          position=arr["position"], loss=arr["loss"], category_fractions=cats,
                          category_names=cat_names, top_fraction=a.top_frac, table_k=a.table_k,
                          row_tokens=lambda gi: data.rows(np.array([gi]))[0], decode=decode,
                          snippet_tokens=a.snippet_tokens, out_dir=tmp, progress=progress)
    final = os.path.join(out, "analyze")
    res["files"] = {k: os.path.join(final, os.path.basename(v)) for k, v in res.get("files", {}).items()}
    return res


# ---- report -------------------------------------------------------------------------------------------------
def provenance(cfg: Config) -> dict:
    import transformers

    from . import __version__
    try:
        from .kernels import available_backends
        backends = available_backends()
    except Exception as e:  # noqa: BLE001
        backends = f"unavailable ({e})"
    try:
        ckpt = "@".join(x for x in checkpoint_ref(cfg) if x)
    except ConfigError:
        ckpt = "n/a"
    return {"mda_fast": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "machine": platform.platform(), "device": str(device_of(cfg)),
            "kernel backends": backends, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "checkpoint": ckpt}


def run_report(cfg: Config, out: str, interventions: dict | None = None, notes=None) -> str:
    from .report import write_report

    a_path = os.path.join(out, "analyze", "analysis.json")
    analysis = read_json(a_path, "nothing has been analysed; run `mda-fast analyze` first")
    loc_path = os.path.join(out, "localize", "localize.json")
    emergence = read_json(loc_path) if os.path.exists(loc_path) else None
    t_path = os.path.join(out, "targets.json")
    targets = read_json(t_path) if os.path.exists(t_path) else None
    if emergence is not None and targets is not None:
        emergence["heads"] = [[h["layer"], h["head"]] for h in targets["heads"]]
    top_path = os.path.join(out, "analyze", "top.csv")
    top = ana.read_table_csv(top_path) if os.path.exists(top_path) else None
    i_path = os.path.join(out, "interventions", "interventions.json")
    if interventions is None and os.path.exists(i_path):
        interventions = read_json(i_path)
    if notes is None and targets is not None:
        notes = findings_text(findings(analysis, targets))
    path = os.path.join(out, "report.html")
    return write_report(path, title=cfg.report.title, config=cfg.to_dict(), provenance=provenance(cfg),
                        emergence=emergence, analysis=analysis, top_samples=top, interventions=interventions,
                        notes=notes, eod_marker="<|eod|>" if cfg.data.tokenizer == "bytes" else "<|endoftext|>")


# ---- intervene ----------------------------------------------------------------------------------------------
def run_intervene(cfg: Config, out: str, progress: bool = True) -> dict:
    """Deletion / augmentation arms for the target heads (``mda_fast.interventions``) from ``out``'s scores."""
    from .interventions import InterventionConfig, run_interventions

    m, w, iv, loc, t = cfg.model, cfg.window, cfg.intervene, cfg.localize, cfg.targets
    if not m.run_dir:
        raise ConfigError("intervene needs model.run_dir: a mda-fast training run whose checkpoints hold the "
                          "optimizer state (published Pythia checkpoints do not)")
    targets, _ = load_targets(out)
    heads = [(h["layer"], h["head"]) for h in targets["heads"] if h["role"] != "control"]
    require_complete_scores(out)
    d = os.path.join(out, "score")
    data = open_data(cfg)
    train_until = min(w.end_step + iv.train_after, data.n_steps - -(-cfg.corpus.heldout_sequences // data.batch_size))
    icfg = InterventionConfig(
        run_dir=m.run_dir, data=data, start_step=w.start_step, end_step=w.end_step, train_until=train_until,
        heads=heads, out_dir=os.path.join(out, "interventions"), eval_every=iv.eval_every, top_frac=iv.top_frac,
        arms=list(iv.arms), seeds=list(iv.seeds), score_column=0, threshold=loc.threshold,
        localize_seq_len=loc.seq_len, localize_n=loc.n, localize_seed=loc.seed, probe_L=t.probe_L,
        probe_n=t.probe_n, probe_seed=t.probe_seed, low=t.probe_low, high=t.probe_high or None,
        n_heldout=max(1, min(256, cfg.corpus.heldout_sequences)), device=str(device_of(cfg)))
    scores = np.load(os.path.join(d, "scores.npy"), mmap_mode="r")
    gi = np.load(os.path.join(d, "global_index.npy"), mmap_mode="r")
    return run_interventions(icfg, np.asarray(scores), np.asarray(gi), progress=progress)

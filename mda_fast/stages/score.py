"""``mda-fast score``: every sequence of the window, streamed in resumable chunks into ``out/score/``.

Each chunk's rows are written to the memmaps and flushed before ``progress.json`` is atomically replaced, so an
interruption loses at most the chunk in flight, which a resume recomputes (scores are deterministic). A resume
continues only rows with the same fingerprint: the factors and targets files, the checkpoint, the data files and
every config value that changes a score.
"""

from __future__ import annotations

import glob
import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config
from ..core.ekfac import Factors
from ..core.influence import InfluenceScorer
from ..dist import fault_point
from ..errors import ConfigError, NonFiniteError, StateError
from ..io import SCORE_ARRAYS, file_digest, fingerprint, read_json, score_dir, write_json
from .inputs import checkpoint_ref, load_model, load_targets, make_probes, open_data


def _data_identity(path: str, fmt: str = "pythia", root: str = "") -> list:
    """Sizes of the data files behind ``data.path`` (a replaced or regenerated data set changes them); for
    ``fmt = "olmo"``, of the list file and every token file it names."""
    if fmt == "olmo":
        from ..data.olmo import read_path_list

        files = [path] + read_path_list(path, root or None)
        return [[os.path.basename(p), os.path.getsize(p) if os.path.isfile(p) else -1] for p in files]
    base = path[:-4] if path.endswith((".idx", ".bin")) else path
    files = sorted(glob.glob(base + ".idx") + glob.glob(base + "*.bin") + glob.glob(base) + glob.glob(base + ".npy"))
    return [[os.path.basename(p), os.path.getsize(p)] for p in files if os.path.isfile(p)]


def _olmo_identity(cfg: Config) -> list:
    """What else fixes OLMo's order: the seed, the epoch, the token dtype, where the files are, the order file."""
    d = cfg.data
    order = [d.olmo_order_file, os.path.getsize(d.olmo_order_file)] if os.path.isfile(d.olmo_order_file) else []
    return [d.format, d.olmo_seed, d.olmo_epoch, d.olmo_dtype, d.olmo_root, order]


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
    return fingerprint(
        [
            m,
            _checkpoint_identity(cfg),
            cfg.data.path,
            cfg.data.batch_size,
            cfg.data.seq_len,
            _data_identity(cfg.data.path, cfg.data.format, cfg.data.olmo_root),
        ]
        + ([_olmo_identity(cfg)] if cfg.data.format == "olmo" else [])
        + [
            cfg.to_dict()["window"],
            cfg.to_dict()["targets"],
            cfg.score.limit_steps,
            cfg.score.tf32,
            cfg.score.backend,
            cfg.score.batch_size,
            list(target_names),
            file_digest(os.path.join(out, "factors", "factors.safetensors")),
            file_digest(os.path.join(out, "factors", "factors.json")),
            file_digest(os.path.join(out, "targets.json")),
        ]
        + ([list(shard)] if shard else [])
    )


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
                raise StateError(
                    f"--resume: {p} has shape {arrays[k].shape}, expected {want}; score into a fresh --out"
                )
        return arrays
    return {
        k: np.lib.format.open_memmap(files[k], mode="w+", dtype=dt, shape=(n, n_targets) if k == "scores" else (n,))
        for k, dt in SCORE_ARRAYS.items()
    }


def run_score(
    cfg: Config, out: str, resume: bool = False, progress: bool = True, shard: tuple[int, int] | None = None
) -> dict:
    """Stream the window and write scores in chunks; ``resume`` continues after the last completed chunk.

    ``shard=(i, k)`` scores only the i-th of k contiguous parts of the window into ``score/shards/i-of-k/`` (one
    process per device; ``stages.shards`` launches them and merges the parts). Every batch's scores are checked
    for non-finite values before they are written. A resume with another fingerprint is refused before any model
    is loaded.
    """
    if shard is not None and not (isinstance(shard[0], int) and isinstance(shard[1], int) and 0 <= shard[0] < shard[1]):
        raise ConfigError(f"shard must be (i, k) with 0 <= i < k, got {shard!r}")
    data = open_data(cfg)
    first, n_window = score_window(cfg, data.batch_size)
    lo_all, hi_all = (
        (0, n_window) if shard is None else shard_range(n_window // data.batch_size, data.batch_size, shard)
    )
    _, specs = load_targets(out)
    probes = make_probes(cfg)
    target_names = [f"{sp.name}:{p.name}" for sp in specs for p in probes]
    d = score_dir(out, shard)
    fp = score_fingerprint(cfg, out, target_names, shard)
    prog_path = os.path.join(d, "progress.json")
    prog = _resumed_progress(d, prog_path, fp) if resume else None
    scorer = _make_scorer(cfg, out, specs, probes, target_names)
    n = hi_all - lo_all
    files = {k: os.path.join(d, f"{k}.npy") for k in SCORE_ARRAYS}
    if prog is None:
        os.makedirs(d, exist_ok=True)
    arrays = _open_arrays(files, n, scorer.n_targets, resume=prog is not None)
    if prog is None:
        write_json(prog_path, {"n_done": 0, "n_total": n, "fingerprint": fp})
    write_json(
        os.path.join(d, "targets.json"), {"target_names": scorer.target_names, "probe_values": scorer.probe_values}
    )
    done = int(prog["n_done"]) if prog is not None else 0
    t0 = time.perf_counter()
    desc = "score" if shard is None else f"score {shard[0]}/{shard[1]}"
    with tqdm(total=n, initial=done, desc=desc, unit="seq", disable=not progress, dynamic_ncols=True) as bar:
        for lo in range(done, n, max(cfg.score.chunk, cfg.score.batch_size)):
            hi = min(lo + max(cfg.score.chunk, cfg.score.batch_size), n)
            _score_chunk(scorer, data, cfg, arrays, lo, np.arange(lo, hi) + lo_all + first, bar)
            write_json(prog_path, {"n_done": hi, "n_total": n, "fingerprint": fp})
            fault_point(shard)
    elapsed = max(time.perf_counter() - t0, 1e-9)
    return {
        "n_scored": n,
        "scores_path": files["scores"],
        "target_names": scorer.target_names,
        "seq_per_s": (n - done) / elapsed,
        "fingerprint": fp,
    }


def _resumed_progress(d: str, prog_path: str, fp: str) -> dict | None:
    """The progress record a ``--resume`` continues (``None`` when there is none); ``StateError`` when it was
    written with another fingerprint."""
    prog = read_json(prog_path) if os.path.exists(prog_path) else None
    if prog is not None and prog.get("fingerprint") != fp:
        raise StateError(
            f"--resume: {d} was written with other factors, targets, data or score settings "
            f"(fingerprint {prog.get('fingerprint')} != {fp}); score into a fresh --out, or drop "
            f"--resume to start over"
        )
    return prog


def _make_scorer(cfg: Config, out: str, specs, probes, target_names: list) -> InfluenceScorer:
    """The model, its factors from ``out/factors`` and the scorer, checked to score ``target_names``."""
    model = load_model(cfg)
    factors = Factors.load(os.path.join(out, "factors"), device=next(model.parameters()).device)
    scorer = InfluenceScorer(
        model, specs, factors, probe=probes, backend=cfg.score.backend or None, tf32=cfg.score.tf32
    )
    if scorer.target_names != target_names:
        raise StateError(f"score: the scorer's targets {scorer.target_names} differ from {target_names}")
    return scorer


def _score_chunk(scorer, data, cfg: Config, arrays: dict, lo: int, g: np.ndarray, bar) -> None:
    """Score the rows with global indices ``g`` into ``arrays[lo:lo + len(g)]`` and flush them."""
    B, bs = data.batch_size, cfg.score.batch_size
    rows = data.rows(g)
    dev = next(scorer.model.parameters()).device
    for i in range(0, len(g), bs):
        ids = torch.from_numpy(rows[i : i + bs].astype(np.int64)).to(dev)
        sc, loss = scorer.score(ids, return_loss=True, rows=[int(x) for x in g[i : i + len(ids)]])
        sc, loss = sc.float().cpu().numpy(), loss.float().cpu().numpy()
        if not (np.isfinite(sc).all() and np.isfinite(loss).all()):
            bad = int(g[i + np.nonzero(~(np.isfinite(sc).all(1) & np.isfinite(loss)))[0][0]])
            raise NonFiniteError(
                f"score: non-finite score or loss for sequence {bad} (step {bad // B}, position "
                f"{bad % B}) in the chunk of rows {g[0]}..{g[-1]}; expected finite values "
                f"(check the model's weights and the data)"
            )
        arrays["scores"][lo + i : lo + i + len(ids)] = sc
        arrays["loss"][lo + i : lo + i + len(ids)] = loss
        bar.update(len(ids))
        bar.set_postfix(tok_s=f"{(bar.format_dict.get('rate') or 0.0) * (data.seq_len - 1):.3g}")
    arrays["global_index"][lo : lo + len(g)] = g
    arrays["step"][lo : lo + len(g)] = g // B
    arrays["position"][lo : lo + len(g)] = g % B
    for a in arrays.values():
        a.flush()

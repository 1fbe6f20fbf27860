"""``mda-fast categorize``: content categories for the scored rows of a corpus without a category sidecar, into
``out/categories/`` (also run by ``analyze`` when ``data.path`` has no sidecar and ``categorize.auto`` is on).

Which rows: the top and bottom ``analyze.top_frac`` of the primary target's scores (of every target's with
``categorize.targets = "all"``), ranked as ``analyze`` ranks them, in full; and a seeded uniform random sample of
``categorize.sample_rows`` rows of the window for the base rates (every row with 0). Each row is decoded with
``data.tokenizer``, split at EOD and classified piece by piece (:mod:`mda_fast.data.row_categories`).

Work is cut into chunks of ``categorize.chunk`` rows, classified by ``categorize.workers`` processes (every core by
default) and written to ``out/categories.partial/`` as they finish; a rerun with the same plan continues from the
chunks on disk (a different plan — other scores, sample, tokenizer or classifier version — starts over and says so).
The finished result replaces ``out/categories/`` at once:

* ``window.categories.npy`` / ``.json``: the category sidecar (:mod:`mda_fast.data.categories`) of the classified
  rows, float32 ``[n_classified, n_categories]``, with the classifier's version and settings, the tokenizer, the
  plan and the sets' sizes in the JSON;
* ``rows.npy``: the global index of each sidecar row (sorted); ``sample.npy``: the global indices of the random
  sample (the base-rate rows).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import time
from typing import Optional

import numpy as np

from ..config import Config
from ..errors import DataError, StateError
from ..io import atomic_dir, atomic_file, fingerprint, read_json, write_json

logger = logging.getLogger(__name__)

__all__ = ["CATEGORIES_DIR", "plan_rows", "run_categorize", "load_categorized", "check_tokenizer", "aligned"]

CATEGORIES_DIR = "categories"
PREFIX = "window"


def check_tokenizer(cfg: Config):
    """``data.tokenizer`` loaded, or a ``DataError`` saying why categorize cannot decode the rows."""
    from ..data import get_tokenizer

    try:
        return get_tokenizer(cfg.data.tokenizer)
    except Exception as e:  # noqa: BLE001 - any failure to load is the same bad input
        raise DataError(
            f"data.tokenizer {cfg.data.tokenizer!r} cannot be loaded ({' '.join(str(e).split())[:200]}); "
            f"categorize decodes the rows with it: expected bytes, a tokenizer.json path or a cached hub name"
        ) from None


def plan_rows(cfg: Config, out: str) -> dict:
    """``{"rows", "top", "bottom", "sample"}`` (sorted global indices) and ``"k"``, ``"n_window"``, ``"targets"``."""
    from ..study.stats import ranking, top_count

    d = os.path.join(out, "score")
    gi = np.asarray(np.load(os.path.join(d, "global_index.npy"), mmap_mode="r"), dtype=np.int64)
    scores = np.load(os.path.join(d, "scores.npy"), mmap_mode="r")
    names = read_json(os.path.join(d, "targets.json"))["target_names"]
    cols = range(scores.shape[1]) if cfg.categorize.targets == "all" else range(1)
    n = gi.size
    k = top_count(n, cfg.analyze.top_frac)
    top, bottom = [], []
    for j in cols:
        order = ranking(np.asarray(scores[:, j], dtype=np.float64))
        top.append(gi[order[:k]])
        bottom.append(gi[order[-k:]])
    m = cfg.categorize.sample_rows
    rng = np.random.default_rng([cfg.categorize.seed, 0xCA7])
    sample = np.sort(gi) if m == 0 or m >= n else np.sort(rng.choice(gi, size=m, replace=False))
    top_u, bottom_u = np.unique(np.concatenate(top)), np.unique(np.concatenate(bottom))
    rows = np.unique(np.concatenate([top_u, bottom_u, sample]))
    return {
        "rows": rows,
        "top": top_u,
        "bottom": bottom_u,
        "sample": sample,
        "k": k,
        "n_window": n,
        "targets": [names[j] for j in cols],
    }


def _plan_id(cfg: Config, plan: dict, eod_id: int) -> str:
    from ..data.content import CATEGORIES, CLASSIFIER_VERSION, SETTINGS

    return fingerprint(
        {
            "rows": fingerprint(plan["rows"].tolist()),
            "classifier": [CLASSIFIER_VERSION, SETTINGS, CATEGORIES],
            "tokenizer": cfg.data.tokenizer,
            "eod_id": eod_id,
            "data": [os.path.abspath(cfg.data.path), cfg.data.seq_len],
            "chunk": cfg.categorize.chunk,
        }
    )


# ------------------------------------------------------------------------------------------------- the workers

_STATE: dict = {}


def _init_worker(cfg: Config) -> None:
    """A worker's data (``data.format``'s reader, so a global index names the same row as in ``score``) and
    tokenizer."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from ..data import get_tokenizer
    from .inputs import open_data

    _STATE.update(data=open_data(cfg, check_window=False), tok=get_tokenizer(cfg.data.tokenizer))


def _classify(task):
    from ..data.row_categories import rows_fractions

    i, gi = task
    tok = _STATE["tok"]
    return i, rows_fractions(_STATE["data"].rows(gi), tok.decode, tok.eod_id)


def _workers(cfg: Config, n_chunks: int) -> int:
    w = cfg.categorize.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return max(1, min(int(w or 1), n_chunks))


# ------------------------------------------------------------------------------------------------- the stage


def _done(out: str, plan_id: str) -> bool:
    js = os.path.join(out, CATEGORIES_DIR, PREFIX + ".categories.json")
    return os.path.exists(js) and read_json(js).get("plan_id") == plan_id


def run_categorize(cfg: Config, out: str, progress: bool = True) -> dict:
    """Classify the planned rows (see the module docstring); returns a summary with ``rows_per_s``."""
    from tqdm.auto import tqdm

    from ..data.categories import write_category_sidecar
    from ..data.content import CATEGORIES, classifier_record

    tok = check_tokenizer(cfg)
    plan = plan_rows(cfg, out)
    plan_id = _plan_id(cfg, plan, tok.eod_id)
    final = os.path.join(out, CATEGORIES_DIR)
    if _done(out, plan_id):
        logger.info(f"[categorize] {final} is complete for this plan; nothing to do")
        return {"n_rows": int(plan["rows"].size), "dir": final, "rows_per_s": None, "resumed": True}
    part = os.path.join(out, CATEGORIES_DIR + ".partial")
    pj = os.path.join(part, "plan.json")
    if os.path.isdir(part) and (not os.path.exists(pj) or read_json(pj).get("plan_id") != plan_id):
        logger.info(f"[categorize] {part} holds chunks of another plan; starting over")
        shutil.rmtree(part)
    os.makedirs(part, exist_ok=True)
    write_json(pj, {"plan_id": plan_id, "n_rows": int(plan["rows"].size)})
    c = cfg.categorize.chunk
    chunks = [plan["rows"][i : i + c] for i in range(0, plan["rows"].size, c)]
    todo = [(i, g) for i, g in enumerate(chunks) if not os.path.exists(os.path.join(part, f"{i:06d}.npy"))]
    t0, n_new = time.perf_counter(), sum(g.size for _, g in todo)
    bar = tqdm(total=plan["rows"].size, initial=plan["rows"].size - n_new, unit="row", desc="categorize",
               disable=not progress, smoothing=0.1)  # fmt: skip
    args = (cfg,)
    nw = _workers(cfg, len(todo))
    try:
        if nw == 1:
            _init_worker(*args)
            results = map(_classify, todo)
            _save(results, part, bar)
        else:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(nw, initializer=_init_worker, initargs=args) as pool:
                _save(pool.imap_unordered(_classify, todo), part, bar)
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    fr = np.concatenate([np.load(os.path.join(part, f"{i:06d}.npy")) for i in range(len(chunks))])
    if fr.shape != (plan["rows"].size, len(CATEGORIES)):
        raise StateError(f"{part}: the chunks hold {fr.shape} fractions, expected ({plan['rows'].size}, "
                         f"{len(CATEGORIES)}); remove {part} and rerun")  # fmt: skip
    with atomic_dir(final) as tmp:
        np.save(os.path.join(tmp, "rows.npy"), plan["rows"])
        np.save(os.path.join(tmp, "sample.npy"), plan["sample"])
        write_category_sidecar(
            os.path.join(tmp, PREFIX),
            fr,
            CATEGORIES,
            plan_id=plan_id,
            classifier=classifier_record(),
            tokenizer=cfg.data.tokenizer,
            data_path=cfg.data.path,
            rows_file="rows.npy",
            sample_file="sample.npy",
            sets={"k": plan["k"], "targets": plan["targets"], "top": int(plan["top"].size),
                  "bottom": int(plan["bottom"].size), "sample": int(plan["sample"].size),
                  "n_window": plan["n_window"], "sample_rows": cfg.categorize.sample_rows,
                  "seed": cfg.categorize.seed},
        )  # fmt: skip
    shutil.rmtree(part, ignore_errors=True)
    rate = n_new / dt if dt > 0 and n_new else None
    logger.info(f"[categorize] {plan['rows'].size} rows ({plan['top'].size} top, {plan['bottom'].size} bottom, "
                f"{plan['sample'].size} sampled) -> {final}" + (f" ({rate:.0f} rows/s on {nw} processes)" if rate else ""))  # fmt: skip
    return {"n_rows": int(plan["rows"].size), "dir": final, "rows_per_s": rate, "workers": nw, "resumed": False}


def _save(results, part: str, bar) -> None:
    for i, fr in results:
        with atomic_file(os.path.join(part, f"{i:06d}.npy"), "wb") as fh:
            np.save(fh, fr)
        bar.update(fr.shape[0])


def load_categorized(out: str) -> Optional[dict]:
    """``{"rows", "fractions", "names", "sample", "meta"}`` of ``out/categories/``, or ``None`` when absent."""
    from ..data.categories import load_category_sidecar

    d = os.path.join(out, CATEGORIES_DIR)
    if not os.path.exists(os.path.join(d, PREFIX + ".categories.json")):
        return None
    try:
        fr, names = load_category_sidecar(os.path.join(d, PREFIX))
        rows = np.load(os.path.join(d, "rows.npy"))
        sample = np.load(os.path.join(d, "sample.npy"))
    except (OSError, ValueError, KeyError) as e:
        raise StateError(f"{d} is damaged ({e}); remove it and rerun `mda-fast categorize`") from None
    if rows.shape[0] != fr.shape[0]:
        raise StateError(f"{d}: rows.npy has {rows.shape[0]} rows but the sidecar {fr.shape[0]}; rerun categorize")
    return {"rows": rows, "fractions": fr, "names": names, "sample": sample,
            "meta": read_json(os.path.join(d, PREFIX + ".categories.json"))}  # fmt: skip


def aligned(cat: dict, global_index: np.ndarray) -> np.ndarray:
    """float64 ``[len(global_index), n_categories]``: each scored row's fractions, NaN where it was not classified."""
    gi = np.asarray(global_index, dtype=np.int64)
    out = np.full((gi.size, len(cat["names"])), np.nan)
    pos = np.searchsorted(cat["rows"], gi)
    pos = np.minimum(pos, cat["rows"].size - 1)
    hit = cat["rows"][pos] == gi
    out[hit] = cat["fractions"][pos[hit]]
    return out

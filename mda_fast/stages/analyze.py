"""``mda-fast analyze``: influence statistics of the finished scores into ``out/analyze/`` (``analysis.json``,
``top.csv``), then the per-token influence of the top and bottom rows into ``out/per_token/`` (``stages.per_token``;
``analyze.per_token_k = 0`` skips it)."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..config import Config
from ..errors import DataError, NonFiniteError, StateError
from ..io import SCORE_FILES, atomic_dir, read_json
from .checks import require_complete_scores
from .inputs import open_data
from .per_token import run_per_token

logger = logging.getLogger(__name__)


def run_analyze(cfg: Config, out: str, progress: bool = True) -> dict:
    from ..data import get_decoder
    from ..data.categories import load_category_sidecar
    from ..study.analyze import analyze

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
    cat_kw = {} if side is not None else _categorized(cfg, out, arr["global_index"], progress)
    cat_names = cat_kw.pop("category_names", cat_names)
    try:
        decode = get_decoder(cfg.data.tokenizer)
    except Exception as e:  # noqa: BLE001 - the hub may be unreachable: keep the analysis, drop the snippets
        logger.info(f"[analyze] no text snippets: tokenizer {cfg.data.tokenizer!r} unavailable ({type(e).__name__})")
        decode = None
    a = cfg.analyze
    with atomic_dir(os.path.join(out, "analyze")) as tmp:
        res = analyze(
            arr["scores"],
            names,
            global_index=arr["global_index"],
            step=arr["step"],
            position=arr["position"],
            loss=arr["loss"],
            category_fractions=cats,
            category_names=cat_names,
            bootstrap=cfg.categorize.bootstrap,
            seed=cfg.categorize.seed,
            **cat_kw,
            top_fraction=a.top_frac,
            table_k=a.table_k,
            row_tokens=lambda gi: data.rows(np.array([gi]))[0],
            decode=decode,
            snippet_tokens=a.snippet_tokens,
            out_dir=tmp,
            progress=progress,
        )
    final = os.path.join(out, "analyze")
    res["files"] = {k: os.path.join(final, os.path.basename(v)) for k, v in res.get("files", {}).items()}
    res["per_token"] = run_per_token(cfg, out, progress)
    return res


def _categorized(cfg: Config, out: str, global_index: np.ndarray, progress: bool) -> dict:
    """The keyword arguments of ``analyze`` for content categories from ``out/categories/`` (run first when
    ``categorize.auto``); empty when off, or when ``data.tokenizer`` cannot be loaded (said in one line)."""
    from .categorize import aligned, check_tokenizer, load_categorized, run_categorize

    if not cfg.categorize.auto:
        return {}
    try:
        check_tokenizer(cfg)
    except DataError as e:
        logger.info(f"[analyze] no category enrichment: {e}")
        return {}
    run_categorize(cfg, out, progress=progress)
    cat = load_categorized(out)
    rows = aligned(cat, global_index)
    pos = np.searchsorted(np.asarray(global_index), cat["sample"]) if _sorted(global_index) else None
    if pos is None:
        where = {int(g): i for i, g in enumerate(np.asarray(global_index).tolist())}
        pos = np.array([where[int(g)] for g in cat["sample"]], dtype=np.int64)
    return {"category_rows": rows, "category_names": cat["names"], "category_base": pos}


def _sorted(a) -> bool:
    a = np.asarray(a)
    return bool(a.size < 2 or (np.diff(a) > 0).all())

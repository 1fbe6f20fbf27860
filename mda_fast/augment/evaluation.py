"""The study's evaluation at every checkpoint, and the held-out rows it measures on."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["make_eval", "heldout_rows"]


def _cross_entropy(model, rows: torch.Tensor) -> torch.Tensor:
    """Per-token next-token loss ``[n, T]`` (float64) of ``rows``, in batches of 64."""
    out = []
    dev = next(model.parameters()).device
    n = 64 if rows.shape[1] <= 1024 else 8  # Pythia's 2049-token rows: logits of 8 rows at a time
    for lo in range(0, rows.shape[0], n):
        b = rows[lo : lo + n].to(dev)
        logits = model(input_ids=b[:, :-1], use_cache=False).logits.float()
        out.append(torch.nn.functional.cross_entropy(logits.transpose(1, 2), b[:, 1:], reduction="none").cpu())
    return torch.cat(out).double()


def make_eval(cfg, heldout_any: np.ndarray, heldout_prose: np.ndarray):
    """``eval_fn(model, step)``: best-head prefix matching, every head's score, the ICL score of
    :func:`mda_fast.core.text_probes.icl_score_text` on ``heldout_any`` and the held-out loss on ``heldout_prose``."""
    from ..core.localize import emergence_monitor
    from ..core.text_probes import icl_window

    monitor = emergence_monitor(cfg.localize)
    early_pos, late_pos = icl_window(heldout_any.shape[1] - 1)  # icl_score_text's positions (Olsson et al.'s)
    any_rows, prose_rows = torch.from_numpy(heldout_any), torch.from_numpy(heldout_prose)

    @torch.no_grad()
    def evaluate(model, step):
        pm = monitor(model, step)
        c_any = _cross_entropy(model, any_rows)
        icl = float((c_any[:, late_pos].mean(1) - c_any[:, early_pos].mean(1)).mean())
        return {
            "max_prefix_matching": pm["max_prefix_matching"],
            "prefix_matching": pm["prefix_matching"],
            "icl": icl,
            "heldout_loss": float(_cross_entropy(model, prose_rows).mean()) if prose_rows.shape[0] else None,
        }

    return evaluate


def heldout_rows(cfg, data, prefix: str) -> tuple:
    """(any-category rows, prose rows) after the last training step, ``augment.n_heldout`` of each.

    No run trains beyond ``train.total_steps`` (a preset's base run stops there; a hub size's revisions and arms
    do not go beyond it), so these rows are never trained on. The prose rows come from the synthetic corpus's
    category sidecar; a dataset without one (the Pile) and the real-text corpus (``augment.corpus = "real-text"``:
    all of it is natural text) give the same later rows for both.
    """
    from ..data.synthetic import CATEGORIES, load_category_sidecar

    first = cfg.train.total_steps * data.batch_size
    n = cfg.augment.n_heldout
    if first >= data.n_rows:
        raise ConfigError(f"corpus.heldout_sequences: no rows after step train.total_steps={cfg.train.total_steps}")
    side = None if cfg.augment.corpus == "real-text" else load_category_sidecar(prefix)
    if side is None:
        rows = np.asarray(data.rows(np.arange(first, min(data.n_rows, first + n), dtype=np.int64))).astype(np.int64)
        return rows, rows
    idx = np.arange(first, data.n_rows, dtype=np.int64)
    prose = idx[np.argmax(side[0][idx], 1) == CATEGORIES.index("prose")]
    return (
        np.asarray(data.rows(idx[:n])).astype(np.int64),
        np.asarray(data.rows(prose[:n])).astype(np.int64) if prose.size else np.zeros((0, data.seq_len), np.int64),
    )

"""Localization: every head's prefix-matching or previous-token score in one batched, gradient-free pass."""

from __future__ import annotations

import torch

from .attention import layer_pattern
from .finite import check_model_finite
from .handle import handle
from .probes import PYTHIA_REAL_VOCAB, prefix_matching_pairs, repeated_random_tokens

METRICS = ("prefix_matching", "prev_token")


@torch.no_grad()
def attention_patterns(model, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's attention probabilities ``[N, H, T, T]`` on ``input_ids [N, T]``: one forward of the model,
    the adapter's ``pattern_modules`` outputs captured by hooks, ``attention.layer_pattern`` per layer."""
    h = handle(model)
    adapter, model = h.adapter, h.model
    outputs: dict = {L: {} for L in range(h.shape.n_layers)}
    copy = adapter.copies_hooked_outputs(model)  # a module output the model then changes in place is kept as a copy
    handles = [
        adapter.attention_module(model, L, m).register_forward_hook(
            lambda mod, args, out, L=L, m=m: outputs[L].__setitem__(m, out.clone() if copy else out)
        )
        for L in range(h.shape.n_layers)
        for m in adapter.pattern_modules()
    ]
    try:
        model(input_ids=input_ids, use_cache=False)
    finally:
        for hk in handles:
            hk.remove()
    return [layer_pattern(h, L, outputs[L]) for L in range(h.shape.n_layers)]


@torch.no_grad()
def localize_all(
    model,
    metrics=METRICS,
    seq_len: int = 32,
    n: int = 64,
    seed: int = 0,
    batch_size: int = 32,
    low: int = 4,
    high: int | None = None,
) -> dict[str, torch.Tensor]:
    """{metric: [n_layers, n_heads]} on ``n`` rows of ``seq_len`` random tokens repeated twice.

    ``prefix_matching``: mean attention from each second-copy position i to i−seq_len+1;
    ``prev_token``: mean attention from t to t−1 over t ≥ 1.
    """
    h = handle(model)
    model = h.model
    check_model_finite(model)
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"unknown localization metric {m!r}; expected one of {METRICS}")
    s = h.shape
    if not isinstance(seq_len, int) or seq_len < 2 or 2 * seq_len > s.max_positions:
        raise ValueError(
            f"seq_len must be an int with 2 <= seq_len and 2*seq_len <= context {s.max_positions}, got {seq_len!r}"
        )
    high = high if high is not None else min(s.vocab_size, PYTHIA_REAL_VOCAB)
    device = next(model.parameters()).device
    ids = repeated_random_tokens(n, seq_len, low, high, seed, device)
    totals = {m: torch.zeros(s.n_layers, s.n_heads, dtype=torch.float64) for m in metrics}
    q_pm, k_pm = prefix_matching_pairs(seq_len)
    t = torch.arange(1, 2 * seq_len)
    for start in range(0, n, batch_size):
        for L, pat in enumerate(attention_patterns(h, ids[start : start + batch_size])):
            pat = pat.double().cpu()
            if "prefix_matching" in totals:
                totals["prefix_matching"][L] += pat[:, :, q_pm, k_pm].mean(dim=-1).sum(dim=0)
            if "prev_token" in totals:
                totals["prev_token"][L] += pat[:, :, t, t - 1].mean(dim=-1).sum(dim=0)
    return {m: (v / n).float() for m, v in totals.items()}


def localize(model, metric: str = "prefix_matching", **kwargs) -> torch.Tensor:
    """``[n_layers, n_heads]`` score of every head for one metric; ``kwargs`` are :func:`localize_all`'s
    (``seq_len``, ``n``, ``seed``, ``batch_size``, ``low``, ``high``)."""
    return localize_all(model, (metric,), **kwargs)[metric]


def emergence_monitor(loc):
    """Trainer ``eval_fn``: every head's prefix-matching score at a checkpoint; ``loc``: the config's ``localize``
    section (its ``kwargs()`` are ``localize_all``'s settings)."""

    def evaluate(model, step):
        pm = localize_all(model, ("prefix_matching",), **loc.kwargs())["prefix_matching"]
        return {"prefix_matching": pm.tolist(), "max_prefix_matching": float(pm.max())}

    return evaluate

"""The Pythia / Megatron training loss and AdamW parameter groups.

Loss: inputs ``row[:T]``, labels ``row[1:T+1]`` with ``T = seq_len - 1``; the training loss of a step is
``sum_{rows n} sum_t CE[n, t] / (batch_size * T)``: the mean token cross-entropy of the unmodified batch.
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F

__all__ = ["is_norm", "lm_loss", "param_groups"]


def lm_loss(
    model,
    tokens: torch.Tensor,
    denominator: Optional[float] = None,
    token_weights: Optional[torch.Tensor] = None,
    autocast_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Pythia loss ``sum_{n,t} w[n,t] * CE(logits(row_n[:T])[t], row_n[t+1]) / denominator``.

    ``tokens`` is ``[N, T+1]`` int64; ``token_weights`` ``[N, T]`` (default all ones); ``denominator`` defaults to
    ``N * T`` (mean token cross-entropy). Cross-entropy is computed in fp32 (also under bf16 autocast).
    """
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens: expected shape [N, T+1] with T >= 1, got {tuple(tokens.shape)}")
    n, t = tokens.shape[0], tokens.shape[1] - 1
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    if autocast_dtype is not None:
        with torch.autocast(device_type=tokens.device.type, dtype=autocast_dtype):
            logits = model(input_ids=inputs, use_cache=False).logits
    else:
        logits = model(input_ids=inputs, use_cache=False).logits
    ce = F.cross_entropy(logits.float().reshape(n * t, -1), labels.reshape(-1), reduction="none").view(n, t)
    if token_weights is not None:
        if tuple(token_weights.shape) != (n, t):
            raise ValueError(f"token_weights: expected shape {(n, t)}, got {tuple(token_weights.shape)}")
        ce = ce * token_weights.to(ce.dtype)
    denom = float(n * t) if denominator is None else float(denominator)
    return ce.sum() / denom


_NORMS = tuple(c for c in (torch.nn.LayerNorm, getattr(torch.nn, "RMSNorm", None)) if c is not None)


def is_norm(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer: ``nn.LayerNorm`` / ``nn.RMSNorm`` or a family's own class
    (``LlamaRMSNorm``, ``Olmo2RMSNorm``, ``Qwen3RMSNorm``, ...: HF names them ``*RMSNorm`` / ``*LayerNorm``)."""
    return isinstance(module, _NORMS) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def param_groups(model, weight_decay: float) -> List[dict]:
    """AdamW groups: ``weight_decay`` on every parameter except biases and the weights of norm layers (decay 0):
    LayerNorm and RMSNorm alike, including OLMo-2's and Qwen3's q/k norms (``is_norm``). A tied parameter (GPT-2's
    embedding and LM head) is one parameter, in one group."""
    no_decay_ids = set()
    for mod in model.modules():
        if is_norm(mod):
            no_decay_ids.update(id(p) for p in mod.parameters(recurse=False))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in no_decay_ids or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

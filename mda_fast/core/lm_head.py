"""Fused, chunked LM head + cross-entropy: per-sequence summed loss without materialising ``[N, T, vocab]`` logits.

Scoring needs ``L(z) = Σ_t m_t · CE(W h_t, y_t)`` and its gradient with respect to the hidden states ``h`` (the
head's weights are frozen). For Pythia (vocab 50,304) the full logits of a batch of 2,049-token rows take
gigabytes, and the softmax passes over them dominate the memory traffic. Here the tokens are processed in chunks:
each chunk's logits are formed, reduced to its loss, and turned straight into ``∂L/∂h = m_t (softmax − onehot) W``
during the forward pass; only ``[N, T, d_model]`` is kept for the backward, which rescales it by the incoming
per-sequence gradient. The two GEMMs run in the model's dtype (bf16 tensor cores on a GPU); the softmax, the loss
and the logit gradient are computed in float32 (float64 for float64 models), as in the unfused path.
"""

from __future__ import annotations

import torch

__all__ = ["linear_cross_entropy", "chunk_tokens", "sample_from_logits", "sample_labels"]

# about 16M logits per chunk (64 MB in float32)
_CHUNK_ELEMENTS = 1 << 24


def chunk_tokens(vocab: int, budget: int = _CHUNK_ELEMENTS) -> int:
    """Tokens per chunk so that one chunk's logits hold at most ``budget`` elements (at least 1 token)."""
    return max(1, budget // max(1, int(vocab)))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, mask, chunk):
        N, T, d = hidden.shape
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        h = hidden.reshape(N * T, d)
        y = labels.reshape(N * T)
        m = None if mask is None else mask.reshape(N * T).to(acc)
        W = weight.to(hidden.dtype)
        ce = torch.empty(N * T, dtype=acc, device=hidden.device)
        grad = torch.empty(N * T, d, dtype=hidden.dtype, device=hidden.device)
        for s in range(0, N * T, chunk):
            e = min(s + chunk, N * T)
            logits = (h[s:e] @ W.t()).to(acc)
            yc = y[s:e, None]
            top = logits.amax(dim=-1, keepdim=True)
            target = logits.gather(1, yc) - top
            p = logits.sub_(top).exp_()  # unnormalised softmax, in place of the logits
            total = p.sum(dim=-1, keepdim=True)
            ce[s:e] = (total.log() - target).squeeze(1)  # logsumexp - logit[y]
            p.div_(total).scatter_add_(1, yc, torch.full_like(target, -1.0))  # softmax - onehot
            if m is not None:
                p.mul_(m[s:e, None])
            grad[s:e] = p.to(hidden.dtype) @ W
        if m is not None:
            ce = ce * m
        ctx.save_for_backward(grad)
        ctx.shape = (N, T, d)
        return ce.view(N, T).sum(dim=1)

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        N, T, d = ctx.shape
        g = grad.view(N, T, d) * grad_out.to(grad.dtype)[:, None, None]
        return g, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """``[N]`` summed token cross-entropy of ``logits = hidden @ weightᵀ`` against ``labels``, each token weighted
    by ``mask``; differentiable with respect to ``hidden`` only (``weight`` is treated as frozen).

    Args:
        hidden: ``[N, T, d_model]`` final hidden states (after the final layer norm).
        weight: ``[vocab, d_model]`` unembedding (``model.get_output_embeddings().weight``; GPT-NeoX has no bias).
        labels: ``[N, T]`` integer targets in ``[0, vocab)``.
        mask: optional ``[N, T]`` token weights.
        chunk: tokens per chunk (default: ``chunk_tokens(vocab)``).
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden: expected [N, T, d_model], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[2]:
        raise ValueError(f"weight: expected [vocab, {hidden.shape[2]}], got shape {tuple(weight.shape)}")
    if labels.shape != hidden.shape[:2]:
        raise ValueError(f"labels: expected shape {tuple(hidden.shape[:2])}, got {tuple(labels.shape)}")
    if mask is not None and mask.shape != hidden.shape[:2]:
        raise ValueError(f"mask: expected shape {tuple(hidden.shape[:2])}, got {tuple(mask.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= weight.shape[0]):
        raise ValueError(
            f"labels must lie in [0, {weight.shape[0]}), got range [{int(labels.min())}, {int(labels.max())}]"
        )
    chunk = chunk_tokens(weight.shape[0]) if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk: expected >= 1, got {chunk}")
    return _LinearCrossEntropy.apply(hidden, weight.detach(), labels, mask, chunk)


def sample_from_logits(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws from ``softmax(logits)`` (rows ``[M, vocab]``), one uniform ``u [M]`` in [0, 1) per row.

    Row m gets the first token whose cumulative probability exceeds ``u_m`` (times the row total, so rounding in
    the cumulative sum cannot push a draw past the vocabulary); a zero-probability token is never drawn.
    """
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    cdf = torch.softmax(logits.to(acc), dim=-1).cumsum(dim=-1)
    v = (u.to(device=cdf.device, dtype=acc) * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, v, right=True).squeeze(-1).clamp_max(logits.shape[-1] - 1)


@torch.no_grad()
def sample_labels(
    hidden: torch.Tensor, weight: torch.Tensor, u: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Labels ``[N, T]`` drawn from the model's predictive distribution ``softmax(hidden @ weightᵀ)`` with the
    uniforms ``u [N, T]``, chunk by chunk (no ``[N, T, vocab]`` logits). Equals ``sample_from_logits`` on the full
    logits."""
    N, T, d = hidden.shape
    if u.shape != (N, T):
        raise ValueError(f"u: expected shape {(N, T)}, got {tuple(u.shape)}")
    chunk = chunk_tokens(weight.shape[0]) if chunk is None else int(chunk)
    h, uu = hidden.reshape(N * T, d), u.reshape(N * T)
    W = weight.to(hidden.dtype)
    out = torch.empty(N * T, dtype=torch.long, device=hidden.device)
    for s in range(0, N * T, chunk):
        e = min(s + chunk, N * T)
        out[s:e] = sample_from_logits(h[s:e] @ W.t(), uu[s:e])
    return out.view(N, T)

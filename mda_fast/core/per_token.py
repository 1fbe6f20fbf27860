"""Per-token influence: two exact decompositions of a row's score ``I(z) = Σ_b ⟨P_b, G_b(z)⟩``.

``P_b = −H_b⁻¹∇_b f`` is the scorer's preconditioned probe gradient of block b (``InfluenceScorer.queries``,
zero for the targets that do not own b) and ``G_b(z) = Σ_t y_t x̃_tᵀ = ∇_b L(z)`` the row's gradient.

* **By position** (where the head's parameters are used): ``s_t = Σ_b ⟨y_t x̃_tᵀ, P_b⟩ = Σ_b y_tᵀ P_b x̃_t``,
  with ``x_t`` the block's input at position t and ``y_t`` the gradient of the whole row's loss with respect to
  the block's output there (what attention at later positions passes back included). ``Σ_t s_t = I(z)``.
* **By loss token** (which predictions in the row build the head): with ``L = Σ_t m_t L_t``,
  ``ℓ_t = m_t ⟨∇L_t, P⟩ = −m_t ⟨∇L_t, H⁻¹∇f⟩``, the directional derivative of the token loss ``L_t`` (the
  prediction of ``labels[:, t]`` from ``inputs[:, :t+1]``) along the tangent ``P`` placed on the blocks' weight
  slices. All ``T`` terms come from one forward-mode pass (``torch.func.jvp``) per target; a masked token
  (``m_t = 0``) gets exactly zero. ``Σ_t ℓ_t = I(z)``.

Both are computed in float64 from the model's activations and returned in the scores' dtype (float32; float64 for
a float64 model). SDPA attention runs its math kernel during the forward-mode pass (the fused kernels have no
forward-mode derivative); its arithmetic is the same.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from .capture import plain_lm_head
from .heads import Block, block_weight, module_of
from .lm_head import chunk_tokens

__all__ = ["position_scores", "weight_tangents", "loss_token_scores"]

ACC = torch.float64


def position_scores(x: torch.Tensor, y: torch.Tensor, p: torch.Tensor, bias: bool) -> torch.Tensor:
    """``s[n, t, k] = y_{n,t}ᵀ P_k x̃_{n,t}`` of one block, float64 ``[N, T, K]``.

    ``x [N, T, d_in]``, ``y [N, T, d_out]``, ``p [K, d_out, d_in + bias]``; ``Σ_t s[n, t, k] = ⟨P_k, G_n⟩``.
    """
    d_in = x.shape[-1]
    if p.shape[-1] != d_in + int(bias) or p.shape[-2] != y.shape[-1]:
        raise ValueError(
            f"P must be [K, d_out={y.shape[-1]}, d_in+bias={d_in + int(bias)}], got shape {tuple(p.shape)}"
        )
    p64 = p.to(ACC)
    px = torch.einsum("nti,koi->ntko", x.to(ACC), p64[..., :d_in])  # P_k x_t  [N, T, K, d_out]
    if bias:
        px = px + p64[..., d_in]
    return torch.einsum("ntko,nto->ntk", px, y.to(ACC))


def weight_tangents(model, blocks: List[Block], queries: Dict[str, torch.Tensor], k: int) -> dict:
    """``{parameter: tangent}``: target k's ``P_b[k]`` placed on every block's weight (and bias) slice, zero
    elsewhere; blocks that share a parameter add up. The placement is the adjoint of :func:`heads.block_weight`,
    so it follows whatever slices a block owns."""
    tangents: dict = {}
    for b in blocks:
        p = queries[b.name][k]
        if not bool(p.any()):
            continue
        mods = [module_of(model, b.layer, m) for m in b.modules]
        params = [q for mod in mods for q in [mod.weight] + ([mod.bias] if b.bias else [])]
        saved = [q.requires_grad for q in params]
        try:
            for q in params:
                q.requires_grad_(True)
            with torch.enable_grad():
                w = block_weight(model, b)
                grads = torch.autograd.grad(w, params, grad_outputs=p.to(w.dtype))
        finally:
            for q, r in zip(params, saved):
                q.requires_grad_(r)
        for q, g in zip(params, grads):
            tangents[q] = g if q not in tangents else tangents[q] + g
    return tangents


def _names(module: torch.nn.Module, tangents: dict) -> dict:
    by_id = {id(p): n for n, p in module.named_parameters()}
    missing = [p for p in tangents if id(p) not in by_id]
    if missing:
        raise ValueError("a tracked block's parameter is not a parameter of the model's forward module")
    return {by_id[id(p)]: p for p in tangents}


def _ce_derivative(z: torch.Tensor, dz: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``d CE(z, label) = softmax(z)·dz − dz[label]`` per token (``z``, ``dz`` ``[M, V]``), float64 out. The softmax
    and the products over the vocabulary run in float32 (float64 for a float64 model), as the training loss's own
    chunked LM head does (``mda_fast.core.lm_head``)."""
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    z, dz = z.to(acc), dz.to(acc)
    prob = torch.softmax(z, dim=-1)
    return (prob * dz).sum(-1).to(ACC) - dz.gather(-1, labels[:, None]).squeeze(-1).to(ACC)


def loss_token_scores(
    model,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
    tangents: dict,
    chunk: int | None = None,
) -> torch.Tensor:
    """``ℓ[n, t] = m_{n,t} · d/dε L_t(θ + ε·u)`` at ε = 0 (``u`` = ``tangents``), float64 ``[N, T]``, from one
    forward-mode pass. With a plain linear LM head the logits and their tangent are formed in token chunks
    (``chunk`` tokens, default :func:`lm_head.chunk_tokens`), never as ``[N, T, vocab]``."""
    N, T = labels.shape
    out = torch.zeros(N, T, dtype=ACC, device=inputs.device)
    if not tangents:
        return out
    plain = plain_lm_head(model)
    module = plain[0] if plain is not None else model
    named = _names(module, tangents)
    primals = {n: p.detach() for n, p in named.items()}
    tans = {n: tangents[p].to(p.dtype) for n, p in named.items()}

    def forward(params):
        o = functional_call(module, params, (inputs,), {"use_cache": False})
        return o.last_hidden_state if plain is not None else o.logits

    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        act, dact = jvp(forward, (primals,), (tans,))
        act, dact = act.reshape(N * T, -1), dact.reshape(N * T, -1)
        flat_labels = labels.reshape(N * T)
        res = out.view(N * T)
        if plain is None:
            step = chunk or chunk_tokens(act.shape[-1])
        else:
            W = plain[1].detach().to(act.dtype)
            step = chunk or chunk_tokens(W.shape[0])
        for s in range(0, N * T, step):
            e = min(s + step, N * T)
            if plain is None:
                z, dz = act[s:e], dact[s:e]
            else:
                z, dz = act[s:e] @ W.t(), dact[s:e] @ W.t()
            res[s:e] = _ce_derivative(z, dz, flat_labels[s:e])
    if mask is not None:
        out = out * mask.to(ACC)
    return out

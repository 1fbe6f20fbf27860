"""A tiny GPT-2 for tests, and the GPT-2 head convention written out from its storage (independent of the
adapter): ``Conv1D`` weights ``[d_in, d_out]``, ``c_attn``'s output [Q of all heads | K | V], head h's W_O the
input columns ``h·d_head:(h+1)·d_head`` of ``c_proj`` (rows of ``c_proj.weight`` as stored)."""

import torch
import transformers

from mda_fast import ModuleSpec

VOCAB, CTX = 48, 65
TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5


def refused(cfg) -> bool:
    """The adapter refuses this config here: transformers 4.x's sdpa attention ignores GPT-2's scaling options."""
    default_scaling = cfg["scale_weights"] and not cfg["inverse_layer"]
    return cfg["attn"] == "sdpa" and not default_scaling and not TRANSFORMERS_5


def upcasts(cfg) -> bool:
    """HF's eager ``reorder_and_upcast_attn`` path (scores and softmax in float32)."""
    return cfg["upcast"] and cfg["attn"] == "eager"


def build(d_head, n_heads, n_layers, scale_weights, inverse_layer, upcast, tied, attn, seed, dtype=None):
    """An eval-mode GPT-2 with random weights, peaked attention and position embeddings that matter: float64, or
    float32 for HF's eager upcast path (which cannot run a float64 model in transformers 5: its float32 scores plus
    the float64 mask fail HF's own dtype check)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    d = d_head * n_heads
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_embd=d,
        n_layer=n_layers,
        n_head=n_heads,
        n_positions=CTX,
        n_inner=2 * d,
        scale_attn_weights=scale_weights,
        scale_attn_by_inverse_layer_idx=inverse_layer,
        reorder_and_upcast_attn=upcast,
        tie_word_embeddings=tied,
        bos_token_id=0,
        eos_token_id=0,
    )
    cfg._attn_implementation = attn
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        model.transformer.wpe.weight.normal_(0, 0.5)
        for block in model.transformer.h:
            block.attn.c_attn.weight.normal_(0, 1.5 / d**0.5)
            block.attn.c_attn.bias.normal_(0, 0.2)
            block.attn.c_proj.bias.normal_(0, 0.2)
    if dtype is None:
        dtype = torch.float32 if upcast and attn == "eager" else torch.float64
    model = model.to(dtype).eval()
    assert model.config._attn_implementation == attn
    assert (model.lm_head.weight is model.transformer.wte.weight) == tied
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def parts_of(spec):
    return ("qk", "v", "o") if spec.mode == "qkvo" else ("qk",)


def convention_slice(model, spec, part, grad=False):
    """The ``[d_out, d_in(+1)]`` slice a block owns, read off the ``Conv1D`` storage ``[d_in, d_out]``."""
    attn = model.transformer.h[spec.layer].attn

    def read(p):  # a parameter, or its gradient (zero where the objective does not reach it)
        return (p.grad if p.grad is not None else torch.zeros_like(p)) if grad else p

    def weight(m):
        return read(m.weight)

    def bias(m):
        return read(m.bias)

    if isinstance(spec, ModuleSpec):
        mod = getattr(attn, spec.module)
        return torch.cat([weight(mod).T, bias(mod)[:, None]], dim=1)
    d = model.config.n_embd
    dh = d // model.config.n_head
    h = spec.head
    own = list(range(h * dh, (h + 1) * dh))
    if part == "o":  # head h's W_O: its input columns, stored as rows of c_proj.weight
        return weight(attn.c_proj)[h * dh : (h + 1) * dh, :].T
    cols = own + [d + c for c in own] if part == "qk" else [2 * d + c for c in own]  # c_attn output: [Q | K | V]
    out = weight(attn.c_attn)[:, cols].T
    if spec.bias:
        out = torch.cat([out, bias(attn.c_attn)[cols][:, None]], dim=1)
    return out


def names_of(spec):
    return [spec.name] if isinstance(spec, ModuleSpec) else [f"{spec.name}.{p}" for p in parts_of(spec)]


def hf_patterns(model, ids):
    """HF eager's attention probabilities per layer and the captured ``c_attn`` outputs."""
    qkv = {}
    hooks = [
        block.attn.c_attn.register_forward_hook(lambda mod, args, out, L=L: qkv.__setitem__(L, out))
        for L, block in enumerate(model.transformer.h)
    ]
    try:
        with torch.no_grad():
            ref = model(input_ids=ids, output_attentions=True).attentions
    finally:
        for h in hooks:
            h.remove()
    return ref, qkv

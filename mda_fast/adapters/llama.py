"""The separate-projection adapter: Llama, Mistral, Qwen2, Qwen3, OLMo and OLMo-2 (HF ``<Family>ForCausalLM``).

Layout: ``model.model.layers[L].self_attn`` has ``q_proj [H·d_head, d_model]``, ``k_proj`` and ``v_proj``
``[H_kv·d_head, d_model]`` (all three read the same input: the normed hidden state, or for OLMo-2, which has no norm
before attention, the residual stream itself) and ``o_proj [d_model, H·d_head]``; ``d_head`` is the config's
``head_dim`` (may differ from ``d_model / H``). Head h belongs to KV group ``g = h // (H / H_kv)`` (HF's
``repeat_kv``), so:

- block **qk** = ``q_proj`` rows ``h·d_head : (h+1)·d_head`` then ``k_proj`` rows ``g·d_head : (g+1)·d_head``;
- block **v** = ``v_proj`` rows ``g·d_head : (g+1)·d_head``;
- block **o** = ``o_proj`` columns ``h·d_head : (h+1)·d_head``;

with the q/k/v bias entries of those rows as a ones column where the model has them (Qwen2 always,
``attention_bias=True`` otherwise); ``o_proj``'s bias belongs to no head. With grouped-query attention the K and V
rows of group g are shared by its ``H / H_kv`` heads (``Block.shared_by``).

Between the projections and the scores, each family does its own thing, and :meth:`LlamaAdapter.query_key`
reproduces it with the model's own modules: OLMo clamps q, k, v to ``±clip_qkv`` (in place, so capture hooks hand
the model a copy); OLMo-2 RMS-normalises q over the whole ``H·d_head`` width and k over ``H_kv·d_head`` (all heads
together); Qwen3 RMS-normalises each head's q and k over ``d_head``. A block's gradient is taken at the linear
output, before any of these, so a norm's coupling of heads lives in the backward pass. Then rotary embedding
(``rotate_half`` over the whole head) with the tables of the model's own ``rotary_emb`` (``rope_theta`` and the
``rope_scaling`` kinds default, linear, dynamic, llama3, yarn: HF's ``ROPE_INIT_FUNCTIONS``, attention scaling
included), scores times the attention's ``scaling``, a causal mask, Mistral's / Qwen's sliding window
(key j seen from query i when ``i - window < j <= i``), softmax.

Refused with one line (never guessed): a ``rope_scaling`` kind other than those five, a partial rotary factor,
cross-attention, and H not a multiple of H_kv. No lean forward: capture runs HF's forward with hooks (measured in
``benchmarks/end_to_end.py --mode capture-vs-forward``).
"""

from __future__ import annotations

import torch

from ..errors import ModelError
from .base import HeadPart, ModelAdapter, ModelShape, Segment
from .gpt_neox import apply_rotary

__all__ = ["FAMILIES", "ROPE_TYPES", "LlamaAdapter", "rope_settings"]

FAMILIES = {
    "llama": ("Llama", "LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("Mistral", "MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2", "Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3", "Qwen3Config", "Qwen3ForCausalLM"),
    "olmo": ("OLMo", "OlmoConfig", "OlmoForCausalLM"),
    "olmo2": ("OLMo-2", "Olmo2Config", "Olmo2ForCausalLM"),
}
"""model_type → (family name, HF config class, HF causal-LM class) of the layout."""

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
"""The ``rope_scaling`` kinds whose tables the model's own ``rotary_emb`` computes and the adapter accepts."""


def rope_settings(config) -> tuple[str, float, float]:
    """``(rope_type, rope_theta, partial_rotary_factor)`` of a config, in the transformers 5.x layout
    (``rope_parameters``) or the 4.x one (``rope_theta`` + ``rope_scaling``)."""
    params = getattr(config, "rope_parameters", None)
    if not isinstance(params, dict) or not params:
        params = dict(getattr(config, "rope_scaling", None) or {})
    kind = params.get("rope_type", params.get("type", "default")) or "default"
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    partial = params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
    return str(kind), float(theta), float(1.0 if partial is None else partial)


def _transformers_class(name: str, model_type: str):
    import transformers

    cls = getattr(transformers, name, None)
    if cls is None:
        raise ModelError(
            f"transformers {transformers.__version__} has no {name} (model_type {model_type!r}); "
            "expected a transformers release that ships it"
        )
    return cls


class LlamaAdapter(ModelAdapter):
    """The separate q/k/v/o projection layout; one instance per ``model_type`` in :data:`FAMILIES`."""

    modules = ("q_proj", "k_proj", "v_proj", "o_proj")
    qkv_module = "q_proj"
    backbone_attr, embed_attr = "model", "embed_tokens"

    def __init__(self, model_type: str = "llama"):
        if model_type not in FAMILIES:
            raise ValueError(f"LlamaAdapter serves model_types {tuple(FAMILIES)}, got {model_type!r}")
        self.model_type = model_type
        self.family = FAMILIES[model_type][0]
        self.example_class, self.backbone_where = FAMILIES[model_type][2], ".model.layers"

    # ---- what the model is -----------------------------------------------------------------------------------
    def config_shape(self, config) -> ModelShape:
        where = f"the {self.family} config"
        if getattr(config, "is_encoder_decoder", False) or getattr(config, "add_cross_attention", False):
            raise ModelError(
                f"{where} asks for cross-attention, which mda-fast cannot prove exact; expected a decoder-only model"
            )
        kind, theta, partial = rope_settings(config)
        if kind not in ROPE_TYPES:
            raise ModelError(
                f"{where} has rope_scaling kind {kind!r}, which mda-fast cannot prove exact; "
                f"expected one of {ROPE_TYPES}"
            )
        if partial != 1.0:
            raise ModelError(
                f"{where} has partial_rotary_factor {partial}, which the {self.family} attention does not apply; "
                "expected 1.0 (rotary over the whole head)"
            )
        H = config.num_attention_heads
        H_kv = getattr(config, "num_key_value_heads", None) or H
        if H % H_kv:
            raise ModelError(f"{where} has {H} query heads and {H_kv} key/value heads; expected H a multiple of H_kv")
        d_head = getattr(config, "head_dim", None) or config.hidden_size // H
        return ModelShape(
            n_layers=config.num_hidden_layers,
            n_heads=H,
            d_model=config.hidden_size,
            d_head=d_head,
            rotary_ndims=d_head,
            rotary_base=theta,
            vocab_size=config.vocab_size,
            max_positions=config.max_position_embeddings,
            model_type=self.model_type,
            n_kv_heads=H_kv,
            rope_type=kind,
        )

    def config_class(self):
        return _transformers_class(FAMILIES[self.model_type][1], self.model_type)

    def model_class(self):
        return _transformers_class(FAMILIES[self.model_type][2], self.model_type)

    # ---- where things are ------------------------------------------------------------------------------------
    def attention_module(self, model, layer: int, module: str) -> torch.nn.Linear:
        return getattr(self.layers(model)[layer].self_attn, module)

    # ---- which parameters a head owns ------------------------------------------------------------------------
    def head_parts(self, shape: ModelShape, head: int, mode: str) -> dict[str, HeadPart]:
        dh, dm = shape.d_head, shape.d_model
        g = head // shape.group_size
        group = tuple(range(g * shape.group_size, (g + 1) * shape.group_size))
        q = Segment("q_proj", head * dh, (head + 1) * dh)
        k = Segment("k_proj", g * dh, (g + 1) * dh)
        parts = {"qk": HeadPart((q, k), 0, dm, True, group)}
        if mode == "qkvo":
            parts["v"] = HeadPart((Segment("v_proj", g * dh, (g + 1) * dh),), 0, dm, True, group)
            parts["o"] = HeadPart((Segment("o_proj", 0, dm),), head * dh, (head + 1) * dh, False, (head,))
        return parts

    # ---- attention -------------------------------------------------------------------------------------------
    def split_qkv(self, qkv, shape, heads=None):
        raise ModelError(
            f"the {self.family} layout has separate q/k/v projections (and q/k norms); expected query_key(model, ...)"
        )

    def rotate_qk(self, q, k, shape):
        raise ModelError(f"the {self.family} rotary tables come from the model; expected query_key(model, ...)")

    def pattern_modules(self) -> tuple[str, ...]:
        return ("q_proj", "k_proj")

    def query_key(self, model, layer, outputs, shape, heads=None, dtype=torch.float32):
        attn = self.layers(model)[layer].self_attn
        q, k = outputs["q_proj"], outputs["k_proj"]
        N, T, _ = q.shape
        clip = getattr(model.config, "clip_qkv", None) if self.model_type == "olmo" else None
        if clip is not None:  # OLMo: q, k, v clamped right after the projections
            q, k = q.clamp(min=-clip, max=clip), k.clamp(min=-clip, max=clip)
        q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
        per_head = q_norm is not None and q_norm.weight.numel() == shape.d_head
        if q_norm is not None and not per_head:  # OLMo-2: over the whole projection width, all heads together
            q, k = q_norm(q), k_norm(k)
        q = q.view(N, T, shape.n_heads, shape.d_head)
        k = k.view(N, T, shape.n_kv_heads, shape.d_head)
        if per_head:  # Qwen3: each head over d_head
            q, k = q_norm(q), k_norm(k)
        heads = list(range(shape.n_heads)) if heads is None else list(heads)
        groups = [h // shape.group_size for h in heads]
        q = q[:, :, heads].transpose(1, 2).to(dtype)
        k = k[:, :, groups].transpose(1, 2).to(dtype)
        positions = torch.arange(T, device=q.device).unsqueeze(0)
        with torch.no_grad():  # the model's own tables (float32, rope scaling applied), cast to dtype as HF does
            cos, sin = self.backbone(model).rotary_emb(q, positions)
        cos, sin = cos[0].to(dtype), sin[0].to(dtype)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    def scale_scores(self, scores, model, layer, shape):
        return scores * self.layers(model)[layer].self_attn.scaling

    def sliding_window(self, model, layer):
        config = model.config
        window = getattr(config, "sliding_window", None)
        if window is None or self.model_type not in ("mistral", "qwen2", "qwen3"):
            return None
        if self.model_type == "mistral":
            return int(window)
        layer_types = getattr(config, "layer_types", None)
        if layer_types is not None:
            return int(window) if layer_types[layer] == "sliding_attention" else None
        if getattr(config, "use_sliding_window", False) and layer >= getattr(config, "max_window_layers", 0):
            return int(window)  # transformers 4.x Qwen: the layers from max_window_layers up
        return None

    def copies_hooked_outputs(self, model) -> bool:
        return self.model_type == "olmo" and getattr(model.config, "clip_qkv", None) is not None

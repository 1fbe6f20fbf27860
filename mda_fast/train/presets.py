"""Model presets (Pythia shapes and tiny CPU models), built in any of the training families, and seeded construction.

A preset fixes the sizes (layers, width, heads, vocabulary, MLP width, context); a family (an HF ``model_type``,
:data:`FAMILIES`) fixes the layout the preset is built as, from the family's own HF config class:

* ``gpt_neox``: Pythia's (parallel residual, LayerNorm, rotary on ``rotary_pct`` of each head, untied embeddings);
* ``llama``, ``mistral``, ``qwen2``, ``qwen3``: pre-norm RMSNorm, SwiGLU MLP of ``d_ff``, rotary on the whole head,
  untied embeddings, and grouped-query attention with :func:`kv_heads` key/value heads (half the query heads when
  that is a whole number); ``qwen2`` adds q/k/v biases, ``qwen3`` a per-head RMSNorm on q and k; ``mistral``'s
  sliding window is off (it would exceed every preset's context anyway);
* ``olmo2``: OLMo-2's layout (RMSNorm after attention and after the MLP instead of before, q/k RMSNorm over the
  whole projection width), full multi-head attention as OLMo-2 1B;
* ``gpt2``: GPT-2's (fused ``Conv1D`` q/k/v, learned positions, LayerNorm, GELU, tied embeddings), dropout off.

Every family's dropout is 0, so a training step is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Union

import torch

__all__ = [
    "Preset",
    "PRESETS",
    "get_preset",
    "model_config",
    "make_model",
    "from_pretrained_kwargs",
    "FAMILIES",
    "check_family",
    "kv_heads",
    "preset_for_shape",
]


@dataclass(frozen=True)
class Preset:
    """Shape of a GPT-NeoX model. ``intermediate_size`` defaults to ``4 * d_model``."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    vocab_size: int
    intermediate_size: Optional[int] = None
    rotary_pct: float = 0.25
    max_position_embeddings: int = 2048
    peak_lr: float = 1e-3  # Pythia's peak LR for this size
    eod_token_id: int = 0  # Pythia and the byte tokenizer both use token 0 as EOD

    @property
    def d_ff(self) -> int:
        return self.intermediate_size if self.intermediate_size is not None else 4 * self.d_model

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


# Pythia: parallel residual, untied embeddings, rotary on 25% of each head, vocab 50304 (padded GPT-NeoX-20B).
# Tiny presets: byte-level vocabulary of 256 bytes + 4 specials (mda_fast.data.ByteTokenizer, EOD = 0).
PRESETS: Dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("pythia-14m", 6, 128, 4, 50304),
        Preset("pythia-31m", 6, 256, 8, 50304),
        Preset("pythia-70m", 6, 512, 8, 50304),
        Preset("pythia-160m", 12, 768, 12, 50304, peak_lr=6e-4),
        Preset("tiny-2l", 2, 64, 4, 260, intermediate_size=256),
        Preset("tiny-3l", 3, 96, 4, 260, intermediate_size=384),
        Preset("tiny-4l", 4, 128, 4, 260, intermediate_size=512),
        # the augment study's size ladder (mda_fast/configs/augment-demo.toml): width, then depth
        Preset("tiny-2l-w", 2, 96, 4, 260, intermediate_size=384),
        # the real-text augment study's ladder (augment-real-text.toml): depth, then width, then both
        Preset("tiny-3l-n", 3, 64, 4, 260, intermediate_size=256),
        Preset("tiny-1l", 1, 32, 2, 260, intermediate_size=128),
    ]
}


def get_preset(preset: Union[str, Preset]) -> Preset:
    """Return the ``Preset`` named ``preset`` (or ``preset`` itself); ValueError lists the known names."""
    if isinstance(preset, Preset):
        return preset
    if not isinstance(preset, str):
        raise TypeError(f"preset: expected a preset name (str) or Preset, got {type(preset).__name__}")
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset]


def preset_for_shape(n_layers: int, d_model: int, n_heads: int, vocab_size: int) -> Preset:
    """The preset with this shape (e.g. a published Pythia checkpoint's); ``ValueError`` naming the known ones."""
    for p in PRESETS.values():
        if (p.n_layers, p.d_model, p.n_heads, p.vocab_size) == (n_layers, d_model, n_heads, vocab_size):
            return p
    raise ValueError(
        f"no preset has (layers, d_model, heads, vocab) = {(n_layers, d_model, n_heads, vocab_size)}; "
        f"known: {sorted(PRESETS)}"
    )


#: the families a preset can be built as (HF ``model_type``s), in the order of the docs
FAMILIES = ("gpt_neox", "llama", "mistral", "qwen2", "qwen3", "olmo2", "gpt2")


def check_family(family: str) -> str:
    """``family`` if it is one of :data:`FAMILIES`; ``ValueError`` naming them otherwise."""
    if family not in FAMILIES:
        raise ValueError(f"family: unknown model family {family!r}; expected one of {list(FAMILIES)}")
    return family


def kv_heads(preset: Union[str, Preset], family: str) -> int:
    """Key/value heads of ``preset`` built as ``family``: half the query heads for the grouped-query families
    (llama, mistral, qwen2, qwen3) when the heads are even, else as many as the query heads."""
    p = get_preset(preset)
    if check_family(family) in ("llama", "mistral", "qwen2", "qwen3") and p.n_heads % 2 == 0:
        return p.n_heads // 2
    return p.n_heads


def model_config(preset: Union[str, Preset], family: str = "gpt_neox"):
    """The HF config of ``preset`` built as ``family`` (:data:`FAMILIES`; see the module docstring); works with
    transformers 4.4x and 5.x."""
    p = get_preset(preset)
    if p.d_model % p.n_heads:
        raise ValueError(f"preset {p.name}: d_model {p.d_model} is not divisible by n_heads {p.n_heads}")
    if check_family(family) != "gpt_neox":
        return _family_config(p, family)
    from transformers import GPTNeoXConfig

    rot = int(p.d_head * p.rotary_pct)
    if rot % 2:
        raise ValueError(f"preset {p.name}: rotary dims d_head*rotary_pct = {rot} must be even")
    return GPTNeoXConfig(
        vocab_size=p.vocab_size,
        hidden_size=p.d_model,
        num_hidden_layers=p.n_layers,
        num_attention_heads=p.n_heads,
        intermediate_size=p.d_ff,
        hidden_act="gelu",
        rotary_pct=p.rotary_pct,
        rotary_emb_base=10000,
        max_position_embeddings=p.max_position_embeddings,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        bos_token_id=p.eod_token_id,
        eos_token_id=p.eod_token_id,
    )


def _family_config(p: Preset, family: str):
    """The HF config of preset ``p`` in a family other than GPT-NeoX (``model_config``)."""
    import transformers

    common = dict(
        vocab_size=p.vocab_size, initializer_range=0.02, bos_token_id=p.eod_token_id, eos_token_id=p.eod_token_id
    )
    if family == "gpt2":
        sizes = {
            "n_positions": "max_position_embeddings",
            "n_embd": "d_model",
            "n_layer": "n_layers",
            "n_head": "n_heads",
        }
        return transformers.GPT2Config(
            **{k: getattr(p, v) for k, v in sizes.items()},
            n_inner=p.d_ff,
            activation_function="gelu_new",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            layer_norm_epsilon=1e-5,
            tie_word_embeddings=True,
            **common,
        )
    classes = {
        "llama": "LlamaConfig",
        "mistral": "MistralConfig",
        "qwen2": "Qwen2Config",
        "qwen3": "Qwen3Config",
        "olmo2": "Olmo2Config",
    }
    cls = getattr(transformers, classes[family], None)
    if cls is None:
        raise ValueError(
            f"family {family!r}: transformers {transformers.__version__} has no {classes[family]}; expected a "
            "release that has it (Qwen3: 4.51 or later)"
        )
    kw = dict(
        hidden_size=p.d_model,
        intermediate_size=p.d_ff,
        num_hidden_layers=p.n_layers,
        num_attention_heads=p.n_heads,
        num_key_value_heads=kv_heads(p, family),
        hidden_act="silu",
        max_position_embeddings=p.max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        **common,
    )
    if family in ("llama", "olmo2", "qwen3"):
        kw["attention_bias"] = False
    if family == "qwen3":
        kw["head_dim"] = p.d_head
    if family == "mistral":
        kw["sliding_window"] = None
    if family in ("qwen2", "qwen3"):
        kw["use_sliding_window"] = False
    return cls(**kw)


def make_model(preset: Union[str, Preset], seed: int = 0, attn_implementation: str = "sdpa", family: str = "gpt_neox"):
    """Randomly initialised fp32 causal LM of ``preset`` built as ``family`` (:data:`FAMILIES`; default Pythia's
    GPT-NeoX); the same ``seed`` gives the same weights.

    The global torch RNG is used for the init under ``torch.random.fork_rng``, so the caller's RNG is untouched.
    """
    from transformers import AutoModelForCausalLM

    if attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
        raise ValueError(
            f"attn_implementation: got {attn_implementation!r}, expected 'sdpa', 'eager' or 'flash_attention_2'"
        )
    config = model_config(preset, family)
    key = "dtype" if _TF_MAJOR >= 5 else "torch_dtype"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = AutoModelForCausalLM.from_config(
            config, attn_implementation=attn_implementation, **{key: torch.float32}
        )
    return model.float()


def _tf_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


_TF_MAJOR = _tf_major()


def from_pretrained_kwargs(attn_implementation: str = "sdpa") -> dict:
    """Keyword arguments for ``from_pretrained`` that load fp32 weights on transformers 4.4x and 5.x."""
    key = "dtype" if _TF_MAJOR >= 5 else "torch_dtype"
    return {key: torch.float32, "attn_implementation": attn_implementation}

"""GPT-NeoX model presets (Pythia shapes and tiny CPU models) and seeded model construction."""

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


def model_config(preset: Union[str, Preset]):
    """``GPTNeoXConfig`` for ``preset`` (works with transformers 4.4x ``rotary_pct`` and 5.x ``rope_parameters``)."""
    from transformers import GPTNeoXConfig

    p = get_preset(preset)
    if p.d_model % p.n_heads:
        raise ValueError(f"preset {p.name}: d_model {p.d_model} is not divisible by n_heads {p.n_heads}")
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


def make_model(preset: Union[str, Preset], seed: int = 0, attn_implementation: str = "sdpa"):
    """Randomly initialised fp32 ``GPTNeoXForCausalLM`` for ``preset``; same ``seed`` gives the same weights.

    The global torch RNG is used for the init under ``torch.random.fork_rng``, so the caller's RNG is untouched.
    """
    from transformers import GPTNeoXForCausalLM

    if attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
        raise ValueError(
            f"attn_implementation: got {attn_implementation!r}, expected 'sdpa', 'eager' or 'flash_attention_2'"
        )
    config = model_config(preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = (
            GPTNeoXForCausalLM._from_config(config, attn_implementation=attn_implementation, torch_dtype=torch.float32)
            if _TF_MAJOR < 5
            else GPTNeoXForCausalLM._from_config(config, attn_implementation=attn_implementation, dtype=torch.float32)
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

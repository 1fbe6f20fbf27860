"""Probes: differentiable measurements of a unit on a probe batch.

A probe builds its own seeded probe batch and returns, per probe sequence, a differentiable contribution whose
sum over the batch is ``f_probe``:

* ``induction``       — Σ log p(induction target) on L random tokens repeated twice. At position t of the second
  copy (L ≤ t ≤ 2L−2) the current token x_t last occurred at t−L, followed by x_{t−L+1}; the model predicts
  x_{t+1} = x_{t−L+1} there. Model-level: the same f for every head (its gradient is taken per head subspace).
  ``target="authors"`` is the reference code's objective, term for term (:func:`authors_induction_terms`): for
  every position t ≥ 1 whose token occurred before, log p[t−1, token after its last earlier occurrence], so logit
  row t−1 (one position off), L terms on a row without repeats (t = L..2L−1) and more where a token repeats inside
  the random first half. For comparison with that code only.
* ``prefix_matching`` — mean attention of head (layer, h) from each second-copy position i (L ≤ i ≤ 2L−1) to
  i−L+1 (the token after the previous occurrence of x_i).
* ``prev_token``      — mean attention of head (layer, h) from t to t−1 (t ≥ 1) on the same batch.

The two attention-pattern probes depend on their head's W_Q|W_K only: in mode "qkvo" their W_V and W_O gradients
are exactly zero (the W_Q|W_K gradient is not), so mode "qk" tracks the same information.

Register your own with :func:`register_probe`.

Objectives keep a float64 model's precision (float64 throughout); lower-precision models compute the softmax
reductions in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError
from .attention import layer_pattern
from .model import model_shape

PYTHIA_REAL_VOCAB = 50277  # ids >= this are untrained padding rows of Pythia's 50304-row embedding


def repeated_random_tokens(n: int, L: int, low: int, high: int, seed: int, device="cpu") -> torch.Tensor:
    """[n, 2L] rows of L uniform random tokens in [low, high) repeated twice (seeded, CPU generator)."""
    if not isinstance(L, int) or L < 2:
        raise ValueError(f"probe length L must be an int >= 2 (one induction position needs L >= 2), got {L!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"number of probe sequences n must be an int >= 1, got {n!r}")
    if not 0 <= low < high:
        raise ValueError(f"token range [low, high) must be non-empty with low >= 0, got [{low}, {high})")
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(low, high, (n, L), generator=g)
    return torch.cat([first, first], dim=1).to(device)


INDUCTION_TARGETS = ("next", "authors")


def induction_targets(L: int, target: str = "next") -> tuple[torch.Tensor, torch.Tensor]:
    """(logit rows r, source positions s) for 2L-token rows: the induction objective sums log p[r, x_s].

    ``target="next"`` (correct): for each position t of the second copy (L ≤ t ≤ 2L−2), s = t−L+1 (the token after
    the earlier copy of x_t) and r = t, the row predicting position t+1, whose true token x_{t+1} equals x_s.
    ``target="authors"``: the reference implementation's terms on a row whose first half has no repeated token:
    t = L..2L−1, s = t−L+1 and r = t−1 — off by one (row t−1 predicts x_t, not x_s); L terms, the last one
    (t = 2L−1) scoring x_L, the start of the second copy. Rows with repeats get other terms as well:
    :func:`authors_induction_terms` is the general rule.
    """
    if target not in INDUCTION_TARGETS:
        raise ConfigError(f"unknown induction probe target {target!r}; expected one of {INDUCTION_TARGETS}")
    if target == "next":
        pos = torch.arange(L, 2 * L - 1)
        return pos, pos - L + 1
    pos = torch.arange(L, 2 * L)
    return pos - 1, pos - L + 1


def authors_induction_terms(input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference implementation's induction terms on rows ``[N, T]``: ``(valid [N, T−1] bool, target ids
    [N, T−1])`` indexed by logit row ``r = t−1``.

    Position t (1 ≤ t ≤ T−1) has a term when x_t occurred before it: with j the last such position (j < t), the
    term is log p[t−1, x_{j+1}] (its "current" key and "last" match). On [p, p] with p free of repeats this is
    :func:`induction_targets` ``(L, "authors")``; a token repeating inside p adds a term in the first half and
    moves the match of later positions to the repeat's latest copy.
    """
    ids = input_ids
    N, T = ids.shape
    valid = torch.zeros(N, max(T - 1, 0), dtype=torch.bool, device=ids.device)
    tgt = torch.zeros(N, max(T - 1, 0), dtype=ids.dtype, device=ids.device)
    for t in range(1, T):
        eq = ids[:, :t] == ids[:, t : t + 1]  # [N, t]: earlier positions holding x_t
        has = eq.any(dim=1)
        last = t - 1 - eq.flip(1).int().argmax(dim=1)  # the last True (meaningful only where ``has``)
        valid[:, t - 1] = has
        tgt[:, t - 1] = ids.gather(1, (last + 1).unsqueeze(1)).squeeze(1)
    return valid, tgt


def float_acc(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 if it is float64, else in float32 (the precision of an objective's reductions)."""
    return x if x.dtype == torch.float64 else x.float()


def icl_positions(T: int) -> tuple[int, int]:
    """Olsson et al.'s tokens 50 and 500 (of 512) scaled to ``T`` predicted tokens: 1-based token indices (the ICL
    score is the loss at ``late`` minus the loss at ``early``)."""
    early = max(1, int(math.floor(50 * T / 512 + 0.5)))
    late = min(T, int(math.floor(500 * T / 512 + 0.5)))
    return early, late


def prefix_matching_pairs(L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(query positions i in the second copy, key positions i−L+1)."""
    pos = torch.arange(L, 2 * L)
    return pos, pos - L + 1


@dataclass
class Probe:
    """Base probe on repeated random tokens. Subclasses implement :meth:`objective`."""

    L: int = 32
    n: int = 200
    seed: int = 0
    low: int = 4
    high: int | None = None
    target: str = "next"
    name = "probe"
    per_head = False
    targets: ClassVar[tuple[str, ...]] = ("next",)  # allowed ``target`` values; induction also has "authors"

    def __post_init__(self):
        if self.target not in self.targets:
            hint = "" if len(self.targets) > 1 else "; 'authors' is an option of the induction probe only"
            raise ConfigError(f"probe {self.name!r}: target={self.target!r} is not one of {self.targets}{hint}")

    def inputs(self, model) -> torch.Tensor:
        s = model_shape(model)
        if 2 * self.L > s.max_positions:
            raise ValueError(
                f"probe length L={self.L} needs 2L={2 * self.L} positions but the model's context is {s.max_positions}"
            )
        high = self.high if self.high is not None else min(s.vocab_size, PYTHIA_REAL_VOCAB)
        if high > s.vocab_size:
            raise ValueError(f"probe token range high={high} exceeds the vocabulary size {s.vocab_size}")
        device = next(model.parameters()).device
        return repeated_random_tokens(self.n, self.L, self.low, high, self.seed, device)

    def layers(self, spec) -> tuple[int, ...]:
        """Layers whose qkv output the objective reads."""
        return (spec.layer,) if self.per_head else ()

    def objective(self, model, spec, input_ids, logits, hooks) -> torch.Tensor:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must implement objective(model, spec, input_ids, logits, hooks)")


@dataclass
class InductionProbe(Probe):
    """Σ log p(induction target) per sequence.

    ``target="next"`` (default, correct): at position t of the second copy, log p(x_{t+1} = token after the
    earlier copy of x_t), read from logit row t. ``target="authors"``: the reference implementation's objective
    term for term (:func:`authors_induction_terms`: logit row t−1, one position off, every position whose token
    occurred before, matched to its last earlier occurrence); for comparison with that code only.
    """

    name = "induction"
    targets = INDUCTION_TARGETS

    def objective(self, model, spec, input_ids, logits, hooks):
        if self.target == "authors":
            return self._authors_objective(input_ids, logits)
        rows, src = induction_targets(self.L, self.target)
        rows, src = rows.to(input_ids.device), src.to(input_ids.device)
        logp = torch.log_softmax(float_acc(logits[:, rows]), dim=-1)
        tgt = input_ids[:, src]
        return logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).sum(dim=1)

    @staticmethod
    def _authors_objective(input_ids, logits):
        valid, tgt = authors_induction_terms(input_ids)
        lg = float_acc(logits[:, :-1])
        picked = lg.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, dim=-1)
        return torch.where(valid, picked, torch.zeros_like(picked)).sum(dim=1)


def head_pattern(model, spec, hooks) -> torch.Tensor:
    """The attention pattern ``[N, T, T]`` of ``spec``'s head, from the captured qkv output of its layer."""
    return layer_pattern(model, spec.layer, hooks.pattern_outputs(spec.layer), heads=[spec.head])[:, 0]


class PatternProbe(Probe):
    """Mean attention of the head over the (query, key) pairs of ``pairs(T)``, per sequence (÷ N, so that the
    objective summed over a batch is the batch mean)."""

    per_head = True

    def pairs(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must implement pairs(T)")

    def objective(self, model, spec, input_ids, logits, hooks):
        pat = head_pattern(model, spec, hooks)
        q, k = (x.to(pat.device) for x in self.pairs(pat.shape[-1]))
        return pat[:, q, k].mean(dim=1) / input_ids.shape[0]


@dataclass
class PrefixMatchingProbe(PatternProbe):
    name = "prefix_matching"

    def pairs(self, T):
        return prefix_matching_pairs(self.L)


@dataclass
class PrevTokenProbe(PatternProbe):
    name = "prev_token"

    def pairs(self, T):
        t = torch.arange(1, T)
        return t, t - 1


_REGISTRY: dict[str, type] = {}


def register_probe(name: str, cls: type) -> None:
    """Register a Probe subclass under ``name`` (usable as ``probe=name`` everywhere)."""
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise TypeError(f"register_probe expects a Probe subclass, got {cls!r}")
    _REGISTRY[name] = cls


def get_probe(probe, **kwargs) -> Probe:
    """A Probe from a registered name (with constructor kwargs) or a Probe instance."""
    if isinstance(probe, Probe):
        if kwargs:
            raise ValueError("pass probe parameters to the Probe constructor, not alongside an instance")
        return probe
    if isinstance(probe, str):
        if probe not in _REGISTRY:
            raise ValueError(f"unknown probe {probe!r}; registered probes: {sorted(_REGISTRY)}")
        return _REGISTRY[probe](**kwargs)
    raise TypeError(f"probe must be a registered name or a Probe instance, got {type(probe).__name__}")


for _cls in (InductionProbe, PrefixMatchingProbe, PrevTokenProbe):
    register_probe(_cls.name, _cls)

"""Probes on real text: the induction objective and the in-context-learning score without synthetic repeats.

* :func:`induction_text_targets` — for a row of real tokens, every position ``t`` whose token ``x_t`` occurred
  earlier, and the token that followed its *last* earlier occurrence ``j`` (``x_{j+1}``). The convention is the
  synthetic induction probe's ``target="next"`` (:func:`mda_fast.core.probes.induction_targets`): logit row ``t`` (the
  prediction of position ``t+1``) is scored on ``x_{j+1}``. On a row ``A B ... A`` the last ``A`` is scored on
  ``B``. On ``L`` distinct tokens repeated (``x_{L..2L-1} = x_{0..L-1}``) it gives exactly the synthetic probe's positions
  ``L .. 2L-2`` and targets ``x_{t-L+1}`` (plus the row's last position ``2L-1``).
* :class:`TextInductionProbe` (registered as ``"induction_text"``) — ``f`` = the mean over all such positions of
  the probe rows of ``log p(x_{j+1} | x_{<=t})``. Each row contributes its positions' sum divided by the batch's
  total number of positions, so the contributions sum to the mean. Rows: ``rows`` (a LongTensor ``[n, T]``) or a
  Megatron dataset ``path`` with ``indices`` (default: the first ``n`` rows) and its ``seq_len``; each row is cut to
  ``length`` tokens (default: the model's context).
* :func:`icl_score_text` — Olsson et al.'s in-context-learning score on real rows: mean loss at late positions
  minus mean loss at early positions (negative: later tokens are predicted better). Positions are those of
  :func:`mda_fast.core.probes.icl_positions` (tokens 50 and 500 of 512 scaled to ``T = row length - 1``
  predicted tokens, 1-based, each averaged over ``±band`` tokens, default ``T // 64``), the same as the
  interventions' ``icl`` figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .model import neox_shape
from .probes import Probe, float_acc, icl_positions, register_probe

__all__ = [
    "induction_text_targets",
    "batch_induction_targets",
    "induction_hits",
    "TextInductionProbe",
    "token_losses",
    "icl_score_text",
    "icl_window",
]


def _as_long(tokens) -> torch.Tensor:
    t = tokens if isinstance(tokens, torch.Tensor) else torch.as_tensor(np.asarray(tokens).astype(np.int64))
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"tokens must be integers, got dtype {t.dtype}")
    return t.long()


def induction_text_targets(tokens) -> Tuple[torch.Tensor, torch.Tensor]:
    """(positions t, targets) of a 1-D token row: every ``t`` whose token occurred before, and the token that
    followed its last earlier occurrence ``j < t`` (``tokens[j + 1]``), to be scored at logit row ``t``."""
    x = _as_long(tokens)
    if x.ndim != 1:
        raise ValueError(f"tokens must be a 1-D row, got shape {tuple(x.shape)}")
    T = x.shape[0]
    if T < 2:
        e = torch.zeros(0, dtype=torch.long, device=x.device)
        return e, e.clone()
    order = torch.sort(x, stable=True).indices  # positions grouped by token, ascending within a token
    xs = x[order]
    same = xs[1:] == xs[:-1]
    prev = torch.full((T,), -1, dtype=torch.long, device=x.device)
    prev[order[1:][same]] = order[:-1][same]  # the previous occurrence of the same token
    pos = torch.nonzero(prev >= 0).squeeze(1)
    return pos, x[prev[pos] + 1]


def induction_hits(tokens) -> Tuple[int, int]:
    """How much plain induction predicts in a row of real tokens: ``(hits, n)`` over the positions ``t`` of
    :func:`induction_text_targets` that have a next token in the row (``t < T - 1``): ``n`` such positions, of
    which ``hits`` have ``x_{t+1}`` equal to the token that followed the last earlier occurrence of ``x_t``."""
    x = _as_long(tokens)
    pos, tgt = induction_text_targets(x)
    keep = pos < x.shape[0] - 1
    pos, tgt = pos[keep], tgt[keep]
    return int((x[pos + 1] == tgt).sum()), int(pos.numel())


def batch_induction_targets(ids: torch.Tensor, exclude: Sequence[int] = ()) -> Tuple[torch.Tensor, ...]:
    """(row index, position, target) of every induction position of the rows ``ids [n, T]`` (flattened, row-major);
    positions whose current token is in ``exclude`` (e.g. EOD) are left out."""
    ids = _as_long(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be [n, T], got shape {tuple(ids.shape)}")
    rs, ps, ts = [], [], []
    ex = torch.as_tensor(list(exclude), dtype=torch.long, device=ids.device)
    for i in range(ids.shape[0]):
        p, t = induction_text_targets(ids[i])
        if ex.numel():
            keep = ~torch.isin(ids[i, p], ex)
            p, t = p[keep], t[keep]
        rs.append(torch.full_like(p, i))
        ps.append(p)
        ts.append(t)
    return torch.cat(rs), torch.cat(ps), torch.cat(ts)


@dataclass
class TextInductionProbe(Probe):
    """Mean log p(the token after the last earlier occurrence of the current token) on rows of real text.

    Args (beside :class:`~mda_fast.core.probes.Probe`'s; ``L``, ``seed``, ``low``, ``high`` are unused):
        rows: the probe rows, a LongTensor ``[n, T]`` (or anything ``torch.as_tensor`` takes).
        path: instead of ``rows``, a Megatron dataset (``mda-fast corpus`` output, Pythia's files) ...
        indices: ... and the global row indices to read (default: rows ``0 .. n-1``) ...
        seq_len: ... and its tokens per row (2049 in Pythia).
        length: tokens of each row fed to the model; 0 (default): ``min(row length, model context)``.
        exclude: token ids whose positions are not scored (e.g. ``(0,)``: no target after an EOD).
        n: rows read from ``path`` when ``indices`` is not given (default 16).
    """

    name = "induction_text"
    n: int = 16
    rows: Optional[object] = None
    path: str = ""
    indices: Optional[Sequence[int]] = None
    seq_len: int = 2049
    length: int = 0
    exclude: Tuple[int, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        if (self.rows is None) == (not self.path):
            raise ConfigError(
                "probe 'induction_text': expected exactly one of rows= (a LongTensor [n, T]) or "
                "path= (a Megatron dataset with indices= and seq_len=)"
            )
        if not isinstance(self.length, int) or self.length < 0 or self.length == 1:
            raise ConfigError(
                f"probe 'induction_text': length={self.length!r}: expected 0 (the model's context) or an int >= 2"
            )
        self.exclude = tuple(int(e) for e in self.exclude)
        self._rows: Optional[torch.Tensor] = None

    def load_rows(self) -> torch.Tensor:
        """The probe rows ``[n, T]`` (int64, CPU) before cutting to ``length``."""
        if self._rows is None:
            if self.rows is not None:
                r = _as_long(self.rows).cpu()
            else:
                from ..data.pythia import PythiaBatches

                b = PythiaBatches(self.path, batch_size=1, seq_len=self.seq_len)
                ix = np.arange(min(self.n, b.n_rows)) if self.indices is None else np.asarray(self.indices, np.int64)
                r = torch.from_numpy(b.rows(ix).astype(np.int64))
            if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] < 2:
                raise DataError(f"probe 'induction_text': expected rows [n >= 1, T >= 2], got shape {tuple(r.shape)}")
            self._rows = r
        return self._rows

    def inputs(self, model) -> torch.Tensor:
        s = neox_shape(model)
        r = self.load_rows()
        T = self.length or min(r.shape[1], s.max_positions)
        if T > r.shape[1]:
            raise ValueError(f"probe 'induction_text': length={T} exceeds the rows' {r.shape[1]} tokens")
        if T > s.max_positions:
            raise ValueError(f"probe 'induction_text': length={T} exceeds the model's context {s.max_positions}")
        r = r[:, :T]
        if int(r.min()) < 0 or int(r.max()) >= s.vocab_size:
            raise DataError(
                f"probe 'induction_text': token ids in [{int(r.min())}, {int(r.max())}] outside the "
                f"model's vocabulary [0, {s.vocab_size})"
            )
        if batch_induction_targets(r, self.exclude)[0].numel() == 0:
            raise DataError(
                "probe 'induction_text': no position of the probe rows repeats an earlier token; "
                "expected rows of real text"
            )
        return r.to(next(model.parameters()).device)

    def objective(self, model, spec, input_ids, logits, hooks):
        r, p, t = batch_induction_targets(input_ids, self.exclude)
        sel = float_acc(logits[r, p])  # [K, V]: only the scored rows (no second [K, V] log-softmax copy)
        lp = sel.gather(-1, t.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(sel, dim=-1)
        out = torch.zeros(input_ids.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, r, lp)
        return out / max(1, r.numel())


register_probe(TextInductionProbe.name, TextInductionProbe)


# ------------------------------------------------------------------------------------------------ ICL score


def _logits_fn(model) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(model, torch.nn.Module):
        return lambda ids: model(input_ids=ids, use_cache=False).logits
    if callable(model):
        return model
    raise TypeError(f"model must be a GPT-NeoX module or a function ids -> logits, got {type(model).__name__}")


@torch.no_grad()
def token_losses(model, rows, batch_size: int = 8) -> torch.Tensor:
    """Cross-entropy ``[n, T-1]`` (float64, CPU) of each row's tokens ``1..T-1`` given the tokens before them.

    ``model``: a GPT-NeoX model or a function ``ids [b, T-1] -> logits [b, T-1, V]``."""
    f = _logits_fn(model)
    rows = _as_long(rows)
    if rows.ndim != 2 or rows.shape[1] < 2:
        raise ValueError(f"rows must be [n, T >= 2], got shape {tuple(rows.shape)}")
    dev = next(model.parameters()).device if isinstance(model, torch.nn.Module) else rows.device
    out = torch.empty(rows.shape[0], rows.shape[1] - 1, dtype=torch.float64)
    for lo in range(0, rows.shape[0], batch_size):
        b = rows[lo : lo + batch_size].to(dev)
        logits = f(b[:, :-1]).float()
        out[lo : lo + b.shape[0]] = (
            torch.nn.functional.cross_entropy(logits.transpose(1, 2), b[:, 1:], reduction="none").double().cpu()
        )
    return out


def icl_window(
    T: int, early: Optional[int] = None, late: Optional[int] = None, band: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(early, late) 0-based indices into a ``[n, T]`` loss array (entry ``p`` is the loss of 1-based predicted
    token ``p + 1``): ``early``/``late`` default to :func:`mda_fast.core.probes.icl_positions` ``(T)``, each
    widened by ``±band`` (default ``T // 64``)."""

    e0, l0 = icl_positions(T)
    early = e0 if early is None else int(early)
    late = l0 if late is None else int(late)
    band = T // 64 if band is None else int(band)
    if not (band >= 0 and 1 <= early - band and early < late and late + band <= T):
        raise ValueError(
            f"icl positions early={early}, late={late} with band {band}: expected 1 <= early-band, "
            f"early < late, late+band <= T={T}"
        )
    return torch.arange(early - 1 - band, early + band), torch.arange(late - 1 - band, late + band)


def icl_score_text(
    model,
    rows,
    early: Optional[int] = None,
    late: Optional[int] = None,
    band: Optional[int] = None,
    batch_size: int = 8,
    per_row: bool = False,
) -> Union[float, torch.Tensor]:
    """Mean loss at the late positions minus mean loss at the early positions of real-text ``rows [n, T+1]``
    (negative: the model predicts later tokens better, in-context learning). Positions: :func:`icl_window`
    (1-based predicted tokens; the interventions' defaults). ``per_row``: the ``[n]`` scores instead of their mean."""
    ce = token_losses(model, rows, batch_size)
    e, lt = icl_window(ce.shape[1], early, late, band)
    s = ce[:, lt].mean(dim=1) - ce[:, e].mean(dim=1)
    return s if per_row else float(s.mean())

"""Pythia-recipe trainer for GPT-NeoX with per-sample interventions (deletion, insertion).

Recipe: AdamW (beta 0.9/0.95, eps 1e-8, weight decay 0.1 except biases and LayerNorm parameters), linear warmup
over 1% of ``total_steps`` then cosine decay to 0.1x peak (``schedule.CosineSchedule``), grad-norm clip 1.0,
bf16 autocast on CUDA only (fp32 master weights). Step ``k`` trains on ``data.step(k)``; checkpoint ``step{k}``
holds the weights after ``k`` updates (Pythia's convention: ``step0`` is the initialisation).

Loss (Pythia / Megatron): inputs ``row[:T]``, labels ``row[1:T+1]`` with ``T = seq_len - 1``; the training loss of a
step is ``sum_{rows n} sum_t CE[n, t] / (batch_size * T)``: the mean token cross-entropy of the unmodified batch.

Interventions. Global sample index of batch position ``p`` at step ``k`` is ``k * batch_size + p``. The
denominator is always the *unmodified* batch's ``batch_size * T``, so every other sample keeps its exact weight:

* ``delete``: a deleted sample is dropped from its batch; the step's gradient is the unmodified gradient minus
  the deleted samples' per-sample gradients / (batch_size * T) (identical to giving its tokens loss weight 0).
* ``insert`` with ``insert_mode="append"`` (default): inserted sequences are extra rows; the step's gradient is
  the unmodified gradient plus the inserted samples' per-sample gradients / (batch_size * T).
* ``insert`` with ``insert_mode="replace"``: each inserted sequence takes the slot of one sample of that batch:
  ``Insertion.position`` if given, else a slot drawn (seeded by ``(Interventions.seed, step)``) among slots that
  are neither deleted nor already taken. The replaced sample is left out of that step (logged as ``replaced``).

Inserted sequences are never affected by ``delete``. Every step's composition goes to ``out_dir/batches.jsonl``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .presets import from_pretrained_kwargs, get_preset, make_model
from .schedule import CosineSchedule, checkpoint_steps

__all__ = [
    "Insertion",
    "Interventions",
    "TrainConfig",
    "Trainer",
    "StepBatch",
    "lm_loss",
    "param_groups",
    "branch_from_checkpoint",
    "load_checkpoint_model",
    "read_jsonl",
]

STATE_FILE = "trainer_state.pt"


@dataclass
class Insertion:
    """One extra sequence at training step ``step``: ``index`` (a global sample index of the dataset) or
    ``tokens`` (a raw ``[seq_len]`` token array), exactly one of them. ``position`` picks the replaced batch slot
    in ``"replace"`` mode (ignored when appending). ``name`` labels it in the batch log (default ``idx<index>``
    or ``raw<j>``, ``j`` its position in ``Interventions.insert``)."""

    step: int
    index: Optional[int] = None
    tokens: Optional[np.ndarray] = None
    position: Optional[int] = None
    name: Optional[str] = None


@dataclass
class Interventions:
    """Samples to delete (global indices) and sequences to insert; see the module docstring for semantics."""

    delete: Iterable[int] = frozenset()
    insert: Sequence[Insertion] = ()
    insert_mode: str = "append"
    seed: int = 0
    _by_step: Dict[int, List[Insertion]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        delete = frozenset(int(i) for i in self.delete)
        if any(i < 0 for i in delete):
            raise ValueError(f"delete: global sample indices must be >= 0, got {min(delete)}")
        self.delete = delete
        if self.insert_mode not in ("append", "replace"):
            raise ValueError(f"insert_mode: expected 'append' or 'replace', got {self.insert_mode!r}")
        ins = list(self.insert)
        self._by_step = {}
        for j, it in enumerate(ins):
            if not isinstance(it, Insertion):
                raise TypeError(f"insert[{j}]: expected an Insertion, got {type(it).__name__}")
            if (it.index is None) == (it.tokens is None):
                raise ValueError(f"insert[{j}]: give exactly one of index= or tokens=")
            if not (isinstance(it.step, (int, np.integer)) and it.step >= 0):
                raise ValueError(f"insert[{j}].step: expected an int >= 0, got {it.step!r}")
            if it.index is not None and int(it.index) < 0:
                raise ValueError(f"insert[{j}].index: expected >= 0, got {it.index}")
            if it.tokens is not None:
                tok = np.asarray(it.tokens)
                if tok.ndim != 1 or not np.issubdtype(tok.dtype, np.integer):
                    raise ValueError(
                        f"insert[{j}].tokens: expected a 1-D integer array, got shape {tok.shape} dtype {tok.dtype}"
                    )
                if tok.size and tok.min() < 0:
                    raise ValueError(f"insert[{j}].tokens: token ids must be >= 0")
                it.tokens = tok
            if it.name is None:
                it.name = f"idx{int(it.index)}" if it.index is not None else f"raw{j}"
            self._by_step.setdefault(int(it.step), []).append(it)
        self.insert = tuple(ins)
        for step, items in self._by_step.items():
            pos = [it.position for it in items if it.position is not None]
            if self.insert_mode == "replace" and len(pos) != len(set(pos)):
                raise ValueError(f"insert: two insertions at step {step} replace the same position")

    def at_step(self, step: int) -> List[Insertion]:
        """Insertions of training step ``step`` (in the order given)."""
        return self._by_step.get(int(step), [])

    @property
    def empty(self) -> bool:
        return not self.delete and not self.insert

    @classmethod
    def duplicate(
        cls, indices: Iterable[int], steps: Iterable[int], delete: Iterable[int] = (), insert_mode: str = "append",
        seed: int = 0,
    ) -> "Interventions":
        """Insert a copy of each global sample in ``indices`` once, spread round-robin over ``steps``
        (index ``j`` goes to ``steps[j % len(steps)]``)."""
        steps = [int(s) for s in steps]
        if not steps:
            raise ValueError("steps: expected at least one step")
        ins = [Insertion(step=steps[j % len(steps)], index=int(i)) for j, i in enumerate(indices)]
        return cls(delete=delete, insert=ins, insert_mode=insert_mode, seed=seed)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (raw tokens are given by length only)."""
        return {
            "delete": sorted(self.delete),
            "insert": [
                {
                    "step": int(it.step),
                    "name": it.name,
                    "index": None if it.index is None else int(it.index),
                    "n_tokens": None if it.tokens is None else int(it.tokens.size),
                    "position": it.position,
                }
                for it in self.insert
            ],
            "insert_mode": self.insert_mode,
            "seed": self.seed,
        }


# ---------------------------------------------------------------------------------------------------------------
# loss and optimizer groups


def lm_loss(model, tokens: torch.Tensor, denominator: Optional[float] = None,
            token_weights: Optional[torch.Tensor] = None, autocast_dtype: Optional[torch.dtype] = None
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


def param_groups(model, weight_decay: float) -> List[dict]:
    """AdamW groups: ``weight_decay`` on every parameter except biases and LayerNorm weights (decay 0)."""
    no_decay_ids = set()
    for mod in model.modules():
        if isinstance(mod, torch.nn.LayerNorm):
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


# ---------------------------------------------------------------------------------------------------------------
# configuration


@dataclass
class TrainConfig:
    """Training run settings. ``total_steps`` defines the LR schedule; ``train(end_step=...)`` may stop earlier.

    ``lr=None`` uses the preset's Pythia peak LR (1e-3; 6e-4 for pythia-160m). ``device="auto"`` picks CUDA when
    available. ``bf16=None`` means bf16 autocast on CUDA and fp32 on CPU. ``micro_batch_size`` splits each step
    into gradient-accumulation chunks (same denominator, same result up to fp rounding). Checkpoints go to
    ``out_dir/step{k}`` at ``checkpoint_steps(total_steps, checkpoint_every, checkpoint_extra)`` and at the last
    step of every ``train`` call. ``metrics_file`` defaults to ``out_dir/metrics.jsonl``.
    """

    preset: str = "tiny-2l"
    total_steps: int = 1000
    lr: Optional[float] = None
    warmup_frac: float = 0.01
    min_lr_frac: float = 0.1
    betas: Tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 1000
    checkpoint_extra: Tuple[int, ...] = ()
    save_optimizer: bool = True
    device: str = "auto"
    bf16: Optional[bool] = None
    micro_batch_size: Optional[int] = None
    attn_implementation: str = "sdpa"
    out_dir: str = "runs/train"
    metrics_file: Optional[str] = None
    progress: bool = True

    def __post_init__(self):
        get_preset(self.preset)
        self.betas = tuple(float(b) for b in self.betas)
        self.checkpoint_extra = tuple(int(s) for s in self.checkpoint_extra)
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip: expected > 0 or None, got {self.clip!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay!r}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size: expected >= 1 or None, got {self.micro_batch_size!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")
        self.schedule()  # validates total_steps, lr, warmup_frac, min_lr_frac
        checkpoint_steps(self.total_steps, self.checkpoint_every, self.checkpoint_extra)

    @property
    def peak_lr(self) -> float:
        return float(self.lr) if self.lr is not None else get_preset(self.preset).peak_lr

    def schedule(self) -> CosineSchedule:
        return CosineSchedule(self.peak_lr, self.total_steps, self.warmup_frac, self.min_lr_frac)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class StepBatch:
    """One step's actual training rows ``tokens [n_rows, seq_len]`` (int64), the loss denominator and the
    batch-log record describing its composition."""

    step: int
    tokens: torch.Tensor
    denominator: float
    record: dict


def read_jsonl(path: str) -> List[dict]:
    """All records of a JSONL file (empty list when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _keep_jsonl(path: str, keep: Callable[[dict], bool]) -> None:
    if os.path.exists(path):
        recs = [r for r in read_jsonl(path) if keep(r)]
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, path)


class _QuietHF:
    """Silence transformers' per-file progress bars inside the trainer's own bar (restored on exit)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._log = hf_logging
        self._was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        if self._was:
            self._log.enable_progress_bar()


def load_checkpoint_model(checkpoint_dir: str, attn_implementation: str = "sdpa"):
    """``GPTNeoXForCausalLM`` from a ``step{k}`` directory, in fp32."""
    from transformers import GPTNeoXForCausalLM

    if not os.path.isfile(os.path.join(checkpoint_dir, "config.json")):
        raise ValueError(f"{checkpoint_dir!r}: no config.json; not a save_pretrained checkpoint directory")
    with _QuietHF():
        model = GPTNeoXForCausalLM.from_pretrained(checkpoint_dir, **from_pretrained_kwargs(attn_implementation))
    return model.float()


# ---------------------------------------------------------------------------------------------------------------
# trainer


class Trainer:
    """Trains ``config.preset`` on ``data`` (a ``PythiaBatches``-like object: ``step(k)``, ``rows(idx)``,
    ``batch_size``, ``seq_len``, ``n_steps``) with optional ``interventions``.

    ``eval_fn(model, step) -> dict`` is called at each saved checkpoint (and at the start step when this
    ``out_dir`` has no record for it); its results go to ``out_dir/eval.jsonl`` with the ``step``.
    Logs in ``out_dir``: ``metrics.jsonl`` (per step: step, loss, loss_per_token, lr, grad_norm, tokens_per_s,
    n_rows), ``batches.jsonl`` (per step: step, indices, deleted, inserted, replaced, n_rows, denominator),
    ``eval.jsonl``, ``interventions.json``, ``config.json``.
    """

    def __init__(self, config: TrainConfig, data, interventions: Optional[Interventions] = None,
                 eval_fn: Optional[Callable[[Any, int], dict]] = None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        for attr in ("step", "rows", "batch_size", "seq_len", "n_steps"):
            if not hasattr(data, attr):
                raise TypeError(f"data: expected a PythiaBatches-like object with .{attr}, got {type(data).__name__}")
        if data.seq_len < 2:
            raise ValueError(f"data.seq_len: expected >= 2 (T+1 tokens per row), got {data.seq_len}")
        if interventions is None:
            interventions = Interventions()
        if not isinstance(interventions, Interventions):
            raise TypeError(f"interventions: expected an Interventions, got {type(interventions).__name__}")
        n_rows_total = int(data.n_steps) * int(data.batch_size)
        n_rows_file = int(getattr(data, "n_rows", n_rows_total))
        for it in interventions.insert:
            if it.index is not None and not int(it.index) < n_rows_file:
                raise ValueError(f"insert {it.name}: index {it.index} outside the dataset's {n_rows_file} rows")
            if it.tokens is not None and it.tokens.size != data.seq_len:
                raise ValueError(
                    f"insert {it.name}: raw tokens have length {it.tokens.size}, expected data.seq_len={data.seq_len}"
                )
            if it.position is not None and not 0 <= it.position < data.batch_size:
                raise ValueError(f"insert {it.name}: position {it.position} outside [0, {data.batch_size})")
        self.config = config
        self.data = data
        self.interventions = interventions
        self.eval_fn = eval_fn
        self.preset = get_preset(config.preset)
        self.schedule = config.schedule()
        self.device = config.resolved_device()
        self.autocast_dtype = (
            torch.bfloat16 if (config.bf16 if config.bf16 is not None else self.device.type == "cuda") else None
        )
        if self.autocast_dtype is not None and self.device.type != "cuda":
            raise ValueError("bf16: bf16 autocast is only supported on CUDA (got device cpu)")
        self.out_dir = config.out_dir
        self.metrics_path = config.metrics_file or os.path.join(self.out_dir, "metrics.jsonl")
        self.batches_path = os.path.join(self.out_dir, "batches.jsonl")
        self.eval_path = os.path.join(self.out_dir, "eval.jsonl")
        self.model = None
        self.optimizer = None
        self.step = 0

    # -- setup ------------------------------------------------------------------------------------------------
    def _build_optimizer(self):
        c = self.config
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, c.weight_decay), lr=self.schedule.lr(self.step), betas=c.betas, eps=c.eps,
            foreach=False,
        )

    def init_model(self) -> None:
        """Fresh seeded model (``config.seed``) and optimizer at step 0."""
        self.model = make_model(self.preset, self.config.seed, self.config.attn_implementation).to(self.device)
        self.model.train()
        self.step = 0
        self._build_optimizer()

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Load weights, optimizer state, step and RNG state from ``checkpoint_dir`` (a ``step{k}`` directory)."""
        path = os.path.join(checkpoint_dir, STATE_FILE)
        if not os.path.exists(path):
            raise ValueError(f"{checkpoint_dir!r}: no {STATE_FILE}; not a trainer checkpoint")
        state = torch.load(path, map_location="cpu", weights_only=True)
        d = state["data"]
        if (d["batch_size"], d["seq_len"]) != (self.data.batch_size, self.data.seq_len):
            raise ValueError(
                f"{checkpoint_dir!r}: saved with batch_size={d['batch_size']}, seq_len={d['seq_len']}; the data has "
                f"batch_size={self.data.batch_size}, seq_len={self.data.seq_len}"
            )
        if state["config"]["preset"] != self.config.preset:
            raise ValueError(
                f"{checkpoint_dir!r}: preset {state['config']['preset']!r} differs from config.preset "
                f"{self.config.preset!r}"
            )
        if state.get("optimizer") is None:
            raise ValueError(f"{checkpoint_dir!r}: saved without optimizer state (save_optimizer=False)")
        self.model = load_checkpoint_model(checkpoint_dir, self.config.attn_implementation).to(self.device)
        self.model.train()
        self.step = int(state["step"])
        self._build_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    # -- one step ---------------------------------------------------------------------------------------------
    def compose(self, step: int) -> StepBatch:
        """Step ``step``'s actual rows after interventions, the denominator and its batch-log record."""
        data, iv = self.data, self.interventions
        B = int(data.batch_size)
        base = np.asarray(data.step(step))
        if base.shape != (B, data.seq_len):
            raise ValueError(f"data.step({step}): expected shape {(B, data.seq_len)}, got {base.shape}")
        g0 = step * B
        deleted = [p for p in range(B) if g0 + p in iv.delete]
        ins = iv.at_step(step)
        rows = [base[p] for p in range(B)]
        source: List[Any] = list(range(g0, g0 + B))  # global index, or an insertion record
        live = [True] * B
        for p in deleted:
            live[p] = False
        inserted, replaced, extra = [], [], []
        ins_tokens = [np.asarray(it.tokens) if it.tokens is not None else
                      np.asarray(data.rows(np.array([int(it.index)], dtype=np.int64)))[0] for it in ins]
        if iv.insert_mode == "replace":
            taken = {it.position for it in ins if it.position is not None}
            rng = np.random.default_rng([int(iv.seed), int(step)])
            for it, tok in zip(ins, ins_tokens):
                pos = it.position
                if pos is None:
                    free = [p for p in range(B) if live[p] and p not in taken]
                    if not free:
                        raise ValueError(f"insert at step {step}: no free batch slot left to replace")
                    pos = int(free[int(rng.integers(len(free)))])
                    taken.add(pos)
                if live[pos]:
                    replaced.append(g0 + pos)
                rows[pos] = tok
                source[pos] = {"id": it.name, "index": None if it.index is None else int(it.index), "slot": pos}
                live[pos] = True
        else:
            for it, tok in zip(ins, ins_tokens):
                extra.append((tok, {"id": it.name, "index": None if it.index is None else int(it.index), "slot": None}))
        out_rows, indices = [], []
        for p in range(B):
            if not live[p]:
                continue
            src = source[p]
            if isinstance(src, dict):
                inserted.append(dict(src, row=len(out_rows)))
            else:
                indices.append(src)
            out_rows.append(rows[p])
        for tok, src in extra:
            inserted.append(dict(src, row=len(out_rows)))
            out_rows.append(tok)
        T = data.seq_len - 1
        arr = np.stack(out_rows).astype(np.int64) if out_rows else np.zeros((0, data.seq_len), np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.preset.vocab_size):
            raise ValueError(
                f"step {step}: token ids in [{arr.min()}, {arr.max()}] outside the vocabulary "
                f"[0, {self.preset.vocab_size}) of preset {self.preset.name}"
            )
        record = {
            "step": int(step),
            "indices": [int(i) for i in indices],
            "deleted": [g0 + p for p in deleted],
            "inserted": inserted,
            "replaced": replaced,
            "n_rows": len(out_rows),
            "denominator": B * T,
        }
        return StepBatch(int(step), torch.from_numpy(arr).to(self.device), float(B * T), record)

    def forward_backward(self, batch: StepBatch) -> float:
        """Accumulate ``d loss / d params`` of ``batch`` into ``.grad`` (not zeroed here); returns the loss."""
        mb = self.config.micro_batch_size or max(1, batch.tokens.shape[0])
        total = 0.0
        for lo in range(0, batch.tokens.shape[0], mb):
            loss = lm_loss(self.model, batch.tokens[lo:lo + mb], batch.denominator, autocast_dtype=self.autocast_dtype)
            loss.backward()
            total += float(loss.detach())
        return total

    def train_step(self, batch: StepBatch) -> dict:
        """One optimizer update on ``batch``; returns its metrics (loss, lr, grad_norm before clipping)."""
        lr = self.schedule.lr(batch.step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward_backward(batch)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.config.clip is not None:
            gn = float(torch.nn.utils.clip_grad_norm_(params, self.config.clip))
        else:
            gn = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        self.optimizer.step()
        self.step = batch.step + 1
        n = batch.tokens.shape[0]
        T = batch.tokens.shape[1] - 1
        return {
            "step": batch.step,
            "loss": loss,
            "loss_per_token": loss * batch.denominator / (n * T) if n else float("nan"),
            "lr": lr,
            "grad_norm": gn,
            "n_rows": n,
        }

    # -- checkpoints ------------------------------------------------------------------------------------------
    def checkpoint_dir(self, step: int) -> str:
        return os.path.join(self.out_dir, f"step{int(step)}")

    def save_checkpoint(self) -> str:
        """Save ``out_dir/step{self.step}``: HF weights + config (``save_pretrained``) and ``trainer_state.pt``."""
        final = self.checkpoint_dir(self.step)
        tmp = final + ".tmp"
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        with _QuietHF():
            self.model.save_pretrained(tmp)
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict() if self.config.save_optimizer else None,
            "schedule": dataclasses.asdict(self.schedule),
            "config": self.config.to_dict(),
            "data": {"batch_size": int(self.data.batch_size), "seq_len": int(self.data.seq_len),
                     "n_steps": int(self.data.n_steps), "path": str(getattr(self.data, "path", ""))},
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
        }
        torch.save(state, os.path.join(tmp, STATE_FILE))
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final

    def _evaluate(self, step: int) -> None:
        if self.eval_fn is None:
            return
        was_training = self.model.training
        self.model.eval()
        try:
            res = self.eval_fn(self.model, step)
        finally:
            self.model.train(was_training)
        if not isinstance(res, dict):
            raise TypeError(f"eval_fn must return a dict, got {type(res).__name__}")
        with open(self.eval_path, "a") as f:
            f.write(json.dumps({"step": int(step), **res}) + "\n")

    # -- loop -------------------------------------------------------------------------------------------------
    def train(self, start_step: Optional[int] = None, end_step: Optional[int] = None,
              resume_from: Optional[str] = None, stop: Optional[Callable[[int], bool]] = None) -> "Trainer":
        """Train batches ``start_step .. end_step - 1`` (``end_step`` defaults to ``total_steps``).

        ``stop(step) -> bool`` is asked after each checkpoint is saved and evaluated; ``True`` ends training there
        (used to train "until the induction head forms").

        ``resume_from`` loads a checkpoint first; otherwise a trainer without a model initialises one at step 0
        and a trainer that already trained continues from its current step. ``start_step``, when given, must
        equal the step it starts from. Log records at or after the start step are dropped from this
        ``out_dir``'s logs, so a resumed run's logs match an uninterrupted run's.
        """
        c = self.config
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        elif self.model is None:
            if start_step not in (None, 0):
                raise ValueError(f"start_step={start_step}: a fresh run starts at 0; pass resume_from= a checkpoint")
            self.init_model()
        if start_step is not None and start_step != self.step:
            raise ValueError(f"start_step={start_step}, but the model is at step {self.step}")
        start = self.step
        end = c.total_steps if end_step is None else int(end_step)
        if not start <= end <= c.total_steps:
            raise ValueError(f"end_step={end}: expected {start} <= end_step <= total_steps={c.total_steps}")
        if end > self.data.n_steps:
            raise ValueError(f"end_step={end}: the data has only {self.data.n_steps} steps")
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, "config.json"), "w") as f:
            json.dump(c.to_dict(), f, indent=1)
        with open(os.path.join(self.out_dir, "interventions.json"), "w") as f:
            json.dump(self.interventions.to_dict(), f)
        _keep_jsonl(self.metrics_path, lambda r: r["step"] < start)
        _keep_jsonl(self.batches_path, lambda r: r["step"] < start)
        _keep_jsonl(self.eval_path, lambda r: r["step"] < start or (start > 0 and r["step"] == start))
        ckpts = set(s for s in checkpoint_steps(c.total_steps, c.checkpoint_every, c.checkpoint_extra)
                    if start <= s <= end)
        ckpts.add(end)
        if start in ckpts and not os.path.exists(os.path.join(self.checkpoint_dir(start), STATE_FILE)):
            self.save_checkpoint()
        if self.eval_fn is not None and not any(r["step"] == start for r in read_jsonl(self.eval_path)):
            self._evaluate(start)

        from tqdm.auto import tqdm

        T = self.data.seq_len - 1
        bar = tqdm(total=end - start, unit="step", desc=f"train {c.preset}", disable=not c.progress,
                   dynamic_ncols=True)
        with open(self.metrics_path, "a") as mf, open(self.batches_path, "a") as bf:
            for k in range(start, end):
                t0 = time.perf_counter()
                batch = self.compose(k)
                m = self.train_step(batch)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                dt = time.perf_counter() - t0
                m["tokens_per_s"] = m["n_rows"] * T / dt
                m["time_s"] = dt
                if not math.isfinite(m["loss"]):
                    raise FloatingPointError(f"step {k}: loss is {m['loss']}")
                mf.write(json.dumps(m) + "\n")
                bf.write(json.dumps(batch.record) + "\n")
                mf.flush()
                bf.flush()
                bar.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{m['tokens_per_s']:.3g}")
                bar.update(1)
                if self.step in ckpts:
                    self.save_checkpoint()
                    self._evaluate(self.step)
                    if stop is not None and self.step < end and stop(self.step):
                        break
        bar.close()
        return self


def branch_from_checkpoint(checkpoint_dir: str, data, out_dir: str, interventions: Optional[Interventions] = None,
                           eval_fn: Optional[Callable[[Any, int], dict]] = None, **overrides) -> Trainer:
    """A new run starting from ``checkpoint_dir`` (weights, optimizer, schedule, RNG) writing to ``out_dir``.

    The config is the checkpoint's, with ``out_dir`` and ``overrides`` (any ``TrainConfig`` field) applied;
    ``metrics_file`` is reset to ``out_dir``'s default unless overridden. Arms branched from one checkpoint share
    initial weights, optimizer state, data order and schedule, so they differ only by ``interventions``.
    Call ``.train(end_step=...)`` on the result.
    """
    path = os.path.join(checkpoint_dir, STATE_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{checkpoint_dir!r}: no {STATE_FILE}; not a trainer checkpoint")
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = dict(state["config"])
    cfg["metrics_file"] = None
    cfg.update(overrides)
    cfg["out_dir"] = out_dir
    config = TrainConfig.from_dict(cfg)
    trainer = Trainer(config, data, interventions, eval_fn)
    trainer.load_checkpoint(checkpoint_dir)
    return trainer

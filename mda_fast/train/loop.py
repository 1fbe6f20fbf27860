"""The training loop: ``Trainer`` (setup, one step, checkpoints, logs) and ``StepBatch``.

Recipe: AdamW (``param_groups``), the ``TrainConfig.schedule()`` LR, grad-norm clip, bf16 autocast on CUDA only
(fp32 master weights). Step ``k`` trains on ``data.step(k)`` after ``interventions.compose``; checkpoint ``step{k}``
holds the weights after ``k`` updates.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Set, Tuple

import numpy as np
import torch

from .checkpoint import check_state, has_state, load_checkpoint_model, read_state, step_dir, write_checkpoint
from .interventions import Interventions, compose
from .logs import (
    BATCHES_FILE,
    CONFIG_FILE,
    EVAL_FILE,
    INTERVENTIONS_FILE,
    METRICS_FILE,
    JsonlWriter,
    append_jsonl,
    keep_jsonl,
    read_jsonl,
    write_json,
)
from .loss import lm_loss, param_groups
from .presets import get_preset, make_model
from .schedule import checkpoint_steps
from .train_config import TrainConfig

__all__ = ["StepBatch", "Trainer"]

_DATA_ATTRS = ("step", "rows", "batch_size", "seq_len", "n_steps")


@dataclass
class StepBatch:
    """One step's actual training rows ``tokens [n_rows, seq_len]`` (int64), the loss denominator and the
    batch-log record describing its composition."""

    step: int
    tokens: torch.Tensor
    denominator: float
    record: dict


def _check_data(data) -> None:
    for attr in _DATA_ATTRS:
        if not hasattr(data, attr):
            raise TypeError(f"data: expected a PythiaBatches-like object with .{attr}, got {type(data).__name__}")
    if data.seq_len < 2:
        raise ValueError(f"data.seq_len: expected >= 2 (T+1 tokens per row), got {data.seq_len}")


def _check_interventions(interventions: Optional[Interventions], data) -> Interventions:
    """``interventions`` (default: none), checked against the data's rows, row length and batch size."""
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
    return interventions


def _autocast_dtype(config: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    dtype = torch.bfloat16 if (config.bf16 if config.bf16 is not None else device.type == "cuda") else None
    if dtype is not None and device.type != "cuda":
        raise ValueError("bf16: bf16 autocast is only supported on CUDA (got device cpu)")
    return dtype


class Trainer:
    """Trains ``config.preset`` on ``data`` (a ``PythiaBatches``-like object: ``step(k)``, ``rows(idx)``,
    ``batch_size``, ``seq_len``, ``n_steps``) with optional ``interventions``.

    ``eval_fn(model, step) -> dict`` is called at each saved checkpoint (and at the start step when this
    ``out_dir`` has no record for it); its results go to ``out_dir/eval.jsonl`` with the ``step``.
    Logs in ``out_dir``: ``metrics.jsonl`` (per step: step, loss, loss_per_token, lr, grad_norm, tokens_per_s,
    n_rows), ``batches.jsonl`` (per step: step, indices, deleted, inserted, replaced, n_rows, denominator),
    ``eval.jsonl``, ``interventions.json``, ``config.json``.
    """

    def __init__(
        self,
        config: TrainConfig,
        data,
        interventions: Optional[Interventions] = None,
        eval_fn: Optional[Callable[[Any, int], dict]] = None,
    ):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        _check_data(data)
        self.interventions = _check_interventions(interventions, data)
        self.config = config
        self.data = data
        self.eval_fn = eval_fn
        self.preset = get_preset(config.preset)
        self.schedule = config.schedule()
        self.device = config.resolved_device()
        self.autocast_dtype = _autocast_dtype(config, self.device)
        self.out_dir = config.out_dir
        self.metrics_path = config.metrics_file or os.path.join(self.out_dir, METRICS_FILE)
        self.batches_path = os.path.join(self.out_dir, BATCHES_FILE)
        self.eval_path = os.path.join(self.out_dir, EVAL_FILE)
        self.model = None
        self.optimizer = None
        self.step = 0

    # -- setup ------------------------------------------------------------------------------------------------
    def _build_optimizer(self):
        c = self.config
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, c.weight_decay),
            lr=self.schedule.lr(self.step),
            betas=c.betas,
            eps=c.eps,
            foreach=False,
        )

    def init_model(self) -> None:
        """Fresh seeded model (``config.seed``) and optimizer at step 0."""
        c = self.config
        self.model = make_model(self.preset, c.seed, c.attn_implementation, c.family).to(self.device)
        self.model.train()
        self.step = 0
        self._build_optimizer()

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Load weights, optimizer state, step and RNG state from ``checkpoint_dir`` (a ``step{k}`` directory)."""
        state = read_state(checkpoint_dir)
        check_state(
            state, checkpoint_dir, self.data.batch_size, self.data.seq_len, self.config.preset, self.config.family
        )
        self.model = load_checkpoint_model(checkpoint_dir, self.config.attn_implementation).to(self.device)
        self.model.train()
        self.step = int(state["step"])
        self._build_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def start_from_weights(self, checkpoint_dir: str, step: int) -> None:
        """Start at ``step`` from the weights of a HF checkpoint that has no optimizer state (a published Pythia
        checkpoint): AdamW restarts from zero moments (and its bias correction from its first update) at the
        schedule's LR for ``step``; the torch RNG is seeded with ``(config.seed, step)``. An approximation of
        continuing the original run, whose optimizer state is not published."""
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"step: expected an int >= 0, got {step!r}")
        self.model = load_checkpoint_model(checkpoint_dir, self.config.attn_implementation).to(self.device)
        c, p = self.model.config, self.preset
        if c.model_type != self.config.family:
            raise ValueError(f"{checkpoint_dir!r} is a {c.model_type!r} model; config.family is {self.config.family!r}")
        got = (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.vocab_size)
        if got != (p.n_layers, p.d_model, p.n_heads, p.vocab_size):
            raise ValueError(
                f"{checkpoint_dir!r} has (layers, d_model, heads, vocab) = {got}; preset {p.name!r} "
                f"expects {(p.n_layers, p.d_model, p.n_heads, p.vocab_size)}"
            )
        self.model.train()
        self.step = step
        self._build_optimizer()
        torch.manual_seed(self.config.seed * 1_000_003 + step)

    # -- one step ---------------------------------------------------------------------------------------------
    def _insert_rows(self, step: int) -> list:
        """Token rows of step ``step``'s insertions (an index insertion's row read from the data)."""
        return [
            np.asarray(it.tokens)
            if it.tokens is not None
            else np.asarray(self.data.rows(np.array([int(it.index)], dtype=np.int64)))[0]
            for it in self.interventions.at_step(step)
        ]

    def compose(self, step: int) -> StepBatch:
        """Step ``step``'s actual rows after interventions, the denominator and its batch-log record."""
        data = self.data
        B = int(data.batch_size)
        base = np.asarray(data.step(step))
        if base.shape != (B, data.seq_len):
            raise ValueError(f"data.step({step}): expected shape {(B, data.seq_len)}, got {base.shape}")
        comp = compose(step, base, self.interventions, self._insert_rows(step))  # the pure module function
        arr = comp.rows
        if arr.size and (arr.min() < 0 or arr.max() >= self.preset.vocab_size):
            raise ValueError(
                f"step {step}: token ids in [{arr.min()}, {arr.max()}] outside the vocabulary "
                f"[0, {self.preset.vocab_size}) of preset {self.preset.name}"
            )
        denominator = float(comp.record["denominator"])
        return StepBatch(int(step), torch.from_numpy(arr).to(self.device), denominator, comp.record)

    def forward_backward(self, batch: StepBatch) -> float:
        """Accumulate ``d loss / d params`` of ``batch`` into ``.grad`` (not zeroed here); returns the loss."""
        mb = self.config.micro_batch_size or max(1, batch.tokens.shape[0])
        total = 0.0
        for lo in range(0, batch.tokens.shape[0], mb):
            loss = lm_loss(
                self.model, batch.tokens[lo : lo + mb], batch.denominator, autocast_dtype=self.autocast_dtype
            )
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
        return step_dir(self.out_dir, step)

    def _state(self) -> dict:
        """The trainer state saved next to the weights (``checkpoint.STATE_FILE``)."""
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict() if self.config.save_optimizer else None,
            "schedule": dataclasses.asdict(self.schedule),
            "config": self.config.to_dict(),
            "data": {
                "batch_size": int(self.data.batch_size),
                "seq_len": int(self.data.seq_len),
                "n_steps": int(self.data.n_steps),
                "path": str(getattr(self.data, "path", "")),
            },
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            },
        }

    def save_checkpoint(self) -> str:
        """Save ``out_dir/step{self.step}``: HF weights + config (``save_pretrained``) and ``checkpoint.STATE_FILE``."""
        return write_checkpoint(self.checkpoint_dir(self.step), self.model, self._state())

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
        append_jsonl(self.eval_path, {"step": int(step), **res})

    # -- loop -------------------------------------------------------------------------------------------------
    def train(
        self,
        start_step: Optional[int] = None,
        end_step: Optional[int] = None,
        resume_from: Optional[str] = None,
        stop: Optional[Callable[[int], bool]] = None,
    ) -> Trainer:
        """Train batches ``start_step .. end_step - 1`` (``end_step`` defaults to ``total_steps``).

        ``stop(step) -> bool`` is asked after each checkpoint is saved and evaluated; ``True`` ends training there
        (used to train "until the induction head forms").

        ``resume_from`` loads a checkpoint first; otherwise a trainer without a model initialises one at step 0
        and a trainer that already trained continues from its current step. ``start_step``, when given, must
        equal the step it starts from. Log records at or after the start step are dropped from this
        ``out_dir``'s logs, so a resumed run's logs match an uninterrupted run's.
        """
        start = self._start(start_step, resume_from)
        end = self._end(start, end_step)
        self._write_run_files(start)
        ckpts = self._checkpoint_steps(start, end)
        if start in ckpts and not has_state(self.checkpoint_dir(start)):
            self.save_checkpoint()
        if self.eval_fn is not None and not any(r["step"] == start for r in read_jsonl(self.eval_path)):
            self._evaluate(start)
        self._run(start, end, ckpts, stop)
        return self

    def _start(self, start_step: Optional[int], resume_from: Optional[str]) -> int:
        """Load ``resume_from`` or initialise the model if there is none; returns the step training starts at."""
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        elif self.model is None:
            if start_step not in (None, 0):
                raise ValueError(f"start_step={start_step}: a fresh run starts at 0; pass resume_from= a checkpoint")
            self.init_model()
        if start_step is not None and start_step != self.step:
            raise ValueError(f"start_step={start_step}, but the model is at step {self.step}")
        return self.step

    def _end(self, start: int, end_step: Optional[int]) -> int:
        c = self.config
        end = c.total_steps if end_step is None else int(end_step)
        if not start <= end <= c.total_steps:
            raise ValueError(f"end_step={end}: expected {start} <= end_step <= total_steps={c.total_steps}")
        if end > self.data.n_steps:
            raise ValueError(f"end_step={end}: the data has only {self.data.n_steps} steps")
        return end

    def _write_run_files(self, start: int) -> None:
        """Write ``config.json`` and ``interventions.json``; drop log records from ``start`` on."""
        os.makedirs(self.out_dir, exist_ok=True)
        write_json(os.path.join(self.out_dir, CONFIG_FILE), self.config.to_dict(), indent=1)
        write_json(os.path.join(self.out_dir, INTERVENTIONS_FILE), self.interventions.to_dict())
        keep_jsonl(self.metrics_path, lambda r: r["step"] < start)
        keep_jsonl(self.batches_path, lambda r: r["step"] < start)
        keep_jsonl(self.eval_path, lambda r: r["step"] < start or (start > 0 and r["step"] == start))

    def _checkpoint_steps(self, start: int, end: int) -> Set[int]:
        c = self.config
        ckpts = set(
            s for s in checkpoint_steps(c.total_steps, c.checkpoint_every, c.checkpoint_extra) if start <= s <= end
        )
        ckpts.add(end)
        return ckpts

    def _timed_step(self, k: int) -> Tuple[StepBatch, dict]:
        """Compose and train step ``k``; its batch and metrics (with ``tokens_per_s`` and ``time_s``)."""
        t0 = time.perf_counter()
        batch = self.compose(k)
        m = self.train_step(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        m["tokens_per_s"] = m["n_rows"] * (self.data.seq_len - 1) / dt
        m["time_s"] = dt
        if not math.isfinite(m["loss"]):
            raise FloatingPointError(f"step {k}: loss is {m['loss']}")
        return batch, m

    def _run(self, start: int, end: int, ckpts: Set[int], stop: Optional[Callable[[int], bool]]) -> None:
        """Steps ``start .. end - 1``, logging each and saving (and evaluating) at ``ckpts``."""
        from tqdm.auto import tqdm

        bar = tqdm(
            total=end - start,
            unit="step",
            desc=f"train {self.config.preset}",
            disable=not self.config.progress,
            dynamic_ncols=True,
        )
        with JsonlWriter(self.metrics_path) as mf, JsonlWriter(self.batches_path) as bf:
            for k in range(start, end):
                batch, m = self._timed_step(k)
                mf.write(m)
                bf.write(batch.record)
                bar.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{m['tokens_per_s']:.3g}")
                bar.update(1)
                if self.step in ckpts:
                    self.save_checkpoint()
                    self._evaluate(self.step)
                    if stop is not None and self.step < end and stop(self.step):
                        break
        bar.close()

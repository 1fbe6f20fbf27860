"""Trainer throughput (training tokens/s) for the tiny presets on the CPU, and pythia-14m on a GPU if present.

    python benchmarks/bench_trainer.py [--presets tiny-2l,tiny-3l,tiny-4l] [--batch 32] [--seq-len 129]
                                       [--steps 20] [--warmup 3] [--threads N]

Tokens/s counts input tokens (``batch * (seq_len - 1)``) per optimizer step. Three ways, side by side in one run:

* ``trainer.train()``: the full loop (batch composition from a Megatron file, loss, backward, clip, AdamW,
  JSONL logs), no checkpoints inside the timed steps;
* ``compose + train_step``: the step without logging;
* ``plain HF baseline``: ``model(input_ids, labels=...).loss`` + backward + clip + AdamW on a tensor already in
  memory: the floor the trainer's overhead is measured against.

Without CUDA the GPU row is skipped (nothing is printed for it).
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from mda_fast.data import PythiaBatches, write_megatron
from mda_fast.train import TrainConfig, Trainer, make_model, param_groups


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_preset(preset, batch, seq_len, steps, warmup, device, workdir):
    n_steps = 600 + warmup + 2 * steps + 1
    vocab = 260 if preset.startswith("tiny") else 50304
    rng = np.random.default_rng(0)
    prefix = os.path.join(workdir, f"data_{preset}")
    write_megatron(prefix, rng.integers(0, vocab, size=(n_steps * batch, seq_len)), dtype=np.uint16)
    data = PythiaBatches(prefix, batch_size=batch, seq_len=seq_len)
    T = seq_len - 1
    out = {}

    # step 600+: past Pythia's power-of-two checkpoints, so train() saves only at the end of each call
    k0 = 600
    total = k0 + warmup + 2 * steps + 1
    cfg = TrainConfig(
        preset=preset,
        total_steps=total,
        checkpoint_every=10**9,
        device=str(device),
        out_dir=os.path.join(workdir, f"run_{preset}"),
        progress=False,
    )
    tr = Trainer(cfg, data)
    tr.init_model()
    tr.step = k0  # benchmark only: start at step k0 from the initialisation
    tr.train(end_step=k0 + warmup)  # warm-up
    t0 = time.perf_counter()
    tr.train(end_step=k0 + warmup + steps)  # timed; ends with one checkpoint save, timed below and subtracted
    dt_all = time.perf_counter() - t0
    t1 = time.perf_counter()
    tr.save_checkpoint()
    dt_ck = time.perf_counter() - t1
    out["trainer.train()"] = steps * batch * T / max(1e-9, dt_all - dt_ck)
    out["(checkpoint save, s)"] = dt_ck

    t0 = time.perf_counter()
    for k in range(k0 + warmup + steps, k0 + warmup + 2 * steps):
        tr.train_step(tr.compose(k))
    _sync(device)
    out["compose + train_step"] = steps * batch * T / (time.perf_counter() - t0)

    # plain HF baseline
    model = make_model(preset, 0).to(device)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    x = torch.from_numpy(data.step(0).astype(np.int64)).to(device)
    ac = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step():
        opt.zero_grad(set_to_none=True)
        with ac:
            loss = model(input_ids=x[:, :-1], labels=x[:, :-1].contiguous(), use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    out["plain HF baseline"] = steps * batch * T / (time.perf_counter() - t0)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny-2l,tiny-3l,tiny-4l")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=129)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gpu-preset", default="pythia-14m")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = tempfile.mkdtemp(prefix="mda_bench_trainer_")
    try:
        print(
            f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}x{args.seq_len}, "
            f"{args.steps} timed steps after {args.warmup} warm-up"
        )
        print(
            "| device | preset | trainer.train() tok/s | compose+train_step tok/s | plain HF tok/s | "
            "train()/plain | checkpoint save s |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        runs = [(torch.device("cpu"), p) for p in args.presets.split(",") if p]
        if torch.cuda.is_available():
            runs.append((torch.device("cuda"), args.gpu_preset))
        else:
            print("(no CUDA device: GPU row skipped)")
        for device, preset in runs:
            r = bench_preset(preset, args.batch, args.seq_len, args.steps, args.warmup, device, workdir)
            print(
                f"| {device.type} | {preset} | {r['trainer.train()']:,.0f} | {r['compose + train_step']:,.0f} | "
                f"{r['plain HF baseline']:,.0f} | {r['trainer.train()'] / r['plain HF baseline']:.2f} | "
                f"{r['(checkpoint save, s)']:.3f} |",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

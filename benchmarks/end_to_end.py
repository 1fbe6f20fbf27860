"""End-to-end scoring benchmark: one head, the same N training sequences, three methods side by side in one run.

(a) authors' method, re-implemented: batch size 1, full ``loss.backward()`` per sequence, then
    Σ_b ⟨∇_b L(z), P_b⟩ with the head's weight-slice gradients and the scorer's preconditioned probe gradients P_b;
(b) kronfluence 1.0.1 EK-FAC, tracking the layer's whole ``query_key_value`` and ``dense`` modules;
(c) mda-fast ``InfluenceScorer.score`` in batches.

(a) and (c) share the same factors and P_b, so their scores must agree (Pearson > 0.999 in fp32).

    python benchmarks/end_to_end.py --model demo --n 128
    python benchmarks/end_to_end.py --model pythia-14m --device cuda --n 512 --batch-size 8

``--mode capture-vs-forward`` times instead, side by side in one run, one capture (forward + backward to the lowest
tracked layer, the head's blocks) against one no-grad forward, for a GPT-NeoX model (lean forward, and HF's forward
with hooks) and a Llama-layout model of the same size (d_model, layers, heads, MLP width, vocabulary; HF's forward
with hooks): whether a lean forward for the Llama layout would pay (issue 22: only if capture gets ≥ 1.3× faster).

    python benchmarks/end_to_end.py --mode capture-vs-forward --capture-preset tiny-4l --n 64 --layer 1
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mda_fast  # noqa: E402
from mda_fast.core.capture import sequence_loss  # noqa: E402
from mda_fast.core.heads import block_weight  # noqa: E402

PYTHIA_WINDOW = 1_024_000  # sequences in Pythia-14m's scoring window
MODELS = ("demo", "pythia-14m", "pythia-160m")


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def pearson(a, b) -> float:
    return float(torch.corrcoef(torch.stack([a.double().flatten(), b.double().flatten()]))[0, 1])


def make_rows(args, vocab: int, T: int, count: int) -> torch.Tensor:
    """``count`` rows of T+1 tokens: from a Megatron file (``--data``) or uniform random in [4, vocab)."""
    if args.data:
        from mda_fast.data.megatron import MMapIndexedDataset

        ds = MMapIndexedDataset(args.data)
        need = count * (T + 1)
        toks = torch.from_numpy(ds.read_tokens(0, need).astype("int64"))
        if toks.numel() < need:
            raise ValueError(
                f"--data {args.data}: need {need} tokens for {count} rows of {T + 1}, file has {toks.numel()}"
            )
        return toks.view(count, T + 1)
    g = torch.Generator().manual_seed(args.seed)
    return torch.randint(4, vocab, (count, T + 1), generator=g)


def build_model(args):
    if args.checkpoint:
        model = mda_fast.load_pythia(args.checkpoint)
    else:
        from mda_fast.train import make_model

        model = make_model("tiny-2l" if args.model == "demo" else args.model, seed=args.seed)
    return model.to(args.device).eval()


def method_a(model, blocks, queries, rows, device) -> torch.Tensor:
    """Authors' method: per-sequence full backward, then dot with the preconditioned probe gradient."""
    from tqdm import tqdm

    for p in model.parameters():
        p.requires_grad_(True)
    out = torch.empty(len(rows), dtype=torch.float64)
    for i in tqdm(range(len(rows)), desc="(a) authors", unit="seq", leave=False):
        model.zero_grad(set_to_none=True)
        row = rows[i : i + 1]
        logits = model(input_ids=row[:, :-1]).logits
        sequence_loss(logits, row[:, 1:]).sum().backward()
        s = 0.0
        for b in blocks:
            s = s + (block_weight(model, b, grad=True).double() * queries[b.name][0].double()).sum()
        out[i] = float(s)
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return out


def method_c(scorer, rows, bs) -> torch.Tensor:
    from tqdm import tqdm

    parts = [
        scorer.score(rows[i : i + bs])[:, 0].double().cpu()
        for i in tqdm(range(0, len(rows), bs), desc="(c) mda-fast", unit="batch", leave=False)
    ]
    return torch.cat(parts)


def method_c_hf(scorer, rows, bs) -> torch.Tensor:
    """(c) with capture through HF's forward + hooks instead of ``mda_fast.core.lean_forward`` (for comparison)."""
    from unittest import mock

    from mda_fast.core import lean_forward

    with mock.patch.object(lean_forward, "supports", lambda *a, **k: False):
        return method_c(scorer, rows, bs)


def method_b(model, layer, probe, fit_rows, rows, bs, device):
    """kronfluence EK-FAC over the layer's query_key_value + dense; returns (scores [N], fit s, score s)."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    model = copy.deepcopy(model)  # prepare_model wraps modules in place
    probe_ids = probe.inputs(model)

    class Rows(torch.utils.data.Dataset):
        def __init__(self, r):
            self.r = r

        def __len__(self):
            return len(self.r)

        def __getitem__(self, i):
            return {"input_ids": self.r[i, :-1], "labels": self.r[i, 1:]}

    class ProbeSet(torch.utils.data.Dataset):
        def __len__(self):
            return len(probe_ids)

        def __getitem__(self, i):
            return {"input_ids": probe_ids[i]}

    class HeadTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            logits = model(input_ids=batch["input_ids"]).logits
            return sequence_loss(logits, batch["labels"]).sum()

        def compute_measurement(self, batch, model):
            logits = model(input_ids=batch["input_ids"]).logits
            return probe.objective(model, None, batch["input_ids"], logits, None).sum()

        def get_influence_tracked_modules(self):
            return [f"gpt_neox.layers.{layer}.attention.query_key_value", f"gpt_neox.layers.{layer}.attention.dense"]

    warnings.filterwarnings("ignore", category=FutureWarning, module="kronfluence")
    task = HeadTask()
    for p in model.parameters():
        p.requires_grad_(True)
    kmodel = prepare_model(model, task)
    with tempfile.TemporaryDirectory() as tmp:
        an = Analyzer("e2e", kmodel, task, cpu=torch.device(device).type == "cpu", disable_tqdm=True, output_dir=tmp)
        _, t_fit = timed(
            lambda: an.fit_all_factors(
                "f",
                dataset=Rows(fit_rows.cpu()),
                per_device_batch_size=bs,
                factor_args=FactorArguments(strategy="ekfac"),
                overwrite_output_dir=True,
            ),
            device,
        )
        _, t_score = timed(
            lambda: an.compute_pairwise_scores(
                "s",
                factors_name="f",
                query_dataset=ProbeSet(),
                train_dataset=Rows(rows.cpu()),
                per_device_query_batch_size=len(probe_ids),
                per_device_train_batch_size=bs,
                score_args=ScoreArguments(),
                overwrite_output_dir=True,
            ),
            device,
        )
        kf = an.load_pairwise_scores("s")["all_modules"].sum(dim=0).double().cpu()
    return -kf, t_fit, t_score  # kronfluence scores are +∇fᵀH⁻¹∇L; ours carry the minus sign


def fmt_time(s: float) -> str:
    if s < 120:
        return f"{s:.2f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=MODELS, default="demo")
    ap.add_argument("--checkpoint", help="local step{k} checkpoint dir (demo model only), loaded with load_pythia")
    ap.add_argument("--data", help="Megatron dataset prefix to read rows from (default: random tokens)")
    ap.add_argument("--n", type=int, default=None, help="sequences to score (default 256 on CPU, 1024 on GPU)")
    ap.add_argument("--n-fit", type=int, default=None, help="sequences for the EK-FAC fit (default: --n)")
    ap.add_argument(
        "--batch-size", type=int, default=None, help="batch size of (b) and (c) (default 32 demo, 8 pythia)"
    )
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--head", type=int, default=0)
    ap.add_argument("--probe-L", type=int, default=32)
    ap.add_argument("--probe-n", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=4, help="(a) and (c) alternate over this many slices of the rows")
    ap.add_argument("--tf32", action="store_true", help="also time (c) with TF32 matmuls (GPU only)")
    ap.add_argument("--also-hf", action="store_true", help="also time (c) through HF's forward + hooks")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time (c) with the lean forward's torch.compile'd pieces (compiled before timing)",
    )
    ap.add_argument("--skip-a", action="store_true", help="skip (a) (its row and Pearson then compare to (c))")
    ap.add_argument("--skip-kronfluence", action="store_true")
    ap.add_argument("--force", action="store_true", help="run the pythia presets on the CPU anyway")
    ap.add_argument("--markdown", help="append the result table to this Markdown file")
    ap.add_argument("--mode", choices=("score", "capture-vs-forward"), default="score")
    ap.add_argument("--capture-preset", default="tiny-4l", help="capture-vs-forward: the GPT-NeoX preset's size")
    ap.add_argument("--capture-T", type=int, default=256, help="capture-vs-forward: tokens per row")
    return ap.parse_args(argv)


def llama_like(neox):
    """A Llama (separate q/k/v/o, RMSNorm, SwiGLU MLP) of ``neox``'s size: d_model, layers, heads, MLP width, vocab."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = neox.config
    cfg = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        max_position_embeddings=c.max_position_embeddings,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).float()


def capture_vs_forward(args) -> int:
    """Median seconds of one capture and of one no-grad forward per model, and their ratio (see the docstring)."""
    from mda_fast.core.capture import capture, hf_forward, loss_objective, uses_lean_forward
    from mda_fast.train import make_model

    dev = torch.device(args.device)
    neox = make_model(args.capture_preset, seed=args.seed).to(dev).eval()
    llama = llama_like(neox).to(dev).eval()
    n, T = args.n or 64, args.capture_T
    bs = args.batch_size or 16
    rows = torch.randint(4, neox.config.vocab_size, (n, T + 1), generator=torch.Generator().manual_seed(args.seed))
    rows = rows.to(dev)
    spec = mda_fast.HeadSpec(args.layer, args.head, mode="qkvo")
    print(
        f"capture vs forward: preset {args.capture_preset} (d_model {neox.config.hidden_size}, "
        f"{neox.config.num_hidden_layers} layers), {spec.name}, T={T}, N={n}, batch {bs}, device {dev}, "
        f"torch threads {torch.get_num_threads()}"
    )
    arms = [("gpt_neox, lean forward", neox, False), ("gpt_neox, HF forward + hooks", neox, True)]
    arms.append(("llama, HF forward + hooks", llama, False))
    times = {name: {"capture": [], "forward": []} for name, _, _ in arms}
    for model in (neox, llama):
        for p in model.parameters():
            p.requires_grad_(False)
    for r in range(args.rounds + 1):  # round 0 warms up; arms alternate inside each round
        for name, model, force_hf in arms:
            blocks = mda_fast.head_blocks(model, spec)
            for i in range(0, n, bs):
                inputs, labels = rows[i : i + bs, :-1], rows[i : i + bs, 1:]
                with torch.no_grad():
                    _, tf = timed(lambda: model(input_ids=inputs, use_cache=False), dev)
                obj = loss_objective(labels)
                if force_hf:
                    with hf_forward():
                        _, tc = timed(lambda: capture(model, inputs, blocks, obj), dev)
                else:
                    _, tc = timed(lambda: capture(model, inputs, blocks, obj), dev)
                if r:
                    times[name]["forward"].append(tf)
                    times[name]["capture"].append(tc)
            if r == 0:
                lean = uses_lean_forward(model, loss_objective(rows[:1, 1:]), blocks) and not force_hf
                print(f"  {name}: capture runs the {'lean' if lean else 'HF'} forward")
    print("| model | capture (s / batch) | no-grad forward (s / batch) | capture / forward |")
    print("| --- | --- | --- | --- |")
    median = {name: {k: float(torch.tensor(v).median()) for k, v in t.items()} for name, t in times.items()}
    # one forward time per model: the median over every arm of that model (the arms' forwards are the same work)
    forward = {id(m): float(torch.tensor([x for a, mm, _ in arms if mm is m for x in times[a]["forward"]]).median())
               for _, m, _ in arms}  # fmt: skip
    ratio = {}
    for name, model, _ in arms:
        ratio[name] = median[name]["capture"] / forward[id(model)]
        print(f"| {name} | {median[name]['capture']:.4f} | {forward[id(model)]:.4f} | {ratio[name]:.2f} |")
    neox_lean, neox_hf = median["gpt_neox, lean forward"]["capture"], median["gpt_neox, HF forward + hooks"]["capture"]
    print(
        f"the lean forward makes GPT-NeoX capture {neox_hf / neox_lean:.2f}x faster than HF's forward + hooks; "
        f"Llama capture / forward with HF's forward + hooks: {ratio['llama, HF forward + hooks']:.2f}"
    )
    return 0


NAMES = {
    "a": "(a) authors: per-sequence backward, bs 1",
    "b": "(b) kronfluence 1.0.1 EK-FAC (qkv + dense)",
    "c": "(c) mda-fast InfluenceScorer.score, bs {bs}",
    "t": "(c) mda-fast, TF32 matmuls, bs {bs}",
    "h": "(c) without the lean forward (HF forward + hooks), bs {bs}",
    "k": "(c) mda-fast, torch.compile'd lean forward, bs {bs}",
}


def alternate(args, model, blocks, scorers, rows, bs, dev):
    """Time (a) and each (c) variant, alternating over ``--rounds`` slices of the rows, so load changes on a shared
    machine hit all alike. Returns ``(seconds per method, per-round seconds per method, scores per method)``."""
    n = len(rows)
    keys = [k for k in ("a", "c", "t", "h", "k") if k in scorers or (k == "a" and not args.skip_a)]
    res, per_round, parts = {k: 0.0 for k in keys}, {k: [] for k in keys}, {k: [] for k in keys}
    step = -(-n // args.rounds // bs) * bs  # whole batches per round
    for r0 in range(0, n, step):
        part = rows[r0 : r0 + step]
        runs = {
            "a": lambda: method_a(model, blocks, scorers["c"].queries, part, dev),
            "c": lambda: method_c(scorers["c"], part, bs),
            "t": lambda: method_c(scorers.get("t"), part, bs),
            "h": lambda: method_c_hf(scorers["c"], part, bs),
            "k": lambda: method_c(scorers.get("k"), part, bs),
        }
        for k in keys:
            out, t = timed(runs[k], dev)
            parts[k].append(out)
            res[k] += t
            per_round[k].append(t)
    return res, per_round, {k: torch.cat(v) for k, v in parts.items()}


def build_scorers(args, model, spec, factors, pk, rows, bs):
    """The scorer of (c), plus the TF32 (t) and compiled (k) variants asked for, each warmed up on one batch."""
    scorers = {"c": mda_fast.InfluenceScorer(model, [spec], factors, probe="induction", probe_kwargs=pk)}
    if args.tf32:
        scorers["t"] = mda_fast.InfluenceScorer(model, [spec], factors, probe="induction", probe_kwargs=pk, tf32=True)
    if args.compile:
        scorers["k"] = mda_fast.InfluenceScorer(
            model, [spec], factors, probe="induction", probe_kwargs=pk, compile=True
        )
    scorers["h"] = scorers["c"] if args.also_hf else None
    scorers = {k: v for k, v in scorers.items() if v is not None}
    for k, sc in scorers.items():
        if k != "h":
            _, t = timed(lambda: sc.score(rows[:bs]), args.device)
            if k == "k":
                print(f"torch.compile warm-up (first batch, compiling): {t:.1f} s")
    return scorers


def report(args, res, per_round, scores, n, T, bs, t_fit_c, t_fit_b, n_fit, dev):
    """The Markdown table and the notes under it."""
    ref = "a" if "a" in res else "c"
    sa, sc = scores[ref], scores["c"]
    r_ac = pearson(sa, sc)
    lines = [f"| method | seq/s | time for N | speed vs ({ref}) |", "| --- | ---: | ---: | ---: |"]
    for k in ("a", "b", "h", "c", "t", "k"):
        if k in res:
            rate = n / res[k]
            lines.append(
                f"| {NAMES[k].format(bs=bs)} | {rate:,.1f} | {res[k]:.2f} s | {res[ref] / res[k]:.2f}× |"
                if rate >= 10
                else f"| {NAMES[k].format(bs=bs)} | {rate:.3f} | {res[k]:.2f} s | {res[ref] / res[k]:.2f}× |"
            )
    where = f"{torch.cuda.get_device_name(dev)}, {args.model}" if dev.type == "cuda" else f"CPU, {args.model} model"
    proj = PYTHIA_WINDOW / (n / res["c"])
    notes = [
        f"N = {n} sequences of T = {T} tokens; mda-fast EK-FAC fit {t_fit_c:.2f} s on {n_fit} sequences"
        + (f"; kronfluence factor fit {t_fit_b:.2f} s (not in its scoring time)" if t_fit_b is not None else ""),
        f"Pearson({ref}, c) = {r_ac:.6f} ({'PASS' if r_ac > 0.999 else 'FAIL'}: needs > 0.999); "
        f"max |{ref} − c| / max |{ref}| = {float((sa - sc).abs().max() / sa.abs().max()):.2e}",
    ]
    for k, label in (("t", "c_tf32"), ("k", "c_compiled")):
        if k in res:
            st = scores[k]
            notes.append(
                f"{label}: Pearson({ref}, {label}) = {pearson(sa, st):.6f}; max |c − {label}| / max |c| = "
                f"{float((sc - st).abs().max() / sc.abs().max()):.2e}"
            )
    if "k" in res:
        ratios = [c / k for c, k in zip(per_round["c"], per_round["k"])]
        notes.append(
            f"compiled vs eager lean (c): {res['c'] / res['k']:.3f}× overall; per round "
            + ", ".join(f"{x:.3f}×" for x in ratios)
            + f" (min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
    if "b" in res:
        notes.append(
            f"mda-fast / kronfluence speed = {res['b'] / res['c']:.2f}×; Pearson(b, c) = "
            f"{pearson(scores['b'], sc):.4f} (kronfluence scores whole modules, so (b) is not expected to "
            "match the head scores)"
        )
    notes.append(
        f"projected time for Pythia-14m's {PYTHIA_WINDOW:,}-sequence window at the mda-fast rate "
        f"[{where}]: {fmt_time(proj)}"
    )
    return "\n".join(lines), notes, where, r_ac


def main(argv=None):
    args = parse_args(argv)
    if args.mode == "capture-vs-forward":
        return capture_vs_forward(args)
    dev = torch.device(args.device)
    if args.checkpoint and args.model != "demo":
        raise ValueError("--checkpoint loads a local demo-model checkpoint; use it with --model demo")
    if args.model != "demo" and dev.type == "cpu" and not args.force:
        print(
            f"skipping --model {args.model}: T=2048 presets are GPU benchmarks (no GPU here); pass --force to run on CPU"
        )
        return 0
    T = 128 if args.model == "demo" else 2048
    n = args.n or (256 if dev.type == "cpu" else 1024)
    n_fit = args.n_fit or n
    bs = args.batch_size or (32 if args.model == "demo" else 8)
    if n < 2 or bs < 1 or args.rounds < 1:
        raise ValueError(f"--n must be >= 2, --batch-size and --rounds >= 1, got {n}, {bs} and {args.rounds}")

    model = build_model(args)
    spec = mda_fast.HeadSpec(args.layer, args.head, mode="qkvo")
    blocks = mda_fast.head_blocks(model, spec)
    rows_all = make_rows(args, model.config.vocab_size, T, n_fit + n).to(dev)
    fit_rows, rows = rows_all[:n_fit], rows_all[n_fit:]
    pk = dict(L=args.probe_L, n=args.probe_n, low=4, high=min(model.config.vocab_size, 50277))
    print(
        f"model {args.model}{' (' + args.checkpoint + ')' if args.checkpoint else ''}, {spec.name}, T={T}, "
        f"N={n} scored, {n_fit} fit, batch {bs}, device {dev}, torch threads {torch.get_num_threads()}"
    )

    for p in model.parameters():
        p.requires_grad_(False)
    fit_batches = [fit_rows[i : i + bs] for i in range(0, n_fit, bs)]
    factors, t_fit_c = timed(
        lambda: mda_fast.fit_ekfac(model, [spec], fit_batches, fisher="empirical", progress=False), dev
    )
    scorers = build_scorers(args, model, spec, factors, pk, rows, bs)
    if not args.skip_a:
        method_a(model, blocks, scorers["c"].queries, rows[:1], dev)  # warm-up: one sequence of (a)
    res, per_round, scores = alternate(args, model, blocks, scorers, rows, bs, dev)
    t_fit_b = None
    if not args.skip_kronfluence:
        probe = mda_fast.get_probe("induction", **pk)
        scores["b"], t_fit_b, res["b"] = method_b(model, args.layer, probe, fit_rows, rows, bs, args.device)

    table, notes, where, r_ac = report(args, res, per_round, scores, n, T, bs, t_fit_c, t_fit_b, n_fit, dev)
    print(table)
    for line in notes:
        print(line)
    if args.markdown:
        cmd = "python benchmarks/end_to_end.py " + " ".join(sys.argv[1:] if argv is None else argv)
        with open(args.markdown, "a") as f:
            f.write(f"\n`{cmd}` ({datetime.date.today()}, {where})\n\n{table}\n\n" + "".join(f"- {x}\n" for x in notes))
    return 0 if r_ac > 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())

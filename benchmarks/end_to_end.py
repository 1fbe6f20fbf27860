"""End-to-end scoring benchmark: one head, the same N training sequences, three methods side by side in one run.

(a) authors' method, re-implemented: batch size 1, full ``loss.backward()`` per sequence, then
    Σ_b ⟨∇_b L(z), P_b⟩ with the head's weight-slice gradients and the scorer's preconditioned probe gradients P_b;
(b) kronfluence 1.0.1 EK-FAC, tracking the layer's whole ``query_key_value`` and ``dense`` modules;
(c) mda-fast ``InfluenceScorer.score`` in batches;
(f) with ``--forward``: one no-grad forward of the model in the same batches (the floor any scoring method pays).

(a) and (c) share the same factors and P_b, so their scores must agree (Pearson > 0.999 in fp32).

    python benchmarks/end_to_end.py --model demo --n 128
    python benchmarks/end_to_end.py --model pythia-14m --device cuda --n 512 --batch-size 8
    python benchmarks/end_to_end.py ... --tf32 --forward --json e2e.json   # seq/s and tokens/s per method as JSON

``--capture-ratio`` instead times, per model family at one size side by side, the capture of one head's blocks
(forward + backward to the lowest tracked layer, ``mda_fast.core.capture.capture``) against one no-grad forward:

    python benchmarks/end_to_end.py --capture-ratio --device cpu
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
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


def method_f(model, rows, bs) -> None:
    """(f): one no-grad forward of the whole model (logits included), in batches of ``bs``; no scores."""
    with torch.no_grad():
        for i in range(0, len(rows), bs):
            model(input_ids=rows[i : i + bs, :-1])


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


# ---- capture vs forward, per family ------------------------------------------------------------------------------
def family_model(family: str, d_model: int, n_heads: int, n_layers: int, vocab: int, ctx: int, seed: int):
    """A randomly initialised float32 eval model of ``family`` at the given size (sdpa attention)."""
    import transformers

    torch.manual_seed(seed)
    if family == "gpt_neox":  # Pythia's layout: partial rotary, parallel residual, untied
        cfg = transformers.GPTNeoXConfig(
            vocab_size=vocab,
            hidden_size=d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            intermediate_size=4 * d_model,
            rotary_pct=0.25,
            max_position_embeddings=ctx,
            use_parallel_residual=True,
            tie_word_embeddings=False,
        )
        cls = transformers.GPTNeoXForCausalLM
    elif family == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=vocab,
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            n_positions=ctx,
            bos_token_id=0,
            eos_token_id=0,
        )
        cls = transformers.GPT2LMHeadModel
    elif family in ("llama", "olmo2"):  # separate q/k/v/o, RMSNorm, SwiGLU; llama with grouped-query attention
        kw = dict(
            vocab_size=vocab,
            hidden_size=d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=max(1, n_heads // 2) if family == "llama" else n_heads,
            intermediate_size=4 * d_model,
            max_position_embeddings=ctx,
            tie_word_embeddings=False,
        )
        if family == "llama":
            cfg, cls = transformers.LlamaConfig(**kw), transformers.LlamaForCausalLM
        else:
            cfg, cls = transformers.Olmo2Config(**kw), transformers.Olmo2ForCausalLM
    else:
        raise ValueError(f"--capture-ratio: unknown family {family!r}; expected one of {CAPTURE_FAMILIES}")
    cfg._attn_implementation = "sdpa"
    model = cls(cfg).float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


CAPTURE_FAMILIES = ("gpt_neox", "gpt2", "llama", "olmo2")


def capture_ratio(args, dev) -> list[dict]:
    """Per family: seconds of one no-grad forward and of one capture (training loss, head ``--head`` of layer
    ``--layer``, qkvo blocks), best of ``--rounds`` rounds that alternate every method; capture through the path
    ``capture`` picks (the lean forward where the family has one) and through HF's forward + hooks."""
    from mda_fast.core.capture import capture, hf_forward, loss_objective, uses_lean_forward

    d, H, layers, vocab, T = (int(x) for x in args.capture_size.split(","))
    bs = args.batch_size or 8
    rows = make_rows(args, vocab, T, bs).to(dev)
    inputs, labels = rows[:, :-1], rows[:, 1:]
    models = {f: family_model(f, d, H, layers, vocab, T + 1, args.seed).to(dev) for f in CAPTURE_FAMILIES}
    spec = mda_fast.HeadSpec(args.layer, args.head)
    runs = {}
    for f, m in models.items():
        blocks = mda_fast.head_blocks(m, spec)
        obj = loss_objective(labels)

        def fwd(m=m):
            with torch.no_grad():
                return m(input_ids=inputs, use_cache=False).logits

        def cap(m=m, blocks=blocks, obj=obj):
            return capture(m, inputs, blocks, obj)

        def cap_hf(m=m, blocks=blocks, obj=obj):
            with hf_forward():
                return capture(m, inputs, blocks, obj)

        runs[f] = {"forward": fwd, "capture": cap, "capture_hf": cap_hf, "lean": uses_lean_forward(m, obj, blocks)}
    best = {f: {k: float("inf") for k in ("forward", "capture", "capture_hf")} for f in runs}
    for f in runs:  # warm-up
        for k in best[f]:
            runs[f][k]()
    for _ in range(args.rounds):
        for f in runs:
            for k in best[f]:
                _, t = timed(runs[f][k], dev)
                best[f][k] = min(best[f][k], t)
    out = []
    for f in runs:
        b = best[f]
        out.append(
            dict(
                family=f,
                lean=runs[f]["lean"],
                forward=b["forward"],
                capture=b["capture"],
                capture_hf=b["capture_hf"],
                size=f"d_model {d}, {H} heads, {layers} layers, vocab {vocab}, T {T}, batch {bs}",
            )
        )
    return out


def report_capture_ratio(results, args, dev) -> str:
    lines = [
        "| family | capture path | forward (no grad) | capture | capture / forward | HF forward + hooks capture "
        "| its / forward |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['family']} | {'lean forward' if r['lean'] else 'HF forward + hooks'} | {r['forward'] * 1e3:.1f} ms "
            f"| {r['capture'] * 1e3:.1f} ms | {r['capture'] / r['forward']:.2f}× | {r['capture_hf'] * 1e3:.1f} ms "
            f"| {r['capture_hf'] / r['forward']:.2f}× |"
        )
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    return (
        "\n".join(lines)
        + f"\n\n{results[0]['size']}, L{args.layer}H{args.head} qkvo, float32, sdpa; {where}, "
        + (f"torch threads {torch.get_num_threads()}, best of {args.rounds} alternating rounds\n")
    )


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
    ap.add_argument("--forward", action="store_true", help="also time (f): one no-grad forward in the same batches")
    ap.add_argument("--json", help="write the per-method seq/s and tokens/s, agreement and settings here")
    ap.add_argument("--skip-a", action="store_true", help="skip (a) (its row and Pearson then compare to (c))")
    ap.add_argument("--skip-kronfluence", action="store_true")
    ap.add_argument("--force", action="store_true", help="run the pythia presets on the CPU anyway")
    ap.add_argument("--markdown", help="append the result table to this Markdown file")
    ap.add_argument(
        "--capture-ratio",
        action="store_true",
        help="only time capture (forward + backward to the tracked layer) against a no-grad forward, per family",
    )
    ap.add_argument(
        "--capture-size",
        default="128,4,4,4096,128",
        help="--capture-ratio's model size and sequence length: d_model,heads,layers,vocab,T",
    )
    return ap.parse_args(argv)


NAMES = {
    "a": "(a) authors: per-sequence backward, bs 1",
    "b": "(b) kronfluence 1.0.1 EK-FAC (qkv + dense)",
    "c": "(c) mda-fast InfluenceScorer.score, bs {bs}",
    "t": "(c) mda-fast, TF32 matmuls, bs {bs}",
    "h": "(c) without the lean forward (HF forward + hooks), bs {bs}",
    "k": "(c) mda-fast, torch.compile'd lean forward, bs {bs}",
    "f": "(f) one no-grad forward (logits), bs {bs}",
}


def alternate(args, model, blocks, scorers, rows, bs, dev):
    """Time (a) and each (c) variant, alternating over ``--rounds`` slices of the rows, so load changes on a shared
    machine hit all alike. Returns ``(seconds per method, per-round seconds per method, scores per method)``."""
    n = len(rows)
    keys = [k for k in ("a", "c", "t", "h", "k") if k in scorers or (k == "a" and not args.skip_a)]
    keys += ["f"] if args.forward else []
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
            "f": lambda: method_f(model, part, bs),
        }
        for k in keys:
            out, t = timed(runs[k], dev)
            parts[k].append(out)
            res[k] += t
            per_round[k].append(t)
    return res, per_round, {k: torch.cat(v) for k, v in parts.items() if k != "f"}


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
    for k in ("a", "b", "h", "c", "t", "k", "f"):
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


def write_json(args, argv, res, scores, n, n_fit, T, bs, t_fit_c, where, r_ac) -> None:
    """Per method: seconds for the N rows, seq/s, tokens/s (T input tokens a row) and speed against (a) or (c)."""
    ref = "a" if "a" in res else "c"
    methods = {
        k: {
            "name": NAMES[k].format(bs=bs),
            "seconds": t,
            "seq_per_s": n / t,
            "tokens_per_s": n * T / t,
            "speed_vs_ref": res[ref] / t,
        }
        for k, t in res.items()
    }
    for k in methods:
        if k in scores and k != ref:
            methods[k]["pearson_vs_ref"] = pearson(scores[ref], scores[k])
    out = {
        "command": "python benchmarks/end_to_end.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": str(datetime.date.today()),
        "where": where,
        "device": str(args.device),
        "model": args.model,
        "T": T,
        "n": n,
        "n_fit": n_fit,
        "batch_size": bs,
        "ref": ref,
        "fit_seconds": t_fit_c,
        "pearson_ref_c": r_ac,
        "agree": r_ac > 0.999,
        "methods": methods,
        "projected_window_seconds": PYTHIA_WINDOW / (n / res["c"]),
    }
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=1)


def main(argv=None):
    args = parse_args(argv)
    dev = torch.device(args.device)
    if args.capture_ratio:
        table = report_capture_ratio(capture_ratio(args, dev), args, dev)
        print(table)
        if args.markdown:
            cmd = "python benchmarks/end_to_end.py " + " ".join(sys.argv[1:] if argv is None else argv)
            with open(args.markdown, "a") as f:
                f.write(f"\n`{cmd}` ({datetime.date.today()})\n\n{table}")
        return 0
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
    if args.forward:
        method_f(model, rows[:bs], bs)  # warm-up
    res, per_round, scores = alternate(args, model, blocks, scorers, rows, bs, dev)
    t_fit_b = None
    if not args.skip_kronfluence:
        probe = mda_fast.get_probe("induction", **pk)
        scores["b"], t_fit_b, res["b"] = method_b(model, args.layer, probe, fit_rows, rows, bs, args.device)

    table, notes, where, r_ac = report(args, res, per_round, scores, n, T, bs, t_fit_c, t_fit_b, n_fit, dev)
    print(table)
    for line in notes:
        print(line)
    if args.json:
        write_json(args, argv, res, scores, n, n_fit, T, bs, t_fit_c, where, r_ac)
    if args.markdown:
        cmd = "python benchmarks/end_to_end.py " + " ".join(sys.argv[1:] if argv is None else argv)
        with open(args.markdown, "a") as f:
            f.write(f"\n`{cmd}` ({datetime.date.today()}, {where})\n\n{table}\n\n" + "".join(f"- {x}\n" for x in notes))
    return 0 if r_ac > 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())

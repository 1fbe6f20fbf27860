"""Cost of the per-token influence (``InfluenceScorer.per_token``) against scoring the same rows.

    python benchmarks/bench_per_token.py [--preset demo|pythia-14m] [--k 20] [--seq-len 513] [--targets 2]
                                         [--batch 4] [--rounds 3] [--threads N] [--json out.json]

A randomly initialised GPT-NeoX of the preset's shape (``demo``: the demo's 2-layer byte model; ``pythia-14m``: 6
layers, d_model 128, vocabulary 50,304), ``--targets`` head targets (one induction probe each), ``k`` rows per
target. Timed, round-robin, minimum over rounds (a shared CPU):

* ``score``: ``scorer.score`` of each target's k rows (the work the per-token pass is compared with);
* ``per_token``: ``scorer.per_token(rows, targets=[that target])`` of each target's k rows: one capture pass (the
  scores and the position decomposition) and one forward-mode pass of that target (the loss tokens).

Prints the two times and their ratio; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mda_fast import HeadSpec, InfluenceScorer, fit_ekfac  # noqa: E402

PRESETS = {"demo": (2, 64, 4, 260), "pythia-14m": (6, 128, 4, 50304)}  # layers, d_model, heads, vocab


def make_model(preset: str, ctx: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    n_layers, d, h, vocab = PRESETS[preset]
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=vocab, hidden_size=d, num_hidden_layers=n_layers, num_attention_heads=h, intermediate_size=4 * d,
        rotary_pct=0.25, max_position_embeddings=max(ctx, 64), use_parallel_residual=True, tie_word_embeddings=False,
    )  # fmt: skip
    cfg._attn_implementation = "sdpa"
    model = GPTNeoXForCausalLM(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def run(preset: str, k: int, seq_len: int, n_targets: int, batch: int, rounds: int) -> dict:
    model = make_model(preset, seq_len)
    n_layers, _, n_heads, vocab = PRESETS[preset]
    heads = [(n_layers - 1 - i % n_layers, i % n_heads) for i in range(n_targets)]
    specs = [HeadSpec(L, h) for L, h in heads]
    g = torch.Generator().manual_seed(1)
    factors = fit_ekfac(model, specs, [torch.randint(0, vocab, (4, seq_len), generator=g)], progress=False)
    scorer = InfluenceScorer(model, specs, factors, probe="induction", probe_kwargs={"L": 16}, progress=False)
    rows = {n: torch.randint(0, vocab, (k, seq_len), generator=g) for n in scorer.target_names}

    def score():
        for r in rows.values():
            for i in range(0, k, batch):
                scorer.score(r[i : i + batch])

    def per_token():
        for n, r in rows.items():
            for i in range(0, k, batch):
                scorer.per_token(r[i : i + batch], targets=[n])

    best = {"score": float("inf"), "per_token": float("inf")}
    for _ in range(rounds):
        for name, fn in (("score", score), ("per_token", per_token)):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {
        "preset": preset,
        "k": k,
        "seq_len": seq_len,
        "targets": scorer.target_names,
        "batch": batch,
        "score_s": best["score"],
        "per_token_s": best["per_token"],
        "ratio": best["per_token"] / best["score"],
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "torch": torch.__version__,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="pythia-14m")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=513)
    ap.add_argument("--targets", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    r = run(a.preset, a.k, a.seq_len, a.targets, a.batch, a.rounds)
    print(
        f"{r['preset']}, T={r['seq_len'] - 1}, k={r['k']} rows x {len(r['targets'])} targets: score {r['score_s']:.2f} s, "
        f"per-token {r['per_token_s']:.2f} s, ratio {r['ratio']:.2f}"
    )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(r, fh, indent=1)
    return r


if __name__ == "__main__":
    main()

"""Train the tiny GPT-NeoX with an induction head that ``python_tests/test_per_token.py`` loads.

Rows are ``HALF`` random tokens (drawn independently, so the first half carries no copy signal) followed by the
same tokens again, so the second half is predictable only by induction. Two layers, d_model 32, 2 heads,
vocabulary 64, AdamW; deterministic (seeded, one thread). Training stops while the head is forming: the first
step at which the second half's loss falls below ``--stop-loss`` (ln 64 = 4.16 at the start), the regime
attribution studies. Writes ``python_tests/data/induction_tiny/`` (``config.json`` + ``model.safetensors``).

    .venv/bin/python scripts/make_induction_fixture.py [--stop-loss 2.0]
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

VOCAB, HALF, BATCH = 64, 10, 32
OUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python_tests", "data", "induction_tiny"
)


def repeated_rows(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` rows of ``HALF`` random tokens repeated once: ``[n, 2·HALF]``."""
    first = torch.randint(0, VOCAB, (n, HALF), generator=generator)
    return torch.cat([first, first], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000, help="at most this many steps")
    ap.add_argument("--stop-loss", type=float, default=2.0, help="stop once the second half's loss is below")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        rotary_pct=0.5, max_position_embeddings=64, use_parallel_residual=True, tie_word_embeddings=False,
    )  # fmt: skip
    cfg._attn_implementation = "sdpa"
    model = GPTNeoXForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    for step in range(args.steps + 1):
        rows = repeated_rows(BATCH, g)
        logits = model(input_ids=rows[:, :-1]).logits
        ce = F.cross_entropy(logits.reshape(-1, VOCAB), rows[:, 1:].reshape(-1), reduction="none").view(BATCH, -1)
        opt.zero_grad()
        ce.mean().backward()
        opt.step()
        first, second = float(ce[:, : HALF - 1].detach().mean()), float(ce[:, HALF:].detach().mean())
        if step % 25 == 0 or second < args.stop_loss:
            print(f"step {step}: loss first half {first:.3f}, second half (induction) {second:.3f}", flush=True)
        if second < args.stop_loss:
            break
    model.eval().save_pretrained(args.out, safe_serialization=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

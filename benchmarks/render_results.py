"""Renders the RESULTS.md kernel tables from harness JSON files (one table per file, in the order given).

python benchmarks/render_results.py bench_score.json bench_covariance.json > tables.md
"""

import json
import sys


def table(data: dict) -> str:
    """Markdown: one row per case; per method ms and GFLOP/s, then each method's speedup over torch and kronfluence."""
    rows = data["rows"]
    names = list(dict.fromkeys(n for r in rows for n in r["seconds"]))
    fast = [n for n in names if n not in ("torch", "kronfluence")]
    cols = ["op", "model", "block", "N", "T", "d_out", "D", "K", "dtype"]
    cols += [f"{n} ms" for n in names] + [f"{n} GFLOP/s" for n in fast]
    cols += [f"{n}/{base} ×" for n in fast for base in ("torch", "kronfluence")]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        c, t = r["case"], r["seconds"]
        cells = [data["op"], c["model"], c["block"], c["N"], c["T"], c["d_out"], r["D"], c["K"], c["dtype"]]
        cells += [f"{t[n] * 1e3:.3f}" if n in t else "—" for n in names]
        cells += [f"{r['flops'] / t[n] / 1e9:.1f}" if n in t else "—" for n in fast]
        cells += [
            f"{t[base] / t[n]:.2f}" if n in t and base in t else "—" for n in fast for base in ("torch", "kronfluence")
        ]
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    m = data["meta"]
    head = (
        f"{m['date']}, {m['device']}{' ' + m['gpu'] if 'gpu' in m else ''}, torch {m['torch']}, "
        f"{m['threads']} threads, {m['stat']} over round-robin rounds. Command: `{m['command']}`"
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    for p in paths:
        with open(p) as fh:
            print(table(json.load(fh)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

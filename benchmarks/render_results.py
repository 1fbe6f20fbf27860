"""Renders RESULTS.md tables: the kernel tables from harness JSON files, and the GPU check's report.

python benchmarks/render_results.py bench_score.json bench_covariance.json > tables.md   # one table per file
python benchmarks/render_results.py gpu_check_out/gpu_check.json > gpu.md     # gpu_check.sh's report
python benchmarks/render_results.py gpu_check_out/gpu_check.json --into benchmarks/RESULTS.md
    # the report replaces what lies between the gpu-check markers of RESULTS.md

The GPU report: device, date, driver, CUDA, torch and triton versions, the stage summary (status, time, timeout),
then the kernel tables, the end-to-end table, the torchrun table and the test counts.
"""

import argparse
import json
import sys

BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"
#: baselines each fast method is compared against (bmm16: cuBLAS bf16 bmm for G, GPU only)
BASES = ("torch", "bmm16", "kronfluence")


def table(data: dict) -> str:
    """Markdown: one row per case; per method ms and GFLOP/s, then each method's speedup over the baselines
    present (torch, bmm16 = cuBLAS bf16 bmm, kronfluence)."""
    rows = data["rows"]
    names = list(dict.fromkeys(n for r in rows for n in r["seconds"]))
    bases = [b for b in BASES if b in names]
    fast = [n for n in names if n not in BASES]
    cols = ["op", "model", "block", "N", "T", "d_out", "D", "K", "dtype"]
    cols += [f"{n} ms" for n in names] + [f"{n} GFLOP/s" for n in fast]
    cols += [f"{n}/{base} ×" for n in fast for base in bases]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        c, t = r["case"], r["seconds"]
        cells = [data["op"], c["model"], c["block"], c["N"], c["T"], c["d_out"], r["D"], c["K"], c["dtype"]]
        cells += [f"{t[n] * 1e3:.3f}" if n in t else "—" for n in names]
        cells += [f"{r['flops'] / t[n] / 1e9:.1f}" if n in t else "—" for n in fast]
        cells += [f"{t[base] / t[n]:.2f}" if n in t and base in t else "—" for n in fast for base in bases]
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    m = data["meta"]
    head = (
        f"{m['date']}, {m['device']}{' ' + m['gpu'] if 'gpu' in m else ''}, torch {m['torch']}, "
        f"{m['threads']} threads, {m['stat']} over round-robin rounds. Command: `{m['command']}`"
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def fmt(x, nd=1) -> str:
    return "—" if x is None else f"{x:,.{nd}f}"


def header(meta: dict) -> str:
    dev = meta.get("gpu") or meta.get("device_name") or "no GPU (CPU dry run)"
    parts = [
        f"{dev}" + (f", {meta['gpu_memory']}" if meta.get("gpu_memory") else ""),
        f"driver {meta.get('driver') or '—'}",
        f"CUDA {meta.get('torch_cuda') or '—'} (torch), nvcc {meta.get('nvcc') or '—'}",
        f"torch {meta.get('torch')}, triton {meta.get('triton') or '—'}",
        f"Python {meta.get('python')}, {meta.get('cpus')} CPUs",
        f"commit {meta.get('commit') or '—'}{' (dirty)' if meta.get('dirty') else ''}",
    ]
    kind = "**dry run** (CPU backends, tiny sizes: not GPU numbers)" if meta.get("dry_run") else "GPU run"
    return f"GPU check, {meta.get('date', '—')}, {kind}: " + "; ".join(parts) + "."


def stage_table(stages: dict) -> str:
    lines = ["| stage | what | status | seconds | timeout s | result |", "|---|---|---|---:|---:|---|"]
    for name, e in sorted(stages.items(), key=lambda kv: kv[1].get("number", 99)):
        lines.append(
            f"| {e.get('number', '?')} {name} | {e.get('title', '')} | {e.get('status', '—')} | "
            f"{fmt(e.get('seconds'))} | {fmt(e.get('timeout_s'), 0)} | {e.get('headline', '').replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def e2e_table(res: dict) -> str:
    lines = [
        f"| method | seq/s | tokens/s | time for N | speed vs ({res['ref']}) | Pearson vs ({res['ref']}) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k in ("a", "b", "h", "c", "t", "k", "f"):
        m = res["methods"].get(k)
        if m:
            r = m.get("pearson_vs_ref")
            lines.append(
                f"| {m['name']} | {fmt(m['seq_per_s'], 2)} | {fmt(m['tokens_per_s'], 0)} | {m['seconds']:.2f} s | "
                f"{m['speed_vs_ref']:.2f}× | {'—' if r is None else f'{r:.6f}'} |"
            )
    notes = (
        f"{res['where']}: N = {res['n']} sequences of T = {res['T']} tokens, batch {res['batch_size']}, EK-FAC fit "
        f"{res['fit_seconds']:.2f} s on {res['n_fit']} sequences; Pearson({res['ref']}, c) = {res['pearson_ref_c']:.6f} "
        f"({'PASS' if res['agree'] else 'FAIL'}: needs > 0.999); projected time for Pythia-14m's 1,024,000-sequence "
        f"window at the (c) rate: {res['projected_window_seconds'] / 3600:.2f} h. Command: `{res['command']}`"
    )
    return "\n".join(lines) + "\n\n" + notes + "\n"


def torchrun_table(sp: dict) -> str:
    lines = ["| mode | wall s | scoring seq/s | wall speed-up | scoring speed-up |", "|---|---:|---:|---:|---:|"]
    for m, v in sp["modes"].items():
        lines.append(
            f"| {m} | {', '.join(f'{w:.1f}' for w in v['wall_s'])} | {', '.join(f'{x:.1f}' for x in v['seq_per_s'])} "
            f"| {v['wall_speedup']:.2f}× | {v['scoring_speedup']:.2f}× |"
        )
    s = sp["settings"]
    notes = (
        f"{sp['sequences']} sequences (T = {s['seq_len'] - 1}, tiny-2l), {s['rounds']} round(s), device {s['device']}; "
        f"scores against '{sp['reference']}': byte-identical {sp['byte_identical']}, max relative difference "
        f"{sp['max_rel_diff']:.2e}. Command: `{sp.get('command', '')}`"
    )
    return "\n".join(lines) + "\n\n" + notes + "\n"


def tests_block(t: dict) -> str:
    order = ["passed", "failed", "error", "skipped", "xfailed", "xpassed"]
    cnt = lambda c: ", ".join(f"{c[k]} {k}" for k in order if c.get(k)) or "none"
    lines = [f"- all: {cnt(t.get('counts', {}))}"]
    lines += [f"- {b}: {cnt(c)}" for b, c in sorted(t.get("by_backend", {}).items())]
    fails = t.get("failures", {})
    if fails:
        lines.append(f"- failing ({t.get('n_failures', len(fails))}):")
        lines += [f"  - `{k}`: {v}" for k, v in list(fails.items())[:30]]
    return "\n".join(lines) + "\n"


def gpu_report(data: dict) -> str:
    """The GPU check's Markdown report from gpu_check.json (whatever stages it holds)."""
    st = data.get("stages", {})
    out = [header(data.get("meta", {})), "", stage_table(st)]
    if st.get("op_tests", {}).get("tests"):
        out += ["#### Op tests against the float64 oracle (stage 2)", "", tests_block(st["op_tests"]["tests"])]
    ops = st.get("kernels", {}).get("ops") or {}
    if ops:
        out += ["#### Kernel microbenchmarks (stage 3)", ""]
        out += [table(d) for d in ops.values()]
    if st.get("e2e", {}).get("result"):
        out += ["#### End to end (stage 4)", "", e2e_table(st["e2e"]["result"])]
    if st.get("torchrun", {}).get("speedup"):
        out += ["#### Two torchrun ranks on one device (stage 5)", "", torchrun_table(st["torchrun"]["speedup"])]
        one = st["torchrun"].get("one_gpu_test") or {}
        if one.get("counts") is not None:
            out += ["test_two_ranks_on_one_gpu:", "", tests_block(one)]
    if st.get("suite", {}).get("tests"):
        out += ["#### The rest of the suite (stage 6)", "", tests_block(st["suite"]["tests"])]
    return "\n".join(out)


def into(path: str, text: str) -> None:
    """Replace what lies between the gpu-check markers of ``path`` with ``text``."""
    with open(path) as fh:
        doc = fh.read()
    if doc.count(BEGIN) != 1 or doc.count(END) != 1 or doc.index(BEGIN) > doc.index(END):
        raise SystemExit(f"render_results.py: {path} needs one '{BEGIN}' line followed by one '{END}' line")
    head, rest = doc.split(BEGIN)
    _, tail = rest.split(END)
    with open(path, "w") as fh:
        fh.write(head + BEGIN + "\n" + text.rstrip() + "\n" + END + tail)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="harness JSON files, or one gpu_check.json")
    ap.add_argument("--into", help="gpu_check.json only: write the report between the markers of this file")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    for p in a.files:
        with open(p) as fh:
            data = json.load(fh)
        if "stages" in data:
            text = gpu_report(data)
            if a.into:
                into(a.into, text)
            else:
                print(text)
        elif a.into:
            raise SystemExit(f"render_results.py: --into takes a gpu_check.json, {p} is a harness file")
        else:
            print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())

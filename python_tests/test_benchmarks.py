"""Smoke test of the end-to-end benchmark script: it runs, (a) and (c) agree, and every requested row is written."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_end_to_end_benchmark_runs_and_agrees(tmp_path):
    e2e = load("end_to_end")
    md = tmp_path / "out.md"
    rc = e2e.main(
        [
            "--model",
            "demo",
            "--n",
            "12",
            "--n-fit",
            "8",
            "--batch-size",
            "4",
            "--rounds",
            "2",
            "--skip-kronfluence",
            "--also-hf",
            "--device",
            "cpu",
            "--markdown",
            str(md),
        ]
    )
    assert rc == 0  # Pearson(a, c) > 0.999
    text = md.read_text()
    for row in (
        "(a) authors",
        "(c) mda-fast InfluenceScorer.score",
        "without the lean forward",
        "Pearson(a, c) = 1.0000",
    ):
        assert row in text, row


def test_kernel_op_benchmarks_write_json_and_render(tmp_path, capsys):
    """Each bench_op_<op>.py times every CPU backend and the kronfluence baseline side by side in one run, writes
    JSON, and render_results.py turns it into the RESULTS.md table."""
    import json
    import sys

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from mda_fast import kernels

    render = load("render_results")
    backends = kernels.available_backends("cpu")
    for op in ("score", "covariance", "eigen_sq"):
        path = tmp_path / f"{op}.json"
        bench = load(f"bench_op_{op}")
        bench.main(
            op,
            bench.methods,
            [
                "--device",
                "cpu",
                "--N",
                "2",
                "--T",
                "16",
                "--models",
                "demo-64",
                "--blocks",
                "V",
                "--dtypes",
                "fp32",
                "--min-time",
                "0",
                "--json",
                str(path),
            ],
        )
        data = json.loads(path.read_text())
        assert data["op"] == op and data["rows"]
        for row in data["rows"]:
            assert set(row["seconds"]) == set(backends) | {"kronfluence"}
            assert all(s > 0 for s in row["seconds"].values()) and row["flops"] > 0
        assert render.main([str(path)]) == 0
        md = capsys.readouterr().out
        assert f"| {op} | demo-64 | V |" in md and "torch ms" in md


def test_capture_vs_forward_mode_runs(capsys):
    e2e = load("end_to_end")
    argv = ["--mode", "capture-vs-forward", "--capture-preset", "tiny-1l", "--n", "4", "--batch-size", "2"]
    assert e2e.main(argv + ["--capture-T", "8", "--rounds", "1", "--layer", "0", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for arm in ("gpt_neox, lean forward", "gpt_neox, HF forward + hooks", "llama, HF forward + hooks"):
        assert f"| {arm} |" in out

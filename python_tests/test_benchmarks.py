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
    rc = e2e.main(["--model", "demo", "--n", "12", "--n-fit", "8", "--batch-size", "4", "--rounds", "2",
                   "--skip-kronfluence", "--also-hf", "--device", "cpu", "--markdown", str(md)])
    assert rc == 0  # Pearson(a, c) > 0.999
    text = md.read_text()
    for row in ("(a) authors", "(c) mda-fast InfluenceScorer.score", "without the lean forward", "Pearson(a, c) = 1.0000"):
        assert row in text, row

"""Smoke tests of the benchmark scripts: end_to_end.py runs, (a) and (c) agree, and every requested row is written;
the kernel benchmarks write JSON and render; gpu_check.sh's dry run records every stage, survives a stage's timeout
and stops on a missing package."""

import importlib.util
import os

import pytest

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


# ---------------------------------------------------------------------------------------------------- gpu_check.sh
GPU_STAGES = ["build", "op_tests", "kernels", "e2e", "torchrun", "suite"]
GPU_BUDGETS = [300] * 6  # the dry run's timeouts (the GPU run's are 90, 75, 60, 75, 90, 90 s)


def _gpu_check(out, *args, **env):
    import subprocess
    import sys

    e = {
        k: v for k, v in os.environ.items() if k not in ("DEVICE", "STAGES", "WHEELS") and not k.startswith("TIMEOUT_")
    }
    e.update(OUT=str(out), PYTHON=sys.executable, **env)
    return subprocess.run(
        ["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), *args],
        cwd=ROOT,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )


def _record(out):
    import json

    with open(os.path.join(out, "gpu_check.json")) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def gpu_dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    return out, _gpu_check(out, "--dry-run")


def test_gpu_check_dry_run_records_every_stage(gpu_dry_run):
    """Every stage's logic on the CPU backends: each stage's JSON (status, time, its own timeout, its results),
    its log, the summary; $OUT holds 8 files (the device tool returns at most 8)."""
    out, p = gpu_dry_run
    assert p.returncode == 0, p.stdout[-4000:]
    data = _record(out)
    assert data["meta"]["dry_run"] is True and data["meta"]["torch"]
    st = data["stages"]
    assert list(st) == GPU_STAGES
    for i, (name, budget) in enumerate(zip(GPU_STAGES, GPU_BUDGETS), 1):
        e = st[name]
        assert (e["number"], e["status"], e["rc"], e["timeout_s"]) == (i, "ok", 0, budget), (name, e)
        assert e["seconds"] > 0 and e["headline"]
        assert os.path.getsize(os.path.join(out, e["log"])) > 0
        assert f"stage {i} {name}: ok in" in p.stdout
    b = st["build"]
    assert b["packages"]["missing_required"] == [] and b["build"]["pip_rc"] == 0
    assert "--no-build-isolation --no-deps --disable-pip-version-check --dry-run ." in b["build"]["command"]
    assert "cpu" in b["build"]["backends"]
    t = st["op_tests"]["tests"]
    assert t["counts"].get("passed", 0) >= 1 and t["n_failures"] == 0 and set(t["by_backend"]) == {"cpu-cpu"}
    ops = st["kernels"]["ops"]
    assert list(ops) == ["score", "eigen_sq", "covariance"]
    for op, d in ops.items():
        assert d["op"] == op and d["rows"]
        for row in d["rows"]:
            assert {"cpu", "torch", "kronfluence"} <= set(row["seconds"]) and row["case"]["dtype"] == "bf16"
    r = st["e2e"]["result"]
    assert set(r["methods"]) == {"a", "c", "t", "f"} and r["agree"]
    for m in r["methods"].values():
        assert m["tokens_per_s"] == pytest.approx(m["seq_per_s"] * r["T"]) and m["seq_per_s"] > 0
    sp = st["torchrun"]["speedup"]
    assert sp["byte_identical"] and len(sp["modes"]) == 2
    # stage 6 ran the widened selection less what stage 2 ran: the torch-backend cases only
    s = st["suite"]["tests"]
    assert s["counts"].get("passed", 0) >= 1 and set(s["by_backend"]) == {"torch-cpu"}
    files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert files == ["gpu_check.json", "gpu_check.md"] + [f"logs/{i}_{n}.log" for i, n in enumerate(GPU_STAGES, 1)]
    summary = p.stdout.split("=== summary")[1]
    for i, name in enumerate(GPU_STAGES, 1):
        assert f"| {i} {name} |" in summary


def test_render_results_gpu_report_from_the_dry_run(gpu_dry_run, tmp_path, capsys):
    """render_results.py: the dry run's JSON into the GPU tables (header with device, date, driver, torch and
    triton; stage summary; kernel, end-to-end and torchrun tables) and between RESULTS.md's markers."""
    out, _ = gpu_dry_run
    render = load("render_results")
    assert render.main([str(out / "gpu_check.json")]) == 0
    md = capsys.readouterr().out
    meta = _record(out)["meta"]
    assert md.startswith(f"GPU check, {meta['date']}, **dry run**")
    for s in ("driver ", f"torch {meta['torch']}", "triton ", "| stage | what | status |", "| 6 suite |"):
        assert s in md, s
    assert "| score | 14m | V |" in md and "cpu/torch ×" in md and "cpu/kronfluence ×" in md
    assert "| (f) one no-grad forward (logits), bs 2 |" in md and "| (c) mda-fast, TF32 matmuls, bs 2 |" in md
    assert "| torchrun 2 processes, 1 thread each |" in md
    assert md == (out / "gpu_check.md").read_text() + "\n"
    doc = tmp_path / "RESULTS.md"
    real = open(os.path.join(ROOT, "benchmarks", "RESULTS.md")).read()
    assert real.count(render.BEGIN) == 1 and real.count(render.END) == 1
    doc.write_text("before\n" + render.BEGIN + "\nold\n" + render.END + "\nafter\n")
    assert render.main([str(out / "gpu_check.json"), "--into", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("before\n" + render.BEGIN + "\nGPU check, ") and text.endswith(render.END + "\nafter\n")
    assert "old" not in text and "| 1 build |" in text
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="needs one '<!-- gpu-check:begin -->' line"):
        render.main([str(out / "gpu_check.json"), "--into", str(doc)])


def test_gpu_check_timeout_keeps_the_earlier_stages(tmp_path):
    """A stage killed by its own timeout is marked 'timeout' (rc 124); what ran before it stays recorded."""
    p = _gpu_check(tmp_path, "--dry-run", STAGES="3,4", TIMEOUT_4="1")
    assert p.returncode == 1, p.stdout[-3000:]
    st = _record(tmp_path)["stages"]
    assert list(st) == ["kernels", "e2e"]
    assert st["kernels"]["status"] == "ok" and len(st["kernels"]["ops"]) == 3
    assert (st["e2e"]["status"], st["e2e"]["rc"], st["e2e"]["timeout_s"]) == ("timeout", 124, 1)
    assert "killed at its 1 s timeout" in st["e2e"]["headline"]
    assert "| 4 e2e |" in (tmp_path / "gpu_check.md").read_text() and "stage 4 e2e: timeout" in p.stdout


def test_gpu_check_missing_package_stops_after_stage_1(tmp_path):
    """A required package with no wheel in $WHEELS: its name, exit 2, no later stage run."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    p = _gpu_check(
        tmp_path / "out", "--dry-run", STAGES="1,2", WHEELS=str(wheels), GPU_CHECK_REQUIRE="no_such_pkg_gpu_check"
    )
    assert p.returncode == 2, p.stdout[-3000:]
    assert "missing package(s) the GPU check needs: no_such_pkg_gpu_check" in p.stdout
    assert "stopped after stage 1" in p.stdout and "stage 2" not in p.stdout
    st = _record(tmp_path / "out")["stages"]
    assert list(st) == ["build"] and st["build"]["status"] == "fail"
    assert st["build"]["packages"]["missing_required"] == ["no_such_pkg_gpu_check"]


@pytest.mark.parametrize(
    "args,env,msg",
    [
        (["--bogus"], {}, "unknown argument '--bogus'"),
        ([], {"DEVICE": "tpu"}, "DEVICE must be cuda or cpu"),
        (["--dry-run"], {"STAGES": "1,9"}, "STAGES must be a comma list"),
    ],
)
def test_gpu_check_bad_usage(tmp_path, args, env, msg):
    p = _gpu_check(tmp_path, *args, **env)
    assert p.returncode == 2 and msg in p.stdout and not (tmp_path / "gpu_check.json").exists()


def test_gpu_check_pytest_runner_stops_at_its_deadline_and_keeps_outcomes(tmp_path, monkeypatch):
    """gpu_stages.run_pytest: a pytest run past the stage's deadline is stopped (Ctrl-C, then a kill); the tests
    that ended before it stay counted, from the outcome stream of the gpu_check_pytest plugin."""
    stages = load("gpu_stages")
    monkeypatch.setenv("GPU_CHECK_WORK", str(tmp_path / "work"))
    os.makedirs(tmp_path / "work")
    t = tmp_path / "t"
    t.mkdir()
    (t / "test_slow.py").write_text(
        "import time\n\ndef test_a_fast():\n    assert True\n\n\ndef test_b_fails():\n    assert 1 == 2\n\n\n"
        "def test_c_slow():\n    time.sleep(300)\n"
    )
    # --rootdir: pytest takes the common ancestor of the arguments and the working directory (the repository root)
    # otherwise, so the test ids would depend on where the repository and the temporary folder lie
    res = stages.run_pytest(
        str(tmp_path), "x", [str(t / "test_slow.py"), "-p", "no:xdist", "--rootdir", str(t)], deadline=8
    )
    assert res["rc"] == "timeout"
    assert res["counts"] == {"passed": 1, "failed": 1} and res["n_failures"] == 1
    assert (
        list(res["failures"]) == ["test_slow.py::test_b_fails"]
        and "assert 1 == 2" in res["failures"]["test_slow.py::test_b_fails"]
    )


def test_gpu_check_documented_budgets_are_the_timeouts():
    """The stage table at the top of gpu_check.sh states the timeouts the script uses; stages 1-4 fit 5 minutes."""
    import re

    text = open(os.path.join(ROOT, "benchmarks", "gpu_check.sh")).read()
    budget = [int(x) for x in re.search(r"^BUDGET=\(_ ([\d ]+)\)$", text, re.M).group(1).split()]
    documented = [int(x) for x in re.findall(r"^#   \d\s.*?(\d+) s  \(TIMEOUT_\d\)$", text, re.M)]
    assert documented == budget and len(budget) == 6
    assert sum(budget[:4]) <= 300 and sum(budget) <= 480
    results = open(os.path.join(ROOT, "benchmarks", "RESULTS.md")).read()
    for n, b in enumerate(budget, 1):
        assert re.search(rf"^\| {n} \| .* \| {b} s \|$", results, re.M), n


def test_capture_ratio_benchmark_times_every_family_side_by_side(tmp_path):
    e2e = load("end_to_end")
    md = tmp_path / "ratio.md"
    argv = ["--capture-ratio", "--capture-size", "16,2,2,64,8", "--rounds", "1", "--batch-size", "2"]
    assert e2e.main(argv + ["--device", "cpu", "--markdown", str(md)]) == 0
    text = md.read_text()
    assert "| gpt_neox | lean forward |" in text and "| gpt2 | HF forward + hooks |" in text
    assert "| llama | HF forward + hooks |" in text and "| olmo2 | HF forward + hooks |" in text
    assert "capture / forward" in text

"""The stages of ``benchmarks/gpu_check.sh``: one process per stage (the script puts each under its own timeout),
each recording its results in ``$OUT/gpu_check.json`` under ``stages.<name>`` as soon as it has them.

    python benchmarks/gpu_stages.py STAGE --out OUT [--dry-run] [--timeout S]   # build, op_tests, kernels, e2e,
                                                                                # torchrun, suite
    python benchmarks/gpu_stages.py finalize STAGE --out OUT --rc RC --seconds S --timeout S

``--dry-run`` runs every stage's logic with tiny sizes on the CPU backends (what CI tests). ``finalize`` runs after
each stage (no torch import): it marks a stage that its timeout killed, fills in what the stage left (the test
outcomes it streamed, the parts it finished) and renders ``$OUT/gpu_check.md`` (benchmarks/render_results.py).
The stage list, the budgets and the sizes are documented in gpu_check.sh and benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

#: (number, name, title) in run order: most valuable first
STAGES = [
    (1, "build", "environment, packages and build (pip install --no-build-isolation --no-deps ., MDA_FAST_CUDA=ON)"),
    (2, "op_tests", "CUDA and compiled-Triton op tests against the float64 reference"),
    (3, "kernels", "kernel microbenchmarks on Pythia head blocks (bf16, T = 2048), cuBLAS/torch in the same run"),
    (4, "e2e", "end to end on Pythia-14m's shape: scoring throughput, TF32 off/on, authors' method, a forward"),
    (5, "torchrun", "two torchrun ranks on the one GPU"),
    (6, "suite", "the rest of the test suite"),
]
NAMES = [name for _, name, _ in STAGES]

#: (import name, pip name): a missing one stops the check after stage 1 (no half-run)
REQUIRED = [
    ("scikit_build_core", "scikit-build-core"),
    ("pybind11", "pybind11"),
    ("numpy", "numpy"),
    ("transformers", "transformers"),
    ("safetensors", "safetensors"),
    ("tokenizers", "tokenizers"),
    ("tqdm", "tqdm"),
    ("pytest", "pytest"),
    ("opt_einsum", "opt-einsum"),
]
#: (import name, pip name, what runs without it)
OPTIONAL = [
    ("xdist", "pytest-xdist", "stages 2 and 6 run their tests in one process"),
    ("hypothesis", "hypothesis", "stage 6: the property tests fail to import"),
    ("kronfluence", "kronfluence", "stage 6: the kronfluence peer tests skip"),
    ("einconv", "einconv", "kronfluence does not import"),
    ("matplotlib", "matplotlib", "stage 6: the plot and report tests fail"),
]
#: installed from the wheel folder without their declared dependencies (they declare torch / torchvision)
NO_DEPS = {"kronfluence", "einconv"}

#: the op-test files of stage 2 (their ``cuda``-marked cases on a GPU)
OP_TEST_FILES = [
    "python_tests/test_op_score.py",
    "python_tests/test_op_covariance.py",
    "python_tests/test_op_eigen_sq.py",
    "python_tests/test_kernels_dispatch.py",
]
MISSING_EXIT = 3  # stage 1's exit status when a required package is still missing


# ---------------------------------------------------------------------------------------------------- the record
def record_path(out: str) -> str:
    return os.path.join(out, "gpu_check.json")


def load(out: str) -> dict:
    try:
        with open(record_path(out)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {"stages": {}}


def save(out: str, data: dict) -> None:
    tmp = record_path(out) + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, default=str)
    os.replace(tmp, record_path(out))


def update(out: str, name: str, **fields) -> dict:
    """Merge ``fields`` into ``stages.<name>`` of gpu_check.json (written atomically); returns the stage entry."""
    data = load(out)
    entry = data.setdefault("stages", {}).setdefault(name, {})
    entry.update(fields)
    save(out, data)
    return entry


def update_meta(out: str, **fields) -> None:
    data = load(out)
    data.setdefault("meta", {}).update(fields)
    save(out, data)


# ---------------------------------------------------------------------------------------------------- helpers
def sh(cmd: list, **kw) -> str:
    """stdout+stderr of ``cmd`` (stripped), or '' when it cannot run."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60, **kw)
        return p.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def say(msg: str) -> None:
    print(msg, flush=True)


def pytest_env(progress: str, deselect: list | None = None, extra: dict | None = None) -> dict:
    env = dict(os.environ, GPU_CHECK_PROGRESS=progress, GPU_CHECK_DESELECT=",".join(deselect or []))
    env["PYTHONPATH"] = os.pathsep.join([HERE, ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env.update(extra or {})
    return env


def has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def read_outcomes(path: str) -> dict:
    """{nodeid: outcome} from a gpu_check_pytest JSON-lines file (an error or failure outranks a pass)."""
    rank = {"error": 5, "failed": 4, "xpassed": 3, "passed": 2, "xfailed": 1, "skipped": 0}
    res, errors = {}, {}
    if os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    d = json.loads(line)
                    old = res.get(d["nodeid"])
                    if old is None or rank.get(d["outcome"], 0) > rank.get(old, 0):
                        res[d["nodeid"]] = d["outcome"]
                        if "error" in d:
                            errors[d["nodeid"]] = d["error"]
    return {"outcomes": res, "errors": errors}


def backend_of(nodeid: str) -> str:
    m = re.search(r"\[(cuda|triton|torch|cpu)(?:-(cuda|cpu))?", nodeid)
    return f"{m.group(1)}-{m.group(2)}" if m and m.group(2) else (m.group(1) if m else "other")


def summarize_tests(path: str) -> dict:
    """Counts per outcome, per backend (from the parametrization id) and the failing tests with their last line."""
    got = read_outcomes(path)
    counts, by_backend = {}, {}
    for nodeid, oc in got["outcomes"].items():
        counts[oc] = counts.get(oc, 0) + 1
        b = by_backend.setdefault(backend_of(nodeid), {})
        b[oc] = b.get(oc, 0) + 1
    bad = {k: got["errors"].get(k, "") for k, v in got["outcomes"].items() if v in ("failed", "error")}
    return {
        "counts": counts,
        "by_backend": by_backend,
        "failures": dict(list(bad.items())[:50]),
        "n_failures": len(bad),
    }


def count_line(counts: dict) -> str:
    order = ["passed", "failed", "error", "skipped", "xfailed", "xpassed"]
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k)) or "no tests ran"


def work_dir() -> str:
    """Scratch files of the stages (test-outcome streams, result files): $GPU_CHECK_WORK, else $OUT's sibling in
    the temp dir; outside $OUT, which holds only gpu_check.json, gpu_check.md and the six logs."""
    return os.environ.get("GPU_CHECK_WORK") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "gpu_check_work")


def run_pytest(out: str, name: str, args: list, deselect=None, extra_env=None, deadline=None) -> dict:
    """``python -m pytest ARGS`` streaming outcomes to <work>/<name>.jsonl; returns the summary (+ rc)."""
    progress = os.path.join(work_dir(), f"{name}.jsonl")
    if os.path.exists(progress):
        os.remove(progress)
    cmd = [sys.executable, "-m", "pytest", "-p", "gpu_check_pytest", "-p", "no:cacheprovider", "-q", "-rfE"] + args
    say("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=pytest_env(progress, deselect, extra_env))
    try:
        rc = proc.wait(timeout=None if deadline is None else max(deadline, 1))
    except subprocess.TimeoutExpired:  # Ctrl-C for pytest (it stops its xdist workers), then a kill
        say(f"pytest: stopped at the stage's deadline ({deadline:.0f} s)")
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        rc = "timeout"
    res = summarize_tests(progress)
    res.update(rc=rc, args=args)
    return res


def test_status(ok: bool, res: dict) -> str:
    return "ok" if ok else ("timeout" if res["rc"] == "timeout" else "fail")


def xdist_args(workers: int) -> list:
    return ["-n", str(workers)] if has("xdist") and workers > 1 else []


# ---------------------------------------------------------------------------------------------------- stage 1
def environment() -> dict:
    """Device, driver, toolchain and library versions (the header of the GPU tables)."""
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "cpus": os.cpu_count(),
        "commit": sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
        "dirty": bool(sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])),
    }
    smi = sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if smi and "," in smi:
        gpu, driver, mem = [x.strip() for x in smi.splitlines()[0].split(",")[:3]]
        env.update(gpu=gpu, driver=driver, gpu_memory=mem)
    nvcc = sh(["nvcc", "--version"])
    env["nvcc"] = (re.findall(r"release ([\d.]+)", nvcc) or [None])[0]
    env["cmake"] = (re.findall(r"version ([\d.]+)", sh(["cmake", "--version"])) or [None])[0]
    env["ninja"] = sh(["ninja", "--version"]) or None
    import torch

    env.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device_name=p.name, sms=p.multi_processor_count, capability=f"{p.major}.{p.minor}")
    try:  # the installed version, without importing triton (its import fixes the interpreter mode)
        from importlib.metadata import version

        env["triton"] = version("triton")
    except Exception:  # noqa: BLE001 - not installed
        env["triton"] = None
    return env


def missing_packages(dry: bool) -> tuple:
    """(required missing, optional missing) as pip names; binaries (cmake, ninja, nvcc on a GPU) count as required."""
    req = [pip for mod, pip in REQUIRED if not has(mod)]
    req += [b for b in ("cmake", "ninja") + (() if dry else ("nvcc",)) if shutil.which(b) is None]
    req += [x for x in os.environ.get("GPU_CHECK_REQUIRE", "").split(",") if x and not has(x)]  # (tests)
    opt = [pip for mod, pip, _ in OPTIONAL if not has(mod)]
    return req, opt


def install_from_wheels(names: list, wheels: str, dry: bool) -> dict:
    """pip install the pip ``names`` from the wheel folder only (--no-index); --dry-run in a dry run."""
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, "--disable-pip-version-check"]
    pip += ["--dry-run"] if dry else []
    res = {}
    groups = [[n for n in names if n not in NO_DEPS], [n for n in names if n in NO_DEPS]]
    for group, extra in zip(groups, ([], ["--no-deps"])):
        if not group:
            continue
        if not os.path.isdir(wheels):
            res.update({n: f"no wheel folder {wheels}" for n in group})
            continue
        say("$ " + " ".join(pip + extra + group))
        p = subprocess.run(pip + extra + group, env=dict(os.environ, PIP_BREAK_SYSTEM_PACKAGES="1"))
        res.update({n: "installed" if p.returncode == 0 else f"pip exit {p.returncode}" for n in group})
    return res


def build_extension(dry: bool) -> dict:
    """``pip install --no-build-isolation --no-deps .`` with MDA_FAST_CUDA=ON, then the installed ``_C`` copied
    into the source tree, so the tests run from the repo root see the same build (no second compile). A dry run
    passes --dry-run to pip (metadata only) and checks the build already in the tree."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--dry-run", "."] if dry else ["-v", "."]
    env = dict(os.environ, MDA_FAST_CUDA="ON", PIP_BREAK_SYSTEM_PACKAGES="1")
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    say("$ MDA_FAST_CUDA=ON " + " ".join(cmd))
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    res = {"pip_rc": rc, "pip_seconds": time.perf_counter() - t0, "command": "MDA_FAST_CUDA=ON " + " ".join(cmd)}
    if rc == 0 and not dry:
        so = sh([sys.executable, "-c", "import mda_fast._C as C; print(C.__file__)"], cwd="/")
        if so.endswith(".so") and os.path.exists(so):
            for old in glob.glob(os.path.join(ROOT, "mda_fast", "_C*.so")):
                os.remove(old)
            shutil.copy(so, os.path.join(ROOT, "mda_fast"))
            res["copied_C"] = so
    dev = "cpu" if dry else "cuda"
    probe = (
        "import json, mda_fast.kernels as k; "
        f"print(json.dumps({{'build_info': k.build_info(), 'backends': k.available_backends('{dev}')}}))"
    )
    got = sh([sys.executable, "-c", probe], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        res.update(json.loads(got.splitlines()[-1]))
    except (ValueError, IndexError):
        res["probe_error"] = got[-2000:]
    need = "cpu" if dry else "cuda"
    res["ok"] = rc == 0 and need in res.get("backends", []) and (dry or bool(res.get("build_info", {}).get("cuda")))
    return res


def stage_build(out: str, dry: bool, timeout: float) -> int:
    update_meta(out, dry_run=dry, python=sys.version.split()[0], commit=sh(["git", "-C", ROOT, "rev-parse", "HEAD"]))
    req, opt = missing_packages(dry)
    wheels = os.environ.get("WHEELS", os.path.join(ROOT, ".whl"))
    installs = install_from_wheels(req + opt, wheels, dry) if req + opt else {}
    req2, opt2 = missing_packages(dry)
    pk = {"missing_before": req + opt, "wheels": wheels, "installs": installs, "missing_required": req2}
    pk["missing_optional"] = {p: why for _, p, why in OPTIONAL if p in opt2}
    update(out, "build", packages=pk)
    for p, why in pk["missing_optional"].items():
        say(f"optional package missing: {p} ({why}); its wheel can go in {wheels} (benchmarks/gpu_wheels.sh)")
    if req2:
        msg = (
            f"missing package(s) the GPU check needs: {', '.join(req2)}; no wheel for them in {wheels}. "
            "Prepare the folder on a machine with a registry (bash benchmarks/gpu_wheels.sh) and carry it along; "
            "cmake, ninja and nvcc must be on PATH."
        )
        say(msg)
        update(out, "build", status="fail", headline=msg)
        return MISSING_EXIT
    env = environment()  # imports torch: after the package check, which needs none
    update_meta(out, **env)
    update(out, "build", environment=env)
    say(json.dumps(env, indent=1))
    b = build_extension(dry)
    info = b.get("build_info") or {}
    head = (
        f"pip install {'(dry run) ' if dry else ''}exit {b['pip_rc']} in {b['pip_seconds']:.0f} s; "
        f"_C: cuda {info.get('cuda')} {info.get('cuda_archs')}, backends {b.get('backends')}"
    )
    update(out, "build", build=b, status="ok" if b["ok"] else "fail", headline=head)
    return 0 if b["ok"] else 1


# ---------------------------------------------------------------------------------------------------- stage 2
def stage_op_tests(out: str, dry: bool, timeout: float) -> int:
    """The op tests' CUDA and compiled-Triton cases (``-m cuda``) against the float64 oracle; Triton runs one
    config per kernel (MDA_FAST_TRITON_AUTOTUNE=0: a cold autotune compiles every config of every shape)."""
    if dry:  # the same files and flow on the CPU: the float64-oracle cases of the C++ backend
        args = ["python_tests/test_op_score.py", "-k", "float64 and cpu-cpu and fp32 and K1"]
    else:
        args = OP_TEST_FILES + ["-m", "cuda"] + xdist_args(min(8, os.cpu_count() or 1))
    update(out, "op_tests", status="running", progress=os.path.join(work_dir(), "op_tests.jsonl"))
    res = run_pytest(out, "op_tests", args, extra_env={"MDA_FAST_TRITON_AUTOTUNE": "0"}, deadline=timeout - 10)
    ok = res["rc"] == 0 and not res["n_failures"] and res["counts"].get("passed", 0) > 0
    per = "; ".join(f"{b}: {count_line(c)}" for b, c in sorted(res["by_backend"].items()))
    head = f"{count_line(res['counts'])} ({per})"
    update(out, "op_tests", tests=res, status=test_status(ok, res), headline=head)
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------------- stage 3
def kernel_argv(op: str, dry: bool) -> list:
    if dry:
        return ["--device", "cpu", "--shapes", "pythia", "--models", "14m", "--blocks", "V,O", "--N", "1"] + [
            "--T",
            "32",
            "--dtypes",
            "bf16",
            "--min-time",
            "0",
        ]
    models = os.environ.get("BENCH_MODELS", "14m,160m,1b")
    return ["--device", "cuda", "--shapes", "pythia", "--models", models, "--N", "64", "--T", "2048"] + [
        "--dtypes",
        "bf16",
        "--min-time",
        os.environ.get("BENCH_MIN_TIME", "0.05"),
    ]


def ratio_range(rows: list, fast: str, base: str) -> list | None:
    r = [
        row["seconds"][base] / row["seconds"][fast] for row in rows if fast in row["seconds"] and base in row["seconds"]
    ]
    return [min(r), max(r)] if r else None


def stage_kernels(out: str, dry: bool, timeout: float) -> int:
    """score, eigen_sq, covariance (most used first) through the harness; each op's rows recorded as it ends."""
    os.environ.setdefault("MDA_FAST_TRITON_AUTOTUNE", "0")  # before triton is imported
    import harness

    ops = {}
    update(out, "kernels", status="running", ops=ops, triton_autotune=os.environ["MDA_FAST_TRITON_AUTOTUNE"])
    for op in ("score", "eigen_sq", "covariance"):
        spec = importlib.util.spec_from_file_location(f"bench_op_{op}", os.path.join(HERE, f"bench_op_{op}.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        argv = kernel_argv(op, dry)
        say(f"$ python benchmarks/bench_op_{op}.py " + " ".join(argv))
        ops[op] = harness.main(op, mod.methods, argv)
        update(out, "kernels", ops=ops)
    fast = "cpu" if dry else "cuda"
    heads = []
    for op, data in ops.items():
        for base in ("torch", "bmm16"):
            r = ratio_range(data["rows"], fast, base)
            if r:
                heads.append(f"{op} {fast}/{base} {r[0]:.2f}–{r[1]:.2f}×")
    ok = all(ops[op]["rows"] and all(fast in r["seconds"] for r in ops[op]["rows"]) for op in ops)
    update(out, "kernels", status="ok" if ok else "fail", headline="; ".join(heads) or "no rows")
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------------- stage 4
def e2e_argv(dry: bool, path: str) -> list:
    common = ["--tf32", "--forward", "--skip-kronfluence", "--json", path]
    if dry:
        return (
            ["--model", "demo", "--device", "cpu", "--n", "4", "--n-fit", "4", "--batch-size", "2"]
            + ["--rounds", "1"]
            + common
        )
    n = os.environ.get("E2E_N", "512")
    bs = os.environ.get("E2E_BATCH", "16")
    return (
        ["--model", "pythia-14m", "--device", "cuda", "--n", n, "--n-fit", "64", "--batch-size", bs]
        + ["--rounds", "2"]
        + common
    )


def stage_e2e(out: str, dry: bool, timeout: float) -> int:
    """benchmarks/end_to_end.py: (a) authors' method, (c) mda-fast with TF32 off and on, (f) one no-grad forward."""
    import end_to_end

    path = os.path.join(work_dir(), "e2e_result.json")
    argv = e2e_argv(dry, path)
    update(out, "e2e", status="running", command="python benchmarks/end_to_end.py " + " ".join(argv))
    say("$ python benchmarks/end_to_end.py " + " ".join(argv))
    rc = end_to_end.main(argv)
    with open(path) as fh:
        res = json.load(fh)
    os.remove(path)  # its content lives in gpu_check.json
    m = res["methods"]
    parts = [f"(c) {m['c']['seq_per_s']:,.1f} seq/s = {m['c']['tokens_per_s']:,.0f} tok/s"]
    if "t" in m:
        parts.append(f"TF32 {m['t']['seq_per_s']:,.1f} seq/s")
    if "a" in m:
        parts.append(f"{m['c']['speed_vs_ref']:.2f}× (a) ({m['a']['seq_per_s']:,.2f} seq/s)")
    if "f" in m:
        parts.append(f"(c)/forward {m['f']['seconds'] and m['c']['seconds'] / m['f']['seconds']:.2f}× time")
    parts.append(f"Pearson(a, c) {res['pearson_ref_c']:.6f}")
    update(out, "e2e", result=res, status="ok" if rc == 0 else "fail", headline="; ".join(parts))
    return rc


# ---------------------------------------------------------------------------------------------------- stage 5
def stage_torchrun(out: str, dry: bool, timeout: float) -> int:
    """torchrun_speedup.py: one process against two torchrun ranks sharing the GPU (the CPU in a dry run); then,
    on a GPU, test_torchrun.py's two-ranks-on-one-GPU test (nccl data group)."""
    import torchrun_speedup

    path = os.path.join(work_dir(), "torchrun_result.json")
    if dry:
        argv = ["--device", "cpu", "--steps", "2", "--batch-size", "4", "--seq-len", "17", "--rounds", "1"]
    else:
        argv = ["--device", "cuda", "--steps", "8", "--batch-size", "16", "--seq-len", "129", "--rounds", "1"]
    update(out, "torchrun", status="running")
    t0 = time.perf_counter()
    say("$ python benchmarks/torchrun_speedup.py " + " ".join(argv + ["--json", path]))
    torchrun_speedup.main(argv + ["--json", path])
    with open(path) as fh:
        speed = json.load(fh)
    os.remove(path)
    speed["command"] = "python benchmarks/torchrun_speedup.py " + " ".join(argv)
    update(out, "torchrun", speedup=speed)
    agree = speed["byte_identical"] or speed["max_rel_diff"] < 1e-4
    if dry:
        test = {"skipped": "test_two_ranks_on_one_gpu needs a GPU (dry run)"}
        ok_test = True
    else:
        left = timeout - (time.perf_counter() - t0) - 10
        if left < 20:
            test, ok_test = {"skipped": f"{left:.0f} s left of the stage's timeout"}, False
        else:
            args = ["python_tests/test_torchrun.py", "-k", "one_gpu", "-rsx"]
            test = run_pytest(out, "torchrun", args, deadline=left)
            ok_test = test["rc"] == 0 and test["counts"].get("passed", 0) + test["counts"].get("xfailed", 0) > 0
    two = [m for m in speed["modes"] if m != speed["reference"]][0]
    head = (
        f"2 ranks: scoring {speed['modes'][two]['scoring_speedup']:.2f}× / wall {speed['modes'][two]['wall_speedup']:.2f}× "
        f"of 1 process; scores {'byte-identical' if speed['byte_identical'] else 'max rel diff %.1e' % speed['max_rel_diff']}"
        + ("" if dry else f"; one-GPU test: {count_line(test.get('counts', {}))}")
    )
    ok = agree and ok_test
    update(out, "torchrun", one_gpu_test=test, status="ok" if ok else "fail", headline=head)
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------------- stage 6
def stage_suite(out: str, dry: bool, timeout: float) -> int:
    """The rest of python_tests: every test stages 2 and 5 did not run (their outcome files deselect them)."""
    done = [os.path.join(work_dir(), f"{n}.jsonl") for n in ("op_tests", "torchrun")]
    if dry:  # the stage-2 selection widened to the torch backend: the C++ cases stage 2 ran are deselected
        args = ["python_tests/test_op_score.py", "-k", "float64 and (cpu-cpu or torch-cpu) and fp32 and K1"]
    else:
        args = ["python_tests", "--durations=15"] + xdist_args(min(12, os.cpu_count() or 1))
    update(out, "suite", status="running", progress=os.path.join(work_dir(), "suite.jsonl"))
    res = run_pytest(out, "suite", args, deselect=done, deadline=timeout - 10)
    ok = res["rc"] == 0 and not res["n_failures"]
    update(out, "suite", tests=res, status=test_status(ok, res), headline=count_line(res["counts"]))
    return 0 if ok else 1


RUN = {
    "build": stage_build,
    "op_tests": stage_op_tests,
    "kernels": stage_kernels,
    "e2e": stage_e2e,
    "torchrun": stage_torchrun,
    "suite": stage_suite,
}


# ---------------------------------------------------------------------------------------------------- finalize
def finalize(out: str, name: str, rc: int, seconds: float, timeout: float) -> dict:
    """Status, time and exit code of a stage that has ended (or was killed), then gpu_check.md re-rendered."""
    num = dict((n, k) for k, n, _ in STAGES)[name]
    data = load(out)
    entry = data.setdefault("stages", {}).setdefault(name, {})
    if rc in (124, 137):
        entry["status"] = "timeout"
        entry["headline"] = f"killed at its {timeout:g} s timeout" + (
            f"; before that: {entry['headline']}" if entry.get("headline") else ""
        )
    elif entry.get("status") in (None, "running"):
        entry["status"] = "ok" if rc == 0 else "fail"
        entry.setdefault("headline", f"exit {rc} before recording a result (see its log)")
    progress = entry.get("progress")
    if progress and "tests" not in entry:  # killed mid-run: what the outcome file says so far
        entry["tests"] = summarize_tests(progress)
        entry["headline"] += f"; tests so far: {count_line(entry['tests']['counts'])}"
    entry.update(number=num, title=dict((n, t) for _, n, t in STAGES)[name], rc=rc, seconds=round(seconds, 2))
    entry.update(timeout_s=timeout, log=f"logs/{num}_{name}.log")
    save(out, data)
    import render_results

    with open(os.path.join(out, "gpu_check.md"), "w") as fh:
        fh.write(render_results.gpu_report(data))
    say(f"stage {num} {name}: {entry['status']} in {seconds:.1f} s (timeout {timeout:g} s): {entry['headline']}")
    return entry


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=NAMES + ["finalize"])
    ap.add_argument("name", nargs="?", help="finalize: the stage")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--rc", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=0.0)
    a = ap.parse_args(argv)
    os.makedirs(os.path.join(a.out, "logs"), exist_ok=True)
    os.makedirs(work_dir(), exist_ok=True)
    if a.stage == "finalize":
        if a.name not in NAMES:
            ap.error(f"finalize needs a stage name ({', '.join(NAMES)}), got {a.name!r}")
        finalize(a.out, a.name, a.rc, a.seconds, a.timeout)
        return 0
    update(a.out, a.stage, status="running", started=time.strftime("%H:%M:%S"), dry_run=a.dry_run)
    return RUN[a.stage](a.out, a.dry_run, a.timeout)


if __name__ == "__main__":
    sys.exit(main())

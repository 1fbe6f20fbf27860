"""Triton-specific parts: availability, the route names, ahead-of-time compilation for sm_80/sm_90.

The ops themselves are tested on every backend by ``test_op_*.py`` (interpreter mode on CPU without a GPU,
compiled kernels on CUDA tensors with one; see test_kernels_reference.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_kernels_reference  # noqa: F401  (sets TRITON_INTERPRET=1 without a GPU, before triton is imported)
import torch

pytest.importorskip("triton")

from mda_fast.kernels import reference  # noqa: E402
from mda_fast.kernels import triton_backend as tb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_is_available_under_interpreter_or_gpu():
    assert tb.is_available()


def test_eigen_sq_route_choice():
    from mda_fast.kernels.triton_eigen_sq import choose_route

    assert choose_route(64, 2048, 2048, 256, True) == "grads"  # Pythia-1b head block at T=2048
    assert choose_route(64, 16, 512, 512, False) == "tokens"
    # the same rule as the C++/CUDA backends, with the bias column counted in D_in
    for T in (1, 4, 31, 32, 33, 200, 2048):
        for d_in, d_out, bias in ((64, 16, False), (64, 16, True), (128, 32, True), (8, 64, False)):
            want = reference.eigen_sq_route(5, T, d_out, d_in + bias)
            assert choose_route(5, T, d_in, d_out, bias) == {"A": "tokens", "B": "grads"}[want]
    assert [reference.normalize_route(r) for r in (None, "A", "tokens", "B", "grads")] == [None, "A", "A", "B", "B"]
    with pytest.raises(ValueError, match="route"):
        tb.eigen_sq_accumulate(
            torch.zeros(2, 2),
            torch.zeros(1, 1, 2),
            torch.zeros(1, 1, 2),
            torch.eye(2),
            torch.eye(2),
            None,
            False,
            route="bogus",
        )


def _compiled_env():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_kernels_compile_for_sm80_and_sm90():
    """Compiled mode (no GPU needed: triton's ptxas) in a fresh process, since this one may run the interpreter."""
    code = (
        "from mda_fast.kernels import triton_backend as tb\n"
        "for line in tb.compile_check(archs=(80, 90), dtypes=('bf16', 'fp32')): print(line)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_compiled_env(), capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.count("sm_90") == res.stdout.count("sm_80") == 8  # 4 kernels x 2 dtypes


def test_autotune_env_keeps_only_the_largest_config(monkeypatch):
    """MDA_FAST_TRITON_AUTOTUNE=0 (gpu_check.sh's op tests and microbenchmarks): each kernel's last, largest
    config, the one compile_check compiles; unset: the whole table."""
    from mda_fast.kernels import triton_covariance, triton_eigen_sq, triton_score
    from mda_fast.kernels.triton_tile import AUTOTUNE_ENV

    def cfg(c):
        return (tuple(sorted(c.kwargs.items())), c.num_warps, c.num_stages)

    monkeypatch.delenv(AUTOTUNE_ENV, raising=False)
    full = {m: [cfg(c) for c in m._configs(False)] for m in (triton_score, triton_covariance, triton_eigen_sq)}
    assert all(len(v) > 1 for v in full.values())
    for off in ("0", "off", "False"):
        monkeypatch.setenv(AUTOTUNE_ENV, off)
        for m, configs in full.items():
            assert [cfg(c) for c in m._configs(False)] == configs[-1:]
            assert len(m._configs(True)) == 1  # the interpreter's one small config, as before
    monkeypatch.setenv(AUTOTUNE_ENV, "1")
    assert {m: [cfg(c) for c in m._configs(False)] for m in full} == full

"""The compiled module mda_fast._C: build_info, and CUDA compiled whenever nvcc was there (unless OFF)."""

import os
import shutil

import pytest

C = pytest.importorskip("mda_fast._C", reason="mda_fast._C not built (scripts/dev_build.sh or pip install .)")


def test_build_info_fields():
    info = C.build_info()
    for key in (
        "cuda",
        "cuda_option",
        "cuda_archs",
        "cxx_compiler",
        "cuda_compiler",
        "nvcc_version",
        "openmp_max_threads",
    ):
        assert key in info, key
    assert info["cuda_option"] in ("AUTO", "ON", "OFF")
    assert isinstance(info["openmp_max_threads"], int) and info["openmp_max_threads"] >= 1
    assert info["cxx_compiler"].strip()
    assert C.cpu_max_threads() == info["openmp_max_threads"]
    if info["cuda"]:
        assert info["cuda_option"] != "OFF"
        assert info["cuda_archs"] and all(a >= 80 for a in info["cuda_archs"])
        assert info["nvcc_version"].count(".") == 2
        assert info["cuda_runtime_version"] >= 11000
        assert C.WITH_CUDA and hasattr(C, "cuda_run")
    else:
        assert info["cuda_archs"] == [] and not C.WITH_CUDA and not hasattr(C, "cuda_run")


def test_cuda_compiled_when_nvcc_present():
    info = C.build_info()
    if info["cuda_option"] == "OFF":
        pytest.skip("built with MDA_FAST_CUDA=OFF")
    if shutil.which("nvcc") is None and not os.environ.get("CUDACXX"):
        pytest.skip("no nvcc on this machine")
    assert info["cuda"], f"nvcc is on PATH but _C was built without CUDA: {info}"
    if not os.environ.get("CUDAARCHS"):
        assert info["cuda_archs"] == [80, 90]


def test_cpu_run_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown mode"):
        C.cpu_run(9, 0, [(1, 0, 0, 1, False, 1, 0, 0, 1, False, 1, 1)], 0, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="unknown dtype"):
        C.cpu_run(C.MODE_SUM, 7, [(1, 0, 0, 1, False, 1, 0, 0, 1, False, 0, 1)], 0, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="no blocks"):
        C.cpu_run(C.MODE_SUM, 0, [], 0, 1, 1, 0, 0)

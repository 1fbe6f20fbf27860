#!/usr/bin/env bash
# Fresh-machine setup: .venv, torch (the local 2.13.0 CPU wheel where it exists, else a normal install),
# the runtime and test dependencies, kronfluence without torchvision, then the package build (mda_fast._C).
# Usage: bash scripts/setup.sh [--test]     (--test also installs pytest, pytest-xdist, hypothesis, ruff, kronfluence,
#                                            zstandard and pyarrow)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY="$ROOT/.venv/bin/python"
PIP=("$VPY" -m pip install -q --disable-pip-version-check)
if ! "$VPY" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" torch==2.13.0 || "${PIP[@]}" torch
fi
# build tools + runtime deps (torch is already there, so nothing pulls another torch); numpy and matplotlib pinned:
# their shipped files are part of the real-text study's corpus (mda_fast/data/sources.py)
"${PIP[@]}" "scikit-build-core>=0.10" "pybind11>=2.12" ninja "cmake>=3.24" \
  "numpy==2.4.6" "transformers>=4.40,<6" "safetensors>=0.4" "tqdm>=4.60" "tokenizers>=0.15" \
  "matplotlib==3.11.2"
if [ "${1:-}" = "--test" ]; then
  "${PIP[@]}" "pytest>=8" "pytest-xdist>=3" "hypothesis==6.170.17" "ruff==0.17.6" "accelerate>=0.31" "einops>=0.8" "einconv>=0.1" "opt-einsum>=3.3"
  # the corpus extra (mda-fast corpus --from .jsonl.zst / .parquet / save_to_disk): its tests need both
  "${PIP[@]}" "zstandard==0.25.0" "pyarrow==26.0.1"
  # kronfluence declares torchvision, which would pull CUDA torch: install it without its declared deps
  "${PIP[@]}" --no-deps kronfluence==1.0.1
  "${PIP[@]}" "triton==3.7.1" || echo "triton unavailable: Triton tests will be skipped"
fi
# the package (compiles mda_fast._C: C++/OpenMP kernels, and CUDA kernels when nvcc is found)
# an editable install (scikit-build-core): Python files from this tree, mda_fast._C compiled into build/ and
# installed beside them, so `python -m pytest` and `python -m mda_fast` from the repository root see the same package.
# This build runs where it is built: -march=native for the CPU kernels (a wheel for elsewhere: MDA_FAST_NATIVE=OFF).
MDA_FAST_NATIVE="${MDA_FAST_NATIVE:-ON}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$VPY" -m pip install -q --no-build-isolation --no-deps -e .
(cd / && "$VPY" -c "import mda_fast, mda_fast.kernels as k; print('mda_fast', mda_fast.__version__, k.build_info())")

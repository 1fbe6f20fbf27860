#!/usr/bin/env bash
# CI: the adapter tests (model layout, capture, lean forward and its property test, localize, the GPT-2 layout) on
# transformers 4.4x, the older GPT-NeoX layout (config.rotary_pct / rotary_emb_base) the README claims, in its own
# venv .venv-tf4.
# The lean capture forward claims 4.49 too (same forward arithmetic), so the property test proves it here as well. Usage: bash scripts/ci_transformers4.sh      (TF4_VERSION=4.4x.y to try another release)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TF4_VERSION="${TF4_VERSION:-4.49.0}"
PY="${PYTHON:-python3}"
[ -x .venv-tf4/bin/python ] || "$PY" -m venv .venv-tf4
VPY="$ROOT/.venv-tf4/bin/python"
PIP=("$VPY" -m pip install -q --disable-pip-version-check)
# torch first and pinned (the local 2.13.0 CPU wheel), so nothing below pulls another torch
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" "transformers==$TF4_VERSION" "scikit-build-core>=0.10" "pybind11>=2.12" ninja "cmake>=3.24" \
  "numpy>=1.24" "safetensors>=0.4" "tqdm>=4.60" "tokenizers>=0.15" "matplotlib>=3.7" \
  "pytest>=8" "hypothesis==6.170.17"
"$VPY" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
# the package, built against this venv (same Python and torch as .venv, so the module is interchangeable)
# CPU kernels only: these tests run on the CPU (the main build compiles and tests the CUDA kernels)
MDA_FAST_CUDA=OFF CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$VPY" -m pip install -q --no-build-isolation --no-deps .
SO="$(cd / && "$VPY" -c "import mda_fast._C as c; print(c.__file__)")"
[ -e "$ROOT/mda_fast/$(basename "$SO")" ] || cp -f "$SO" "$ROOT/mda_fast/"
"$VPY" -c "import transformers, torch; print('transformers', transformers.__version__, 'torch', torch.__version__)"
"$VPY" -m pytest -p no:xdist -q python_tests/test_lean_forward.py python_tests/test_lean_forward_property.py \
  python_tests/test_capture.py python_tests/test_localize.py \
  python_tests/test_gpt2_adapter.py python_tests/test_gpt2_layout_property.py python_tests/test_llama_release.py

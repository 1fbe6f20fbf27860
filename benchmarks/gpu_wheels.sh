#!/usr/bin/env bash
# Prepares the wheel folder benchmarks/gpu_check.sh installs missing packages from, on a machine WITH a package
# registry, for a GPU machine without one (issue 26). Run it here, then carry the folder to the GPU machine
# (it is .whl/ in the repo by default, gitignored; the device tool takes it with carry: [".whl"]).
#
#   bash benchmarks/gpu_wheels.sh                 # the default packages into .whl/, for CPython 3.12 x86-64
#   bash benchmarks/gpu_wheels.sh pybind11 ...    # only these (pip names; NAME==VERSION pins)
#   PY_VERSION=3.11 WHEELS=/tmp/w bash benchmarks/gpu_wheels.sh
#   bash benchmarks/gpu_wheels.sh --print         # print the pip commands, download nothing
#
# Default packages: what gpu_check.sh's stage 1 looks for and a GPU image may lack (the 'cuda' image of this
# workplace has all but kronfluence and einconv, see /work/.library/device/KINDS.md): the build backend
# (scikit-build-core, pybind11), the test runner (pytest, pytest-xdist, hypothesis), the benchmarks'
# opt-einsum, and kronfluence and einconv (both without their declared dependencies, which pull torch/torchvision).
# Binary wheels are taken for PY_VERSION (default 3.12, the GPU image's python3) on manylinux x86-64; pure-Python
# wheels fit every version. Their own dependencies come along (pip resolves them for that Python), except
# kronfluence's and einconv's. torch, triton and the CUDA libraries are never kept: the GPU machine has its own
# (a package that pulls them stops this script with its name; name it again to take it without dependencies).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
[[ -z "${PYTHON:-}" && -x "$ROOT/.venv/bin/python" ]] && PY="$ROOT/.venv/bin/python"
WHEELS="${WHEELS:-$ROOT/.whl}"
PY_VERSION="${PY_VERSION:-3.12}"
PRINT=0
PKGS=()
for arg in "$@"; do
  case "$arg" in
    --print) PRINT=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_wheels.sh: unknown option '$arg' (expected --print, --help or pip package names)" >&2; exit 2 ;;
    *) PKGS+=("$arg") ;;
  esac
done
if [[ ! "$PY_VERSION" =~ ^3\.[0-9]+$ ]]; then
  echo "gpu_wheels.sh: PY_VERSION must look like 3.12, got '$PY_VERSION'" >&2; exit 2
fi
if [[ ${#PKGS[@]} -eq 0 ]]; then
  PKGS=("scikit-build-core>=0.10" "pybind11>=2.12" "pytest>=8" "pytest-xdist>=3" "hypothesis" "opt-einsum>=3.3")
  NODEPS=("kronfluence==1.0.1" "einconv>=0.1")
else
  NODEPS=()
  for i in "${!PKGS[@]}"; do  # kronfluence and einconv always without their declared dependencies (torch)
    if [[ "${PKGS[$i]}" == kronfluence* || "${PKGS[$i]}" == einconv* ]]; then NODEPS+=("${PKGS[$i]}"); unset 'PKGS[i]'; fi
  done
  PKGS=("${PKGS[@]+"${PKGS[@]}"}")
fi
TARGET=(--only-binary=:all: --python-version "$PY_VERSION" --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux1_x86_64)
CMDS=()
[[ ${#PKGS[@]} -gt 0 ]] && CMDS+=("$PY -m pip download -q --disable-pip-version-check ${TARGET[*]} -d $WHEELS ${PKGS[*]}")
[[ ${#NODEPS[@]} -gt 0 ]] && CMDS+=("$PY -m pip download -q --disable-pip-version-check --no-deps ${TARGET[*]} -d $WHEELS ${NODEPS[*]}")
for c in "${CMDS[@]}"; do
  echo "+ $c"
  if [[ $PRINT -eq 0 ]]; then
    mkdir -p "$WHEELS"
    # shellcheck disable=SC2086 # the command is word-split on purpose (no spaces inside its words)
    $c
  fi
done
if [[ $PRINT -eq 0 ]]; then
  heavy=$(find "$WHEELS" -maxdepth 1 \( -name 'torch-*.whl' -o -name 'triton-*.whl' -o -name 'nvidia_*.whl' \) | sort)
  if [[ -n "$heavy" ]]; then
    echo "gpu_wheels.sh: a requested package pulled torch/triton/CUDA wheels (removed; the GPU machine has its own):" >&2
    echo "$heavy" >&2
    echo "$heavy" | xargs rm -f
    echo "download the package that needs them with --no-deps (name it alone) and its other dependencies by name" >&2
    exit 1
  fi
  n=$(find "$WHEELS" -maxdepth 1 -name '*.whl' | wc -l)
  echo "gpu_wheels: $n wheels in $WHEELS ($(du -sh "$WHEELS" | cut -f1)); on the GPU machine: WHEELS=$WHEELS bash benchmarks/gpu_check.sh"
fi

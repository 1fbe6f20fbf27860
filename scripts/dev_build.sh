#!/usr/bin/env bash
# Builds mda_fast._C in place (mda_fast/_C*.so, gitignored) for `python -m pytest` from the repo root.
# Usage: scripts/dev_build.sh [extra cmake -D args]   env: MDA_FAST_CUDA=AUTO|ON|OFF (default AUTO), BUILD_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -z "${VIRTUAL_ENV:-}" && -x "$ROOT/.venv/bin/python" ]]; then
  PY="$ROOT/.venv/bin/python"
else
  PY="$(command -v python)"
fi
BIN="$(dirname "$PY")"
export PATH="$BIN:$PATH"
BUILD_DIR="${BUILD_DIR:-$ROOT/build/dev}"
CMAKE="$(command -v cmake)"
NINJA="$(command -v ninja)"
PYBIND11_DIR="$("$PY" -m pybind11 --cmakedir)"
"$CMAKE" -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_MAKE_PROGRAM="$NINJA" -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$PY" -Dpybind11_DIR="$PYBIND11_DIR" -DMDA_FAST_CUDA="${MDA_FAST_CUDA:-AUTO}" "$@"
"$CMAKE" --build "$BUILD_DIR" --parallel "${JOBS:-2}"
rm -f "$ROOT"/mda_fast/_C*.so
cp "$BUILD_DIR"/_C*.so "$ROOT/mda_fast/"
echo "built $(ls "$ROOT"/mda_fast/_C*.so)"
"$PY" -c "import mda_fast._C as C; print(C.build_info())"

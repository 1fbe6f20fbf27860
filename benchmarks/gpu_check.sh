#!/usr/bin/env bash
# One-shot GPU verification of mda-fast (issue 3): build against this machine's torch/nvcc, run the whole test
# suite including the CUDA tests, run the kernel microbenchmarks. Logs go to $OUT (or ./gpu_check_out).
#
#   bash benchmarks/gpu_check.sh              # from the repo root, on a machine with a CUDA GPU and nvcc
#
# Expects python with torch (CUDA build, e.g. 2.11/cu130), triton, pytest, pytest-xdist, numpy, transformers,
# safetensors, tqdm, opt-einsum, scikit-build-core, pybind11, cmake and ninja; installs what is missing from
# that list without touching torch. PYTHON selects the interpreter (default: python3).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
STATUS=0
step() { echo; echo "=== $* ===" | tee -a "$OUT/summary.log"; }
run() {  # run <name> <cmd...>: log to $OUT/<name>.log, record the exit status
  local name="$1"; shift
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc" | tee -a "$OUT/summary.log"
  [[ $rc -ne 0 ]] && STATUS=1
  tail -n 25 "$OUT/$name.log"
  return $rc
}

step "environment"
{
  date -u; hostname; nvidia-smi || true; nvcc --version || true
  "$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  "$PY" -c "import triton; print('triton', triton.__version__)" || true
} 2>&1 | tee "$OUT/env.log"

step "python build/test dependencies (torch untouched)"
run deps "$PY" -m pip install --no-deps -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja pytest pytest-xdist \
  opt-einsum tqdm safetensors numpy einops || true
"$PY" -c "import transformers" 2>/dev/null || run deps_tf "$PY" -m pip install -q "transformers>=4.40,<6"
"$PY" -c "import kronfluence" 2>/dev/null || run deps_kron "$PY" -m pip install --no-deps -q "kronfluence==1.0.1"

step "build: pip install --no-build-isolation --no-deps . (MDA_FAST_CUDA=ON: a missing/broken nvcc fails here)"
MDA_FAST_CUDA=ON run build "$PY" -m pip install -v --no-build-isolation --no-deps . || echo "pip build failed (see build.log); trying the in-place build"
step "in-place build for running the tests from the repo root (scripts/dev_build.sh, MDA_FAST_CUDA=ON)"
MDA_FAST_CUDA=ON JOBS="$(nproc)" run dev_build bash scripts/dev_build.sh || { echo "dev build failed"; exit 1; }
run build_info "$PY" -c "import mda_fast.kernels as k, torch; print(k.build_info()); print(k.available_backends('cuda')); assert k.build_info()['cuda']; assert 'cuda' in k.available_backends('cuda')"

step "kernel op tests (every backend, CUDA and compiled Triton included)"
run test_cuda "$PY" -m pytest python_tests/test_op_score.py python_tests/test_op_covariance.py \
  python_tests/test_op_eigen_sq.py python_tests/test_kernels_dispatch.py python_tests/test_build.py -q -rs
step "full test suite (CUDA tests included)"
XDIST=""; "$PY" -c "import xdist" 2>/dev/null && XDIST="-n 4"
run test_all "$PY" -m pytest python_tests -q -rs $XDIST --durations=15

step "kernel microbenchmarks (Pythia head blocks, T=2048, N=64, K in {1,8}, bf16)"
for op in score eigen_sq covariance; do
  run "bench_${op}_cuda" "$PY" benchmarks/bench_op_$op.py --device cuda --json "$OUT/bench_${op}_cuda.json"
done
run bench_cpu "$PY" benchmarks/bench_op_score.py --device cpu --json "$OUT/bench_score_cpu.json"
"$PY" benchmarks/render_results.py "$OUT"/bench_*_cuda.json "$OUT/bench_score_cpu.json" > "$OUT/bench_kernels.md"

step "end to end (issue 5): authors' method vs kronfluence vs mda-fast, random weights, T=2048"
run e2e_demo "$PY" benchmarks/end_to_end.py --model demo --device cuda --n 2048 --n-fit 512 --batch-size 64 --also-hf --markdown "$OUT/end_to_end.md"
run e2e_14m "$PY" benchmarks/end_to_end.py --model pythia-14m --device cuda --n 512 --n-fit 64 --batch-size 8 --tf32 --also-hf --markdown "$OUT/end_to_end.md"
run e2e_14m_bs32 "$PY" benchmarks/end_to_end.py --model pythia-14m --device cuda --n 512 --n-fit 64 --batch-size 32 --tf32 --skip-kronfluence --markdown "$OUT/end_to_end.md"
run e2e_160m "$PY" benchmarks/end_to_end.py --model pythia-160m --device cuda --n 256 --n-fit 32 --batch-size 8 --tf32 --skip-kronfluence --markdown "$OUT/end_to_end.md"

step "sharded scoring on the GPU (two shard processes on cuda:0, then merge), tiny config"
run shards "$PY" -m pytest python_tests/test_cli.py -q -k "sharded"

step "torchrun on one GPU (issue 14): two ranks share cuda:0 (MDA_FAST_DEVICES), data group on nccl, tiny config"
run torchrun_gpu "$PY" -m pytest python_tests/test_torchrun.py -q -rsx -k "one_gpu"
step "torchrun on the CPU (gloo): score, fit, a killed-and-restarted rank, interventions, --devices"
run torchrun_cpu "$PY" -m pytest python_tests/test_torchrun.py -q -rs --durations=10

step "done (status $STATUS); logs in $OUT"
exit $STATUS

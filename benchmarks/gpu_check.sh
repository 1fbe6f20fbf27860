#!/usr/bin/env bash
# GPU check of mda-fast (issues 3, 26): one command on a GPU machine with no package registry, the numbers that
# matter first. Each stage runs under its own timeout and, as soon as it ends, leaves its results in
# $OUT/gpu_check.json (stages.<name>) and its log in $OUT/logs/<n>_<name>.log; $OUT/gpu_check.md (summary and
# tables, benchmarks/render_results.py) is re-rendered after every stage. A stage killed by its timeout is
# marked "timeout" and keeps what it recorded; the stages before it are untouched.
#
#   stage  what                                                                      timeout (H100, defaults)
#   1      env + packages + build: pip install --no-build-isolation --no-deps .      90 s  (TIMEOUT_1)
#          with MDA_FAST_CUDA=ON, the installed _C copied into the tree for the tests
#   2      CUDA and compiled-Triton op tests (-m cuda) against the float64 oracle    75 s  (TIMEOUT_2)
#   3      kernel microbenchmarks: Pythia-14m/160m/1b head blocks, bf16, T=2048,     60 s  (TIMEOUT_3)
#          N=64, every backend beside torch, cuBLAS bf16 bmm and kronfluence's einsum
#   4      end to end on Pythia-14m (random weights, T=2048, N=512): mda-fast        75 s  (TIMEOUT_4)
#          seq/s and tokens/s with TF32 off and on, the authors' method, a forward
#          -------------------------------------------------------- stages 1-4: 300 s = 5 min
#   5      two torchrun ranks on the one GPU (speed + agreement, then the nccl test) 90 s  (TIMEOUT_5)
#   6      the rest of the test suite (what stages 2 and 5 ran is deselected)        90 s  (TIMEOUT_6)
#          -------------------------------------------------------- all stages: 480 s = 8 min
#
#   bash benchmarks/gpu_check.sh              # from anywhere; on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run    # (or DEVICE=cpu) every stage's logic, tiny sizes, CPU backends (CI;
#                                             # 300 s timeouts: ~50 s of CPU time in all on a 2-core machine)
#
# No network: stage 1 checks the packages it needs and installs a missing one only from the wheel folder $WHEELS
# (default .whl/ in the repo, made beforehand by benchmarks/gpu_wheels.sh); a required package still missing
# stops the check after stage 1 with its name (exit 2). Environment: OUT (default ./gpu_check_out), PYTHON
# (default .venv/bin/python if present, else python3), STAGES (default 1,2,3,4,5,6), TIMEOUT_<n> (seconds),
# WHEELS, BENCH_MODELS (default 14m,160m,1b), BENCH_MIN_TIME (0.05), E2E_N (512), E2E_BATCH (16),
# MDA_FAST_TRITON_AUTOTUNE (stages 2-3 default 0: one config per Triton kernel, see kernels/triton_tile.py).
# Exit status: 0 every stage ok, 1 a stage failed or timed out, 2 a required package is missing or bad usage.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h | --help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (expected --dry-run or --help)" >&2; exit 2 ;;
  esac
done
case "${DEVICE:-cuda}" in
  cpu) DRY=1 ;;
  cuda) ;;
  *) echo "gpu_check.sh: DEVICE must be cuda or cpu, got '${DEVICE}'" >&2; exit 2 ;;
esac
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY="python3"; fi
OUT="${OUT:-$ROOT/gpu_check_out}"
STAGES="${STAGES:-1,2,3,4,5,6}"
if [[ ! "$STAGES" =~ ^[1-6](,[1-6])*$ ]]; then
  echo "gpu_check.sh: STAGES must be a comma list of stage numbers 1-6, got '$STAGES'" >&2; exit 2
fi
mkdir -p "$OUT/logs"
rm -f "$OUT/gpu_check.json" "$OUT/gpu_check.md" "$OUT"/logs/*
# scratch (test-outcome streams) outside $OUT, so $OUT holds 8 files: gpu_check.json, gpu_check.md, 6 logs
export GPU_CHECK_WORK="${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_work.XXXXXX")}"
export PYTHONUNBUFFERED=1
# CMake finds CUDA's nvcc in /usr/local/cuda without PATH; the package check looks on PATH
if ! command -v nvcc > /dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then export PATH="$PATH:/usr/local/cuda/bin"; fi
NAMES=(_ build op_tests kernels e2e torchrun suite)
BUDGET=(_ 90 75 60 75 90 90)
# the dry run's timeouts are wide: its tiny stages are start-up bound, and CI's shared cores can be slow
[[ $DRY -eq 1 ]] && BUDGET=(_ 300 300 300 300 300 300)
DRYARG=()
[[ $DRY -eq 1 ]] && DRYARG=(--dry-run)
echo "gpu_check: $([[ $DRY -eq 1 ]] && echo 'DRY RUN (CPU backends, tiny sizes)' || echo 'GPU run'); stages $STAGES; out $OUT"

STATUS=0
for n in 1 2 3 4 5 6; do
  [[ ",$STAGES," == *",$n,"* ]] || continue
  name="${NAMES[$n]}"
  var="TIMEOUT_$n"
  limit="${!var:-${BUDGET[$n]}}"
  log="$OUT/logs/${n}_${name}.log"
  echo "=== stage $n: $name (timeout ${limit} s) ==="
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$PY" benchmarks/gpu_stages.py "$name" --out "$OUT" --timeout "$limit" "${DRYARG[@]}" \
    > "$log" 2>&1
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  "$PY" benchmarks/gpu_stages.py finalize "$name" --out "$OUT" --rc "$rc" --seconds "$secs" --timeout "$limit" \
    || echo "finalize of stage $n failed"
  if [[ $rc -ne 0 ]]; then
    STATUS=1
    tail -n 15 "$log" | sed 's/^/  | /'
  fi
  if [[ $n -eq 1 && $rc -eq 3 ]]; then
    echo "gpu_check: stopped after stage 1: a required package is missing (named above); nothing else was run"
    rm -rf "$GPU_CHECK_WORK"
    exit 2
  fi
done
echo "=== summary ($OUT/gpu_check.md) ==="
sed -n '/^| stage/,/^$/p' "$OUT/gpu_check.md"
rm -rf "$GPU_CHECK_WORK"
exit $STATUS

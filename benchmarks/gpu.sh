#!/usr/bin/env bash
# The GPU run in one script: the `cuda`-marked tests (allocator, bf16/fp16 autocast, compile, channels-last,
# fused optimizers, NCCL DDP over 2 GPUs when there are 2, else 1), then the cost benchmark on ResNet-50 and
# ViT-B at realistic batches and their largest ratio with CUDA allocator peaks, in fp32 and bf16, each
# configuration also with the synthesized weights kept (repl.recompute=false) and always rebuilt (true) beside
# the default (auto), interleaved, and in fp32 against its baked network (the same
# network with the surrogates materialized: RepL's own overhead, apart from how the smaller network runs), then
# where the step's time goes by kind of op on ResNet-50 and ResNet-32 (benchmarks/op_time.py: are the GPU's
# kernels as uneven per FLOP as the CPU's, and what do RepL's small synthesis ops cost as kernel launches).
# Results: results/bench/cost_<gpu>_cuda.{md,json}, cost_<gpu>_bf16_cuda.{md,json} and op_time_<gpu>_cuda.{md,json}
# (the file names and their headers name the GPU). About 5 minutes on one H100-class GPU; the steps are capped
# so the whole run stays under 8. It checks first that the packages it needs import, and a failed step does not
# stop the ones after it: all run, then the script exits 1 naming the failed steps (a benchmark stopped by its
# limit keeps the models it finished in cost_*.partial.* / op_time_*.partial.*).
#
#   benchmarks/gpu.sh                  # on a machine with CUDA
#   benchmarks/gpu.sh --dry            # anywhere, on the CPU: the same steps at toy sizes, the CUDA-only tests
#                                      # skipped, results in a temporary directory (CI runs this: tests/benchmarks)
#   benchmarks/gpu.sh --out-dir DIR    # results elsewhere
#   benchmarks/gpu.sh --wheels DIR     # first unpack DIR/*.whl (pure-Python wheels: hydra-core, omegaconf, antlr4,
#                                      # made where pip works by `make gpu-wheels`) onto the PYTHONPATH: for a
#                                      # GPU machine without a package index, or without pip
# PYTHON=... picks the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLER="$PWD"  # relative --out-dir / --wheels paths are the caller's, read before the script moves to the root
cd "$ROOT"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DRY=0
OUT=""
WHEELS=""
ACCEPTED="accepted: --dry, --out-dir DIR, --wheels DIR"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry) DRY=1; shift ;;
    --out-dir|--wheels)
      if [[ $# -lt 2 ]]; then echo "benchmarks/gpu.sh: $1 needs a directory; $ACCEPTED" >&2; exit 2; fi
      dir="$2"; [[ $dir == /* ]] || dir="$CALLER/$dir"
      if [[ $1 == --out-dir ]]; then OUT="$dir"; else WHEELS="$dir"; fi
      shift 2 ;;
    *) echo "benchmarks/gpu.sh: unknown argument '$1'; $ACCEPTED" >&2; exit 2 ;;
  esac
done
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# --wheels: pure-Python wheels are zip archives laid out as site-packages, so unpacking them is installing them
# (no pip, no index); they go first on the path, for this run only.
if [[ -n "$WHEELS" ]]; then
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  shopt -u nullglob
  if [[ ${#wheels[@]} -eq 0 ]]; then
    echo "benchmarks/gpu.sh: --wheels $WHEELS holds no .whl file; make them where pip works with 'make gpu-wheels'" >&2
    exit 2
  fi
  site="$(mktemp -d)"
  for wheel in "${wheels[@]}"; do
    if ! "$PYTHON" -m zipfile -e "$wheel" "$site" 2>/dev/null; then
      echo "benchmarks/gpu.sh: --wheels: $wheel is not a readable wheel (a zip archive)" >&2
      exit 2
    fi
  done
  export PYTHONPATH="$site:$PYTHONPATH"
fi
start=$SECONDS
step() { echo "== [$((SECONDS - start)) s] $*"; }
failed=()  # steps that failed: the run goes on to the next one (a GPU's time is scarce), and exits 1 at the end

# Before any GPU time is spent: the benchmarks need torch, timm and the project importable; the tests' DDP check
# also trains through train.py (hydra-core, omegaconf).
missing=$("$PYTHON" - <<'PY'
import importlib.util
print(" ".join(m for m in ("torch", "timm", "hydra", "omegaconf", "pytest") if importlib.util.find_spec(m) is None))
PY
)
if [[ -n "$missing" ]]; then
  echo "benchmarks/gpu.sh: $PYTHON cannot import: $missing; install the project with its tests' extras (pip install -e '.[test]'), or point PYTHON at an interpreter that has them" >&2
  exit 2
fi

if [[ $DRY == 1 ]]; then
  export REPL_DRY_GPU=1  # tests/conftest.py: run the cuda-marked tests on the CPU, skipping the CUDA-only checks
  OUT="${OUT:-$(mktemp -d)}"
  DEVICE=(--device cpu)
  COST=(--models resnet32 --batch resnet32=2 --batch lm=2 --size lm=16 --ratios max --surrogates lite
        --rounds 1 --steps 1 --warmup 0)
  OPS=(--models resnet32 --batch resnet32=2 --steps 1)
  TEST_LIMIT=120
  BENCH_LIMIT=120
  OPS_LIMIT=60
else
  if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "benchmarks/gpu.sh: no CUDA device visible to $PYTHON; run 'benchmarks/gpu.sh --dry' to check the script on the CPU" >&2
    exit 2
  fi
  OUT="${OUT:-$ROOT/results/bench}"
  DEVICE=(--device cuda)
  # The largest ratio only: each RepL configuration is timed four ways (default, kept, rebuilt, baked), and
  # with both ratios the fp32 pass would time 17 configurations per model, not 9, inside BENCH_LIMIT.
  COST=(--models resnet50,vit_b --batch resnet50=128 --batch vit_b=128 --ratios max --rounds 4 --steps 4 --warmup 2)
  OPS=(--models resnet50,resnet32 --batch resnet50=128 --batch resnet32=128 --steps 5)
  TEST_LIMIT=150
  BENCH_LIMIT=140
  OPS_LIMIT=45
fi
# Before any step: the out dir is a directory this process can write in (made if missing), else one line.
if ! mkdir -p "$OUT" 2>/dev/null || [[ ! -d "$OUT" ]] || ! probe="$(mktemp "$OUT/.write-check-XXXXXX" 2>/dev/null)"; then
  echo "benchmarks/gpu.sh: --out-dir: cannot write to $OUT; give a writable directory" >&2
  exit 2
fi
rm -f "$probe"

step "cuda-marked tests (tests/cuda)"
timeout "$TEST_LIMIT" "$PYTHON" -m pytest tests/cuda -m cuda -q -p no:xdist -p no:cacheprovider || failed+=("tests (exit $?)")

step "cost benchmark, fp32"
timeout "$BENCH_LIMIT" "$PYTHON" benchmarks/cost.py "${DEVICE[@]}" "${COST[@]}" --recompute --baked --out-dir "$OUT" \
  --tag "$([[ $DRY == 1 ]] && echo dry || echo cuda)" || failed+=("cost fp32 (exit $?)")

step "cost benchmark, bf16 autocast"
[[ $DRY == 1 ]] && COST+=(--models lm)  # the last --models wins: the dry mode's bf16 pass on the LM only
timeout "$BENCH_LIMIT" "$PYTHON" benchmarks/cost.py "${DEVICE[@]}" "${COST[@]}" --recompute --precision bf16 \
  --out-dir "$OUT" --tag "$([[ $DRY == 1 ]] && echo bf16_dry || echo bf16_cuda)" || failed+=("cost bf16 (exit $?)")

step "time and FLOPs per kind of op, fp32"
timeout "$OPS_LIMIT" "$PYTHON" benchmarks/op_time.py "${DEVICE[@]}" "${OPS[@]}" --kept --out-dir "$OUT" \
  --tag "$([[ $DRY == 1 ]] && echo dry || echo cuda)" || failed+=("op_time (exit $?)")
step "done: results in $OUT"
ls "$OUT"/cost_* "$OUT"/op_time_* 2>/dev/null || true
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "benchmarks/gpu.sh: failed: ${failed[*]} (an exit of 124 is a step past its time limit)" >&2
  exit 1
fi
